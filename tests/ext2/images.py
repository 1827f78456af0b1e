"""Test trees and the ext2/3/4 images mke2fs -d builds from them, shared by the ext2 tests.

`make_tree` writes a tree holding every kind of file the driver must show (holes, a 5 GiB
sparse file, deep and wide directories, long and odd names, all node types, hard links,
32-bit ids, timestamps with nanoseconds, extended attributes and ACLs); `make_image` turns
it into an image with the real mke2fs. Tests then compare the driver's view with the tree.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np

HUGE_FILE = "sparse/huge"  # the 5 GiB sparse file: left out of revision 0 images
HUGE_SIZE = 5 << 30

# Times chosen so that reading the tree (mke2fs -d does) never moves them: atime after
# mtime and ctime, in the future, so relatime leaves it alone; all before 2038, which
# 128-byte inodes cannot pass.
ATIME_NS = 2_100_000_000 * 10**9 + 123_456_789
MTIME_NS = 1_000_000_000 * 10**9 + 987_654_321

# file (relative to the tree) -> attributes set on it
XATTRS: dict[str, dict[str, bytes]] = {
    "files/small": {"user.color": b"blue", "user.empty": b""},
    "files/block": {"user.big": bytes(range(256)) * 2 + bytes(188), "user.other": b"x" * 40},
    "dirs": {"user.dir": b"on a directory"},
}
ROOT_XATTRS: dict[str, dict[str, bytes]] = {
    "files/small": {"trusted.t": b"trusted value", "security.s": b"security value"},
}


def posix_acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL in the kernel's xattr format: version 2, (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


UNDEFINED = 0xFFFFFFFF
ACL_ACCESS = posix_acl((1, 6, UNDEFINED), (2, 4, 1000), (4, 4, UNDEFINED), (0x10, 4, UNDEFINED),
                       (0x20, 0, UNDEFINED))  # fmt: skip
ACL_DEFAULT = posix_acl((1, 7, UNDEFINED), (4, 5, UNDEFINED), (8, 5, 2000), (0x10, 5, UNDEFINED),
                        (0x20, 5, UNDEFINED))  # fmt: skip
ACLS: dict[str, dict[str, bytes]] = {
    "files/acl": {"system.posix_acl_access": ACL_ACCESS},
    "dirs/acl": {"system.posix_acl_default": ACL_DEFAULT},
}

ODD_NAMES = (b"n" * 255, b"with space", "caf\u00e9".encode(), b"\xff\xfe raw", b"-x", b".dot")
FAST_SYMLINK = "links/fast59"
SLOW_SYMLINK = "links/slow60"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _pattern(size: int, seed: int) -> bytes:
    """`size` bytes that differ at every 8, so a misplaced block shows."""
    words = np.arange(-(-size // 8), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return (words + np.uint64(seed)).tobytes()[:size]


def _sparse(path: Path, pieces: list[tuple[int, bytes]], size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)
        f.truncate(size)


def _set_xattrs(path: Path, attrs: dict[str, bytes]) -> None:
    for name, value in attrs.items():
        os.setxattr(path, name, value, follow_symlinks=False)


def make_tree(root: Path, *, huge: bool = True) -> None:
    """Write the test tree under `root` (created). Needs root for devices and ids.

    Args:
        root: the directory to fill.
        huge: include the 5 GiB sparse file `HUGE_FILE` (needs large_file, so not for
            revision 0 images).
    """
    root.mkdir(parents=True, exist_ok=True)
    files = root / "files"
    _write(files / "empty", b"")
    _write(files / "small", b"hello, ext2\n")
    for size in (1023, 1024, 1025, 2048, 4095, 4096, 4097, 65536 + 3):
        _write(files / f"size{size}", _pattern(size, size))
    _write(files / "block", _pattern(300 * 1024 + 17, 7))  # double indirect at 1 KiB
    _write(files / "acl", b"acl\n")
    # 40 islands of data: 40 extents (a depth-1 tree), holes in every indirect level.
    _sparse(
        root / "sparse/islands",
        [(i * (1 << 20) + i * 333, _pattern(5000, i)) for i in range(40)],
        41 << 20,
    )
    _sparse(root / "sparse/hole_at_end", [(0, b"start")], 3 << 20)
    _sparse(root / "sparse/all_hole", [], 1 << 20)
    if huge:
        _sparse(
            root / HUGE_FILE,
            [(0, b"head"), ((4 << 30) + 12345, _pattern(9000, 3)), (HUGE_SIZE - 4, b"tail")],
            HUGE_SIZE,
        )

    dirs = root / "dirs"
    deep = dirs / "deep"
    for level in range(24):
        deep = deep / f"level{level}"
    deep.mkdir(parents=True)
    _write(deep / "bottom", b"deep down\n")
    wide = dirs / "wide"
    wide.mkdir()
    for i in range(600):
        (wide / f"entry-{i:04d}-{'x' * (i % 50)}").write_bytes(b"%d\n" % i)
    (dirs / "acl").mkdir()
    (dirs / "empty").mkdir()
    names = root / "names"
    names.mkdir()
    for name in ODD_NAMES:
        (names / os.fsdecode(name)).write_bytes(name)

    links = root / "links"
    links.mkdir()
    os.symlink("../files/small", links / "rel")
    os.symlink("/abs/target/that/does/not/exist", links / "dangling")
    os.symlink("t" * 59, root / FAST_SYMLINK)
    os.symlink("t" * 60, root / SLOW_SYMLINK)
    os.symlink("/".join(["dir"] * 200), links / "slow800")
    os.link(files / "small", links / "hard1")
    os.link(files / "small", dirs / "hard2")

    nodes = root / "nodes"
    nodes.mkdir()
    os.mkfifo(nodes / "fifo")
    os.mknod(nodes / "socket", stat.S_IFSOCK | 0o600)
    os.mknod(nodes / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # old encoding
    os.mknod(nodes / "loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.mknod(nodes / "wide_dev", stat.S_IFCHR | 0o600, os.makedev(300, 70000))  # new

    perms = root / "perms"
    perms.mkdir()
    for mode in (0o4755, 0o2750, 0o1777, 0o000, 0o640):
        (perms / f"mode{mode:o}").write_bytes(b"")
        os.chmod(perms / f"mode{mode:o}", mode)
    (perms / "ids").write_bytes(b"")
    os.chown(perms / "ids", 100_000, 70_000)  # needs the 32-bit uid/gid halves
    os.lchown(links / "rel", 1000, 1000)

    try:
        for rel, attrs in XATTRS.items():
            _set_xattrs(root / rel, attrs)
        for rel, attrs in [*ROOT_XATTRS.items(), *ACLS.items()]:
            _set_xattrs(root / rel, attrs)
    except OSError as e:
        if e.errno != errno.ENOTSUP:
            raise  # a tree on a filesystem without xattrs: the images have none either

    # Times last: everything above changed the directories' times.
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames, "."]:
            os.utime(Path(dirpath) / name, ns=(ATIME_NS, MTIME_NS), follow_symlinks=False)


def make_image(
    tree: Path,
    image: Path,
    *,
    fstype: str,
    block_size: int,
    revision: int,
    filetype: bool,
    size_mb: int,
    extra: tuple[str, ...] = (),
) -> None:
    """Build `image` from `tree` with ``mke2fs -d``.

    Args:
        tree: made by `make_tree`.
        image: the image file to create.
        fstype: "ext2", "ext3" or "ext4".
        block_size: 1024, 2048, 4096 or 65536.
        revision: 0 or 1 (0 has no features at all: `tree` must lack `HUGE_FILE`).
        filetype: keep the filetype feature (revision 1 only).
        size_mb: the image's size.
        extra: more mke2fs arguments (-O meta_bg, -I 128 ...).
    """
    features = [] if filetype or revision == 0 else ["-O", "^filetype"]
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", fstype, "-b", str(block_size), "-r", str(revision),
         *features, *extra, "-d", str(tree), str(image), f"{size_mb}M"],
        check=True, capture_output=True,
    )  # fmt: skip


def debugfs(image: Path, request: str, *flags: str) -> str:
    """Run one debugfs request on `image` and return what it printed."""
    done = subprocess.run(
        ["debugfs", *flags, "-R", request, str(image)], check=True, capture_output=True
    )
    return done.stdout.decode("utf-8", "surrogateescape")


def debugfs_w(image: Path, *requests: str) -> None:
    """Run debugfs requests that change `image`; any complaint fails the test."""
    done = subprocess.run(
        ["debugfs", "-w", "-f", "-", str(image)],
        input="\n".join(requests) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    errors = [ln for ln in done.stderr.splitlines() if ln and not ln.startswith("debugfs 1.")]
    assert not errors, errors
