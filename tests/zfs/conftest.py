"""ZFS test fixtures: one private zfs-fuse daemon per session, pools built once and shared."""

from __future__ import annotations

import bz2
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from zfsfuse import PoolRecord, ZfsFuse, available, build_pool

TESTDATA = Path("/work/shared/testdata/zfs")


@pytest.fixture(scope="session")
def zfs_fuse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZfsFuse]:
    """A running zfs-fuse daemon in its own mount namespace, stopped at session end."""
    reason = available()
    if reason:
        pytest.skip(reason)
    daemon = ZfsFuse(tmp_path_factory.mktemp("zfs-fuse"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


PoolFactory = Callable[..., PoolRecord]


@pytest.fixture(scope="session")
def zfs_pool(zfs_fuse: ZfsFuse, tmp_path_factory: pytest.TempPathFactory) -> PoolFactory:
    """Build a pool once per session per `key`: ``zfs_pool(key, layout, props, populate)``.

    The arguments after `key` are those of `zfsfuse.build_pool` (name and directory are
    chosen here); a second call with the same key returns the first record, so tests
    that only read share pools.
    """
    built: dict[str, PoolRecord] = {}

    def make(
        key: str,
        layout: Sequence[tuple[str, int]],
        properties: dict[str, str] | None = None,
        populate: Callable[[Path], dict[str, bytes] | None] | None = None,
        **kwargs: int,
    ) -> PoolRecord:
        if key not in built:
            directory = tmp_path_factory.mktemp(f"pool-{key}")
            name = "p" + "".join(c for c in key if c.isalnum())[:20]
            built[key] = build_pool(
                zfs_fuse, directory, name, layout, properties, populate, **kwargs
            )
        return built[key]

    return make


def unpack_testdata(archive: str, dest: Path) -> list[Path]:
    """Unpack one of the shared real-world images into `dest`; the vdev files it holds.

    Skips the test, saying why, when the shared folder or the archive is absent.
    """
    src = TESTDATA / archive
    if not src.exists():
        pytest.skip(f"{src} is absent (shared ZFS test images not installed)")
    dest.mkdir(parents=True, exist_ok=True)
    if archive.endswith(".dat.bz2"):
        out = dest / archive[: -len(".bz2")]
        with bz2.open(src) as f, open(out, "wb") as o:
            while chunk := f.read(1 << 20):  # keep zero runs as holes, like tar --sparse
                if chunk.count(0) == len(chunk):
                    o.seek(len(chunk), 1)
                else:
                    o.write(chunk)
            o.truncate()
        return [out]
    subprocess.run(["tar", "--sparse", "-xf", str(src), "-C", str(dest)], check=True, timeout=300)
    return sorted(p for p in dest.rglob("*") if p.is_file() and p.stat().st_size >= 64 << 20)
