"""The memory target: a uvfs server with the default cache budget, through a big read and tar x.

``bigread`` reads a big file front to back on a fresh read-only mount (2 GiB in the full
size, from an image of its own; the read suites' file otherwise); ``untar`` extracts the
small-file tree into a fresh copy of the empty image. Both mount with no ``cache_size``, so
the server runs with the default budget, and each records the server's peak RSS, judged
against that budget plus `MEMORY_ALLOWANCE` (the driver's own structures, Python itself).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from uvfs._mount_command import DEFAULT_CACHE_SIZE

from ._host import BenchError, drop_caches, run
from ._images import BIG_FILE, prepare_memory_image
from ._results import UVFS
from ._systems import UvfsMount

if TYPE_CHECKING:
    from ._suite import Bench

SUITE = "memory"
CACHE_BUDGET = DEFAULT_CACHE_SIZE  # what a mount without cache_size= gets


def memory(bench: Bench) -> None:
    """`bigread` and `untar` on uvfs, `sizes.runs` times each."""
    sizes = bench.sizes
    if sizes.memory_file_bytes:
        image, size = prepare_memory_image(bench.workdir, sizes), sizes.memory_file_bytes
    else:
        image, size = bench.images.ext2, sizes.file_bytes
    scratch = bench.workdir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(sizes.runs):
            _bigread(bench, image, size)
            _untar(bench, scratch / "memory.img")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _bigread(bench: Bench, image: Path, size: int) -> None:
    cell = bench.results.cell(SUITE, "bigread", "cold", UVFS)
    if cell.error:
        return
    try:
        with UvfsMount(
            [image], bench.mountpoint(UVFS), writable=False, fstype=bench.ext2_type
        ) as m:
            drop_caches()
            with bench.observed(m, cell):
                seconds = bench.run_probe("seqread", [m.root / BIG_FILE], size)
            cell.samples.append(seconds)
    except BenchError as e:
        cell.error = str(e)
    bench.progress(SUITE, "bigread", UVFS, cell.samples, cell.error)


def _untar(bench: Bench, copy: Path) -> None:
    cell = bench.results.cell(SUITE, "untar", "cold", UVFS)
    if cell.error:
        return
    run(["cp", "--sparse=always", bench.images.empty_ext2, copy])
    try:
        cell.samples.append(bench.timed_write("untar", lambda: bench.writable_uvfs(copy), cell))
    except BenchError as e:
        cell.error = str(e)
    finally:
        copy.unlink()
    bench.progress(SUITE, "untar", UVFS, cell.samples, cell.error)
