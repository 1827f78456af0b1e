"""Run pjdfstest and fsx against a fresh read-write ext2 mount and summarise the results.

Usage::

    python -m tools.conformance --pjdfstest /tmp/pjdfstest --fsx /tmp/fsx/fsx

Both suites must already be built (see README.md beside this file): this runner never
downloads or builds anything. For each suite it makes a fresh image with mke2fs, mounts
it with ``uvfs mount -o rw,...``, runs the suite inside the mount, unmounts (which waits
until everything is written back) and runs ``e2fsck -fn``. It prints one summary line per
suite, the failed pjdfstest subtests, and writes everything as JSON with ``--json``.
Exit status: 0 when every suite passed and every image is clean.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

UVFS = [sys.executable, "-m", "uvfs.cli"]
# The writable ext2 driver, until the ext2 entry point opens it for rw mounts itself.
DEFAULT_TYPE = "ext2"


@dataclass
class SuiteResult:
    suite: str
    passed: bool
    summary: str
    seconds: float
    fsck_clean: bool
    failures: list[str] = field(default_factory=list)
    options: str = ""


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


class Mount:
    """A fresh image mounted with uvfs for the length of a ``with`` block."""

    def __init__(self, work: Path, name: str, args: argparse.Namespace) -> None:
        self.image = work / f"{name}.img"
        self.mountpoint = work / f"{name}.mnt"
        self.args = args

    def __enter__(self) -> Path:
        args = self.args
        run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", str(args.block_size), str(self.image),
             args.size], check=True)  # fmt: skip
        self.mountpoint.mkdir()
        done = run([*UVFS, "mount", "-t", args.type, "-o", args.options, str(self.image),
                    str(self.mountpoint)])  # fmt: skip
        if done.returncode:
            raise SystemExit(f"uvfs mount failed: {done.stderr.strip()}")
        os.chmod(self.mountpoint, 0o755)
        return self.mountpoint

    def __exit__(self, *exc: object) -> None:
        done = run([*UVFS, "umount", str(self.mountpoint)])
        if done.returncode:
            run(["fusermount3", "-uz", str(self.mountpoint)])

    def fsck(self) -> bool:
        return run(["e2fsck", "-fn", str(self.image)]).returncode == 0


def pjdfstest(work: Path, args: argparse.Namespace) -> SuiteResult:
    """prove -r over pjdfstest's tests, from inside the mount (they use the cwd)."""
    tests = Path(args.pjdfstest) / "tests"
    mount = Mount(work, "pjdfstest", args)
    start = time.monotonic()
    with mount as mnt:
        done = run(["prove", "-r", str(tests)], cwd=mnt)
    seconds = time.monotonic() - start
    out = done.stdout + done.stderr
    failures = []
    # prove's summary: "<file> (Wstat: ... Tests: N Failed: K)\n  Failed tests:  3, 7-9"
    for match in re.finditer(r"^(\S+\.t)\s+\(Wstat.*?\)\n\s+Failed tests?:\s+(.+)$", out, re.M):
        failures.append(f"{Path(match[1]).relative_to(tests)}: {match[2].strip()}")
    totals = re.search(r"^Files=(\d+), Tests=(\d+)", out, re.M)
    summary = f"{totals[0]}" if totals else "no summary from prove"
    failed = sum(_count(f.split(": ", 1)[1]) for f in failures)
    if totals:
        summary += f"; {failed} failed subtests"
    return SuiteResult("pjdfstest", done.returncode == 0, summary, seconds, mount.fsck(),
                       failures, args.options)  # fmt: skip


def _count(ranges: str) -> int:
    """How many numbers ``3, 7-9`` names."""
    total = 0
    for part in ranges.split(","):
        low, _, high = part.strip().partition("-")
        total += int(high or low) - int(low) + 1
    return total


def fsx(work: Path, args: argparse.Namespace) -> SuiteResult:
    """fsx -N ops on one file; FUSE has no fallocate, so fsx disables those ops itself."""
    mount = Mount(work, "fsx", args)
    start = time.monotonic()
    with mount as mnt:
        done = run([args.fsx, "-N", str(args.fsx_ops), "-S", str(args.seed), *args.fsx_flags,
                    "-P", str(work), str(mnt / "fsx.file")])  # fmt: skip
    seconds = time.monotonic() - start
    out = done.stdout + done.stderr
    ok = re.search(r"All (\d+) operations completed A-OK!", out)
    summary = ok[0] if ok else out.strip().splitlines()[-1] if out.strip() else "no output"
    flags = " ".join(args.fsx_flags)
    return SuiteResult(f"fsx {flags}".strip(), bool(ok) and done.returncode == 0, summary,
                       seconds, mount.fsck(), [] if ok else out.splitlines()[-30:],
                       args.options)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.conformance", description=__doc__)
    parser.add_argument("--pjdfstest", help="a built pjdfstest source tree (pjdfstest, tests/)")
    parser.add_argument("--fsx", help="a built fsx binary (xfstests ltp/fsx.c)")
    parser.add_argument("--fsx-ops", type=int, default=100_000)
    parser.add_argument("--fsx-flags", default="", help='more fsx flags, e.g. "-R -W" (no mmap)')
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--type", default=DEFAULT_TYPE, help="uvfs mount -t TYPE")
    parser.add_argument("--options", default="rw,allow_other")
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--size", default="512M", help="image size for mke2fs")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args(argv)
    args.fsx_flags = args.fsx_flags.split()
    if not (args.pjdfstest or args.fsx):
        parser.error("nothing to run: give --pjdfstest and/or --fsx")
    results = []
    with tempfile.TemporaryDirectory(prefix="uvfs-conformance-") as tmp:
        if args.pjdfstest:
            results.append(pjdfstest(Path(tmp), args))
        if args.fsx:
            results.append(fsx(Path(tmp), args))
    for r in results:
        verdict = "PASS" if r.passed and r.fsck_clean else "FAIL"
        fsck = "e2fsck clean" if r.fsck_clean else "e2fsck FOUND ERRORS"
        print(f"{verdict} {r.suite}: {r.summary} ({r.seconds:.0f} s, {fsck}, -o {r.options})")
        for failure in r.failures:
            print(f"    {failure}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.passed and r.fsck_clean for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
