"""Mount lifecycle: from an open filesystem to a live FUSE mount, and back out cleanly.

`serve` owns one FUSE session (pyfuse3 allows one per process). It returns when the
mount goes away (``uvfs umount``, ``fusermount3 -u``) or when it is cancelled (a signal),
and on every way out it unmounts and then closes the broker, which lets the driver write
back and mark its image clean. Nothing it starts outlives it.

The serving trio loop answers the mount's requests, so code on that loop must never touch
the mountpoint synchronously (stat, realpath, open): the call would wait for an answer that
only the blocked loop can give. Touch it from another process, or from a worker thread
(`trio.to_thread.run_sync`) while the loop keeps running.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pyfuse3
import trio

from uvfs._api import FileSystem, FSError
from uvfs._broker import Broker, Timeouts
from uvfs._fuse import FuseOperations
from uvfs._isolation import on_restart
from uvfs._runtime import unescape_mount_field

if TYPE_CHECKING:
    from uvfs._cache import BufferCache

log = logging.getLogger("uvfs.mount")

WRITE_BACK_SECONDS = 5.0  # how often a writable mount's driver may write back (`Sync`)

# Sequential reads arrive in requests of the mount's read-ahead size; 1 MiB instead of the
# default 128 KiB cuts round trips eightfold (only root may change it).
_READ_AHEAD_KB = 1024


class MountFailed(Exception):
    """The kernel mount itself failed (permissions, no /dev/fuse ...)."""


def _mount_device(target: str) -> str | None:
    """The "major:minor" of the filesystem mounted at real path `target`, from mountinfo.

    Read from /proc rather than stat(2): stat of our own mountpoint would wait for this very
    process to answer.
    """
    device = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if unescape_mount_field(fields[4]) == target:
                device = fields[2]  # the last match is the one on top
    return device


async def _raise_read_ahead(initialized: trio.Event, target: str) -> None:
    """Raise the mount's read-ahead once the kernel has its INIT reply, which would
    otherwise cut it back to the 128 KiB libfuse asks for."""
    await initialized.wait()
    device = _mount_device(target)
    if device is None:
        return
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(str(_READ_AHEAD_KB))
    except OSError as e:
        log.debug("cannot raise read-ahead of %s: %s", target, e)


async def _write_back(broker: Broker) -> None:
    """Give the driver its chance to write back every `WRITE_BACK_SECONDS`."""
    while True:
        await trio.sleep(WRITE_BACK_SECONDS)
        with contextlib.suppress(FSError):  # logged by the broker; the next try may work
            await broker.sync()


def _invalidate(nodes: Iterable[int], entries: Iterable[tuple[int, bytes]]) -> None:
    """Make the kernel forget its cached `entries` (names, found or missing) and its cached
    data and attributes of `nodes`."""
    for parent, name in entries:
        with contextlib.suppress(OSError):  # ENOENT: the kernel holds no such entry
            pyfuse3.invalidate_entry(parent, name)
    for ino in nodes:
        with contextlib.suppress(OSError):  # ENOENT: the kernel let it go meanwhile
            pyfuse3.invalidate_inode(ino)


async def serve(
    filesystem: FileSystem,
    mountpoint: str,
    *,
    read_only: bool,
    fuse_options: Sequence[str] = (),
    fsname: str = "uvfs",
    subtype: str = "uvfs",
    cache: BufferCache | None = None,
    mount_id: int = 0,
    timeouts: Timeouts | None = None,
    fakeroot: bool = False,
    task_status: trio.TaskStatus[Broker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount `filesystem` at `mountpoint` and serve it until unmounted or cancelled.

    Args:
        filesystem: the driver's open filesystem.
        mountpoint: an existing directory.
        read_only: mount read-only (the kernel refuses every change with EROFS).
        fuse_options: further FUSE mount options (allow_other, default_permissions, debug).
        fsname: what /proc/mounts shows as the source.
        subtype: what /proc/mounts shows after "fuse.".
        cache: the buffer cache to read through; None passes reads straight to the driver.
        mount_id: this mount's key in `cache`.
        timeouts: how long the kernel may cache names, attributes and misses (zeros make
            every access reach the driver); default: long when read-only, short otherwise.
        fakeroot: the mounting user acts as root inside the filesystem. Only for a mount
            no other user can enter (no allow_other): the kernel then checks nothing.
        task_status: receives the `Broker` once the mount is live.
    """
    broker = Broker(
        filesystem, read_only=read_only, cache=cache, mount_id=mount_id, timeouts=timeouts
    )
    target = os.path.realpath(mountpoint)  # now: once mounted, resolving it would deadlock
    options = {f"fsname={fsname}", f"subtype={subtype}", *fuse_options}
    if read_only:
        options.add("ro")
    if fakeroot:
        options.discard("default_permissions")
    else:
        # The kernel checks every request against modes and ACLs, as it does for ext4:
        # the only way to check a path walk whose names it has cached.
        options.add("default_permissions")
    operations = FuseOperations(broker, os.getuid() if fakeroot else None)
    mounted = False

    async def forget_lost_changes(names: list[tuple[int, bytes]]) -> None:
        """An isolated driver restarted, losing what it had answered but not written back
        (changes of `names`, among others): neither the broker's caches nor the kernel's
        may show that."""
        nodes, entries = broker.forget_driver_state(names)
        if mounted:
            # In a thread: the kernel may first write back dirty mmap pages of a node,
            # with requests this loop answers.
            await trio.to_thread.run_sync(_invalidate, nodes, entries)

    try:
        pyfuse3.init(operations, mountpoint, options)
    except RuntimeError as e:
        raise MountFailed(f"{mountpoint}: cannot mount: {e}") from None
    mounted = True
    on_restart(filesystem, forget_lost_changes)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_raise_read_ahead, operations.initialized, target)
            if not read_only:
                nursery.start_soon(_write_back, broker)
            task_status.started(broker)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
    finally:
        mounted = False
        pyfuse3.close(unmount=True)
        with trio.CancelScope(shield=True):
            await broker.close()
