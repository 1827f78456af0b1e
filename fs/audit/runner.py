"""Run a command with the watched trees replaced by the recording overlay, and tear it all down.

Theory of operation. The server and the command, each in namespaces of its own:

1. ``uvfs audit`` (on the host) writes a `Plan` to a scratch directory and starts
   ``unshare -m --propagation private`` (``unshare -rm`` as a normal user: a user namespace
   where it is root) running this module's `main`;
2. that process, the *server*, makes itself non-dumpable, opens the common ancestor of the
   watched trees as a directory descriptor, mounts the `Passthrough` of it at
   ``SCRATCH/mnt`` with zero entry and negative timeouts (so that every lookup, hits and
   misses, reaches the recorder; see `ATTR_TIMEOUT`) and starts
   `uvfs_fs.audit.namespace`, which binds the overlay over each watched tree in a mount
   namespace of its own, hides ``SCRATCH`` and runs the command in a PID and a user
   namespace, where those mounts are locked (see there for what keeps the command in).
   The server itself still sees the real trees, so it can never wait on its own mount;
3. when the command ends, the server unmounts and writes the record and exit status to
   the scratch directory, and the host process builds the report.

Before the command, the server runs the audited interpreter once on the same overlay
(`STARTUP`: start, then import every extension module of the standard library), recorded
apart and with nothing hidden. What that touches is the interpreter's doing, not the
command's: ``.pth`` files and what they import, the C library's locale files, the probes
for ``pyvenv.cfg``, and the shared libraries the standard library links (``ssl`` needs
libssl3 and reads openssl.cnf, ``sqlite3`` libsqlite3-0 ...). Those paths are baseline;
with ``--enforce`` they stay visible.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from uvfs import MountFailed, Timeouts, serve
from uvfs_fs.audit.namespace import make_undumpable
from uvfs_fs.audit.passthrough import Passthrough
from uvfs_fs.audit.recorder import Access, Kind, Recorder

# What the kernel may cache. Names: nothing, so that every lookup, hit or miss, reaches the
# recorder; a cached name would also hide the first stat of a file the kernel learnt from
# a readdir (readdirplus). Attributes: the tree is read-only, so for the whole run; this
# halves the requests of `import numpy` (each path walk asked for every component's
# attributes again) and loses only repeated getattr counts, never a path.
ATTR_TIMEOUT = 3600.0
# The interpreter's own footprint: a start and the standard library's extension modules.
STARTUP = """\
import os, sysconfig
shared = sysconfig.get_config_var("DESTSHARED") or ""
for name in sorted(os.listdir(shared)) if os.path.isdir(shared) else ():
    try:
        __import__(name.partition(".")[0])
    except Exception:  # e.g. _tkinter without Tk: its probes are the interpreter's too
        pass
