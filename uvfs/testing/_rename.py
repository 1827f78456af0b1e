"""Checks on rename: every replacement case, its errors, and renameat2's two flags."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from uvfs.testing._helpers import raises, write_file
from uvfs.testing._registry import check
from uvfs.testing._syscalls import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2


@check("write")
def check_rename_file(d: Path) -> None:
    """A renamed file keeps its inode and data; the old name is gone."""
    write_file(d / "a", b"data")
    ino = os.stat(d / "a").st_ino
    os.rename(d / "a", d / "b")
    assert os.listdir(d) == ["b"]
    assert os.stat(d / "b").st_ino == ino
    assert (d / "b").read_bytes() == b"data"


@check("write")
def check_rename_over_file(d: Path) -> None:
    """Rename over a file replaces it; the replaced file lives on only through an open fd."""
    write_file(d / "a", b"new")
    write_file(d / "b", b"old")
    fd = os.open(d / "b", os.O_RDONLY)
    try:
        os.rename(d / "a", d / "b")
        assert os.listdir(d) == ["b"]
        assert (d / "b").read_bytes() == b"new"
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 10, 0) == b"old"
    finally:
        os.close(fd)


@check("write")
def check_rename_dir_over_empty_dir(d: Path) -> None:
    """A directory renamed over an empty directory replaces it; the parent's nlink drops."""
    (d / "a").mkdir()
    write_file(d / "a" / "f", b"")
    (d / "b").mkdir()
    assert os.stat(d).st_nlink == 4
    os.rename(d / "a", d / "b")
    assert os.listdir(d) == ["b"]
    assert os.listdir(d / "b") == ["f"]
    assert os.stat(d).st_nlink == 3


@check("write")
def check_rename_dir_over_nonempty(d: Path) -> None:
    """A directory renamed over a non-empty directory gives ENOTEMPTY (or EEXIST)."""
    (d / "a").mkdir()
    (d / "b").mkdir()
    write_file(d / "b" / "f", b"")
    raises((errno.ENOTEMPTY, errno.EEXIST), os.rename, d / "a", d / "b")
    assert os.listdir(d / "b") == ["f"]
    assert os.path.isdir(d / "a")


@check("write")
def check_rename_file_over_dir(d: Path) -> None:
    """A file renamed over a directory gives EISDIR."""
    write_file(d / "f", b"")
    (d / "sub").mkdir()
    raises(errno.EISDIR, os.rename, d / "f", d / "sub")
    assert os.path.isfile(d / "f")
    assert os.path.isdir(d / "sub")


@check("write")
def check_rename_dir_over_file(d: Path) -> None:
    """A directory renamed over a file gives ENOTDIR."""
    write_file(d / "f", b"")
    (d / "sub").mkdir()
    raises(errno.ENOTDIR, os.rename, d / "sub", d / "f")
    assert os.path.isfile(d / "f")
    assert os.path.isdir(d / "sub")


@check("write")
def check_rename_into_own_subdir(d: Path) -> None:
    """A directory renamed into itself or its own subdirectory gives EINVAL."""
    (d / "a" / "b" / "c").mkdir(parents=True)
    raises(errno.EINVAL, os.rename, d / "a", d / "a" / "b" / "c" / "a")
    raises(errno.EINVAL, os.rename, d / "a", d / "a" / "x")
    assert os.listdir(d) == ["a"]


@check("write")
def check_rename_same_name(d: Path) -> None:
    """Rename onto itself, or onto another link to the same file, does nothing."""
    write_file(d / "a", b"data")
    os.rename(d / "a", d / "a")
    os.link(d / "a", d / "b")
    os.rename(d / "a", d / "b")
    assert sorted(os.listdir(d)) == ["a", "b"]
    assert os.stat(d / "a").st_nlink == 2


@check("write")
def check_rename_dir_across(d: Path) -> None:
    """A directory moved to another parent: nlinks move along, '..' names the new parent."""
    (d / "p1" / "child").mkdir(parents=True)
    (d / "p2").mkdir()
    write_file(d / "p1" / "child" / "f", b"moved")
    os.rename(d / "p1" / "child", d / "p2" / "child")
    assert os.stat(d / "p1").st_nlink == 2
    assert os.stat(d / "p2").st_nlink == 3
    assert os.stat(d / "p2" / "child" / "..").st_ino == os.stat(d / "p2").st_ino
    assert (d / "p2" / "child" / "f").read_bytes() == b"moved"
    assert os.listdir(d / "p1") == []


@check("write")
def check_rename_symlink(d: Path) -> None:
    """Renaming a symlink moves the link, not its target; renaming over one replaces it."""
    write_file(d / "f", b"target")
    os.symlink("f", d / "link")
    os.rename(d / "link", d / "moved")
    assert os.readlink(d / "moved") == "f"
    write_file(d / "g", b"other")
    os.rename(d / "g", d / "moved")
    assert (d / "moved").read_bytes() == b"other"
    assert (d / "f").read_bytes() == b"target"


