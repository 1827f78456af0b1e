"""Where a uvfs server spends its time: py-spy samples taken during one workload.

``--profile`` records each uvfs cold run (the server process, not the probe) with
``py-spy record --format raw``: one line per distinct stack, ``frame;frame;... count``.
`summarise` charges each sample to a layer (driver, cache, image I/O, pyfuse3 ...: the
innermost frame that belongs to one) and lists the functions most often on top of the
stack while the server was busy.
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
# Where a sample is charged: the innermost frame whose file (as py-spy shortens it)
# starts with one of these. pyfuse3's own frame is its C side: reading requests from
# /dev/fuse and writing replies, i.e. the kernel round trip and the copies.
LAYERS = (
    ("uvfs/_image.py", "image I/O"),
    ("fs/", "driver"),
    ("uvfs/_cache.py", "cache"),
    ("uvfs/_rangelock.py", "cache"),
    ("uvfs/_broker.py", "broker"),
    ("uvfs/_fuse.py", "glue"),
    ("_pyfuse3.py", "pyfuse3"),
    ("trio/", "trio"),
)
# Leaf frames that mean waiting: the event loop in epoll, a parked worker thread.
IDLE = (
    "EpollIOManager.get_events (trio/_core/_io_epoll.py)",
    "WorkerThread._work (trio/_core/_thread_cache.py)",
)


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


def _file(frame: str) -> str:
    """``f (uvfs/_cache.py)`` -> ``uvfs/_cache.py``."""
    return frame.rpartition(" (")[2].rstrip(")")


def _layer(frames: list[str]) -> str:
    """The layer of the innermost frame that belongs to one, or "idle" when waiting."""
    if frames[-1] in IDLE:
        return "idle"
    for frame in reversed(frames):
        for prefix, layer in LAYERS:
            if _file(frame).startswith(prefix):
                return layer
    return "other"


def summarise(raw: Path, top: int = 6) -> dict[str, list[tuple[str, float]]]:
    """Shares of the samples: by layer, and the `top` functions by self time while busy.

    Each list holds (name, fraction); layers share all samples, functions the busy ones.
    """
    layers: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        layer = _layer(frames)
        layers[layer] += int(count)
        if layer != "idle":
            own[frames[-1]] += int(count)
    total, busy = sum(layers.values()), sum(own.values())
    return {
        "layers": [(name, n / total) for name, n in layers.most_common()],
        "self": [(f, n / busy) for f, n in own.most_common(top)],
    }
