"""Checks on hard links (nlink, shared data) and symbolic links (readlink, dangling, loops)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from uvfs.testing._helpers import raises, write_file
from uvfs.testing._registry import check


@check("write")
def check_hard_link(d: Path) -> None:
    """A hard link shares inode and data: nlink 2, a write through one shows through the other."""
    write_file(d / "a", b"shared")
    os.link(d / "a", d / "b")
    a, b = os.stat(d / "a"), os.stat(d / "b")
    assert a.st_ino == b.st_ino
    assert a.st_nlink == b.st_nlink == 2
    with open(d / "b", "r+b") as f:
        f.write(b"SHARED")
    assert (d / "a").read_bytes() == b"SHARED"


@check("write")
def check_unlink_one_link(d: Path) -> None:
    """Unlinking one of two links leaves the other with nlink 1 and the data."""
    write_file(d / "a", b"data")
    os.link(d / "a", d / "b")
    os.unlink(d / "a")
    assert os.stat(d / "b").st_nlink == 1
    assert (d / "b").read_bytes() == b"data"
    assert os.listdir(d) == ["b"]


@check("write")
def check_many_links(d: Path) -> None:
    """Twenty links across two directories count twenty; unlinking counts down."""
    (d / "other").mkdir()
    write_file(d / "f", b"x")
    for i in range(19):
        os.link(d / "f", d / ("other" if i % 2 else ".") / f"l{i}")
    assert os.stat(d / "f").st_nlink == 20
    for i in range(10):
        os.unlink(d / ("other" if i % 2 else ".") / f"l{i}")
    assert os.stat(d / "f").st_nlink == 10


@check("write")
def check_link_errors(d: Path) -> None:
    """link: EPERM for a directory, EEXIST onto an existing name, ENOENT from a missing one."""
    (d / "sub").mkdir()
    write_file(d / "f", b"")
    write_file(d / "g", b"")
    raises(errno.EPERM, os.link, d / "sub", d / "sublink")
    raises(errno.EEXIST, os.link, d / "f", d / "g")
    raises(errno.EEXIST, os.link, d / "f", d / "sub")
    raises(errno.ENOENT, os.link, d / "missing", d / "new")
    assert sorted(os.listdir(d)) == ["f", "g", "sub"]
    assert os.stat(d / "f").st_nlink == 1


@check("write")
def check_link_to_symlink(d: Path) -> None:
    """A hard link made without following a symlink links the symlink itself."""
    os.symlink("target", d / "sym")
    os.link(d / "sym", d / "sym2", follow_symlinks=False)
    assert os.readlink(d / "sym2") == "target"
    assert os.lstat(d / "sym").st_nlink == 2


@check("write")
def check_symlink_readlink(d: Path) -> None:
    """readlink returns the target byte for byte; lstat shows a link of that size."""
    for name, target in [("rel", "some/relative/../path"), ("abs", "/an/absolute/path"),
                         ("bytes", "\udcff-raw-\u00e9")]:  # fmt: skip
        os.symlink(target, d / name)
        assert os.readlink(d / name) == target
        st = os.lstat(d / name)
        assert stat.S_ISLNK(st.st_mode)
        assert st.st_size == len(os.fsencode(target))


@check("write")
def check_symlink_long(d: Path) -> None:
    """Targets of 59 to 61 bytes (ext2 keeps 60 in the inode), 1000 and 4095 round-trip."""
    for size in [59, 60, 61, 1000, 4095]:
        target = ("abcdefg/" * 600)[:size]
        os.symlink(target, d / f"l{size}")
        assert os.readlink(d / f"l{size}") == target
        assert os.lstat(d / f"l{size}").st_size == size


@check("write")
def check_symlink_follow(d: Path) -> None:
    """A symlink to a file reads the file; to a directory lists it; relative to the link."""
    (d / "dir").mkdir()
    write_file(d / "dir" / "f", b"through")
    os.symlink("dir", d / "dirlink")
    os.symlink("../dir/f", d / "dir" / "up")
    assert (d / "dirlink" / "f").read_bytes() == b"through"
    assert sorted(os.listdir(d / "dirlink")) == ["f", "up"]
    assert (d / "dir" / "up").read_bytes() == b"through"
    assert os.stat(d / "dirlink").st_ino == os.stat(d / "dir").st_ino


@check("write")
def check_symlink_dangling(d: Path) -> None:
    """A dangling symlink: lstat succeeds, stat and open give ENOENT, open(O_CREAT) creates."""
    os.symlink("target", d / "link")
    assert stat.S_ISLNK(os.lstat(d / "link").st_mode)
    raises(errno.ENOENT, os.stat, d / "link")
    raises(errno.ENOENT, os.open, d / "link", os.O_RDONLY)
    os.close(os.open(d / "link", os.O_CREAT | os.O_WRONLY, 0o644))
    assert stat.S_ISREG(os.lstat(d / "target").st_mode)


@check("write")
def check_symlink_loop(d: Path) -> None:
    """Symlinks that loop give ELOOP when followed; O_NOFOLLOW on a symlink gives ELOOP."""
    os.symlink("b", d / "a")
    os.symlink("a", d / "b")
    os.symlink("self", d / "self")
    raises(errno.ELOOP, os.stat, d / "a")
    raises(errno.ELOOP, os.stat, d / "self")
    raises(errno.ELOOP, os.open, d / "a", os.O_RDONLY)
    write_file(d / "f", b"")
    os.symlink("f", d / "ok")
    raises(errno.ELOOP, os.open, d / "ok", os.O_RDONLY | os.O_NOFOLLOW)


@check("write")
def check_symlink_errors(d: Path) -> None:
    """symlink onto an existing name gives EEXIST; readlink of a non-link gives EINVAL."""
    write_file(d / "f", b"")
    raises(errno.EEXIST, os.symlink, "x", d / "f")
    raises(errno.EINVAL, os.readlink, d / "f")
    raises(errno.EINVAL, os.readlink, d)
    raises(errno.ENOENT, os.readlink, d / "missing")


@check("write")
def check_unlink_symlink(d: Path) -> None:
    """Unlinking a symlink removes the link, not its target."""
    write_file(d / "f", b"kept")
    os.symlink("f", d / "link")
    os.unlink(d / "link")
    assert os.listdir(d) == ["f"]
    assert (d / "f").read_bytes() == b"kept"


@check("write")
def check_symlink_times_nofollow(d: Path) -> None:
    """utimensat with AT_SYMLINK_NOFOLLOW sets the link's times and leaves the target's."""
    write_file(d / "f", b"")
    os.utime(d / "f", ns=(10**18, 10**18))
    os.symlink("f", d / "link")
    os.utime(d / "link", ns=(5 * 10**17, 6 * 10**17), follow_symlinks=False)
    assert os.lstat(d / "link").st_mtime_ns == 6 * 10**17
    assert os.lstat(d / "link").st_atime_ns == 5 * 10**17
    assert os.stat(d / "f").st_mtime_ns == 10**18