@check("write")
def check_rename_open_file(d: Path) -> None:
    """An open file keeps working after its rename into another directory."""
    (d / "sub").mkdir()
    write_file(d / "f", b"")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.rename(d / "f", d / "sub" / "g")
        os.write(fd, b"after")
    finally:
        os.close(fd)
    assert (d / "sub" / "g").read_bytes() == b"after"


@check("write")
def check_rename_noreplace(d: Path) -> None:
    """RENAME_NOREPLACE gives EEXIST onto an existing name and renames onto a free one."""
    write_file(d / "a", b"a")
    write_file(d / "b", b"b")
    raises(errno.EEXIST, renameat2, d / "a", d / "b", RENAME_NOREPLACE)
    assert (d / "b").read_bytes() == b"b"
    renameat2(d / "a", d / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(d)) == ["b", "c"]


@check("write")
def check_rename_exchange(d: Path) -> None:
    """RENAME_EXCHANGE swaps two names atomically, file with file and file with directory."""
    write_file(d / "a", b"a")
    write_file(d / "b", b"b")
    (d / "sub").mkdir()
    ino_a = os.stat(d / "a").st_ino
    renameat2(d / "a", d / "b", RENAME_EXCHANGE)
    assert (d / "a").read_bytes() == b"b"
    assert (d / "b").read_bytes() == b"a"
    assert os.stat(d / "b").st_ino == ino_a
    renameat2(d / "a", d / "sub", RENAME_EXCHANGE)
    assert os.path.isdir(d / "a")
    assert (d / "sub").read_bytes() == b"b"
    raises(errno.ENOENT, renameat2, d / "b", d / "missing", RENAME_EXCHANGE)
    raises(errno.EINVAL, renameat2, d / "a", d / "b", RENAME_EXCHANGE | RENAME_NOREPLACE)


@check("write")
def check_rename_exchange_dirs_across(d: Path) -> None:
    """RENAME_EXCHANGE of directories in two parents swaps their '..' too."""
    (d / "p1" / "x").mkdir(parents=True)
    (d / "p2" / "y" / "z").mkdir(parents=True)
    renameat2(d / "p1" / "x", d / "p2" / "y", RENAME_EXCHANGE)
    assert os.listdir(d / "p1" / "x") == ["z"]
    assert os.stat(d / "p1" / "x" / "..").st_ino == os.stat(d / "p1").st_ino
    assert os.stat(d / "p2" / "y" / "..").st_ino == os.stat(d / "p2").st_ino
    assert os.stat(d / "p1" / "x" / "z" / ".." / "..").st_ino == os.stat(d / "p1").st_ino


@check("write")
def check_rename_open_dir(d: Path) -> None:
    """A directory renamed while open stays usable through its descriptor, openat included."""
    (d / "a").mkdir()
    write_file(d / "a" / "f", b"inside")
    fd = os.open(d / "a", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(d / "a", d / "b")
        assert os.listdir(fd) == ["f"]
        with open(os.open("f", os.O_RDONLY, dir_fd=fd), "rb") as f:
            assert f.read() == b"inside"
        assert os.fstat(fd).st_ino == os.stat(d / "b").st_ino
        os.close(os.open("new", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        assert sorted(os.listdir(d / "b")) == ["f", "new"]
    finally:
        os.close(fd)


@check("write")
def check_link_unlink_rename(d: Path) -> None:
    """link, unlink of the original, then rename of the link keeps one file, nlink 1."""
    write_file(d / "a", b"data")
    ino = os.stat(d / "a").st_ino
    os.link(d / "a", d / "b")
    os.unlink(d / "a")
    os.rename(d / "b", d / "c")
    assert os.listdir(d) == ["c"]
    st = os.stat(d / "c")
    assert (st.st_ino, st.st_nlink) == (ino, 1)
    assert (d / "c").read_bytes() == b"data"


@check("write")
def check_rename_exchange_nlink(d: Path) -> None:
    """RENAME_EXCHANGE of a directory with a file in another parent moves one nlink across."""
    (d / "p1" / "sub").mkdir(parents=True)
    (d / "p2").mkdir()
    write_file(d / "p2" / "f", b"file")
    renameat2(d / "p1" / "sub", d / "p2" / "f", RENAME_EXCHANGE)
    assert os.stat(d / "p1").st_nlink == 2
    assert os.stat(d / "p2").st_nlink == 3
    assert (d / "p1" / "sub").read_bytes() == b"file"
    assert os.stat(d / "p2" / "f" / "..").st_ino == os.stat(d / "p2").st_ino