"""
EXIT_SETUP_FAILED = 125  # as env(1) and container runners: the audit itself failed
_UNPRIVILEGED_HINT = (
    " (as a normal user, uvfs audit needs unprivileged user namespaces and read-write"
    " access to /dev/fuse; or run it as root)"
)


class RunError(Exception):
    """The audit could not run the command: one line for the user."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What the server needs, as plain data (it is passed as a JSON file)."""

    command: tuple[str, ...]
    startup: tuple[str, ...]  # the interpreter's footprint, whose accesses are baseline
    root: str  # the overlay's root: a common ancestor of `watched`
    watched: tuple[str, ...]  # real paths, none inside another
    scratch: str  # holds mnt/, hidden, result.json, layers/
    writable: bool  # changes go to layers/upper/<i> through a kernel overlayfs

    @property
    def mountpoint(self) -> str:
        """Where the server mounts the overlay of `root`."""
        return os.path.join(self.scratch, "mnt")

    @property
    def hidden_file(self) -> str:
        """Paths hidden by --enforce, each ended by a NUL; absent without --enforce."""
        return os.path.join(self.scratch, "hidden")

    @property
    def layers(self) -> str:
        """With `writable`: ``upper/<i>`` and ``work/<i>`` of each watched tree's overlayfs."""
        return os.path.join(self.scratch, "layers")

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


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one audited run produced."""

    exit_status: int
    record: Recorder  # what the command touched
    startup: Recorder  # what the interpreter's own footprint (`STARTUP`) touched


def run(
    command: Sequence[str],
    python: str,
    trees: Sequence[str],
    hidden: frozenset[str] | None,
    writable: bool = False,
) -> RunResult:
    """Run `command` with `trees` overlaid, after `STARTUP` in `python`.

    With `writable`, the command's changes go to a scratch layer, recorded and discarded.
    """
    scratch = tempfile.mkdtemp(prefix="uvfs-audit-")
    try:
        trees = minimal_trees(trees)
        check_trees(trees, os.path.realpath(scratch))
        startup = (python, "-c", STARTUP)
        root = os.path.commonpath(trees)
        plan = Plan(tuple(command), startup, root, tuple(trees), scratch, writable)
        os.mkdir(plan.mountpoint)
        if writable:
            for i in range(len(trees)):
                os.makedirs(os.path.join(plan.layers, "upper", str(i)))
                os.makedirs(os.path.join(plan.layers, "work", str(i)))
        if hidden is not None:
            Path(plan.hidden_file).write_bytes(b"".join(os.fsencode(p) + b"\0" for p in hidden))
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
        except FileNotFoundError:  # unshare(1) itself failed, and said why
            result = {"error": "cannot create the audit's mount namespace"}
        if "error" in result:
            hint = "" if os.geteuid() == 0 else _UNPRIVILEGED_HINT
            raise RunError(result["error"] + hint)
        if returncode:
            raise RunError("the audit server failed after the command ended")
        return RunResult(
            result["exit_status"],
            Recorder.from_json(result["record"]),
            Recorder.from_json(result["startup"]),
        )
    finally:
        # overlayfs leaves work/<i>/work with mode 0: a normal user could not remove it
        for work in glob.glob(os.path.join(glob.escape(scratch), "layers", "work", "*", "*")):
            os.chmod(work, 0o700)
        shutil.rmtree(scratch, ignore_errors=True)


# --- the server, inside the first namespace ----------------------------------------------


def record_writes(plan: Plan, recorder: Recorder) -> None:
    """Record as ``open_write`` every non-directory the command left in an upper layer.

    Under ``--writable`` the kernel's overlayfs takes the writes, so the driver sees only
    the read that copies a file up; the upper layers tell what was created, changed or
    deleted (a deletion leaves a whiteout, a 0/0 character device, named like the file).
    """
    for i, tree in enumerate(plan.watched):
        upper = os.path.join(plan.layers, "upper", str(i))
        for directory, dirs, files in os.walk(upper):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
                path = os.path.join(tree, os.path.relpath(os.path.join(directory, name), upper))
                recorder.record(os.path.normpath(path), Access.OPEN_WRITE, Kind.FILE)


async def serve_and_run(
    plan: Plan, recorder: Recorder, startup: Recorder, hidden: frozenset[str]
) -> int:
    """Mount the overlay, run `STARTUP` then the command, unmount; its exit status."""
    fs = Passthrough.from_path(plan.root, startup)
    step = [sys.executable, "-m", "uvfs_fs.audit.namespace", plan.mountpoint, plan.root]
    step += [plan.layers if plan.writable else "-", *plan.watched, "--"]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                serve,
                fs,
                plan.mountpoint,
                # Read-only at the driver, not at the kernel: opens for writing must reach
                # the recorder before they fail with EROFS, and the broker keeps no metadata
                # cache of its own for a writable mount (every lookup reaches the driver).
                read_only=False,
                fuse_options=["default_permissions"]
                + (["allow_other"] if os.getuid() == 0 else []),
                fsname="uvfs-audit",
                subtype="audit",
                # Every lookup of a file, hit or miss, must reach the recorder; a directory's
                # name may be cached, since its first lookup is recorded and path walks
                # through it would otherwise cost most of the audit's overhead.
                timeouts=Timeouts(
                    entry=0.0, attr=ATTR_TIMEOUT, negative=0.0, directory_entry=ATTR_TIMEOUT
                ),
            )
        )
        try:
            await trio.run_process(
                [*step, *plan.startup],
                check=False,
                cwd="/",  # the command's working directory is the command's footprint
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            fs.recorder = recorder
            fs.hidden = lambda path: path in hidden and path not in startup
            done = await trio.run_process([*step, *plan.command], check=False, stdin=None)
        finally:
            nursery.cancel_scope.cancel()
    if plan.writable:
        record_writes(plan, recorder)
    return _exit_status(done.returncode)


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for sub in error.exceptions:
            yield from _leaves(sub)
    else:
        yield error


def main(argv: list[str]) -> int:
    """The server: ``python -m uvfs_fs.audit.runner PLAN.json``."""
    # It holds the real trees open: no other process of this user may reach them through
    # /proc/PID/fd or /proc/PID/root (the command cannot even see it; this is for the rest).
    make_undumpable()
    data = json.loads(Path(argv[0]).read_text())
    plan = Plan(
        tuple(data["command"]),
        tuple(data["startup"]),
        data["root"],
        tuple(data["watched"]),
        data["scratch"],
        data["writable"],
    )
    try:
        hidden = frozenset(
            os.fsdecode(p) for p in Path(plan.hidden_file).read_bytes().split(b"\0") if p
        )
    except FileNotFoundError:
        hidden = frozenset()
    recorder, startup = Recorder(), Recorder()
    try:
        status = trio.run(serve_and_run, plan, recorder, startup, hidden)
    except BaseException as e:  # trio wraps failures of the nursery's tasks in groups
        leaves = list(_leaves(e))
        if any(isinstance(x, KeyboardInterrupt) for x in leaves):
            status = 128 + signal.SIGINT  # ^C: the command got it too; report what it did
        else:
            failure = next((x for x in leaves if isinstance(x, OSError | MountFailed)), None)
            if failure is None:
                raise
            Path(plan.result_file).write_text(json.dumps({"error": str(failure)}))
            return EXIT_SETUP_FAILED
    result = {"exit_status": status, "record": recorder.to_json(), "startup": startup.to_json()}
    Path(plan.result_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
