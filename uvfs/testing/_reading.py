"""Read checks: the reference tree (uvfs.testing._tree) compared exactly, without writing.

On a read-only mount these are the whole kit, with the `readonly` checks that writes fail
with EROFS.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from pathlib import Path

import pytest

from uvfs.testing import _tree as tree
from uvfs.testing._helpers import as_nobody, need_root, raises
from uvfs.testing._registry import check
from uvfs.testing._syscalls import DirStream

GiB = 1 << 30


def _read(path: Path | bytes, offset: int = 0, size: int = -1) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _user_xattrs(path: Path) -> dict[str, bytes]:
    names = [n for n in os.listxattr(path) if n.startswith("user.")]
    return {name: os.getxattr(path, name) for name in names}


@check("read")
def check_tree_listing(d: Path) -> None:
    """The root lists exactly the tree's names (lost+found aside), each once."""
    names = [n for n in os.listdir(os.fsencode(d)) if n != b"lost+found"]
    assert sorted(names) == sorted(tree.ROOT_NAMES)


@check("read")
def check_tree_file(d: Path) -> None:
    """A regular file reads back exactly, whole and by pieces at unaligned offsets."""
    assert os.stat(d / "file").st_size == len(tree.DATA)
    assert _read(d / "file") == tree.DATA
    fd = os.open(d / "file", os.O_RDONLY)
    try:
        for offset, size in [(0, 1), (1023, 2), (4095, 4098), (9999, 10), (10_000, 5)]:
            assert os.pread(fd, size, offset) == tree.DATA[offset : offset + size]
    finally:
        os.close(fd)


@check("read")
def check_tree_empty(d: Path) -> None:
    """An empty file has size 0 and reads b''."""
    assert os.stat(d / "empty").st_size == 0
    assert _read(d / "empty") == b""


@check("read")
def check_tree_sparse(d: Path) -> None:
    """A sparse file reads zeros in its holes and its data where written."""
    expected = bytearray(tree.SPARSE_SIZE)
    for offset, data in tree.SPARSE_PIECES.items():
        expected[offset : offset + len(data)] = data
    assert os.stat(d / "sparse").st_size == tree.SPARSE_SIZE
    assert _read(d / "sparse") == bytes(expected)


@check("read")
def check_tree_large(d: Path) -> None:
    """A file over 4 GiB has its size, its bytes past 4 GiB, and zeros in between."""
    assert os.stat(d / "large").st_size == tree.LARGE_SIZE
    for offset, data in tree.LARGE_PIECES.items():
        assert _read(d / "large", offset, len(data)) == data
    assert _read(d / "large", 4 * GiB - 4096, 8192) == bytes(8192)
    assert _read(d / "large", tree.LARGE_SIZE - 7, 100) == b"the end"


@check("read")
def check_tree_dir_nlink(d: Path) -> None:
    """A directory with two subdirectories has nlink 4; '..' of a subdirectory is it."""
    st = os.stat(d / "dir")
    assert st.st_nlink == 4
    assert sorted(os.listdir(d / "dir")) == ["inner", "sub1", "sub2"]
    assert os.stat(d / "dir" / "sub1" / "..").st_ino == st.st_ino
    assert os.stat(f"{d}/dir/.").st_ino == st.st_ino
    assert os.stat(d / "dir" / "..").st_ino == os.stat(d).st_ino


@check("read")
def check_tree_many(d: Path) -> None:
    """A directory of 300 entries lists each once, with inode numbers stat agrees with."""
    entries = list(os.scandir(d / "many"))
    assert sorted(e.name for e in entries) == [f"entry-{i:04d}" for i in range(tree.MANY)]
    for entry in entries[::37]:
        assert entry.inode() == os.stat(entry.path).st_ino
        assert entry.is_file()
        assert _read(entry.path) == str(int(entry.name[6:])).encode()


@check("read")
def check_tree_hard_links(d: Path) -> None:
    """Two hard links share one inode with nlink 2."""
    a, b = os.stat(d / "hard1"), os.stat(d / "hard2")
    assert a.st_ino == b.st_ino
    assert a.st_nlink == b.st_nlink == 2
    assert _read(d / "hard2") == b"linked\n"


@check("read")
def check_tree_symlinks(d: Path) -> None:
    """Symlinks read back their targets and lstat sizes; following them reaches the target."""
    for name, target in [("link", "file"), ("linkdir", "dir"), ("dangling", "nowhere"),
                         ("longlink", tree.LONG_TARGET)]:  # fmt: skip
        assert os.readlink(d / name) == target
        st = os.lstat(d / name)
        assert stat.S_ISLNK(st.st_mode)
        assert st.st_size == len(target)
    assert _read(d / "link") == tree.DATA
    assert sorted(os.listdir(d / "linkdir")) == ["inner", "sub1", "sub2"]


