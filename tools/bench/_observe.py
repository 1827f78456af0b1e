"""What a uvfs server did during one workload: the FUSE requests it answered, its peak RSS.

Requests are the broker's own count (``broker.requests`` of ``uvfs stats``), read before
and after on the control socket, which adds none. The peak is the kernel's high-water mark
of the server's resident set (``VmHWM``), reset to the current RSS just before the workload
by writing 5 to ``/proc/PID/clear_refs``; so it covers the workload alone, and the caches
the server already filled count as well, as they must against a memory budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ._host import BenchError
from ._results import Measurement
from ._systems import UvfsMount


def reset_peak_rss(pid: int) -> None:
    """Make `pid`'s peak RSS its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5\n")


def peak_rss(pid: int) -> int:
    """`pid`'s peak resident set since the last reset, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"/proc/{pid}/status has no VmHWM")


@contextlib.contextmanager
def observe(mount: UvfsMount, cell: Measurement) -> Iterator[None]:
    """Add the requests `mount`'s server answers, and its peak RSS, during the block to `cell`.

    Nothing is added when the block fails: the cell then holds an error, not a sample.
    """
    before = mount.stats()
    pid = before["pid"]
    reset_peak_rss(pid)
    yield
    peak = peak_rss(pid)
    cell.requests.append(mount.stats()["broker.requests"] - before["broker.requests"])
    cell.peak_rss.append(peak)
