"""The framework's own cost: the null tree through uvfs against the same tree on bare pyfuse3.

Each run mounts both servers afresh (`NullTree` of ``null_files`` files and a 16 MiB file)
and times three workloads in which every system call is exactly one FUSE request:
``lookup`` (stat each file once: the first access to each name), ``statx`` (statx with
AT_STATX_FORCE_SYNC, a GETATTR even while the attributes are cached) and ``direct4k``
(O_DIRECT 4 KiB reads, page by page). uvfs's time over bare pyfuse3's is its overhead per
request: the glue, the broker and the buffer cache. The uvfs server's request count shows
that each call was one request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from uvfs._broker import Broker

from ._host import BenchError, drop_caches
from ._null import NullFS, NullTree
from ._results import BARE, UVFS
from ._sizes import MiB
from ._systems import BareMount, Mount, UvfsMount

if TYPE_CHECKING:
    from ._suite import Bench

SUITE = "framework"
WORKLOADS = ("lookup", "statx", "direct4k")  # lookup first: it needs names not yet seen
DATA_BYTES = 16 * MiB
NULL_TYPE = "tools.bench._null:DRIVER"  # by module path: the driver is not installed


def framework(bench: Bench) -> None:
    """`WORKLOADS` on uvfs and bare pyfuse3, a fresh mount of each per run, round robin."""
    spec = bench.workdir / bench.sizes.name / "null.json"
    NullTree.write_spec(spec, bench.sizes.null_files, DATA_BYTES)
    # The kernel caching uvfs chooses for a read-only mount, told to the bare server too.
    timeouts = Broker(NullFS(NullTree(0, 0)), read_only=True, cache=None, mount_id=0).timeouts
    systems = {
        UVFS: lambda: UvfsMount([spec], bench.mountpoint(UVFS), writable=False, fstype=NULL_TYPE),
        BARE: lambda: BareMount(spec, bench.mountpoint(BARE), timeouts),
    }
    for _ in range(bench.sizes.runs):
        for system, mount in systems.items():
            _run(bench, system, mount)


def _run(bench: Bench, system: str, mount: Callable[[], Mount]) -> None:
    """One fresh mount of `system` and each workload on it; a failure fails what is left."""
    cells = [bench.results.cell(SUITE, w, "cold", system) for w in WORKLOADS]
    if any(c.error for c in cells):
        return
    try:
        with mount() as m:
            drop_caches()
            for workload, cell in zip(WORKLOADS, cells, strict=True):
                with bench.observed(m, cell):
                    cell.samples.append(bench.run_probe(workload, *_args(bench, workload, m)))
                bench.progress(SUITE, workload, system, cell.samples, None)
    except BenchError as e:
        for cell in cells:
            cell.error = cell.error or str(e)
        bench.progress(SUITE, "-", system, [], str(e))


def _args(bench: Bench, workload: str, m: Mount) -> tuple[list[object], int]:
    """The probe's arguments for `workload` on `m`, and the check it must print."""
    count = bench.sizes.null_requests
    match workload:
        case "lookup":
            return [m.root / "files", bench.sizes.null_files], bench.sizes.null_files
        case "statx":
            return [m.root / "data.bin", count], count
        case "direct4k":
            return [m.root / "data.bin", count], count * 4096
    raise ValueError(workload)
