"""Run a command with the watched trees replaced by the recording overlay, and tear it all down.

Theory of operation. Three processes, two private mount namespaces:

1. ``uvfs audit`` (on the host) writes a `Plan` to a scratch directory and starts
   ``unshare -m --propagation private`` (``unshare -rm`` as a normal user: a user namespace
   where it is root) running this module's `main`;
2. that process, the *server*, opens the common ancestor of the watched trees as a
   directory descriptor, mounts the `Passthrough` of it at ``SCRATCH/mnt`` with zero
   entry, attribute and negative timeouts (so that every lookup, hits and misses, reaches
   the recorder) and starts `uvfs_fs.audit.namespace`, which makes a second namespace,
   binds the overlay over each watched tree, hides ``SCRATCH/mnt`` and execs the command.
   The server itself still sees the real trees, so it can never wait on its own mount;
3. when the command ends, the server unmounts and writes the record and exit status to
   the scratch directory, and the host process builds the report.

The host never sees a mount: every mount lives in a namespace that dies with its last
process. Whatever happens (the command crashes, ^C, the server fails) the mounts go with
the namespaces; the scratch directory is removed by the host process.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import trio
from uvfs_fs.audit.passthrough import Passthrough
from uvfs_fs.audit.recorder import Recorder

from uvfs._mount import MountFailed, serve

EXIT_SETUP_FAILED = 125  # as env(1) and container runners: the audit itself failed
_UNPRIVILEGED_HINT = (
    " (as a normal user this needs unprivileged user namespaces and read-write access to"
    " /dev/fuse; or run as root)"
)


class RunError(Exception):
    """The audit could not run the command: one line for the user."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What the server needs, as plain data (it is passed as a JSON file)."""

    command: tuple[str, ...]
    root: str  # the overlay's root: a common ancestor of `watched`
    watched: tuple[str, ...]  # real paths, none inside another
    scratch: str  # holds mnt/, hidden, result.json

    @property
    def mountpoint(self) -> str:
        """Where the server mounts the overlay of `root`."""
        return os.path.join(self.scratch, "mnt")

    @property
    def hidden_file(self) -> str:
        """Paths hidden by --enforce, one a line; absent without --enforce."""
        return os.path.join(self.scratch, "hidden")

    @property
    def result_file(self) -> str:
        """The server's record and the command's exit status."""
        return os.path.join(self.scratch, "result.json")


def minimal_trees(paths: Sequence[str]) -> list[str]:
    """Real paths of `paths`, without those inside another one, sorted."""
    real = sorted({os.path.realpath(p) for p in paths})
    out: list[str] = []
    for path in real:
        if not any(path == o or path.startswith(o.rstrip("/") + "/") for o in out):
            out.append(path)
    return out


def check_trees(trees: Sequence[str], scratch_parent: str) -> None:
    """Refuse trees the overlay cannot replace."""
    for tree in trees:
        if not os.path.isdir(tree):
            raise RunError(f"--watch {tree}: not a directory")
        if tree == "/":
            raise RunError("--watch /: the root itself cannot be replaced; watch its subtrees")
        if scratch_parent == tree or scratch_parent.startswith(tree + "/"):
            raise RunError(f"--watch {tree}: holds the scratch directory {scratch_parent}")


def namespace_command() -> list[str]:
    """The unshare(1) invocation that gives the server a private mount namespace."""
    if os.geteuid() == 0:
        return ["unshare", "--mount", "--propagation", "private"]
    return ["unshare", "--map-root-user", "--mount", "--propagation", "private"]


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # a signal, as the shell shows it


def run(
    command: Sequence[str], trees: Sequence[str], hidden: frozenset[str] | None
) -> tuple[int, Recorder]:
    """Run `command` with `trees` overlaid; returns its exit status and what it touched."""
    scratch = tempfile.mkdtemp(prefix="uvfs-audit-")
    try:
        trees = minimal_trees(trees)
        check_trees(trees, os.path.realpath(scratch))
        plan = Plan(tuple(command), os.path.commonpath(trees), tuple(trees), scratch)
        os.mkdir(plan.mountpoint)
        if hidden is not None:
            Path(plan.hidden_file).write_bytes(b"".join(os.fsencode(p) + b"\n" for p in hidden))
        plan_file = os.path.join(scratch, "plan.json")
        Path(plan_file).write_text(json.dumps(asdict(plan)))
        server = [*namespace_command(), sys.executable, "-m", __name__, plan_file]
        # ^C reaches the whole foreground group: the command and the server handle it, this
        # process waits for them to finish cleanly.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            returncode = subprocess.run(server, check=False).returncode
        except FileNotFoundError:
            raise RunError("unshare(1) not found: install util-linux") from None
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            result = json.loads(Path(plan.result_file).read_text())
        except FileNotFoundError:
            hint = "" if os.geteuid() == 0 else _UNPRIVILEGED_HINT
            raise RunError(f"the audit namespace could not be set up{hint}") from None
        if returncode:
            raise RunError("the audit server failed after the command ended")
        return result["exit_status"], Recorder.from_json(result["record"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- the server, inside the first namespace ----------------------------------------------


async def serve_and_run(plan: Plan, recorder: Recorder, hidden: frozenset[str]) -> int:
    """Mount the overlay, run the command in its namespace, unmount; its exit status."""
    fs = Passthrough.from_path(plan.root, recorder, hidden.__contains__)
    step = [sys.executable, "-m", "uvfs_fs.audit.namespace", plan.mountpoint, plan.root]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                serve,
                fs,
                plan.mountpoint,
                read_only=True,
                fuse_options=["default_permissions"]
                + (["allow_other"] if os.getuid() == 0 else []),
                fsname="uvfs-audit",
                subtype="audit",
                entry_timeout=0,
            )
        )
        try:
            done = await trio.run_process(
                [*step, *plan.watched, "--", *plan.command], check=False, stdin=None
            )
        finally:
            nursery.cancel_scope.cancel()
    return _exit_status(done.returncode)


def main(argv: list[str]) -> int:
    """The server: ``python -m uvfs_fs.audit.runner PLAN.json``."""
    data = json.loads(Path(argv[0]).read_text())
    plan = Plan(tuple(data["command"]), data["root"], tuple(data["watched"]), data["scratch"])
    try:
        hidden = frozenset(
            os.fsdecode(line) for line in Path(plan.hidden_file).read_bytes().splitlines()
        )
    except FileNotFoundError:
        hidden = frozenset()
    recorder = Recorder()
    try:
        status = trio.run(serve_and_run, plan, recorder, hidden)
    except (OSError, MountFailed) as e:
        print(f"uvfs audit: {e}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    except KeyboardInterrupt:  # the command was interrupted too: still report what it did
        status = 128 + signal.SIGINT
    result = {"exit_status": status, "record": recorder.to_json()}
    Path(plan.result_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
