"""One timed workload, run as its own process: ``python -I -S _probe.py KIND ARG...``.

It prints ``SECONDS CHECK``: the wall time of the workload alone (not of starting Python)
and a number the caller compares with what it expects (bytes read, files found), so a
system that answers fast but wrong cannot win. A separate process can be killed when a
mount hangs, and it holds no file open between runs. Standard library only: it runs
without site-packages, so that it starts fast even after the page cache was dropped.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable

CHUNK = 1 << 20  # sequential I/O size: what dd bs=1M and most copy tools use
PAGE = 4096


def seqread(path: str) -> int:
    """Read the file front to back in 1 MiB chunks; the bytes read."""
    buffer = bytearray(CHUNK)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            total += n
    return total


def randread(path: str, count: str, seed: str) -> int:
    """`count` 4 KiB preads at page-aligned offsets drawn with `seed`; the bytes read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pages = os.fstat(fd).st_size // PAGE
        rng = random.Random(int(seed))
        return sum(len(os.pread(fd, PAGE, rng.randrange(pages) * PAGE)) for _ in range(int(count)))
    finally:
        os.close(fd)


def _shell(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def find(directory: str) -> int:
    """``find DIR -type f | wc -l``; the count."""
    return int(_shell(["sh", "-c", 'find "$1" -type f | wc -l', "find", directory]))


def du(directory: str) -> int:
    """``du -s DIR``; the KiB it reports."""
    return int(_shell(["du", "-s", directory]).split()[0])


def untar(archive: str, directory: str) -> int:
    """``tar -xf ARCHIVE -C DIR``; 0."""
    _shell(["tar", "-xf", archive, "-C", directory])
    return 0


def write(path: str, size: str) -> int:
    """Write `size` bytes in 1 MiB chunks and fsync; the bytes written."""
    chunk = os.urandom(CHUNK)
    total = 0
    with open(path, "wb", buffering=0) as f:
        while total < int(size):
            total += f.write(chunk[: int(size) - total])
        os.fsync(f.fileno())
    return total


def rmtree(directory: str) -> int:
    """``rm -rf DIR``; 0."""
    _shell(["rm", "-rf", directory])
    return 0


WORKLOADS: dict[str, Callable[..., int]] = {
    f.__name__: f for f in (seqread, randread, find, du, untar, write, rmtree)
}


def main(argv: list[str]) -> int:
    kind, *args = argv
    start = time.perf_counter()
    check = WORKLOADS[kind](*args)
    print(f"{time.perf_counter() - start:.6f} {check}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
