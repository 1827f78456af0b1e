"""The runner: makes the cases, hands them to worker processes, times them, keeps failures.

Each worker (`_worker.py`) has one case at a time; a case that takes longer than the
timeout is a hang (the worker is killed and replaced), a worker that exits is a crash (a
crash of the C extension, or of the interpreter). Every failure is written to the output
directory as ``<driver>-s<seed>-<number>/``: ``case.json`` (the case, to ``--replay``),
``failure.txt`` (kind and traceback) and the damaged image files themselves, so the image
can be mounted by hand.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ._corpus import Seed, seeds
from ._mutate import Case, Mutator
from ._targets import regions
from ._worker import apply, copy_seed


@dataclass
class Summary:
    """What a run found."""

    driver: str
    seed: int
    count: int = 0
    seconds: float = 0.0
    opened: int = 0  # cases whose image opened (others were refused: an answer too)
    failures: Counter[str] = field(default_factory=Counter)
    saved: list[Path] = field(default_factory=list)

    def line(self) -> str:
        kinds = ", ".join(
            f"{k} {self.failures[k]}" for k in ("exception", "hang", "crash", "write")
        )
        total = sum(self.failures.values())
        return (
            f"fuzz {self.driver}: {self.count} images (seed {self.seed}) in {self.seconds:.0f} s, "
            f"{self.opened} opened: {total} failures ({kinds})"
        )


def mutator(driver: str, workdir: Path) -> tuple[list[Seed], Mutator]:
    found = seeds(driver, workdir)
    return found, Mutator(found, {s.name: regions(driver, s, workdir) for s in found})


class _Worker:
    """One worker process and the scratch directory (under /dev/shm when there is one) where
    it keeps its copies of the seeds; the directory is removed here, since a killed worker
    cannot remove it itself."""

    def __init__(self, driver: str, workdir: Path) -> None:
        root = Path(__file__).resolve().parents[2]
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.scratch = Path(tempfile.mkdtemp(prefix="uvfs-fuzz-", dir=shm))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.fuzz._worker", driver, str(workdir), str(self.scratch)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=root, text=True, bufsize=1,
        )  # fmt: skip
        self.case: Case | None = None
        self.deadline = 0.0

    def send(self, case: Case, timeout: float) -> None:
        assert self.proc.stdin is not None
        self.case = case
        self.deadline = time.monotonic() + timeout
        self.proc.stdin.write(json.dumps(case.to_json()) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def save_failure(
    outdir: Path, driver: str, run_seed: int, case: Case, by_name: dict[str, Seed], result: dict
) -> Path:
    """Write `case`, its verdict and its damaged image files under `outdir`."""
    where = outdir / f"{driver}-s{run_seed}-{case.number}"
    where.mkdir(parents=True, exist_ok=True)
    record = {"driver": driver, "run_seed": run_seed, "case": case.to_json()}
    (where / "case.json").write_text(json.dumps(record, indent=1))
    text = f"{result['failure']}: {result.get('detail', '')}\n\n{result.get('traceback', '')}"
    (where / "failure.txt").write_text(text)
    files = copy_seed(by_name[case.seed], where / "image")
    apply(files, case.patches)
    return where


def run(
    driver: str, count: int, run_seed: int, workdir: Path, outdir: Path,
    *, jobs: int = 1, timeout: float = 20.0, first: int = 0, progress: bool = False,
) -> Summary:  # fmt: skip
    """Run cases `first` .. `first + count - 1` of seed `run_seed` against `driver`."""
    found, cases = mutator(driver, workdir)
    by_name = {s.name: s for s in found}
    summary = Summary(driver, run_seed)
    start = time.monotonic()
    pending = iter(range(first, first + count))
    workers: list[_Worker] = []
    sel = selectors.DefaultSelector()

    def feed(w: _Worker) -> bool:
        number = next(pending, None)
        if number is None:
            w.case = None
            return False
        w.send(cases.make_case(run_seed, number), timeout)
        return True

    def record(case: Case, result: dict) -> None:
        summary.count += 1
        summary.opened += result.get("answers", 0) > 0
        if result.get("failure"):
            summary.failures[result["failure"]] += 1
            summary.saved.append(save_failure(outdir, driver, run_seed, case, by_name, result))
            what = f"{result['failure']}: {result.get('detail', '')}"
            print(f"fuzz {driver}: case {case.number}: {what}", flush=True)
        if progress and summary.count % 500 == 0:
            print(f"fuzz {driver}: {summary.count}/{count} ...", flush=True)

    def replace(w: _Worker) -> None:
        sel.unregister(w.proc.stdout)
        w.stop()
        workers.remove(w)
        fresh = _Worker(driver, workdir)
        workers.append(fresh)
        sel.register(fresh.proc.stdout, selectors.EVENT_READ, fresh)
        feed(fresh)

    try:
        for _ in range(jobs):
            w = _Worker(driver, workdir)
            workers.append(w)
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)
            feed(w)
        while any(w.case is not None for w in workers):
            now = time.monotonic()
            wait = min(w.deadline for w in workers if w.case is not None) - now
            for key, _ in sel.select(max(wait, 0)):
                w = key.data
                if w.case is None:
                    continue
                line = w.proc.stdout.readline()
                if not line:
                    record(
                        w.case,
                        {
                            "failure": "crash",
                            "detail": f"worker exited with status {w.proc.wait()}",
                        },
                    )
                    replace(w)
                    continue
                record(w.case, json.loads(line))
                feed(w)
            now = time.monotonic()
            for w in list(workers):
                if w.case is not None and now > w.deadline:
                    record(w.case, {"failure": "hang", "detail": f"no answer within {timeout:g} s"})
                    replace(w)
    finally:
        for w in workers:
            w.stop()
        sel.close()
    summary.seconds = time.monotonic() - start
    return summary


def replay(path: Path, workdir: Path) -> dict:
    """Run one saved case again, in this process: its verdict (with the traceback)."""
    from ._worker import run_case

    if path.is_dir():
        path = path / "case.json"
    record = json.loads(path.read_text())
    case = Case.from_json(record["case"])
    driver = record["driver"]
    images = path.parent / "image"
    if not images.exists():  # a case.json alone: damage a copy of its seed again
        by_name = {s.name: s for s in seeds(driver, workdir)}
        apply(copy_seed(by_name[case.seed], images), case.patches)
    files = sorted(images.iterdir(), key=lambda p: int(p.name.split("-", 1)[0]))
    # The saved files are already damaged: run the case with no patches on them (its
    # logical damage, applied as blocks are read, still applies).
    bare = Case(case.number, case.seed, case.kinds, (), case.unverified, case.logical)
    return run_case(driver, files, bare)


def pristine_hashes(found: list[Seed]) -> dict[str, str]:
    from ._worker import sparse_sha256

    return {str(p): sparse_sha256(p) for s in found for p in s.files}