@check("read")
def check_tree_symlink_errors(d: Path) -> None:
    """Following a dangling link gives ENOENT, a loop ELOOP; readlink of a file EINVAL."""
    raises(errno.ENOENT, os.stat, d / "dangling")
    raises(errno.ELOOP, os.stat, d / "loop1")
    raises(errno.ELOOP, os.open, d / "link", os.O_RDONLY | os.O_NOFOLLOW)
    raises(errno.EINVAL, os.readlink, d / "file")


@check("read")
def check_tree_names(d: Path) -> None:
    """A 255-byte name, a multi-byte UTF-8 name and a non-UTF-8 name open; 256 bytes do not."""
    assert _read(d / tree.LONG_NAME) == b"long name\n"
    assert _read(d / tree.UNICODE_NAME) == b"unicode\n"
    assert _read(os.path.join(os.fsencode(d), tree.BYTES_NAME)) == b"bytes\n"
    raises(errno.ENAMETOOLONG, os.stat, d / (tree.LONG_NAME + "n"))


@check("read")
def check_tree_lookup_errors(d: Path) -> None:
    """Lookups fail exactly: ENOENT for a missing name, ENOTDIR through a file."""
    raises(errno.ENOENT, os.stat, d / "missing")
    raises(errno.ENOENT, os.stat, d / "dir" / "missing")
    raises(errno.ENOTDIR, os.stat, d / "file" / "x")
    raises(errno.ENOTDIR, os.open, d / "file", os.O_RDONLY | os.O_DIRECTORY)
    raises(errno.EISDIR, os.open, d / "dir", os.O_WRONLY)


@check("read")
def check_tree_modes(d: Path) -> None:
    """Modes come back exactly: setuid, setgid, none, all; a sticky directory."""
    for name, mode in tree.MODES.items():
        assert oct(os.stat(d / "modes" / name).st_mode) == oct(stat.S_IFREG | mode)
    assert oct(os.stat(d / "sticky").st_mode) == oct(stat.S_IFDIR | tree.STICKY_MODE)


@check("read")
def check_tree_owner(d: Path) -> None:
    """A file's owner and group come back exactly (the tree must be made as root)."""
    st = os.stat(d / "owned")
    if st.st_uid == os.geteuid() != 0:
        pytest.skip("needs root: the reference tree was written without root, owned by its writer")
    assert (st.st_uid, st.st_gid) == tree.OWNER


@check("read")
def check_tree_times(d: Path) -> None:
    """mtime and atime come back exactly; reading a file leaves its atime (relatime, future)."""
    st = os.stat(d / "file")
    assert (st.st_mtime_ns, st.st_atime_ns) == (tree.MTIME * 10**9, tree.ATIME * 10**9)
    _read(d / "file")
    assert os.stat(d / "file").st_atime_ns == tree.ATIME * 10**9
    assert os.stat(d / "dir").st_mtime_ns == tree.DIR_MTIME * 10**9
    assert os.lstat(d / "link").st_mtime_ns == tree.MTIME * 10**9


@check("read")
def check_tree_xattrs(d: Path) -> None:
    """User attributes come back exactly; a file without any lists none; ENODATA for others."""
    assert _user_xattrs(d / "xattrs") == {k.decode(): v for k, v in tree.XATTRS.items()}
    assert _user_xattrs(d / "file") == {}
    raises(errno.ENODATA, os.getxattr, d / "xattrs", "user.missing")


@check("read")
def check_tree_fifo(d: Path) -> None:
    """A FIFO is listed and stat'ed as a FIFO."""
    assert stat.S_ISFIFO(os.lstat(d / "fifo").st_mode)


