"""Where a uvfs server spends its time: py-spy samples taken during one workload.

``--profile`` records each uvfs cold run (the server process, not the probe) with
``py-spy record --format raw``: one line per distinct stack, ``frame;frame;... count``.
`summarise` turns that into the functions that were on top of the stack most often (self
time) and the uvfs functions that were anywhere on it most often (inclusive time).
py-spy stops the server briefly at each sample, so profiled runs are slower than others.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ._host import BenchError

RATE = 200  # samples per second
OURS = ("uvfs/", "uvfs_fs/", "fs/")  # py-spy's short file names of our packages


class Profiler:
    """Records uvfs servers into `directory`, one raw stack file per workload."""

    def __init__(self, directory: Path) -> None:
        self.py_spy = Path(sys.executable).with_name("py-spy")
        if not self.py_spy.exists():
            raise BenchError("py-spy is missing: .venv/bin/pip install py-spy")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.recorded: dict[str, Path] = {}  # name -> raw file, of this run only

    @contextlib.contextmanager
    def record(self, pid: int, name: str) -> Iterator[None]:
        """Sample process `pid` while the block runs, into ``<directory>/<name>.txt``."""
        output = self.recorded[name] = self.directory / f"{name}.txt"
        command = [self.py_spy, "record", "--pid", str(pid), "--format", "raw", "--nolineno",
                   "--rate", str(RATE), "--output", output]  # fmt: skip
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attaching takes a moment; samples before the workload are idle
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()

    def summaries(self) -> dict[str, dict[str, list[tuple[str, float]]]]:
        """`summarise` of every recording of this run, by name."""
        return {name: summarise(raw) for name, raw in self.recorded.items() if raw.exists()}


def summarise(raw: Path, top: int = 8) -> dict[str, list[tuple[str, float]]]:
    """The `top` functions by self time and the `top` of ours by inclusive time.

    Each as (``function (file)``, fraction of all samples).
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            if any(f"({prefix}" in frame for prefix in OURS):
                inclusive[frame] += n
    if not total:
        return {"self": [], "inclusive": []}
    return {
        "self": [(f, n / total) for f, n in own.most_common(top)],
        "inclusive": [(f, n / total) for f, n in inclusive.most_common(top)],
    }
