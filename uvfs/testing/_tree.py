"""The reference tree: known content the read checks compare a mount with exactly.

`make_tree(root)` writes it (``python -m uvfs.testing --make-tree DIR``); a test builds an
image from it (``mke2fs -d DIR``, or a copy into a zfs-fuse pool) and runs the kit with
``--ro`` on the mount. Run it as root: one file belongs to uid/gid 1234/5678.

Times are whole seconds before 2038, so an ext2/3/4 image with 128-byte inodes keeps
them; atime lies after mtime and in the future, so reading the tree (mke2fs -d does)
never moves it under relatime.
"""

from __future__ import annotations

import os
from pathlib import Path

from uvfs.testing._helpers import pattern, write_file

MTIME = 1_000_000_000  # 2001-09-09
ATIME = 2_000_000_000  # 2033-05-18
DIR_MTIME = 1_100_000_000

DATA = pattern(10_000, seed=1)  # "file": crosses block boundaries of every size
SPARSE_SIZE = 3 << 20
SPARSE_PIECES = {1 << 20: pattern(5000, seed=2), (3 << 20) - 10: b"end-of-it!"}
LARGE_SIZE = (5 << 30) + 7
LARGE_PIECES = {(4 << 30) + (1 << 20): pattern(4096, seed=3), LARGE_SIZE - 7: b"the end"}
# Small enough for one 1 KiB block: mke2fs -d of a small image keeps them all.
XATTRS = {b"user.small": b"v", b"user.empty": b"", b"user.big": pattern(600, seed=4)}
LONG_NAME = "n" * 255
UNICODE_NAME = "ünïcødé-名前-\U0001f600"
BYTES_NAME = b"raw-\xff\xfe\x01-name"
LONG_TARGET = "t" * 300 + "/dangling"  # longer than the 60 bytes ext2 keeps in the inode
MANY = 300
MODES = {"setuid": 0o4755, "setgid": 0o2711, "none": 0o000, "all": 0o777}
STICKY_MODE = 0o1777
OWNER = (1234, 5678)

# Every name in the tree's root, for the exact listing (BYTES_NAME is bytes).
ROOT_NAMES = {
    b"file", b"empty", b"sparse", b"large", b"dir", b"many", b"hard1", b"hard2", b"link",
    b"linkdir", b"dangling", b"loop1", b"loop2", b"longlink", b"modes", b"sticky",
    b"owned", b"xattrs", b"fifo", LONG_NAME.encode(), UNICODE_NAME.encode(), BYTES_NAME,
}  # fmt: skip


def _sparse(path: Path, size: int, pieces: dict[int, bytes]) -> None:
    with open(path, "wb") as f:
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
        f.truncate(size)


def make_tree(root: Path, *, xattrs: bool = True) -> None:
    """Write the reference tree into `root` (created; it must not exist yet).

    Without `xattrs` the file ``xattrs`` carries none, for image builders that cannot
    store them (zfs-fuse); the ``tree_xattrs`` check then fails on the result, as it should.
    """
    root.mkdir()
    write_file(root / "file", DATA)
    write_file(root / "empty", b"")
    _sparse(root / "sparse", SPARSE_SIZE, SPARSE_PIECES)
    _sparse(root / "large", LARGE_SIZE, LARGE_PIECES)
    (root / "dir").mkdir()
    (root / "dir" / "sub1").mkdir()
    (root / "dir" / "sub2").mkdir()
    write_file(root / "dir" / "inner", b"inner\n")
    (root / "many").mkdir()
    for i in range(MANY):
        write_file(root / "many" / f"entry-{i:04d}", str(i).encode())
    write_file(root / "hard1", b"linked\n")
    os.link(root / "hard1", root / "hard2")
    os.symlink("file", root / "link")
    os.symlink("dir", root / "linkdir")
    os.symlink("nowhere", root / "dangling")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink(LONG_TARGET, root / "longlink")
    (root / "modes").mkdir()
    for name, mode in MODES.items():
        write_file(root / "modes" / name, name.encode())
        os.chmod(root / "modes" / name, mode)
    (root / "sticky").mkdir()
    os.chmod(root / "sticky", STICKY_MODE)
    write_file(root / "owned", b"owned\n")
    if os.geteuid() == 0:
        os.chown(root / "owned", *OWNER)
    write_file(root / "xattrs", b"xattrs\n")
    for name, value in XATTRS.items() if xattrs else ():
        os.setxattr(root / "xattrs", name, value)
    os.mkfifo(root / "fifo")
    write_file(root / LONG_NAME, b"long name\n")
    write_file(root / UNICODE_NAME, b"unicode\n")
    write_file(os.path.join(os.fsencode(root), BYTES_NAME), b"bytes\n")
    # Times last, deepest first: every creation above moved its directory's mtime.
    for path in sorted(_walk(os.fsencode(root)), key=len, reverse=True):
        is_dir = os.path.isdir(path) and not os.path.islink(path)
        os.utime(path, (ATIME, DIR_MTIME if is_dir else MTIME), follow_symlinks=False)


def _walk(root: bytes) -> list[bytes]:
    out = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.join(dirpath, name) for name in dirnames + filenames]
    return out
