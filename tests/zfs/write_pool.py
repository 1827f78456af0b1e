"""The pool the write tests share: zfs-fuse-made, with a dataset per compression it writes
(lzjb, gzip-1, gzip-9, zle), files of every kind of content, and files deleted afterwards
so its space maps log frees as well as allocations."""

from __future__ import annotations

import random
from pathlib import Path

from zfsfuse import PoolRecord, ZfsFuse

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


def grow_pool(zfs_pool, zfs_fuse: ZfsFuse) -> PoolRecord:  # type: ignore[no-untyped-def]
    """The pool the file and namespace tests share (built once per session): ORIGINAL's
    files, "c" with lzjb, 16K records and the snapshot c@s1, exported."""
    pool_name = "pgrow"

    def populate(root: Path) -> dict[str, bytes]:
        zfs_fuse.run("zfs", "create", "-o", "compression=lzjb", "-o", "recordsize=16K",
                     f"{pool_name}/c")  # fmt: skip
        for path, data in ORIGINAL.items():
            (root / path).write_bytes(data)
        zfs_fuse.run("zfs", "snapshot", f"{pool_name}/c@s1")
        return dict(ORIGINAL)

    record = zfs_pool("grow", [("disk", 1)], {}, populate)
    assert record.name == pool_name
    return record
