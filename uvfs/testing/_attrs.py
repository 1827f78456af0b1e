"""Checks on modes, ownership and special files: chmod, chown, setuid/setgid rules, mknod."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from uvfs.testing._helpers import as_nobody, current_umask, need_root, raises, write_file
from uvfs.testing._registry import check


@check("write")
def check_chmod_bits(d: Path) -> None:
    """chmod stores all twelve permission bits exactly and keeps the file type."""
    write_file(d / "f", b"")
    for mode in [0o000, 0o777, 0o4755, 0o2755, 0o1644, 0o7777, 0o640]:
        os.chmod(d / "f", mode)
        assert oct(os.stat(d / "f").st_mode) == oct(stat.S_IFREG | mode)


@check("write")
def check_chmod_dir(d: Path) -> None:
    """A directory's mode bits, sticky and setgid included, are stored exactly."""
    (d / "sub").mkdir()
    for mode in [0o1777, 0o2750, 0o700, 0o000]:
        os.chmod(d / "sub", mode)
        assert oct(os.stat(d / "sub").st_mode) == oct(stat.S_IFDIR | mode)


@check("write")
def check_fchmod(d: Path) -> None:
    """fchmod on an open descriptor changes the file's mode."""
    fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.fchmod(fd, 0o604)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o604
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o604


@check("write")
def check_chown(d: Path) -> None:
    """chown sets uid and gid; -1 leaves either as it is; lchown changes the link only."""
    need_root("chown to other users")
    write_file(d / "f", b"")
    os.chown(d / "f", 1234, 5678)
    assert (os.stat(d / "f").st_uid, os.stat(d / "f").st_gid) == (1234, 5678)
    os.chown(d / "f", -1, 42)
    assert (os.stat(d / "f").st_uid, os.stat(d / "f").st_gid) == (1234, 42)
    os.chown(d / "f", 7, -1)
    assert (os.stat(d / "f").st_uid, os.stat(d / "f").st_gid) == (7, 42)
    os.symlink("f", d / "link")
    os.lchown(d / "link", 99, 98)
    assert (os.lstat(d / "link").st_uid, os.lstat(d / "link").st_gid) == (99, 98)
    assert (os.stat(d / "f").st_uid, os.stat(d / "f").st_gid) == (7, 42)


@check("write")
def check_chown_clears_setid(d: Path) -> None:
    """chown of a file clears setuid, and setgid when group-executable, even by root."""
    need_root("chown to other users")
    write_file(d / "f", b"")
    os.chmod(d / "f", 0o6755)
    os.chown(d / "f", 1234, 5678)
    assert oct(stat.S_IMODE(os.stat(d / "f").st_mode)) == oct(0o0755)
    write_file(d / "g", b"")
    os.chmod(d / "g", 0o2745)  # setgid without group execute: mandatory locking, kept
    os.chown(d / "g", 1234, 5678)
    assert oct(stat.S_IMODE(os.stat(d / "g").st_mode)) == oct(0o2745)


@check("write")
def check_write_clears_setid(d: Path) -> None:
    """A write by a user without CAP_FSETID clears setuid and setgid (group-executable)."""
    write_file(d / "f", b"")
    os.chmod(d / "f", 0o6777)
    fd = os.open(d / "f", os.O_WRONLY)
    try:
        as_nobody(lambda: os.pwrite(fd, b"x", 0))
    finally:
        os.close(fd)
    assert oct(stat.S_IMODE(os.stat(d / "f").st_mode)) == oct(0o0777)
    assert (d / "f").read_bytes() == b"x"


@check("write")
def check_truncate_clears_setid(d: Path) -> None:
    """ftruncate by a user without CAP_FSETID clears setuid."""
    write_file(d / "f", b"content")
    os.chmod(d / "f", 0o4777)
    fd = os.open(d / "f", os.O_WRONLY)
    try:
        as_nobody(lambda: os.ftruncate(fd, 2))
    finally:
        os.close(fd)
    assert oct(stat.S_IMODE(os.stat(d / "f").st_mode)) == oct(0o0777)
    assert os.stat(d / "f").st_size == 2


@check("write")
def check_setgid_dir_inherits(d: Path) -> None:
    """In a setgid directory new nodes take its group; new subdirectories stay setgid."""
    need_root("chown a directory to another group")
    (d / "sg").mkdir()
    os.chown(d / "sg", -1, 5678)
    os.chmod(d / "sg", 0o2777)
    write_file(d / "sg" / "f", b"")
    (d / "sg" / "sub").mkdir()
    assert os.stat(d / "sg" / "f").st_gid == 5678
    assert os.stat(d / "sg" / "sub").st_gid == 5678
    assert os.stat(d / "sg" / "sub").st_mode & stat.S_ISGID


@check("write")
def check_not_owner_eperm(d: Path) -> None:
    """Someone not the owner may not chmod, chown or set explicit times: EPERM."""
    need_root("a file owned by someone else")
    write_file(d / "f", b"")
    os.chmod(d / "f", 0o666)
    fd = os.open(d / "f", os.O_RDWR)

    def attempt() -> None:
        raises(errno.EPERM, os.fchmod, fd, 0o777)
        raises(errno.EPERM, os.fchown, fd, 65534, 65534)
        raises(errno.EPERM, os.utime, fd, ns=(1, 1))
        os.utime(fd)  # "now" needs write permission only

    try:
        as_nobody(attempt)
    finally:
        os.close(fd)
    assert oct(os.stat(d / "f").st_mode) == oct(0o100666)


