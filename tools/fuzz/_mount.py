"""A sample of cases mounted for real: ``uvfs mount -f -o ro`` of the damaged image, a walk
of the mount by another process (stat, readdir, readlink, read, listxattr, getxattr), an
unmount. A failure is a traceback in the server's log (the broker logs every exception
a driver lets out, and the FUSE glue's own), a walk that does not finish, a server that
dies while mounted, or a change to the image. Only cases whose damage reads with
checksums verified are mounted (a real mount always verifies them).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ._run import mutator, save_failure
from ._worker import apply, copy_seed, sparse_sha256

MOUNT_TIMEOUT = 60.0  # seconds for the mount to come up, and for the walk
_WALKER = r"""
import os, stat, sys
for top, dirs, files in os.walk(sys.argv[1]):
    for name in dirs + files:
        path = os.path.join(top, name)
        try:
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                os.readlink(path)
        except OSError:
            mode = 0
        try:
            for attr in os.listxattr(path, follow_symlinks=False):
                os.getxattr(path, attr, follow_symlinks=False)
        except OSError:
            pass
        if not stat.S_ISREG(mode):
            continue  # a fifo would block, a device is not the image's
        try:
            with open(path, "rb", buffering=0) as f:
                f.read(1 << 20)
        except OSError:
            pass
"""


@dataclass
class MountSummary:
    """What the mounted sample found."""

    count: int = 0
    mounted: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        return (
            f"fuzz through FUSE: {self.count} images, {self.mounted} mounted: "
            f"{sum(self.failures.values())} failures {dict(self.failures) or ''}"
        ).rstrip()


def _mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def _unmount(mnt: Path, server: subprocess.Popen[bytes]) -> None:
    if _mounted(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        if _mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, check=False)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _one(files: list[Path], mnt: Path, log: Path) -> tuple[str | None, str, bool]:
    """(failure kind or None, detail, whether it mounted) for one damaged image."""
    mnt.mkdir()
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvfs.cli", "mount", "-f", "-o", "ro",
             *map(str, files), str(mnt)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not _mounted(mnt) and server.poll() is None:
            if time.monotonic() > deadline:
                return "hang", "the mount did not come up", False
            time.sleep(0.05)
        if not _mounted(mnt):
            return None, "refused", False  # a one-line refusal: an answer
        try:
            subprocess.run(
                [sys.executable, "-c", _WALKER, str(mnt)],
                timeout=MOUNT_TIMEOUT,
                capture_output=True,
            )
        except subprocess.TimeoutExpired:
            return "hang", "the walk of the mount did not finish", True
        if server.poll() is not None:
            return "crash", f"the server exited with {server.returncode} while mounted", True
        return None, "", True
    finally:
        _unmount(mnt, server)


def mount_sample(driver: str, n: int, run_seed: int, workdir: Path, outdir: Path) -> MountSummary:
    """Mount `n` cases of seed `run_seed` (from the first, skipping unverified ones)."""
    found, cases = mutator(driver, workdir)
    by_name = {s.name: s for s in found}
    summary = MountSummary()
    number = 0
    while summary.count < n:
        case = cases.make_case(run_seed, number)
        number += 1
        if case.unverified:
            continue
        summary.count += 1
        with tempfile.TemporaryDirectory(prefix="uvfs-fuzz-mount-") as tmp:
            files = copy_seed(by_name[case.seed], Path(tmp) / "image")
            apply(files, case.patches)
            before = [sparse_sha256(p) for p in files]
            log = Path(tmp) / "server.log"
            failure, detail, mounted = _one(files, Path(tmp) / "mnt", log)
            summary.mounted += mounted
            text = log.read_text(errors="replace")
            if failure is None and "Traceback" in text:
                failure, detail = "exception", text[-3000:]
            if failure is None and [sparse_sha256(p) for p in files] != before:
                failure, detail = "write", "the image's sha256 changed"
            if failure:
                summary.failures[failure] += 1
                result = {
                    "failure": failure,
                    "detail": detail.splitlines()[-1] if detail else "",
                    "traceback": text,
                }
                where = save_failure(outdir, driver, run_seed, case, by_name, result)
                print(f"fuzz through FUSE: case {case.number}: {failure} ({where})", flush=True)
            with contextlib.suppress(OSError):
                (Path(tmp) / "mnt").rmdir()
    return summary
