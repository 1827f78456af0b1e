"""The audit overlay's overhead: commands under ``uvfs audit`` against the same unaudited.

Two commands: ``python -c "import requests"`` (an import that opens some hundred files)
and a real package's small pytest run (uvfs's own pure tests of its LRU and range locks).
Timing and the audit command line are `tests.audit.bench_overhead`'s: the command is timed
from inside the audited namespace, so the audit's own set-up (dpkg's database, mounting) is
left out, as tup leaves out its own when it reports 13-22% for its tracing. Both run warm
(one unmeasured run of each first), alternating, without writing bytecode: the overlay is
read-only, and a plain run that writes ``.pyc`` files would change what the next one reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tests.audit.bench_overhead import CommandFailed, audit_prefix, timed

from ._results import UVFS

if TYPE_CHECKING:
    from ._suite import Bench

SUITE = "audit"
PLAIN = "plain"  # the command without the audit
REPO = Path(__file__).resolve().parents[2]
COMMANDS = {
    "import": [sys.executable, "-c", "import requests"],
    "pytest": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/test_lru.py", "tests/test_rangelock.py"],
}  # fmt: skip


def audit(bench: Bench) -> None:
    """Each of `COMMANDS` plain and audited, alternating, `sizes.audit_runs` times after a
    warm-up."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        prefix = audit_prefix(Path(tmp, "report.json"))
        for workload, command in COMMANDS.items():
            plain = bench.results.cell(SUITE, workload, "warm", PLAIN)
            audited = bench.results.cell(SUITE, workload, "warm", UVFS)
            options = {"cwd": REPO, "env": env, "timeout": bench.sizes.timeout}
            try:
                for i in range(bench.sizes.audit_runs + 1):
                    seconds = [timed(p, command, **options)[0] for p in ([], prefix)]
                    if i:  # the first round only warms the caches
                        plain.samples.append(seconds[0])
                        audited.samples.append(seconds[1])
            except CommandFailed as e:
                plain.error = audited.error = _last_line(str(e))
            except subprocess.TimeoutExpired:
                plain.error = audited.error = f"timed out after {bench.sizes.timeout:g} s"
            bench.progress(SUITE, workload, UVFS, audited.samples, audited.error)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text
