"""The last step before the command: namespaces where the overlay replaces the trees for good.

Run as ``python -m uvfs_fs.audit.namespace MOUNTPOINT ROOT LAYERS TREE... -- COMMAND...``
by the runner, from inside its own private namespace, where the overlay of ROOT is mounted
at MOUNTPOINT. Three processes, each in namespaces nested in the previous one's:

1. this process, the *helper*, makes a PID namespace and forks its init; it writes the
   init's user and group ID maps when asked (only a process outside a user namespace may
   map more IDs than its own), then waits and exits as the command did;
2. the *init* (PID 1) makes a mount namespace, binds ``MOUNTPOINT/<TREE relative to ROOT>``
   over each TREE (or, with LAYERS other than ``-``, mounts a kernel overlayfs with that
   view as its lower layer, for ``--writable``), detaches MOUNTPOINT (so the command cannot
   reach the overlay through it and make the driver wait on itself), covers the runner's
   scratch directory holding it, re-enters its working directory through the new mounts,
   mounts a ``/proc`` of the new PID namespace, and only then makes a user namespace with a
   mount namespace of its own. It forks the command, passes it SIGTERM and SIGHUP, reaps
   orphans and exits with the command's status; the kernel then kills whatever is left;
3. the *command*, with the same user and group IDs as the audit had.

Theory: what keeps the command in the view.

* The user namespace. Mounts copied into a mount namespace owned by a less privileged user
  namespace are locked (``MNT_LOCKED``): the command, although root of its user namespace
  and so able to mount, can neither unmount nor move them (EINVAL), nor bind ``/`` without
  what is mounted on it (EINVAL; a recursive bind copies the locked mounts), nor mount a
  disk filesystem (EPERM). ``open_by_handle_at`` wants CAP_DAC_READ_SEARCH of the initial
  user namespace (EPERM), or decodes only beneath a directory with no locked mount below
  it, which the hidden files are not (ESTALE). The ID maps are the identity over every ID
  the helper has, so files keep their owners and root its access to them; a normal user's
  audit runs in a user namespace of its own anyway (``unshare -rm``), as root of it.
* The PID namespace and its own ``/proc``, mounted before the user namespace so that it is
  locked over the old one: ``/proc/PID/root``, ``/proc/PID/fd/N`` and ``/proc/PID/ns/mnt``
  of the server (which holds the real trees open), of the helper, and of every other
  process of the same user are simply not there.
* No descriptor crosses: the runner starts the helper with the standard streams only, and
  Python opens everything close-on-exec.
* ``..`` and symlinks are resolved by the kernel in the command's namespace, so they land
  in the view. A working directory hidden by ``--enforce`` cannot be entered again through
  the view, and the real one must not be kept (relative paths and ``..`` from it would walk
  the real tree): the command starts in ``/``.
* The scratch directory is covered because the server writes its result there as root: a
  symlink planted in its place would make the server write wherever the command likes.

Why namespaces of their own: the driver must keep seeing the real trees at their paths (it
imports lazily, logs, and would otherwise deadlock reading its own mount), so the bind
mounts live only here. Why separate processes: everything they load is loaded before the
binds, so none of it shows in the record.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
EXIT_CANNOT_RUN = 126  # as the shell: the command was found but could not be run
EXIT_NOT_FOUND = 127
# Signals the init passes on to the command; the terminal sends SIGINT and SIGQUIT to the
# whole process group, the command included, so helper and init ignore those.
_FORWARDED = (signal.SIGTERM, signal.SIGHUP)
_IGNORED = (signal.SIGINT, signal.SIGQUIT)

_Where = tuple[str, str, str | None, list[str]]  # the arguments of `enter`

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int, what: str) -> None:
    """unshare(2) `flags`; `what` names it in the error."""
    _check(_libc.unshare(flags), what)


def make_undumpable() -> None:
    """Close this process's /proc/PID/{fd,root,mem...} to other processes of the same user."""
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def unshare_mounts() -> None:
    """Move this process into a new mount namespace whose mounts propagate nowhere."""
    unshare(CLONE_NEWNS, "unshare")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")


def bind(source: str, target: str) -> None:
    """Mount the tree at `source` over `target` too."""
    _check(_libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND, None), target)


def detach(target: str) -> None:
    """Unmount `target` lazily (its binds elsewhere stay)."""
    _check(_libc.umount2(os.fsencode(target), MNT_DETACH), f"detach {target}")


