"""What the write tests share: the pools (zfs-fuse-made) and the oracles' helpers.

`write_pool` has a dataset per compression zfs-fuse writes (lzjb, gzip-1, gzip-9, zle),
files of every kind of content, and files deleted afterwards so its space maps log frees
as well as allocations; `grow_pool` small files to grow, shrink, create and remove beside
a dataset with a snapshot. `copy_pool` gives a test its own copy of a pool's vdevs."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from zfsfuse import PoolRecord, ZfsFuse, walk_pool

from uvfs_fs.zfs.acl import trivial_acl, trivial_acl_flags
from uvfs_fs.zfs.dnode import DMU_OT_ZNODE, DNODE_MIN_SIZE, DnodePhys, parse_dnode
from uvfs_fs.zfs.spa import Pool
from uvfs_fs.zfs.znode import Znode, parse_znode_phys, znode_owner_ids

COMPRESSIONS = ("lzjb", "gzip-1", "gzip-9", "zle")


def write_pool(zfs_pool, zfs_fuse: ZfsFuse) -> PoolRecord:  # type: ignore[no-untyped-def]
    """The shared pool (built once per session), exported; ``files`` maps dataset/name to
    the contents of the files left."""

    def populate(root: Path) -> dict[str, bytes]:
        rng = random.Random(15)
        files: dict[str, bytes] = {}
        for comp in COMPRESSIONS:
            zfs_fuse.run("zfs", "create", "-o", f"compression={comp}", f"pwrite/{comp}")
            contents = {
                "text": b"".join(b"line %d of %s\n" % (i, comp.encode()) for i in range(6000)),
                "zeros": bytes(3000) + b"x" * 3000 + bytes(150_000),
                "random": rng.randbytes(200_000),
                "small": b"hello " * 10,
            }
            contents |= {f"f{i}": rng.randbytes(7000 * i) for i in range(12)}
            for name, data in contents.items():
                (root / comp / name).write_bytes(data)
            for i in range(0, 12, 3):
                (root / comp / f"f{i}").unlink()
                del contents[f"f{i}"]
            files |= {f"{comp}/{name}": data for name, data in contents.items()}
        return files

    return zfs_pool("write", [("disk", 1)], {}, populate)


RNG = random.Random(21)
TEXT = b"".join(b"text line %6d\n" % i for i in range(8000))  # 120 KB, compresses
# Root dataset: no compression, recordsize 128K. "c": lzjb, recordsize 16K, snapshot c@s1.
ORIGINAL = {
    "small": RNG.randbytes(1000),  # one 1024-byte block
    "tiny": RNG.randbytes(700),
    "record": RNG.randbytes(128 * 1024),  # one whole record
    "three": RNG.randbytes(3 * 128 * 1024 + 5),
    "gone": RNG.randbytes(300_000),
    "sparse": RNG.randbytes(100),
    "odd": RNG.randbytes(3000),  # one 3072-byte block
    "c/text": TEXT,
    "c/cut": TEXT[:50_000],
    "c/mid": TEXT[:20_000],
}
# Names of 50 bytes or more make zfs-fuse upgrade the directory to a fat ZAP (one leaf).
ORIGINAL |= {f"fat/{i:02}{'l' * 58}": RNG.randbytes(10 * i + 1) for i in range(40)}


def grow_pool(zfs_pool, zfs_fuse: ZfsFuse) -> PoolRecord:  # type: ignore[no-untyped-def]
    """The pool the file and namespace tests share (built once per session): ORIGINAL's
    files (a fat ZAP directory "fat" among them), "c" with lzjb, 16K records and the
    snapshot c@s1, exported."""
    pool_name = "pgrow"

    def populate(root: Path) -> dict[str, bytes]:
        zfs_fuse.run("zfs", "create", "-o", "compression=lzjb", "-o", "recordsize=16K",
                     f"{pool_name}/c")  # fmt: skip
        (root / "fat").mkdir()
        for path, data in ORIGINAL.items():
            (root / path).write_bytes(data)
        zfs_fuse.run("zfs", "snapshot", f"{pool_name}/c@s1")
        return dict(ORIGINAL)

    record = zfs_pool("grow", [("disk", 1)], {}, populate)
    assert record.name == pool_name
    return record


def copy_pool(record: PoolRecord, dest: Path) -> list[Path]:
    """A private copy of the pool's vdevs (the built pool is shared)."""
    dest.mkdir()
    out = []
    for vdev in record.vdevs:
        subprocess.run(["cp", "--sparse=always", str(vdev), str(dest)], check=True)
        out.append(dest / vdev.name)
    return out


def scrub_clean(
    daemon: ZfsFuse, directory: Path, pool: str, look: Callable[[], None] = lambda: None
) -> str:
    """Import `pool` from `directory`, call `look` (it may read the mounted datasets),
    scrub to the end, export; zpool status after the scrub."""
    daemon.run("zpool", "import", "-d", str(directory), pool)
    try:
        look()
        daemon.run("zpool", "scrub", pool)
        for _ in range(600):
            status = daemon.run("zpool", "status", "-v", pool)
            if "in progress" not in status:
                break
            time.sleep(0.1)
        return status
    finally:
        daemon.export(pool)


def destroy(daemon: ZfsFuse, dataset: str) -> None:
    """zfs destroy, waiting out a mount the kernel still holds for a moment."""
    daemon.run_until_not_busy("zfs", "destroy", dataset)


async def user_usage(pool: Pool) -> dict[int, int]:
    """Per dataset object: what its user and group usage must say for uid/gid 0 (every
    file here is root's): a dnode and its dn_used bytes per object with a znode."""
    out: dict[int, int] = {}
    async for objset, dn in dataset_dnodes(pool):
        if znode_owner_ids(dn) == (0, 0):
            out[objset] = out.get(objset, 0) + DNODE_MIN_SIZE + dn.used_bytes
    return out


async def dataset_dnodes(pool: Pool) -> AsyncIterator[tuple[int, DnodePhys]]:
    """(dataset object, dnode) for every dnode slot of every dataset in `pool`."""
    async for v in walk_pool(pool):
        if v.objset and v.object == 0 and v.level == 0:
            for at in range(0, len(v.data), DNODE_MIN_SIZE):
                yield v.objset, parse_dnode(v.data[at:], v.bp.byteorder)


async def znodes_with_their_acls(pool: Pool) -> AsyncIterator[tuple[DnodePhys, Znode]]:
    """Every dnode of `pool` holding a znode, with its znode, each asserted to carry the
    ACL and ACL flags acl.py derives from its mode (as zfs_mknode and zfs_setattr write)."""
    async for _, dn in dataset_dnodes(pool):
        if dn.dn_bonustype == DMU_OT_ZNODE:
            z = parse_znode_phys(dn.dn_bonus, dn.byteorder)
            assert dn.dn_bonus[176:264] == trivial_acl(z.mode, dn.byteorder)
            assert z.flags == trivial_acl_flags(z.mode, stat.S_ISDIR(z.mode))
            yield dn, z


def tree_view(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path below `root`: (mode, size, nlink, sha256 of a file's contents)."""
    out: dict[str, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if name in files else None
            out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_nlink, digest)
    return out
