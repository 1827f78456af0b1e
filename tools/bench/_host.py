"""The machine the benchmark drives: commands, the page cache and the mount table."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

COMMAND_TIMEOUT = 600  # seconds: a wedged mount fails the run instead of hanging it


class BenchError(Exception):
    """A failure reported as one line (a missing tool, a command that failed)."""


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = COMMAND_TIMEOUT,
    label: str | None = None,
) -> str:
    """Run a command; its stdout, or a `BenchError` carrying the last line of its stderr.

    The error starts with `label`, by default the program's name and first argument.
    """
    label = label or " ".join(str(a) for a in [Path(str(args[0])).name, *args[1:2]])
    try:
        done = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{label}: no answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "failed").splitlines()
        raise BenchError(f"{label}: {lines[-1]}")
    return done.stdout


def drop_caches(level: int = 3) -> None:
    """Write dirty pages back, then drop the kernel's caches.

    Level 3 drops the page cache and the dentry and inode caches (a cold start); level 1
    only the page cache, so the kernel keeps its names and open files.
    """
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text(f"{level}\n")


def _mount_table() -> dict[str, list[str]]:
    """Mount point -> options, for this mount namespace."""
    table = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, _, options, *_ = line.split()
            # /proc/mounts escapes space, tab, newline and backslash as octal.
            table[re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), point)] = options
    return {point: options.split(",") for point, options in table.items()}


def mount_options(path: Path) -> list[str]:
    """The options of the mount at `path` (e.g. to see whether it ended up read-only)."""
    options = _mount_table().get(str(path))
    if options is None:
        raise BenchError(f"{path}: not mounted")
    return options


def is_mounted(path: Path) -> bool:
    """Whether something is mounted at `path`."""
    return str(path) in _mount_table()


def wait_mounted(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until a FUSE server started as `process` has mounted `path`."""
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if process.poll() is not None:
            raise BenchError(f"{process.args[0]} exited {process.returncode} before mounting")
        if time.monotonic() > deadline:
            raise BenchError(f"{path}: not mounted after {timeout:.0f} s")
        time.sleep(0.01)


def force_unmount_under(root: Path) -> None:
    """Lazily unmount anything still mounted below `root`: the last line of defence."""
    prefix = f"{root}/"
    for point in sorted(_mount_table(), reverse=True):
        if point.startswith(prefix):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold `directory` for this run alone, waiting for another run that holds it.

    Two runs must never share a work directory: their mountpoints would collide, and two
    zfs-fuse daemons importing the same cached pool would corrupt it.
    """
    with open(directory / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"bench: waiting for another run using {directory}", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