def cover(target: str) -> None:
    """Mount an empty read-only directory over `target`."""
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(_libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", flags, b"size=4k"), target)


def mount_proc() -> None:
    """Mount over /proc a procfs of this process's PID namespace."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(_libc.mount(b"proc", b"/proc", b"proc", flags, None), "mount /proc")


def _in_user_namespace() -> bool:
    with open("/proc/self/uid_map") as f:
        return f.read().split() != ["0", "0", "4294967295"]


def _escape(path: str) -> str:
    # overlayfs splits its options at "," and its layer lists at ":"
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def overlay(lower: str, upper: str, work: str, target: str) -> None:
    """Mount a kernel overlayfs over `target`: reads from `lower`, changes into `upper`."""
    options = f"lowerdir={_escape(lower)},upperdir={_escape(upper)},workdir={_escape(work)}"
    if _in_user_namespace():
        options += ",userxattr"  # trusted.* xattrs need root of the initial namespace
    _check(
        _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, os.fsencode(options)), target
    )


def enter(mountpoint: str, root: str, layers: str | None, trees: list[str]) -> None:
    """Put the overlay's view of each of `trees` over it, then hide `mountpoint`.

    Without `layers` the view is bound read-only as it is; with it, a kernel overlayfs
    takes the changes into ``LAYERS/upper/<i>`` (``LAYERS/work/<i>`` is its scratch).
    The directory holding `mountpoint` is the runner's scratch (plan, hidden list, layers,
    and the result the server writes as root): an empty read-only directory covers it, so
    that the command can neither read nor plant anything there.
    """
    unshare_mounts()
    for i, tree in enumerate(trees):
        view = os.path.join(mountpoint, os.path.relpath(tree, root))
        if layers is None:
            bind(view, tree)
        else:
            upper, work = (os.path.join(layers, part, str(i)) for part in ("upper", "work"))
            overlay(view, upper, work, tree)
    detach(mountpoint)
    cover(os.path.dirname(mountpoint))
    # The old working directory is the one under the mounts: enter it again through them.
    # If --enforce hides it, do not keep the real one: start in / instead.
    try:
        os.chdir(os.getcwd())
    except OSError:
        os.chdir("/")


def identity_map(own_map: str) -> str:
    """The ID map (uid_map or gid_map format) of a child user namespace keeping every ID
    of `own_map`, the parent's own map, as it is."""
    lines = (line.split() for line in own_map.splitlines() if line.strip())
    return "".join(f"{inside} {inside} {count}\n" for inside, _, count in lines)


def map_ids(pid: int) -> None:
    """Give the user namespace of process `pid` the identity over this process's IDs."""
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/self/{name}") as f:
            own = f.read()
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(identity_map(own))


def _exit_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # a signal, as the shell shows it


def _pass_signals(to: int) -> None:
    """From now on, pass `_FORWARDED` signals on to process `to`."""

    def forward(sig: int, _: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # reaped already
            os.kill(to, sig)

    for sig in _FORWARDED:
        signal.signal(sig, forward)


def _exec(command: list[str]) -> int:
    """Become `command`; returns only on failure."""
    for sig in (*_IGNORED, signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores the last two
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        print(f"uvfs audit: {command[0]}: command not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    except OSError as e:
        print(f"uvfs audit: {command[0]}: {e.strerror}", file=sys.stderr)
        return EXIT_CANNOT_RUN


def _init(ready: int, go: int, where: _Where, command: list[str]) -> int:
    """PID 1: set up the namespaces, run `command`, reap, return its exit status.

    `ready` tells the helper the user namespace exists; `go` says its IDs are mapped.
    """
    try:
        # the helper's death (SIGKILL after a timeout) takes the whole namespace with it
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
        enter(*where)
        mount_proc()
        unshare(CLONE_NEWUSER | CLONE_NEWNS, "unshare the user namespace")
    except OSError as e:
        print(f"uvfs audit: cannot set up the namespace: {e.strerror}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    os.write(ready, b"1")
    if os.read(go, 1) != b"1":  # the helper could not map the IDs, and said why
        return EXIT_CANNOT_RUN
    os.close(ready)
    os.close(go)
    child = os.fork()
    if child == 0:
        os._exit(_exec(command))
    _pass_signals(child)
    while True:  # orphans of the command are reparented here
        pid, status = os.wait()
        if pid == child:
            return _exit_status(status)


def main(argv: list[str]) -> int:
    """Set up the namespaces and run the command; its exit status."""
    split = argv.index("--")
    mountpoint, root, layers, *trees = argv[:split]
    command = argv[split + 1 :]
    where: _Where = (mountpoint, root, None if layers == "-" else layers, trees)
    try:
        unshare(CLONE_NEWPID, "unshare the PID namespace")
    except OSError as e:
        print(f"uvfs audit: cannot set up the namespace: {e.strerror}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    for sig in _IGNORED:  # here and in the init; the command gets them back
        signal.signal(sig, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        os.close(go_w)
        status = EXIT_CANNOT_RUN
        try:
            status = _init(ready_w, go_r, where, command)
        finally:
            os._exit(status)
    os.close(ready_w)
    os.close(go_r)
    _pass_signals(child)
    if os.read(ready_r, 1) == b"1":
        try:
            map_ids(child)
            os.write(go_w, b"1")
        except OSError as e:
            print(f"uvfs audit: cannot map the user namespace's IDs: {e}", file=sys.stderr)
    os.close(go_w)
    return _exit_status(os.waitpid(child, 0)[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
