"""The write floor: the write workloads on an in-memory tree, through uvfs and bare pyfuse3.

Two more systems in the ``write`` suite, beside the kernel, fuse2fs and uvfs on ext2:

* ``pyfuse3``: `RamTree` served by pyfuse3 alone (``_bare_ram.py``). No disk, no
  framework: what any pyfuse3 server pays for these requests at least. When it is already
  slower than fuse2fs, the "<= 1.0x fuse2fs" target is out of reach under pyfuse3.
* ``uvfs-mem``: the same tree as a uvfs driver (``_ramfs.py``), through the glue, the
  broker and the buffer cache. Over ``pyfuse3``: the framework's own cost on writes; uvfs
  on ext2 over ``uvfs-mem``: the ext2 driver's own cost.

Each workload gets a fresh mount, as on ext2, but a tree in memory does not outlive its
server: the workloads that need the small-file tree (``cp -a`` and ``rm -rf``, which find
it on ext2 after ``tar x``) get a server seeded with it, a copy made before mounting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from uvfs import FSError
from uvfs._broker import Broker

from ._images import FILES_DIR
from ._ramfs import RamFS
from ._ramtree import RamTree
from ._results import BARE, UVFS_RAM
from ._systems import BareRamMount, Mount, UvfsMount

if TYPE_CHECKING:
    from ._suite import Bench

RAM_TYPE = "tools.bench._ramfs:DRIVER"  # by module path: the driver is not installed
SEEDED = ("cpa", "rmtree")  # the workloads that start from the small-file tree


def floor_systems(bench: Bench, scratch: Path) -> dict[str, Callable[[str], Mount]]:
    """A fresh mount of each floor system for a workload, its spec files in `scratch`."""
    # What uvfs tells the kernel for a writable mount of this driver, told to pyfuse3 too.
    broker = Broker(RamFS(RamTree(FSError)), read_only=False, cache=None, mount_id=0)

    def spec(system: str, workload: str) -> Path:
        path = scratch / f"{system}.json"
        RamTree.write_spec(path, bench.images.tree / FILES_DIR if workload in SEEDED else None)
        return path

    return {
        BARE: lambda workload: BareRamMount(
            spec(BARE, workload),
            bench.mountpoint(BARE),
            broker.timeouts,
            acl=broker.acls,
            counter=scratch / f"{BARE}.requests",
        ),
        UVFS_RAM: lambda workload: UvfsMount(
            [spec(UVFS_RAM, workload)],
            bench.mountpoint(UVFS_RAM),
            writable=True,
            fstype=RAM_TYPE,
        ),
    }
