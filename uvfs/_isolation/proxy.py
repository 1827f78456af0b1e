"""The filesystem the broker sees for an isolated driver: each call forwarded to the
current driver process, which is restarted when it dies (see `uvfs._isolation`)."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import ExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any

import trio

from uvfs import _api as api
from uvfs._api import Caller, FSError, MountOptions, Refusal
from uvfs._image import ImageInUse
from uvfs._isolation.process import DEFAULT_TIMEOUT, Died, DriverProcess, LostInFlight
from uvfs._layout import LayoutReader
from uvfs._source import Source, open_source
from uvfs._window import BlockDevice

log = logging.getLogger("uvfs.isolation")

# Requests that change nothing: after a death they are asked again of the new process.
_REPEATABLE = frozenset(
    {"lookup", "getattr", "readdir", "read", "read_layout", "readlink", "getxattr", "listxattr",
     "statfs"}
)  # fmt: skip
# Where a change names directory entries: (parent, name) positions in its arguments.
_NAMES: dict[str, tuple[tuple[int, int], ...]] = {
    "create": ((0, 1),), "mknod": ((0, 1),), "mkdir": ((0, 1),), "symlink": ((0, 1),),
    "link": ((1, 2),), "unlink": ((0, 1),), "rmdir": ((0, 1),), "rename": ((0, 1), (2, 3)),
}  # fmt: skip
UNSYNCED_NAMES_MAX = 100_000  # names remembered for a driver that never writes back
Name = tuple[int, bytes]  # a directory entry: the parent's inode number and the name
_REOPEN_DROPS = os.O_TRUNC | os.O_CREAT | os.O_EXCL  # what opening again must not repeat

DEATHS_MAX = 5  # deaths survived within DEATHS_WINDOW; one more and the proxy gives up
DEATHS_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class DriverStatistics:
    """What `uvfs stats` shows about the process serving the driver."""

    pid: int  # the driver's process (the server's own when the driver is not isolated)
    restarts: int  # processes started after the first
    layouts: int = 0  # read layouts asked of the driver (`ReadLayout`)
    layout_reads: int = 0  # reads answered from the images through them, sparing a request


def driver_statistics(fs: api.FileSystem) -> DriverStatistics:
    """`fs`'s process and restarts: an isolated proxy's, or this process's for a driver
    served in-process."""
    if isinstance(fs, _Proxy):
        return fs.statistics()
    return DriverStatistics(pid=os.getpid(), restarts=0)


@dataclass(slots=True)
class _Handle:
    """An open file: the driver's handle in `process`, and how to open it again."""

    ino: int
    flags: int
    caller: Caller
    process: DriverProcess
    handle: int
    written: bool = False  # written through since its last fsync, in `process`
    lost: bool = False  # written through in a process that died: the next fsync says EIO


