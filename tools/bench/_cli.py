"""``python -m tools.bench``: parse the command line, run, print, write JSON and chart."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from ._host import BenchError, exclusive
from ._images import prepare
from ._memory import CACHE_BUDGET
from ._profile import Profiler
from ._report import table, write_chart, write_json
from ._results import Results
from ._sizes import FULL, QUICK, TINY, Sizes
from ._suite import REPO, SUITES, Bench, host_facts, run_suites


def _suites(text: str) -> tuple[str, ...]:
    chosen = tuple(filter(None, text.split(",")))
    unknown = [s for s in chosen if s not in SUITES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown suite '{','.join(unknown)}' (choose from {', '.join(SUITES)})"
        )
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Compare uvfs with the kernel, fuse2fs and zfs-fuse on the same images.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small images, one run (< 2 minutes)")
    size.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the smoke test's
    parser.add_argument(
        "--only",
        type=_suites,
        default=SUITES,
        metavar="SUITE[,SUITE]",
        help=f"run only these ({'|'.join(SUITES)})",
    )
    parser.add_argument("--runs", type=int, help="runs per measurement (default 3, --quick 1)")
    parser.add_argument(
        "--ext2-type",
        default="ext2",
        metavar="TYPE",
        help="uvfs mount -t for the ext2 and write suites (default ext2; e.g. "
        "uvfs_fs.ext2.writable:DRIVER for a driver under development)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record uvfs cold runs with py-spy into RESULTS/profiles/ (slows them down)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/var/tmp/uvfs-bench"),
        help="image cache and mountpoints (default /var/tmp/uvfs-bench)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / "bench-results",
        help="where results.json and chart.png go (default bench-results/)",
    )
    return parser


PRIVATE_NAMESPACE = "UVFS_BENCH_PRIVATE_NAMESPACE"  # set once re-run inside it


def _enter_private_namespace(argv: Sequence[str]) -> None:
    """Run the benchmark again in a mount namespace of its own (replacing this process).

    Another process that creates a mount namespace (zfs-fuse test daemons, audit runs) copies
    every mount that exists at that moment; a copy of one of ours then outlives our unmount,
    so the FUSE server never hears it is unmounted and the loop device stays attached. Our
    mounts made in a private namespace are never copied, and go away with it.
    """
    if os.environ.get(PRIVATE_NAMESPACE):
        return
    if shutil.which("unshare") is None:
        raise BenchError("unshare (util-linux) is not installed")
    os.environ[PRIVATE_NAMESPACE] = "1"
    command = [sys.executable, "-m", "tools.bench", *argv]
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", *command])


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a run as Ctrl-C does: everything is unmounted


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 1:
            return _fail("--runs must be at least 1")
        sizes = replace(sizes, runs=args.runs)
    if os.geteuid() != 0:
        return _fail("needs root: loop mounts, dropping the page cache and zfs-fuse")
    for option, path in (("--workdir", args.workdir), ("--results", args.results)):
        if path.exists() and not path.is_dir():
            return _fail(f"{option} {path}: not a directory")
    try:
        _enter_private_namespace(argv)
    except BenchError as e:
        return _fail(str(e))
    try:
        args.results.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(args.results / "profiles") if args.profile else None
        results = measure(
            sizes, args.workdir.resolve(), args.only, profiler=profiler, ext2_type=args.ext2_type
        )
        write_json(results, args.results / "results.json")
        print(table(results))
        write_chart(results, args.results / "chart.png")
    except BenchError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.filename}: {e.strerror}" if e.filename else str(e))
    except KeyboardInterrupt:
        return _fail("interrupted (everything was unmounted)", 130)
    print(f"\nbench: wrote {args.results / 'results.json'} and {args.results / 'chart.png'}")
    return 0


def measure(
    sizes: Sizes,
    workdir: Path,
    suites: tuple[str, ...],
    *,
    profiler: Profiler | None,
    ext2_type: str,
) -> Results:
    """Build or reuse the images in `workdir` and run `suites` over them (see `Bench`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    # uvfs servers keep their records, logs and the cache-budget table they share in the
    # runtime directory: a private one keeps our mounts' caches from sharing a budget with
    # the user's other mounts (a test suite running meanwhile), and their logs at hand.
    runtime = workdir / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    with exclusive(workdir):
        images = prepare(workdir, sizes)
        meta = {
            "size": sizes.name,
            "runs": sizes.runs,
            "sizes": asdict(sizes),
            "uvfs_ext2_type": ext2_type,
            "cache_budget": CACHE_BUDGET,
            **host_facts(),
        }
        results = Results(meta)
        started = time.monotonic()
        run_suites(Bench(sizes, workdir, images, results, profiler, ext2_type), suites)
    results.meta["seconds"] = round(time.monotonic() - started, 1)
    results.meta["load_at_end"] = os.getloadavg()
    results.meta["profiled"] = profiler is not None
    if profiler is not None:
        results.profiles = profiler.summaries()
    return results


def _fail(message: str, status: int = 1) -> int:
    print(f"bench: {message}", file=sys.stderr)
    return status
