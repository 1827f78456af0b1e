"""What a FUSE server did during one workload: requests answered, CPU time, peak RSS.

Requests are the server's own count, read before and after: uvfs's ``broker.requests`` on
its control socket, bare pyfuse3's counter file (``_bare_ram.py``); reading either adds no
request. fuse2fs counts nothing, so it has no request figure. CPU time is the server
process's user + system time (``/proc/PID/stat``, all its threads, in clock ticks of
10 ms), which load from other processes on the machine barely moves, unlike wall time:
divided by the requests it is the server's cost per request. The peak is the kernel's
high-water mark of the server's resident set (``VmHWM``), reset to the current RSS just
before the workload by writing 5 to ``/proc/PID/clear_refs``; so it covers the workload
alone, and the caches the server already filled count as well, as they must against a
memory budget. A server's child processes count with it (``uvfs -o isolate`` serves the
driver from one): their CPU time is added, and so are their peaks (a bound on the peak of
the whole). A kernel mount has no server: nothing is observed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ._host import BenchError
from ._results import Measurement
from ._systems import Mount

TICK = 1 / os.sysconf("SC_CLK_TCK")  # seconds per clock tick of /proc/PID/stat


def reset_peak_rss(pid: int) -> None:
    """Make `pid`'s peak RSS its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5\n")


def peak_rss(pid: int) -> int:
    """`pid`'s peak resident set since the last reset, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"/proc/{pid}/status has no VmHWM")


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 on (the command name, field 2, may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """The user + system time `pid` has used, all its threads."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) * TICK  # utime, stime: fields 14, 15


def family(pid: int) -> list[int]:
    """`pid` and its child processes."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:  # ppid: field 4
                    children.append(int(entry.name))
            except (OSError, IndexError):  # it ended meanwhile
                continue
    return [pid, *children]


@contextlib.contextmanager
def observe(mount: Mount, cell: Measurement) -> Iterator[None]:
    """Add what `mount`'s server does during the block to `cell` (nothing for the kernel).

    Nothing is added when the block fails: the cell then holds an error, not a sample.
    """
    pid = mount.server()
    if pid is None:
        yield
        return
    requests = mount.requests()
    pids = family(pid)
    for p in pids:
        reset_peak_rss(p)
    cpu = sum(map(cpu_seconds, pids))
    yield
    cell.cpu.append(sum(map(cpu_seconds, pids)) - cpu)
    cell.peak_rss.append(sum(map(peak_rss, pids)))
    after = mount.requests()
    if requests is not None and after is not None:
        cell.requests.append(after - requests)
