"""ZFS pools for the benchmark: one per compression, built by zfs-fuse, and zfs-fuse's mount.

The daemon and pool builder are the test suite's (`tests/zfs/zfsfuse.py`): one zfs-fuse in a
private mount namespace, so neither a host daemon nor a concurrent test session is
touched; `private_daemon` also gives it a private /var/lib/zfs. A pool is built once into
``<size dir>/zfs/<compression>/`` from the benchmark tree and exported; a ``ready`` file
marks a finished build, and a pool zfs-fuse cannot import is built again.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.zfs import zfsfuse
from tests.zfs.zfsfuse import ZfsFuse, build_pool

from ._host import BenchError, run
from ._systems import Mount


@dataclass(frozen=True, slots=True)
class PoolFiles:
    """An exported pool on disk."""

    name: str
    directory: Path  # the vdev files, and ``mnt`` where zfs-fuse mounts the root dataset
    vdevs: list[Path]


@contextlib.contextmanager
def private_daemon(workdir: Path) -> Iterator[ZfsFuse]:
    """A running zfs-fuse in a namespace of its own (its own zpool.cache, so it never
    imports another daemon's pools), stopped (pools exported) on leaving."""
    reason = zfsfuse.available()
    if reason:
        raise BenchError(reason)
    daemon = ZfsFuse(workdir)
    try:
        daemon.start()
    except RuntimeError as e:
        raise BenchError(f"zfs-fuse: {e}") from None
    try:
        yield daemon
    finally:
        daemon.stop()


def zfs_command(daemon: ZfsFuse, *args: str) -> str:
    """Run zpool/zfs inside the daemon's namespace; failures become a `BenchError`."""
    try:
        return daemon.run(*args)
    except subprocess.CalledProcessError as e:
        message = (e.stderr or b"").decode().strip() or f"exit status {e.returncode}"
        raise BenchError(f"{' '.join(args[:2])}: {message.splitlines()[-1]}") from None
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(args[:2])}: no answer within {e.timeout:g} s") from None


def ensure_pools(
    daemon: ZfsFuse, base: Path, tree: Path, compressions: tuple[str, ...], vdev_bytes: int
) -> dict[str, PoolFiles]:
    """The pool of each compression under `base`, built now if not built before."""
    pools = {}
    for compression in compressions:
        directory = base / compression
        name = f"bench{compression}"
        if not _importable(daemon, directory, name):

            def fill(mnt: Path) -> None:
                run(["cp", "-a", f"{tree}/.", mnt])

            shutil.rmtree(directory, ignore_errors=True)
            print(f"bench: building the zfs-fuse pool {name} (once)", flush=True)
            try:
                build_pool(
                    daemon,
                    directory,
                    name,
                    [("disk", 1)],
                    {"compression": compression},
                    fill,
                    size=vdev_bytes,
                )
            except subprocess.CalledProcessError as e:
                reason = (e.stderr or b"").decode().strip() or f"exit status {e.returncode}"
                raise BenchError(f"building pool {name}: {reason}") from None
            (directory / "ready").touch()
        pools[compression] = PoolFiles(name, directory, sorted(directory.glob("*.img")))
    return pools


def _importable(daemon: ZfsFuse, directory: Path, name: str) -> bool:
    """Whether a finished build of pool `name` is in `directory` and zfs-fuse can import it.

    A cached pool that zfs-fuse finds damaged (seen once, cause unknown) is built again
    rather than failing every zfs-fuse measurement.
    """
    if not (directory / "ready").exists():
        return False
    try:
        listing = zfs_command(daemon, "zpool", "import", "-d", str(directory))
    except BenchError:
        return False
    return f"pool: {name}" in listing and "state: ONLINE" in listing


class ZfsFuseMount(Mount):
    """A pool imported into the running zfs-fuse (a fresh import empties its ARC)."""

    system = "zfs-fuse"

    def __init__(self, daemon: ZfsFuse, pool: PoolFiles) -> None:
        self._daemon, self._pool = daemon, pool
        zfs_command(daemon, "zpool", "import", "-d", str(pool.directory), pool.name)
        super().__init__(daemon.visible(pool.directory / "mnt"))

    def _unmount(self) -> None:
        zfs_command(self._daemon, "zpool", "export", self._pool.name)
