"""One timed workload, run as its own process: ``python -I -S _probe.py KIND ARG...``.

It prints ``SECONDS CHECK``: the wall time of the workload alone (not of starting Python)
and a number the caller compares with what it expects (bytes read, files found), so a
system that answers fast but wrong cannot win. A separate process can be killed when a
mount hangs, and it holds no file open between runs. Standard library only: it runs
without site-packages, so that it starts fast even after the page cache was dropped.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable

CHUNK = 1 << 20  # sequential I/O size: what dd bs=1M and most copy tools use
PAGE = 4096
NULL_NAME = "f{:07d}"  # the names in the null tree's ``files/`` (`tools.bench._null`)
# statx(2): force a fresh GETATTR from the server even while the attributes are cached.
AT_FDCWD, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS = -100, 0x2000, 0x7FF


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
    """Run `command`; its stdout, or exit with the last line it wrote to stderr."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        sys.exit(f"{command[0]}: {lines[-1]}")
    return done.stdout


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


def cpa(source: str, target: str) -> int:
    """``cp -a SOURCE TARGET``; 0."""
    _shell(["cp", "-a", source, target])
    return 0


def createfsync(directory: str, count: str) -> int:
    """Make `directory`, then create `count` 4 KiB files in it, each fsynced; the count."""
    os.mkdir(directory)
    data = os.urandom(PAGE)
    for i in range(int(count)):
        fd = os.open(f"{directory}/{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    return int(count)


def rmtree(directory: str) -> int:
    """``rm -rf DIR``; 0."""
    _shell(["rm", "-rf", directory])
    return 0


def lookup(directory: str, count: str) -> int:
    """stat(2) the first `count` names of the null tree's directory, once each; the count.

    On a fresh mount each name is one LOOKUP request (its reply carries the attributes).
    """
    for i in range(int(count)):
        os.stat(f"{directory}/{NULL_NAME.format(i)}")
    return int(count)


def statx(path: str, count: str) -> int:
    """statx(2) `path` `count` times with AT_STATX_FORCE_SYNC: one GETATTR each; the count."""
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(256)  # struct statx
    name = os.fsencode(path)
    for _ in range(int(count)):
        if libc.statx(AT_FDCWD, name, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, buffer) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), path)
    return int(count)


def direct4k(path: str, count: str) -> int:
    """`count` O_DIRECT 4 KiB preads, page by page through the file: one READ each; bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        pages = os.fstat(fd).st_size // PAGE
        buffer = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT asks
        return sum(os.preadv(fd, [buffer], (i % pages) * PAGE) for i in range(int(count)))
    finally:
        os.close(fd)


WORKLOADS: dict[str, Callable[..., int]] = {
    f.__name__: f
    for f in (
        seqread,
        randread,
        find,
        du,
        untar,
        write,
        cpa,
        createfsync,
        rmtree,
        lookup,
        statx,
        direct4k,
    )
}


def main(argv: list[str]) -> int:
    kind, *args = argv
    start = time.perf_counter()
    check = WORKLOADS[kind](*args)
    print(f"{time.perf_counter() - start:.6f} {check}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