class _Proxy:
    """Forwards each call to the current driver process, restarting it when it dies.

    Not an operation's name among its attributes: the broker tells operations by name.
    """

    def __init__(
        self,
        spec: tuple[str, Sequence[Source], MountOptions],
        timeout: float,
        first: DriverProcess,
        root: int,
        operations: list[str],
    ) -> None:
        self.root = root
        self._spec = spec
        self._timeout = timeout
        self._operations = operations
        self._process = first
        self._changed = trio.Event()  # set (and replaced) when `_process` changes or fails
        self._failed = False
        self._restarts = 0
        self._deaths: deque[float] = deque()
        self._handles: dict[int, _Handle] = {}
        self._handle_ids = itertools.count(1)
        self._reopening = trio.Lock()
        self._restart_callbacks: list[Callable[[list[Name]], Awaitable[None]]] = []
        # Names changed since the driver last wrote back (`sync`): a restart may have lost
        # those changes, so the kernel's name cache must let them go. Value: when changed.
        self._unsynced: dict[Name, int] = {}
        self._changes = itertools.count()
        self._layouts: LayoutReader | None = None  # see `read_from_images`

    def statistics(self) -> DriverStatistics:
        layouts = self._layouts
        return DriverStatistics(
            pid=self._process.pid,
            restarts=self._restarts,
            layouts=layouts.layouts_fetched if layouts else 0,
            layout_reads=layouts.reads if layouts else 0,
        )

    def read_from_images(self, devices: Sequence[BlockDevice]) -> None:
        """Answer reads from `devices` (the sources, opened here too) where the driver's
        read layouts place the bytes, asking the process once per file window instead of
        once per read. Only for a read-only mount: no write or truncate can move the bytes,
        and only a restart forgets the layouts."""
        self._layouts = LayoutReader(
            devices, lambda ino, offset, size: self._call("read_layout", (ino, offset, size))
        )

    # --- requests -------------------------------------------------------------------------

    async def _serving(self) -> DriverProcess:
        """The live process, once there is one again; EIO once the proxy has given up."""
        while True:
            if self._failed:
                raise FSError(errno.EIO, "the driver process kept dying; given up")
            if self._process.alive:
                return self._process
            await self._changed.wait()

    async def _request(
        self, operation: str, args: tuple, *, repeatable: bool, handle: bool = False
    ) -> tuple[DriverProcess, Any]:
        """`operation` on the current process: the process and the answer. After a death
        with the request in flight it is asked once more of the next process if
        `repeatable`, else it fails with EIO. With `handle`, ``args[1]`` is a proxy handle."""
        if operation in _NAMES:
            self._note_names(operation, args)
        repeated = False
        while True:
            process = await self._serving()
            try:
                sent = args
                if handle:
                    sent = (args[0], await self._driver_handle(process, args[1]), *args[2:])
                return process, _unwrap(operation, await process.call(operation, sent))
            except Died as died:
                if died.sent and (repeated or not repeatable):
                    raise LostInFlight(operation) from None
                repeated |= died.sent

    async def _call(self, operation: str, args: tuple) -> Any:
        return (await self._request(operation, args, repeatable=operation in _REPEATABLE))[1]

    def _note_names(self, operation: str, args: tuple) -> None:
        """Remember the names `operation` changes (before it is sent: it may happen even if
        the process dies before answering)."""
        when = next(self._changes)
        for parent, name in _NAMES[operation]:
            self._unsynced.pop((args[parent], args[name]), None)  # to the young end
            self._unsynced[args[parent], args[name]] = when
        while len(self._unsynced) > UNSYNCED_NAMES_MAX:  # a driver that never syncs
            del self._unsynced[next(iter(self._unsynced))]

    async def _sync(self) -> None:
        """The driver's write-back: the names changed before it began are on the image."""
        began = next(self._changes)
        process, _ = await self._request("sync", (), repeatable=False)
        if process is self._process:  # not a process that has died since
            self._unsynced = {k: when for k, when in self._unsynced.items() if when > began}

    async def _call_with_handle(self, operation: str, args: tuple) -> Any:
        repeatable = operation in _REPEATABLE
        return (await self._request(operation, args, repeatable=repeatable, handle=True))[1]

    async def _driver_handle(self, process: DriverProcess, handle: int) -> int:
        h = self._handles.get(handle)
        if h is None:
            return handle  # not one of ours: fsyncdir's 0
        if h.process is not process:
            async with self._reopening:
                if h.process is not process:  # not opened again by another request meanwhile
                    h.handle = await self._reopen(process, h)
                    h.process = process
                    h.lost |= h.written
                    h.written = False
        return h.handle

    async def _reopen(self, process: DriverProcess, h: _Handle) -> int:
        if "open" not in self._operations:
            return 0  # the broker's handle for a driver without `open`
        try:
            reply = await process.call("open", (h.ino, h.flags & ~_REOPEN_DROPS, h.caller))
        except Died:
            raise Died(sent=False) from None  # the request itself never reached it
        try:
            return _unwrap("open", reply)
        except FSError as e:
            log.warning("inode %d cannot be opened again after a restart: %s", h.ino, e)
            raise FSError(errno.EIO, f"inode {h.ino} lost its open file in a restart") from None

    async def _read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        if self._layouts is not None:
            data = await self._layouts.read(ino, offset, size)
            if data is not None:
                return data
        return await self._call_with_handle("read", (ino, handle, offset, size))

    async def _write(self, ino: int, handle: int, offset: int, data: bytes) -> int:
        written = await self._call_with_handle("write", (ino, handle, offset, data))
        if (h := self._handles.get(handle)) is not None:
            h.written = True
        return written

    async def _fsync(self, ino: int, handle: int, datasync: bool) -> None:
        """The driver's fsync, if it has one; EIO, once, if writes through the handle were
        acknowledged by a process that died since (as Linux reports a failed write-back)."""
        h = self._handles.get(handle)
        if "fsync" in self._operations:
            try:
                await self._call_with_handle("fsync", (ino, handle, datasync))
            except LostInFlight:
                if h is not None:
                    h.written = h.lost = False  # this EIO tells of the loss
                raise
        if h is None:
            return
        lost = h.lost or (h.written and not h.process.alive)
        h.written = h.lost = False
        if lost:
            raise FSError(errno.EIO, "writes acknowledged by a driver process that died")

    def _new_handle(self, process: DriverProcess, ino: int, flags: int, caller: Caller,
                    handle: int) -> int:  # fmt: skip
        number = next(self._handle_ids)
        self._handles[number] = _Handle(ino, flags, caller, process, handle)
        return number

    async def _open(self, ino: int, flags: int, caller: Caller) -> int:
        # Opening changes nothing unless it truncates.
        process, handle = await self._request(
            "open", (ino, flags, caller), repeatable=not flags & os.O_TRUNC
        )
        return self._new_handle(process, ino, flags, caller, handle)

    async def _create(
        self, parent: int, name: bytes, mode: int, flags: int, caller: Caller
    ) -> tuple[api.Attr, int]:
        args = (parent, name, mode, flags, caller)
        process, (attr, handle) = await self._request("create", args, repeatable=False)
        return attr, self._new_handle(process, attr.ino, flags, caller, handle)

    async def _release(self, ino: int, handle: int) -> None:
        h = self._handles.pop(handle, None)
        if h is None or not h.process.alive:
            return  # its process is gone, and the driver's handle with it
        with suppress(Died):  # it died meanwhile: the handle went with it
            _unwrap("release", await h.process.call("release", (ino, h.handle)))

    def _forget(self, ino: int) -> None:
        self._process.cast("forget", (ino,))

    async def _close(self) -> None:
        """Unmount: the driver writes everything back (nothing to do once given up)."""
        if self._failed:
            return
        try:
            await self._call("close", ())
        except LostInFlight:
            log.error("the driver process died while writing back at unmount")
        except FSError:
            if not self._failed:  # given up meanwhile: said so then
                raise

    # --- restarts -------------------------------------------------------------------------

    async def supervise(self) -> None:
        """Serve the current process; when it dies, start another, until told to stop or
        the restarts run out."""
        driver = self._spec[0]
        while True:
            process = self._process
            await process.serve()
            log.error("the %s driver process %d %s", driver, process.pid, await process.wait_exit())
            self._deaths.append(time.monotonic())
            while not self._failed:
                try:
                    await self._restart()
                    break
                except Died:
                    log.error("the %s driver process exited while opening the images", driver)
                    self._deaths.append(time.monotonic())
            if self._failed:
                return

    async def _restart(self) -> None:
        """Start the next process, or give up (`_failed`) if it is not worth it."""
        driver, sources, options = self._spec
        now = time.monotonic()
        while self._deaths and self._deaths[0] < now - DEATHS_WINDOW:
            self._deaths.popleft()
        if len(self._deaths) > DEATHS_MAX:
            self._give_up(f"died {len(self._deaths)} times in {DEATHS_WINDOW:g} s")
            return
        if options.writable:
            options = replace(options, force=True)  # the in-use mark is our dead process's
        try:
            process, root, operations = await DriverProcess.start(
                driver, sources, options, self._timeout
            )
        except Refusal as e:
            self._give_up(f"cannot be restarted: {e}")
            return
        if root != self.root or operations != self._operations:
            await process.stop()
            self._give_up("came back with another root or other operations")
            return
        self._install(process)
        if options.writable:
            names, self._unsynced = list(self._unsynced), {}
            for callback in self._restart_callbacks:
                try:
                    await callback(names)
                except Exception:
                    log.exception("a callback after the restart of the %s driver failed", driver)
        self._restarts += 1
        log.warning("the %s driver restarted as process %d", driver, process.pid)

    def _install(self, process: DriverProcess) -> None:
        self._process = process
        if self._layouts is not None:  # a layout holds only while its process lives
            self._layouts.clear()
        self._changed.set()
        self._changed = trio.Event()

    def _give_up(self, why: str) -> None:
        log.error(
            "the %s driver %s: giving up, every request now fails with EIO", self._spec[0], why
        )
        self._failed = True
        self._changed.set()


