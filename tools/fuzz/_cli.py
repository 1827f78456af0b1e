"""The command line: run N cases against a driver, replay one, or mount a sample."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._corpus import CorpusError, default_workdir, seeds
from ._run import pristine_hashes, replay, run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.fuzz",
        description="Damage metadata of real images and walk them through a driver.",
    )
    p.add_argument("--driver", choices=("ext2", "zfs"), default="ext2")
    p.add_argument("--count", type=int, default=1000, help="mutated images to try")
    p.add_argument(
        "--seed", type=int, default=1, help="the run's seed (cases are a function of it)"
    )
    p.add_argument("--first", type=int, default=0, help="number of the first case")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per image before a hang")
    p.add_argument("--workdir", type=Path, default=default_workdir(), help="seeds are kept here")
    p.add_argument("--out", type=Path, help="failing cases go here (default: WORKDIR/failures)")
    p.add_argument(
        "--replay",
        type=Path,
        metavar="CASE",
        help="run one saved case (its directory or case.json)",
    )
    p.add_argument(
        "--mount", type=int, default=0, metavar="N", help="also mount N cases through FUSE"
    )
    p.add_argument("--progress", action="store_true", help="a line every 500 images")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.out = args.out or args.workdir / "failures"
    try:
        if args.replay:
            result = replay(args.replay, args.workdir)
            print(f"{result['failure'] or 'no failure'}: {result.get('detail', '')}")
            print(result.get("traceback", ""), end="")
            return 1 if result["failure"] else 0
        found = seeds(args.driver, args.workdir)
        before = pristine_hashes(found)
        summary = run(
            args.driver, args.count, args.seed, args.workdir, args.out,
            jobs=args.jobs, timeout=args.timeout, first=args.first, progress=args.progress,
        )  # fmt: skip
        if pristine_hashes(found) != before:
            summary.failures["write"] += 1
            print(f"fuzz {args.driver}: a seed image changed during the run", file=sys.stderr)
        if args.mount:
            from ._mount import mount_sample

            mounted = mount_sample(args.driver, args.mount, args.seed, args.workdir, args.out)
            summary.failures.update(mounted.failures)
            print(mounted.line())
    except CorpusError as e:
        print(f"fuzz: {e}", file=sys.stderr)
        return 2
    print(summary.line())
    if summary.saved:
        print(f"failing images in {args.out}/ (replay: python -m tools.fuzz --replay DIR)")
    return 1 if sum(summary.failures.values()) else 0
