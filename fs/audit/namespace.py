"""The last step before the command: a mount namespace where the overlay replaces the trees.

Run as ``python -m uvfs_fs.audit.namespace MOUNTPOINT ROOT LAYERS TREE... -- COMMAND...``
by the runner, from inside its own private namespace, where the overlay of ROOT is mounted
at MOUNTPOINT. This process makes a second namespace, binds ``MOUNTPOINT/<TREE relative to
ROOT>`` over each TREE (or, with LAYERS other than ``-``, mounts a kernel overlayfs with
that view as its lower layer, for ``--writable``), detaches MOUNTPOINT itself (so the
command cannot reach the overlay through it and make the driver wait on itself),
re-enters its working directory through the new mounts and execs COMMAND.

Why a second namespace: the driver must keep seeing the real trees at their paths (it
imports lazily, logs, and would otherwise deadlock reading its own mount), so the bind
mounts live only here. Why a separate process: everything it loads is loaded before the
binds, so none of it shows in the record.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
EXIT_CANNOT_RUN = 126  # as the shell: the command was found but could not be run
EXIT_NOT_FOUND = 127

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare_mounts() -> None:
    """Move this process into a new mount namespace whose mounts propagate nowhere."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")


def bind(source: str, target: str) -> None:
    """Mount the tree at `source` over `target` too."""
    _check(_libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND, None), target)


def detach(target: str) -> None:
    """Unmount `target` lazily (its binds elsewhere stay)."""
    _check(_libc.umount2(os.fsencode(target), MNT_DETACH), f"detach {target}")


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
    # The old working directory is the one under the mounts: enter it again through them,
    # unless --enforce hides it.
    with contextlib.suppress(OSError):
        os.chdir(os.getcwd())


def main(argv: list[str]) -> int:
    """Set up the namespace and exec the command; returns only on failure."""
    split = argv.index("--")
    mountpoint, root, layers, *trees = argv[:split]
    command = argv[split + 1 :]
    try:
        enter(mountpoint, root, None if layers == "-" else layers, trees)
    except OSError as e:
        print(f"uvfs audit: cannot set up the namespace: {e.strerror}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        print(f"uvfs audit: {command[0]}: command not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    except OSError as e:
        print(f"uvfs audit: {command[0]}: {e.strerror}", file=sys.stderr)
        return EXIT_CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