def on_restart(fs: api.FileSystem, callback: Callable[[list[Name]], Awaitable[None]]) -> None:
    """Have ``callback(names)`` awaited whenever `fs`, an isolated writable driver, has
    restarted: once the new process serves, before the restart counts in its statistics.
    What the dead process had answered but not written back is gone, so the caches must not
    show it; `names` are the (parent, name) entries changed since its last write-back
    (`Sync`), or in flight. Nothing happens for a driver served in-process."""
    if isinstance(fs, _Proxy):
        fs._restart_callbacks.append(callback)


def _unwrap(operation: str, reply: list) -> Any:
    """A reply's value, or its error raised."""
    if reply[0] == "ok":
        return reply[1]
    if reply[0] == "error":
        raise FSError(reply[1], reply[2])
    log.error("driver process failed in %s:\n%s", operation, reply[1])
    raise FSError(errno.EIO)


# How each operation crosses: most are one `_call`; these need the proxy's handles.
_SPECIAL: dict[str, Any] = {
    "open": lambda self, *a: self._open(*a),
    "create": lambda self, *a: self._create(*a),
    "release": lambda self, *a: self._release(*a),
    "read": lambda self, *a: self._read(*a),
    "write": lambda self, *a: self._write(*a),
    "fsync": lambda self, *a: self._fsync(*a),
    "forget": lambda self, *a: self._forget(*a),
    "close": lambda self: self._close(),
    "sync": lambda self: self._sync(),
}


