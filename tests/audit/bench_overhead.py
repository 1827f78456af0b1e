"""Overhead of the audit: a command's wall time plain and under ``uvfs audit``, warm.

Run: ``.venv/bin/python -m tests.audit.bench_overhead [--runs N] -- COMMAND...``
(default COMMAND: this interpreter with ``-c "import numpy"``). The command is timed from
inside the audited namespace by a wrapper, so the figure excludes the audit's own setup
(reading dpkg's database, mounting); the total wall time of ``uvfs audit`` is shown apart.
Not collected by pytest: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMER = (
    "import subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(time.perf_counter() - t)\n"
)


class CommandFailed(Exception):
    """The timed command (or the audit around it) exited with a failure."""


def audit_prefix(report: Path) -> list[str]:
    """What runs a command under ``uvfs audit``, writing its JSON report to `report`."""
    return [sys.executable, "-m", "uvfs_fs.audit", "--quiet", "--json", str(report), "--"]


def timed(prefix: list[str], command: list[str], **options: object) -> tuple[float, float]:
    """(the command's wall time, the whole invocation's wall time); `options` go to
    `subprocess.run` (cwd, env)."""
    t = time.perf_counter()
    done = subprocess.run(
        [*prefix, sys.executable, "-c", TIMER, *command],
        capture_output=True,
        text=True,
        **options,  # type: ignore[call-overload]
    )
    if done.returncode != 0:
        raise CommandFailed(f"{' '.join(prefix + command)} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.split()[-1]), time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("command", nargs="*", default=[sys.executable, "-c", "import numpy"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "report.json")
        audit = audit_prefix(report)
        try:
            timed([], args.command), timed(audit, args.command)  # warm the caches
            plain, audited, total = [], [], []
            for _ in range(args.runs):  # interleaved, so that load from elsewhere hits both
                plain.append(timed([], args.command)[0])
                inside, whole = timed(audit, args.command)
                audited.append(inside)
                total.append(whole)
        except CommandFailed as e:
            sys.exit(str(e))
        undeclared = len(json.loads(report.read_text())["undeclared"])
    print(f"command: {' '.join(args.command)}  ({args.runs} runs: min, median)")
    print(f"plain    {min(plain) * 1000:8.1f} {statistics.median(plain) * 1000:8.1f} ms")
    print(
        f"audited  {min(audited) * 1000:8.1f} {statistics.median(audited) * 1000:8.1f} ms"
        f"  ratio {min(audited) / min(plain):.2f}x (min), "
        f"{statistics.median(audited) / statistics.median(plain):.2f}x (median)"
    )
    print(
        f"uvfs audit, whole {min(total) * 1000:8.1f} {statistics.median(total) * 1000:8.1f} ms"
        f"  ({undeclared} undeclared owners)"
    )


if __name__ == "__main__":
    main()
