"""Checks on directories: mkdir and rmdir, nlink, readdir contents and readdir under change."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from uvfs.testing._helpers import current_umask, raises, write_file
from uvfs.testing._registry import check
from uvfs.testing._syscalls import DirStream


@check("write")
def check_mkdir_rmdir(d: Path) -> None:
    """mkdir makes an empty directory of the mode asked; rmdir removes it."""
    os.mkdir(d / "sub", 0o751)
    st = os.stat(d / "sub")
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o751 & ~current_umask()
    assert os.listdir(d / "sub") == []
    os.rmdir(d / "sub")
    assert os.listdir(d) == []


@check("write")
def check_mkdir_existing(d: Path) -> None:
    """mkdir over a directory, a file or a symlink gives EEXIST."""
    (d / "sub").mkdir()
    write_file(d / "f", b"")
    os.symlink("nowhere", d / "link")
    for name in ["sub", "f", "link"]:
        raises(errno.EEXIST, os.mkdir, d / name)


@check("write")
def check_rmdir_errors(d: Path) -> None:
    """rmdir: ENOTEMPTY on a non-empty directory, ENOTDIR on a file or symlink to a directory."""
    (d / "full").mkdir()
    write_file(d / "full" / "f", b"")
    write_file(d / "f", b"")
    os.symlink("full", d / "link")
    raises(errno.ENOTEMPTY, os.rmdir, d / "full")
    raises(errno.ENOTDIR, os.rmdir, d / "f")
    raises(errno.ENOTDIR, os.rmdir, d / "link")
    assert sorted(os.listdir(d)) == ["f", "full", "link"]


@check("write")
def check_unlink_dir(d: Path) -> None:
    """unlink of a directory gives EISDIR and keeps it."""
    (d / "sub").mkdir()
    raises(errno.EISDIR, os.unlink, d / "sub")
    assert os.path.isdir(d / "sub")


@check("write")
def check_dir_nlink(d: Path) -> None:
    """A directory's nlink is 2 plus its subdirectories; files do not count."""
    (d / "top").mkdir()
    assert os.stat(d / "top").st_nlink == 2
    for i in range(3):
        (d / "top" / f"sub{i}").mkdir()
    write_file(d / "top" / "f", b"")
    assert os.stat(d / "top").st_nlink == 5
    assert os.stat(d / "top" / "sub0").st_nlink == 2
    os.rmdir(d / "top" / "sub1")
    assert os.stat(d / "top").st_nlink == 4


@check("write")
def check_readdir_types(d: Path) -> None:
    """readdir gives each entry's type and inode number as stat does."""
    write_file(d / "f", b"")
    (d / "sub").mkdir()
    os.symlink("f", d / "link")
    os.mkfifo(d / "fifo")
    seen = {e.name: e for e in os.scandir(d)}
    assert sorted(seen) == ["f", "fifo", "link", "sub"]
    assert seen["f"].is_file(follow_symlinks=False)
    assert seen["sub"].is_dir(follow_symlinks=False)
    assert seen["link"].is_symlink()
    assert stat.S_ISFIFO(seen["fifo"].stat(follow_symlinks=False).st_mode)
    for name, entry in seen.items():
        assert entry.inode() == os.lstat(d / name).st_ino


@check("write")
def check_readdir_large(d: Path) -> None:
    """A directory of 1000 entries lists each exactly once."""
    names = {f"entry-{i:05d}-{'x' * (i % 50)}" for i in range(1000)}
    for name in names:
        os.close(os.open(d / name, os.O_CREAT | os.O_WRONLY, 0o644))
    listed = os.listdir(d)
    assert len(listed) == len(names)
    assert set(listed) == names


def _changing_listing(d: Path, remove: bool) -> tuple[list[str], set[str]]:
    """List `d` while it changes: after 600 of 1500 entries, 200 come (and some go).

    The names are long enough that a listing takes several getdents calls (glibc reads
    32 KiB at a time, FUSE a page), so the change lands between two of them. Returns
    the names seen and the names present both before and after (unchanged).
    """
    names = [f"name-{i:04d}-{'x' * 40}" for i in range(1500)]
    for name in names:
        os.close(os.open(d / name, os.O_CREAT | os.O_WRONLY, 0o644))
    changed = set(names[::7]) if remove else set()
    seen: list[str] = []
    with os.scandir(d) as it:
        for i, entry in enumerate(it):
            seen.append(entry.name)
            if i == 600:
                for j in range(200):
                    os.close(os.open(d / f"new-{j:04d}", os.O_CREAT | os.O_WRONLY, 0o644))
                for name in changed:
                    os.unlink(d / name)
    return seen, set(names) - changed