@check("write")
def check_mknod_fifo(d: Path) -> None:
    """mkfifo makes a FIFO that carries bytes from writer to reader."""
    os.mkfifo(d / "fifo", 0o640)
    st = os.lstat(d / "fifo")
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640 & ~current_umask()
    reader = os.open(d / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(d / "fifo", os.O_WRONLY)
    try:
        os.write(writer, b"piped")
        assert os.read(reader, 10) == b"piped"
    finally:
        os.close(reader)
        os.close(writer)


@check("write")
def check_mknod_devices(d: Path) -> None:
    """mknod makes character and block devices with their exact major and minor numbers."""
    need_root("mknod of device nodes")
    os.mknod(d / "chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(d / "blk", 0o600 | stat.S_IFBLK, os.makedev(259, 70000))
    chr_, blk = os.lstat(d / "chr"), os.lstat(d / "blk")
    assert stat.S_ISCHR(chr_.st_mode)
    assert (os.major(chr_.st_rdev), os.minor(chr_.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(blk.st_mode)
    assert (os.major(blk.st_rdev), os.minor(blk.st_rdev)) == (259, 70000)


@check("write")
def check_mknod_socket(d: Path) -> None:
    """mknod makes a socket node (S_IFSOCK) and a regular file with S_IFREG."""
    os.mknod(d / "sock", 0o600 | stat.S_IFSOCK)
    os.mknod(d / "reg", 0o600 | stat.S_IFREG)
    assert stat.S_ISSOCK(os.lstat(d / "sock").st_mode)
    assert stat.S_ISREG(os.lstat(d / "reg").st_mode)
    assert os.stat(d / "reg").st_size == 0


@check("write")
def check_inode_numbers(d: Path) -> None:
    """Inode numbers are unique among live files and stable across lookups and renames."""
    inos = set()
    for i in range(50):
        write_file(d / f"f{i}", b"")
        inos.add(os.stat(d / f"f{i}").st_ino)
    assert len(inos) == 50
    before = os.stat(d / "f7").st_ino
    os.rename(d / "f7", d / "renamed")
    assert os.stat(d / "renamed").st_ino == before
    assert os.stat(d / "renamed").st_dev == os.stat(d).st_dev


@check("write")
def check_permission_bits_enforced(d: Path) -> None:
    """Another user gets EACCES without search, write or read permission, and access() agrees."""
    need_root("files owned by another user")
    (d / "closed").mkdir(mode=0o700)
    write_file(d / "closed" / "f", b"")
    (d / "open").mkdir()
    os.chmod(d / "open", 0o755)
    write_file(d / "open" / "secret", b"secret")
    os.chmod(d / "open" / "secret", 0o600)
    write_file(d / "open" / "public", b"public")
    os.chmod(d / "open" / "public", 0o644)
    closed = os.open(d / "closed", os.O_RDONLY | os.O_DIRECTORY)
    dfd = os.open(d / "open", os.O_RDONLY | os.O_DIRECTORY)

    def attempt() -> None:
        raises(errno.EACCES, os.open, "f", os.O_RDONLY, dir_fd=closed)
        raises(errno.EACCES, os.open, "new", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd)
        raises(errno.EACCES, os.mkdir, "newdir", dir_fd=dfd)
        raises(errno.EACCES, os.unlink, "public", dir_fd=dfd)
        raises(errno.EACCES, os.open, "secret", os.O_RDONLY, dir_fd=dfd)
        raises(errno.EACCES, os.open, "public", os.O_WRONLY, dir_fd=dfd)
        assert not os.access("public", os.W_OK, dir_fd=dfd)
        assert os.access("public", os.R_OK, dir_fd=dfd)
        with open(os.open("public", os.O_RDONLY, dir_fd=dfd), "rb") as f:
            assert f.read() == b"public"

    try:
        as_nobody(attempt)
    finally:
        os.close(closed)
        os.close(dfd)
    assert sorted(os.listdir(d / "open")) == ["public", "secret"]


@check("write")
def check_sticky_directory(d: Path) -> None:
    """In a sticky directory another user may add and remove its own files, not others' (EPERM)."""
    need_root("files owned by another user")
    (d / "tmp").mkdir()
    os.chmod(d / "tmp", 0o1777)
    write_file(d / "tmp" / "roots", b"")
    os.chmod(d / "tmp" / "roots", 0o666)
    dfd = os.open(d / "tmp", os.O_RDONLY | os.O_DIRECTORY)

    def attempt() -> None:
        raises(errno.EPERM, os.unlink, "roots", dir_fd=dfd)
        raises(errno.EPERM, os.rename, "roots", "moved", src_dir_fd=dfd, dst_dir_fd=dfd)
        os.close(os.open("mine", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd))
        assert os.stat("mine", dir_fd=dfd).st_uid == 65534
        os.rename("mine", "mine2", src_dir_fd=dfd, dst_dir_fd=dfd)
        os.unlink("mine2", dir_fd=dfd)

    try:
        as_nobody(attempt)
    finally:
        os.close(dfd)
    assert os.listdir(d / "tmp") == ["roots"]