def _proxy_class(operations: Sequence[str]) -> type[_Proxy]:
    """A `_Proxy` subclass with exactly `operations`, so the broker's protocol checks see
    what the real filesystem implements."""
    methods: dict[str, Any] = {
        "lookup": lambda self, *a: self._call("lookup", a),
        "getattr": lambda self, *a: self._call("getattr", a),
    }
    # A writable filesystem gets `fsync` even without its own: it reports lost writes.
    for name in {*operations, *(["fsync"] if "write" in operations else [])}:
        methods[name] = _SPECIAL.get(name) or (lambda self, *a, _name=name: self._call(_name, a))
    return type("IsolatedFileSystem", (_Proxy,), methods)


@asynccontextmanager
async def isolated(
    driver: str,
    sources: Sequence[Source],
    options: MountOptions,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> AsyncIterator[api.FileSystem]:
    """Open `sources` with `driver` (a name or ``module:attribute``) in a child process,
    started again whenever it dies or hangs: a request unanswered after `timeout` seconds
    (see the module's docstring).

    Raises `Refusal` when the child cannot open them; the child is stopped on exit.
    """
    try:
        first, root, operations = await DriverProcess.start(driver, sources, options, timeout)
    except Died:
        raise Refusal(f"the {driver} driver process exited while opening") from None
    spec = (driver, sources, options)
    proxy = _proxy_class(operations)(spec, timeout, first, root, operations)
    try:
        with ExitStack() as images:
            if "read_layout" in operations and not options.writable:
                devices = _opened_here(images, sources)
                if devices is not None:
                    proxy.read_from_images(devices)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(proxy.supervise)
                yield proxy
                nursery.cancel_scope.cancel()
    finally:
        await proxy._process.stop()


def _opened_here(stack: ExitStack, sources: Sequence[Source]) -> list[BlockDevice] | None:
    """`sources` opened read-only in this process as well, closed with `stack`; None (said
    in the log) when one cannot be: then every read goes to the driver process."""
    try:
        return [stack.enter_context(open_source(s, writable=False)) for s in sources]
    except (OSError, Refusal, ImageInUse) as e:
        log.warning("reads go to the driver process: the server cannot open the image: %s", e)
        return None