@check("write")
def check_readdir_while_adding(d: Path) -> None:
    """Entries added during readdir: every unchanged name is seen once, nothing unknown is."""
    seen, unchanged = _changing_listing(d, remove=False)
    counts = {name: seen.count(name) for name in unchanged}
    assert {n: c for n, c in counts.items() if c != 1} == {}
    assert set(seen) - unchanged <= {f"new-{j:04d}" for j in range(200)}
    assert len(seen) == len(set(seen)), "a name was listed twice"


@check("write")
def check_readdir_while_removing(d: Path) -> None:
    """Entries added and removed during readdir: every unchanged name is seen exactly once."""
    seen, unchanged = _changing_listing(d, remove=True)
    counts = {name: seen.count(name) for name in unchanged}
    assert {n: c for n, c in counts.items() if c != 1} == {}
    assert len(seen) == len(set(seen)), "a name was listed twice"


@check("write")
def check_readdir_sees_create(d: Path) -> None:
    """A name created after one listing is in the next listing through the same fd."""
    write_file(d / "a", b"")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.listdir(fd) == ["a"]
        write_file(d / "b", b"")
        assert sorted(os.listdir(fd)) == ["a", "b"]
        os.unlink(d / "a")
        assert os.listdir(fd) == ["b"]
    finally:
        os.close(fd)


@check("write")
def check_removed_open_dir(d: Path) -> None:
    """A removed directory still open lists empty and refuses new entries (ENOENT)."""
    (d / "sub").mkdir()
    fd = os.open(d / "sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(d / "sub")
        assert os.listdir(fd) == []
        assert os.fstat(fd).st_nlink == 0
        raises(errno.ENOENT, os.open, "f", os.O_CREAT | os.O_WRONLY, dir_fd=fd)
    finally:
        os.close(fd)


@check("write")
def check_at_calls(d: Path) -> None:
    """openat, mkdirat, fstatat, renameat and unlinkat work relative to a directory fd."""
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkdir("sub", dir_fd=dfd)
        fd = os.open("sub/f", os.O_CREAT | os.O_WRONLY, 0o640, dir_fd=dfd)
        os.write(fd, b"at")
        os.close(fd)
        assert os.stat("sub/f", dir_fd=dfd).st_size == 2
        os.rename("sub/f", "g", src_dir_fd=dfd, dst_dir_fd=dfd)
        os.unlink("g", dir_fd=dfd)
        os.rmdir("sub", dir_fd=dfd)
    finally:
        os.close(dfd)
    assert os.listdir(d) == []


@check("write")
def check_remove_tree(d: Path) -> None:
    """A tree of directories and files is removed bottom-up, leaving the parent empty."""
    for i in range(5):
        for j in range(5):
            (d / f"a{i}" / f"b{j}").mkdir(parents=True)
            write_file(d / f"a{i}" / f"b{j}" / "f", b"x" * 5000)
    for dirpath, dirnames, filenames in os.walk(d, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            os.rmdir(os.path.join(dirpath, name))
    assert os.listdir(d) == []
    assert os.stat(d).st_nlink == 2


@check("write")
def check_readdir_each_create(d: Path) -> None:
    """After each of 110 creations (40-byte names, past one page) a listing is exact."""
    names: set[str] = set()
    for i in range(110):
        name = f"file{i:036x}"
        os.close(os.open(d / name, os.O_CREAT | os.O_WRONLY, 0o644))
        names.add(name)
        listed = os.listdir(d)
        assert len(listed) == len(names)
        assert set(listed) == names


@check("write")
def check_readdir_seek(d: Path) -> None:
    """seekdir to a position telldir gave resumes the listing at the same entry."""
    for i in range(300):
        os.close(os.open(d / f"entry-{i:04d}-{'y' * 30}", os.O_CREAT | os.O_WRONLY, 0o644))
    with DirStream(d) as stream:
        listing = stream.listing()
        assert sorted(n for _, n in listing if n not in (b".", b"..")) == sorted(
            f"entry-{i:04d}-{'y' * 30}".encode() for i in range(300)
        )
        for position, name in listing[::-7] + listing[:3]:
            stream.seek(position)
            assert stream.read() == name
