"""The ``uvfs`` command: mount, umount, info, stats, and the subcommands packages add.

Every failure a user can cause (missing source, unknown type, busy mountpoint, bad option,
an image the driver refuses) ends in one line on stderr starting with ``uvfs:`` and a
non-zero exit status: 1 when the operation failed, 2 when the command line is wrong.

This module parses the command line and runs the light commands itself; ``mount`` and
``info`` live in `uvfs._mount_command`, loaded only when they run, so that ``uvfs umount``
and ``uvfs stats`` (which scripts call in loops, and benchmarks time) start in a few
milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from uvfs import _runtime
from uvfs._user_error import UserError, warn

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

# --- mount, info ----------------------------------------------------------------------------


def cmd_mount(args: argparse.Namespace) -> int:
    from uvfs._mount_command import cmd_mount

    return cmd_mount(args)


def cmd_info(args: argparse.Namespace) -> int:
    from uvfs._mount_command import cmd_info

    return cmd_info(args)


# --- umount, stats ----------------------------------------------------------------------------


def _is_fuse_mount(path: str) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, fstype, *_ = line.split()
            if _runtime.unescape_mount_field(point) == target and fstype.startswith("fuse"):
                return True
    return False


def cmd_umount(args: argparse.Namespace) -> int:
    if not _is_fuse_mount(args.mountpoint):
        raise UserError(f"{args.mountpoint}: not mounted")
    record = _runtime.find(os.path.realpath(args.mountpoint))
    done = subprocess.run(
        ["fusermount3", "-u", args.mountpoint], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise UserError(f"{args.mountpoint}: {reason.removeprefix('fusermount3: ')}")
    if record is not None:
        _wait_for_server(record.pid, args.timeout)
    return 0


# How long a server may take to see its unmount before it is told to stop.
_UNMOUNT_GRACE = 2.0


def _wait_for_server(pid: int, timeout: float) -> None:
    """Wait until the server has written everything back and closed the image.

    A copy of the mount in another mount namespace (made by an unshare while we were
    mounted) keeps the connection alive after our unmount, so the kernel never tells the
    server; after a grace period it gets SIGTERM, which stops it the same orderly way.
    """
    start = time.monotonic()
    told = False
    while _alive(pid):
        waited = time.monotonic() - start
        if waited > timeout:
            raise UserError(f"server {pid} still writing back after {timeout:g}s")
        if not told and waited > _UNMOUNT_GRACE:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            told = True
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def cmd_stats(args: argparse.Namespace) -> int:
    record = _runtime.find(os.path.realpath(args.mountpoint))
    if record is None:
        raise UserError(f"{args.mountpoint}: not a uvfs mount of this user")
    stats = _runtime.query(Path(record.socket))
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(
        f"mountpoint: {stats['mountpoint']} ({stats['type']}, "
        f"{'read-only' if stats['read_only'] else 'read-write'}, pid {record.pid})"
    )
    for warning in stats.get("warnings", ()):  # what `uvfs mount` said
        print(f"warning: {warning}")
    for section in ("driver", "broker", "cache", "memory"):
        for name, value in stats.get(section, {}).items():
            # The memory section's caches and peaks are maps: one line per cache.
            for key, item in value.items() if isinstance(value, dict) else [("", value)]:
                print(f"{section}.{name}{'.' if key else ''}{key}: {item}")
    return 0


def added_commands() -> dict[str, EntryPoint]:
    """Subcommands registered under the ``uvfs.commands`` entry-point group (``uvfs audit``
    is the audit overlay's): each takes the rest of the command line, options and all."""
    from importlib.metadata import entry_points  # a few hundredths of a second: only here

    return {ep.name: ep for ep in entry_points(group="uvfs.commands")}


# --- the command line -------------------------------------------------------------------------


def build_parser(*, summaries: bool = True) -> argparse.ArgumentParser:
    """The parser; `summaries` imports each added command's module for its help line."""
    parser = argparse.ArgumentParser(
        prog="uvfs", description="Mount filesystem images in userland, through FUSE."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("mount", help="mount filesystem images")
    p.add_argument("-t", dest="type", metavar="TYPE", help="filesystem type (default: detect)")
    p.add_argument(
        "-o",
        dest="options",
        metavar="OPT[,OPT...]",
        help="ro, rw (default), allow_other, debug, force, "
        "isolate (serve the driver from a process of its own, restarted when it dies), "
        "driver_timeout=SECS (with isolate: a request unanswered that long gets the driver "
        "restarted; default 60), "
        "fakeroot (you act as root inside the image; not with allow_other), "
        "cache_size=SIZE (default 256M; a user's mounts share the largest size any asked "
        "for, none holding more than its own; 0 disables the buffer cache)",
    )
    p.add_argument(
        "-f",
        dest="foreground",
        action="store_true",
        help="stay in the foreground and log to stderr",
    )
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image file(s), e.g. vdevs")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("umount", help="unmount and wait until everything is written back")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_umount)

    p = sub.add_parser(
        "info", help="show the type and a summary of an image, or a disk's partitions"
    )
    p.add_argument("-t", dest="type", metavar="TYPE")
    p.add_argument(
        "-p", "--partition", type=int, metavar="N", help="summarise partition N of a disk"
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("stats", help="show a mount's driver, broker and cache counters")
    p.add_argument("--json", action="store_true", help="print them as one JSON object")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.set_defaults(func=cmd_stats)

    # Listed for --help only: main() hands "uvfs NAME ..." to the command's own parser whole.
    for name, ep in added_commands().items():
        doc = importlib.import_module(ep.module).__doc__ if summaries else None
        summary = (doc or name).strip().splitlines()[0]
        sub.add_parser(name, help=f"{summary} (uvfs {name} --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    builtin = argv and argv[0] in ("mount", "umount", "info", "stats")
    command = added_commands().get(argv[0]) if argv and not builtin else None
    if command is not None:
        main: Callable[[list[str]], int] = command.load()
        return main(argv[1:])
    # Only a help text needs the added commands' summaries (their imports cost time).
    parser = build_parser(summaries=not argv or argv[0] in ("-h", "--help"))
    args = parser.parse_args(argv)
    if args.command == "mount" and len(args.sources) < 1:
        parser.error("mount needs SOURCE... MOUNTPOINT")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (uvfs stats | head): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as e:
        warn(str(e))
        return 1
    except BaseException as e:
        # Loaded only on this path: the error types come from the modules mount needs.
        from uvfs._mount_command import user_failure

        failure = user_failure(e)
        if failure is None:
            raise
        warn(failure)
        return 1


if __name__ == "__main__":  # how `uvfs mount` starts its server: python -m uvfs.cli
    status = main()
    # The image is closed and synced by now. Skip the interpreter's teardown, which frees
    # every cached object one by one (a tenth of a second that `uvfs umount` waits for),
    # unless a profiler (python -m cProfile) still has to write its results.
    if sys.getprofile() is None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