@check("read")
def check_tree_mmap(d: Path) -> None:
    """A read-only mapping shows the file's bytes exactly."""
    with open(d / "file", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[:] == tree.DATA


@check("read")
def check_tree_seek_end(d: Path) -> None:
    """lseek SEEK_END lands at the size; SEEK_DATA past the end gives ENXIO."""
    fd = os.open(d / "file", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_END) == len(tree.DATA)
        raises(errno.ENXIO, os.lseek, fd, len(tree.DATA) + 1, os.SEEK_DATA)
    finally:
        os.close(fd)


@check("read")
def check_tree_readdir_types(d: Path) -> None:
    """readdir types match lstat for every kind of node in the tree."""
    for entry in os.scandir(d):
        mode = os.lstat(entry.path).st_mode
        assert entry.is_symlink() == stat.S_ISLNK(mode), entry.name
        assert entry.is_dir(follow_symlinks=False) == stat.S_ISDIR(mode), entry.name
        assert entry.is_file(follow_symlinks=False) == stat.S_ISREG(mode), entry.name


@check("readonly")
def check_readonly_erofs(d: Path) -> None:
    """On a read-only mount every write fails with EROFS and nothing changes."""
    raises(errno.EROFS, os.open, d / "file", os.O_WRONLY)
    raises(errno.EROFS, os.open, d / "new", os.O_CREAT | os.O_WRONLY)
    raises(errno.EROFS, os.mkdir, d / "newdir")
    raises(errno.EROFS, os.unlink, d / "file")
    raises(errno.EROFS, os.rmdir, d / "dir" / "sub1")
    raises(errno.EROFS, os.rename, d / "file", d / "renamed")
    raises(errno.EROFS, os.symlink, "x", d / "newlink")
    raises(errno.EROFS, os.link, d / "file", d / "newlink")
    raises(errno.EROFS, os.chmod, d / "file", 0o600)
    raises(errno.EROFS, os.truncate, d / "file", 0)
    raises(errno.EROFS, os.utime, d / "file", ns=(1, 1))
    raises(errno.EROFS, os.setxattr, d / "file", "user.new", b"x")
    assert _read(d / "file") == tree.DATA


@check("readonly")
def check_readonly_statfs(d: Path) -> None:
    """statvfs reports the mount read-only (ST_RDONLY)."""
    assert os.statvfs(d).f_flag & os.ST_RDONLY


@check("read")
def check_tree_read_sizes(d: Path) -> None:
    """Sequential reads of 1, 7, 4096 and 65537 bytes each put the file together exactly."""
    for size in [1, 7, 4096, 65537]:
        fd = os.open(d / "file", os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, size):
                chunks.append(chunk)
        finally:
            os.close(fd)
        assert b"".join(chunks) == tree.DATA, size


@check("read")
def check_tree_large_mmap(d: Path) -> None:
    """A mapping at an offset past 4 GiB shows the bytes there."""
    offset, data = next(iter(tree.LARGE_PIECES.items()))
    with (
        open(d / "large", "rb") as f,
        mmap.mmap(f.fileno(), len(data), prot=mmap.PROT_READ, offset=offset) as m,
    ):
        assert m[:] == data


@check("read")
def check_tree_empty_dirs(d: Path) -> None:
    """An empty directory lists nothing and has nlink 2."""
    for sub in ["sub1", "sub2"]:
        assert os.listdir(d / "dir" / sub) == []
        assert os.stat(d / "dir" / sub).st_nlink == 2


@check("read")
def check_tree_stat_through_link(d: Path) -> None:
    """stat through a symlink is the target's stat; lstat is the link's own inode."""
    target, through, link = os.stat(d / "file"), os.stat(d / "link"), os.lstat(d / "link")
    assert (through.st_ino, through.st_mode, through.st_size) == (
        target.st_ino,
        target.st_mode,
        target.st_size,
    )
    assert link.st_ino != target.st_ino


@check("read")
def check_tree_inode_stable(d: Path) -> None:
    """Inode numbers are the same on every lookup and in readdir; distinct across files."""
    first = {name: os.lstat(d / name).st_ino for name in ["file", "empty", "dir", "link"]}
    again = {e.name: e.inode() for e in os.scandir(d) if e.name in first}
    assert again == first
    assert {name: os.lstat(d / name).st_ino for name in first} == first
    assert len(set(first.values())) == 4


@check("read")
def check_tree_seekdir(d: Path) -> None:
    """seekdir to a position telldir gave resumes listing at the same entry (300 entries)."""
    with DirStream(d / "many") as stream:
        listing = stream.listing()
        assert len(listing) == tree.MANY + 2
        for position, name in listing[::-11]:
            stream.seek(position)
            assert stream.read() == name


@check("read")
def check_tree_fifo_open(d: Path) -> None:
    """A FIFO opens for reading without blocking (O_NONBLOCK) and reads empty: no writer."""
    fd = os.open(d / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 10) == b""
    finally:
        os.close(fd)


@check("read")
def check_tree_permissions(d: Path) -> None:
    """Mode 000 stops another user (EACCES) and not root; mode 777 lets them read."""
    need_root("another user, and root's override")
    assert _read(d / "modes" / "none") == b"none"
    dfd = os.open(d / "modes", os.O_RDONLY | os.O_DIRECTORY)

    def attempt() -> None:
        raises(errno.EACCES, os.open, "none", os.O_RDONLY, dir_fd=dfd)
        assert not os.access("none", os.R_OK, dir_fd=dfd)
        with open(os.open("all", os.O_RDONLY, dir_fd=dfd), "rb") as f:
            assert f.read() == b"all"

    try:
        as_nobody(attempt)
    finally:
        os.close(dfd)


@check("read")
def check_tree_xattr_errors(d: Path) -> None:
    """A symlink lists no user attributes; a dangling link or missing name gives ENOENT."""
    on_link = os.listxattr(d / "link", follow_symlinks=False)
    assert [name for name in on_link if name.startswith("user.")] == []
    raises(errno.ENOENT, os.getxattr, d / "dangling", "user.small")
    raises(errno.ENOENT, os.listxattr, d / "missing")
