"""Crash isolation: a driver served from a process of its own, restarted when it dies.

Because the driver API carries only plain data, the same driver runs in the broker's process
or behind a socket without a change. The parent holds an `isolated` filesystem: a proxy that
implements exactly the operations the real filesystem implements, each one a message to the
child. The child opens the images itself (so it holds their locks), opens the driver, and
answers requests concurrently, each in its own task, replies tagged with the request's id.

Wire format: frames of a 4-byte big-endian length and a pickle. Parent to child:
``("open", driver, sources, options)`` once, then ``(id, operation, args, slot)``; child to
parent: ``("ready", root, operations, warnings)`` or ``("refused", message)``, then
``("ok", value)``, ``("attr", *fields)``, ``("entries", [(name, *fields), ...])``,
``("slot", length)``, ``("error", errno, message)`` or ``("bug", traceback)``, each after
the request's id. Pickle is safe here: both ends are this program, started by the same
user, over a private socketpair. An `Attr` (a reply to lookup, getattr, setattr ...) and a
listing cross as plain tuples, rebuilt with ``tuple.__new__``: pickle reduces a NamedTuple
through ``__reduce_ex__`` and ``__getnewargs__``, 3 us an entry, a tenth of that as tuples.

Read data crosses in shared memory: pickling a 1 MiB reply, sending it through the socket,
receiving and unpickling it copied it four times (0.9 ms of the child's CPU and 0.35 ms of
the parent's per MiB, where the read itself costs 0.06 ms). The parent maps `_SLOTS` slots
of `_SLOT_SIZE` bytes (a memfd it shares with the child) and gives a read a free slot; the
child copies the data there and replies ``("slot", length)``, and the parent's reader copies
it out and frees the slot, all before the caller wakes. A slot whose request was abandoned
(cancelled) stays taken until its reply comes, so the child never writes into a slot given
to another request. A read larger than a slot, or with every slot taken, is answered inline.

Restarts. When the child dies (killed, a crash in a C library, out of memory: the child exits
on MemoryError, since a half-done change may have left the driver's state inconsistent), the
proxy waits for its exit (so its image locks are gone), starts a new one with the same driver
spec, sources and options, and goes on. A restart of a writable mount opens with ``force``:
the in-use mark on the image (ext2's "not clean") is the dead process's own, and it stays
after the unmount, as after any crash, so the next writable mount asks for a check. While no
process serves, requests wait; the broker's caches answer what they hold.

* Requests in flight when the child died: those that change nothing (`_REPEATABLE`, and an
  open that does not truncate) are sent once more to the new process; a second death fails
  them with EIO. Every other one fails with EIO at once: it may or may not have happened,
  and it is never repeated. A request not yet sent simply goes to the new process.
* Open files: the proxy gives the broker handles of its own, each remembering the node,
  flags, caller and process of the driver's handle. A handle of a dead process is opened
  again on the new one (without O_TRUNC, O_CREAT, O_EXCL) when it is next used; its release
  needs no call, as the process that held it is gone.
* Inode numbers must mean the same node in the new process: the kernel and the broker hold
  them across the restart. Drivers with on-disk numbers (ext2, ZFS) qualify; a driver whose
  numbers exist only in its memory (a table filled by lookups) sees requests for numbers it
  never handed out, which fail (ESTALE, ENOENT) until the kernel looks the names up again.
* Writes: what the driver had written back (fsync, its own flushes) is on the image and the
  new process reads it; what it held in memory is lost. So that no cache shows it, a
  writable proxy's restart awaits the `on_restart` callbacks (the mount's drops the broker's
  caches and the kernel's data, attributes and entries), given the names changed since the
  driver's last `sync` (at most `UNSYNCED_NAMES_MAX`, the oldest forgotten first). So that
  no fsync vouches for lost writes, the next fsync of an open file written through since
  its last fsync, in a process that died, fails with EIO, once (as Linux reports a failed
  write-back). Unlinked files still open when it died are left for fsck.
* Hangs: a process alive but not answering (stopped, in a loop, deadlocked) is killed once
  a request has waited `DEFAULT_TIMEOUT` seconds (``-o driver_timeout=SECS``), checked a few
  times per timeout; then it is a death like any other. The unmount's ``close`` has no
  limit: its write-back takes what it takes.
* Bounds: more than `DEATHS_MAX` deaths within `DEATHS_WINDOW` seconds (a driver that dies
  on every open, or while opening the images), or a restart the driver refuses, and the
  proxy gives up: one log line, then EIO for every request until the unmount.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import math
import mmap
import os
import pickle
import signal
import socket
import struct
import sys
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import outcome
import trio

from uvfs import _api as api
from uvfs._api import Attr, Caller, DirEntry, FSError, MountOptions, Refusal

if TYPE_CHECKING:
    from uvfs._source import Source

log = logging.getLogger("uvfs.isolation")

_HEADER = struct.Struct(">I")
_MAX_FRAME = 1 << 30
_SOCKET_BUFFER = 4 << 20
_SLOT_SIZE = 1 << 20  # the kernel's largest FUSE read (max_pages 256)
_SLOTS = 8  # reads answered through shared memory at once; later ones go inline
_NO_SLOT = -1
# The child keeps the memory it frees: a read's buffers (a MiB or more each) otherwise come
# from fresh pages every time, and faulting and zeroing them cost more than the read.
_MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"

# Operation name -> the protocol that declares it; `forget` is the one synchronous call.
OPERATIONS: dict[str, type] = {
    "readdir": api.ReadDir, "open": api.Open, "read": api.Read, "release": api.Release,
    "readlink": api.ReadLink, "statfs": api.StatFs, "getxattr": api.GetXattr,
    "listxattr": api.ListXattr, "forget": api.Forget, "close": api.Close, "write": api.Write,
    "create": api.Create, "mknod": api.MkNod, "mkdir": api.MkDir, "symlink": api.SymLink,
    "link": api.Link, "unlink": api.Unlink, "rmdir": api.RmDir, "rename": api.Rename,
    "setattr": api.SetAttrs, "fsync": api.Fsync, "sync": api.Sync, "setxattr": api.SetXattr,
    "removexattr": api.RemoveXattr,
}  # fmt: skip

# Requests that change nothing: after a death they are asked again of the new process.
_REPEATABLE = frozenset(
    {"lookup", "getattr", "readdir", "read", "readlink", "getxattr", "listxattr", "statfs"}
)
# Where a change names directory entries: (parent, name) positions in its arguments.
_NAMES: dict[str, tuple[tuple[int, int], ...]] = {
    "create": ((0, 1),), "mknod": ((0, 1),), "mkdir": ((0, 1),), "symlink": ((0, 1),),
    "link": ((1, 2),), "unlink": ((0, 1),), "rmdir": ((0, 1),), "rename": ((0, 1), (2, 3)),
}  # fmt: skip
UNSYNCED_NAMES_MAX = 100_000  # names remembered for a driver that never writes back
Name = tuple[int, bytes]  # a directory entry: the parent's inode number and the name
_REOPEN_DROPS = os.O_TRUNC | os.O_CREAT | os.O_EXCL  # what opening again must not repeat

# A request unanswered for this long means the process hangs (-o driver_timeout=SECS).
DEFAULT_TIMEOUT = 60.0
_UNTIMED = frozenset({"close"})  # the unmount's write-back takes what it takes
DEATHS_MAX = 5  # deaths survived within DEATHS_WINDOW; one more and the proxy gives up
DEATHS_WINDOW = 60.0
EXIT_OUT_OF_MEMORY = 3  # the child's exit status after a MemoryError


@dataclass(frozen=True, slots=True)
class DriverStatistics:
    """What `uvfs stats` shows about the process serving the driver."""

    pid: int  # the driver's process (the server's own when the driver is not isolated)
    restarts: int  # processes started after the first


def driver_statistics(fs: api.FileSystem) -> DriverStatistics:
    """`fs`'s process and restarts: an isolated proxy's, or this process's for a driver
    served in-process."""
    if isinstance(fs, _Proxy):
        return fs.statistics()
    return DriverStatistics(pid=os.getpid(), restarts=0)


class _Channel:
    """Frames over a non-blocking stream socket, without a pass through the scheduler when
    the socket allows (a round trip through trio's streams cost several: most of the
    isolation's price per request).

    A frame goes out whole, at once, from the task that sends it; one the socket has no room
    for waits in `_unsent`, and the task that found it full writes out that and every frame
    queued behind it. `receive` takes the frames that have arrived before waiting again.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        # A 1 MiB read's reply fits whole: one write, one wake-up (capped by wmem_max).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
        self._sock = sock
        self._unsent = bytearray()
        # Frames are received into one buffer, as large as the largest frame yet, from
        # `_start` to `_end`: no allocation and no copy but pickle's per message.
        self._buffer = bytearray(1 << 16)
        self._start = self._end = 0

    def _send_some(self, *buffers: bytes | bytearray) -> int:
        try:
            return self._sock.sendmsg(buffers)
        except BlockingIOError:
            return 0
        except OSError as e:  # the other end has gone (EPIPE), or we closed it
            raise trio.BrokenResourceError(e) from None

    async def send(self, message: object) -> None:
        """Send `message`; `trio.BrokenResourceError` if none of it could go out."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        header = _HEADER.pack(len(data))
        if self._unsent:  # another task is writing out earlier frames: queue behind them
            self._unsent += header
            self._unsent += data
            return
        sent = self._send_some(header, data)
        if sent == len(header) + len(data):
            return
        self._unsent += (header + data)[sent:]
        # Shielded: a frame cut short would garble every later one (the unmount's included).
        with trio.CancelScope(shield=True):
            while self._unsent:
                try:
                    await trio.lowlevel.wait_writable(self._sock)
                    del self._unsent[: self._send_some(self._unsent)]
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._unsent.clear()  # the receiving side sees the end and says so

    async def receive(self) -> Any:
        """The next message, or raise EOFError when the other end has gone."""
        while True:
            held = self._end - self._start
            want = _HEADER.size
            if held >= want:
                want += _HEADER.unpack_from(self._buffer, self._start)[0]
                if want > _MAX_FRAME:
                    raise EOFError
                if held >= want:
                    first = self._start + _HEADER.size
                    with memoryview(self._buffer) as view, view[first : first + want] as frame:
                        message = pickle.loads(frame)
                    self._start += want
                    if self._start == self._end:
                        self._start = self._end = 0
                    return message
            if self._start + want > len(self._buffer):  # make room for the whole frame
                buffer = bytearray(max(want, len(self._buffer)))
                buffer[:held] = memoryview(self._buffer)[self._start : self._end]
                self._buffer, self._start, self._end = buffer, 0, held
            try:
                with memoryview(self._buffer) as view, view[self._end :] as room:
                    received = self._sock.recv_into(room)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(self._sock)
                except trio.ClosedResourceError:
                    raise EOFError from None
                continue
            except OSError:
                raise EOFError from None
            if not received:
                raise EOFError
            self._end += received

    def close(self) -> None:
        if self._sock.fileno() != -1:  # not closed yet
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()


# --- the parent's side: one driver process ------------------------------------------------------


class _Died(Exception):
    """The driver process died; `sent`: after the request reached it (it may have run)."""

    def __init__(self, sent: bool) -> None:
        super().__init__(sent)
        self.sent = sent


class _LostInFlight(FSError):
    """EIO: the process died with the request in flight, and it is not asked again."""

    def __init__(self, operation: str) -> None:
        super().__init__(errno.EIO, f"the driver process died during {operation}")


class _Waiter:
    """A request sent and not yet answered: its reply (None: the process died), the task
    parked until it comes, and the shared-memory slot given to its answer."""

    __slots__ = ("deadline", "operation", "reply", "slot", "task")

    def __init__(self, operation: str, slot: int, deadline: float) -> None:
        self.reply: Any = _NO_REPLY
        self.task: trio.lowlevel.Task | None = None
        self.operation = operation
        self.slot = slot
        self.deadline = deadline  # time.monotonic() by which the process must answer

    def answer(self, reply: list | None) -> None:
        self.reply = reply
        self.wake()

    def wake(self) -> None:
        if self.task is not None:
            task, self.task = self.task, None
            trio.lowlevel.reschedule(task)

    async def park(self) -> None:
        """Wait until woken: with the reply, or to read for everyone."""
        self.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self.task = None  # its reply, when it comes, frees its slot and goes nowhere
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


_NO_REPLY = object()
_new_tuple = tuple.__new__  # a NamedTuple from its fields, as its `_make` does


class _DriverProcess:
    """One child process serving the driver: its socket and the requests it has not answered.

    No task of its own reads the replies: a request's task does, while no other does, and
    hands each reply it reads to the request's task; when it has its own, it wakes another
    waiting one to read on. So a request that is alone in flight (a sequential reader) costs
    no switch to a reader task and back, a fifth of the parent's CPU time per round trip.
    """

    def __init__(
        self, process: trio.Process, channel: _Channel, arena: mmap.mmap, timeout: float
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.alive = True
        self.timeout = timeout  # seconds a request may take before the process counts as hung
        self._channel = channel
        self._arena = arena
        self._free_slots = list(range(_SLOTS))  # a stack: the slot used last is warm
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiter] = {}
        self._reading = False  # a task is receiving replies
        self._dead = trio.Event()
        self._nursery: trio.Nursery | None = None

    @classmethod
    async def start(
        cls, driver: str, sources: Sequence[Source], options: MountOptions, timeout: float
    ) -> tuple[_DriverProcess, int, list[str]]:
        """A new process that has opened `sources` with `driver`, its root and operations;
        killed as hung when a request takes longer than `timeout` seconds.

        Raises `Refusal` when the driver refuses them and `_Died` when the process exits
        first; either way it is gone.
        """
        parent, child = socket.socketpair()
        arena_fd = os.memfd_create("uvfs-replies", os.MFD_CLOEXEC)
        try:
            os.ftruncate(arena_fd, _SLOTS * _SLOT_SIZE)
            arena = mmap.mmap(arena_fd, _SLOTS * _SLOT_SIZE)
            with child:
                fds = (child.fileno(), arena_fd)
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "uvfs._isolation", *map(str, fds)],
                    pass_fds=fds,
                    env={**os.environ, "GLIBC_TUNABLES": _MALLOC_TUNABLES},
                )
        except BaseException:
            parent.close()
            raise
        finally:
            os.close(arena_fd)  # the mappings keep the memory
        self = cls(process, _Channel(parent), arena, timeout)
        channel = self._channel
        try:
            await channel.send(("open", driver, list(sources), options))
            reply = await channel.receive()
            if reply[0] == "refused":
                raise Refusal(reply[1])
        except (EOFError, trio.BrokenResourceError):
            await self.stop()
            raise _Died(sent=True) from None
        except BaseException:
            await self.stop()
            raise
        _, root, operations, warnings = reply
        for name, message in warnings:  # here, where `uvfs mount` and its log hear them
            logging.getLogger(name).warning("%s", message)
        return self, root, operations

    async def call(self, operation: str, args: tuple) -> list:
        """Send one request; its reply as ``[kind, ...]``. `_Died` if the process goes, or
        if it does not answer in time: then it is killed as hung."""
        if not self.alive:
            raise _Died(sent=False)
        request = next(self._ids)
        slot = _NO_SLOT
        if operation == "read" and args[3] <= _SLOT_SIZE and self._free_slots:
            slot = self._free_slots.pop()
        # Registered before sending, as sending may wait.
        timeout = math.inf if operation in _UNTIMED else self.timeout
        waiter = self._waiting[request] = _Waiter(operation, slot, time.monotonic() + timeout)
        try:
            await self._channel.send((request, operation, args, slot))
        except trio.BrokenResourceError:
            del self._waiting[request]
            self._free(slot)
            self.alive = False  # so that callers wait for the next process, not spin on this
            raise _Died(sent=False) from None
        while waiter.reply is _NO_REPLY:
            if self._reading:
                await waiter.park()
            else:
                await self._read_until(waiter)
        if waiter.reply is None:
            raise _Died(sent=True)
        return waiter.reply

    async def _read_until(self, waiter: _Waiter) -> None:
        """Receive replies, handing each to its request, until `waiter` has its own or the
        process is gone; then wake another waiting request to read on."""
        self._reading = True
        try:
            while waiter.reply is _NO_REPLY:
                try:
                    request, *reply = await self._channel.receive()
                except EOFError:
                    self._die()
                    return
                self._dispatch(request, reply)
        finally:
            self._reading = False
            for other in self._waiting.values():
                if other.task is not None:
                    other.wake()
                    break

    def _dispatch(self, request: int, reply: list) -> None:
        waiter = self._waiting.pop(request, None)
        if waiter is None:
            return
        kind = reply[0]
        if kind == "slot":
            start = waiter.slot * _SLOT_SIZE
            reply = ["ok", self._arena[start : start + reply[1]]]
        elif kind == "attr":
            reply = ["ok", _new_tuple(Attr, reply[1:])]
        elif kind == "entries":
            entries = [_new_tuple(DirEntry, (e[0], _new_tuple(Attr, e[1:]))) for e in reply[1]]
            reply = ["ok", entries]
        self._free(waiter.slot)
        waiter.answer(reply)

    async def _watch_hung(self, period: float) -> None:
        """Kill the process once a request is past its deadline: it hangs (stopped, in a
        loop, deadlocked). Its death fails every request in flight, as a crash does; the
        proxy starts another. A check every `period` seconds, not a cancel scope around
        each request: that cost a tenth of the parent's time per round trip."""
        while True:
            await trio.sleep(period)
            now = time.monotonic()
            late = [w for w in self._waiting.values() if w.deadline < now]
            if late:
                log.error(
                    "the driver process %d did not answer %s in time: killing it as hung",
                    self.pid, late[0].operation,
                )  # fmt: skip
                self.process.kill()
                return

    def _die(self) -> None:
        """The process is gone: fail every request left."""
        self.alive = False
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.answer(None)
        self._dead.set()

    def cast(self, operation: str, args: tuple) -> None:
        """Send without waiting for an answer (the synchronous `forget`); lost if it dies."""
        if self.alive and self._nursery is not None:
            message = (next(self._ids), operation, args, _NO_SLOT)
            self._nursery.start_soon(self._send_quietly, message)

    async def _send_quietly(self, message: tuple) -> None:
        with suppress(trio.BrokenResourceError):
            await self._channel.send(message)

    async def serve(self) -> None:
        """Send the casts and watch for a hung process, until the process is gone: its
        socket ended under a request, or it exited while none was in flight (its last
        replies are read, then those left fail)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_exit)
            nursery.start_soon(self._watch_hung, min(self.timeout / 8, 1.0))
            await self._dead.wait()
            nursery.cancel_scope.cancel()

    async def _watch_exit(self) -> None:
        await self.process.wait()
        # Its last replies are in the socket: read them to its end, as the task reading does
        # or here, for a second at most (a process it forked may hold the socket open).
        with trio.move_on_after(1):
            while self._reading and not self._dead.is_set():
                await trio.sleep(0.01)
            if not self._dead.is_set():
                self._reading = True
                try:
                    with suppress(EOFError):
                        while True:
                            request, *reply = await self._channel.receive()
                            self._dispatch(request, reply)
                finally:
                    self._reading = False
        self._channel.close()  # a task still reading stops
        self._die()

    def _free(self, slot: int) -> None:
        if slot != _NO_SLOT:
            self._free_slots.append(slot)

    async def wait_exit(self) -> str:
        """Wait until the process has exited (and its image locks are gone); how it ended."""
        with trio.move_on_after(10):
            await self.process.wait()
        if self.process.returncode is None:  # closed its socket yet lives on: end it
            self.process.kill()
            await self.process.wait()
        code = self.process.returncode
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        if code == EXIT_OUT_OF_MEMORY:
            return "ran out of memory"
        return f"exited with status {code}"

    async def stop(self) -> None:
        """Close the socket (the child writes nothing back on its own, then exits); kill it
        if it has not gone in 10 seconds."""
        self.alive = False
        self._channel.close()
        with trio.CancelScope(shield=True):
            await self.wait_exit()


# --- the parent's side: the filesystem the broker sees ----------------------------------------


@dataclass(slots=True)
class _Handle:
    """An open file: the driver's handle in `process`, and how to open it again."""

    ino: int
    flags: int
    caller: Caller
    process: _DriverProcess
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
        first: _DriverProcess,
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

    def statistics(self) -> DriverStatistics:
        return DriverStatistics(pid=self._process.pid, restarts=self._restarts)

    # --- requests -------------------------------------------------------------------------

    async def _serving(self) -> _DriverProcess:
        """The live process, once there is one again; EIO once the proxy has given up."""
        while True:
            if self._failed:
                raise FSError(errno.EIO, "the driver process kept dying; given up")
            if self._process.alive:
                return self._process
            await self._changed.wait()

    async def _request(
        self, operation: str, args: tuple, *, repeatable: bool, handle: bool = False
    ) -> tuple[_DriverProcess, Any]:
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
            except _Died as died:
                if died.sent and (repeated or not repeatable):
                    raise _LostInFlight(operation) from None
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

    async def _driver_handle(self, process: _DriverProcess, handle: int) -> int:
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

    async def _reopen(self, process: _DriverProcess, h: _Handle) -> int:
        if "open" not in self._operations:
            return 0  # the broker's handle for a driver without `open`
        try:
            reply = await process.call("open", (h.ino, h.flags & ~_REOPEN_DROPS, h.caller))
        except _Died:
            raise _Died(sent=False) from None  # the request itself never reached it
        try:
            return _unwrap("open", reply)
        except FSError as e:
            log.warning("inode %d cannot be opened again after a restart: %s", h.ino, e)
            raise FSError(errno.EIO, f"inode {h.ino} lost its open file in a restart") from None

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
            except _LostInFlight:
                if h is not None:
                    h.written = h.lost = False  # this EIO tells of the loss
                raise
        if h is None:
            return
        lost = h.lost or (h.written and not h.process.alive)
        h.written = h.lost = False
        if lost:
            raise FSError(errno.EIO, "writes acknowledged by a driver process that died")

    def _new_handle(self, process: _DriverProcess, ino: int, flags: int, caller: Caller,
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
        with suppress(_Died):  # it died meanwhile: the handle went with it
            _unwrap("release", await h.process.call("release", (ino, h.handle)))

    def _forget(self, ino: int) -> None:
        self._process.cast("forget", (ino,))

    async def _close(self) -> None:
        """Unmount: the driver writes everything back (nothing to do once given up)."""
        if self._failed:
            return
        try:
            await self._call("close", ())
        except _LostInFlight:
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
                except _Died:
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
            process, root, operations = await _DriverProcess.start(
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

    def _install(self, process: _DriverProcess) -> None:
        self._process = process
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
    "read": lambda self, *a: self._call_with_handle("read", a),
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
        first, root, operations = await _DriverProcess.start(driver, sources, options, timeout)
    except _Died:
        raise Refusal(f"the {driver} driver process exited while opening") from None
    spec = (driver, sources, options)
    proxy = _proxy_class(operations)(spec, timeout, first, root, operations)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proxy.supervise)
            yield proxy
            nursery.cancel_scope.cancel()
    finally:
        await proxy._process.stop()


# --- the child's side --------------------------------------------------------------------------


async def _answer(
    channel: _Channel, arena: memoryview, fs: Any, request: int, operation: str, args: tuple,
    slot: int,
) -> None:  # fmt: skip
    try:
        if operation == "forget":
            fs.forget(*args)
            return
        value = await getattr(fs, operation)(*args)
        if slot != _NO_SLOT:  # a read's bytes, at most the size asked for: they fit
            start = slot * _SLOT_SIZE
            arena[start : start + len(value)] = value
            reply: tuple = (request, "slot", len(value))
        elif type(value) is Attr:
            reply = (request, "attr", *value)
        elif operation == "readdir":
            reply = (request, "entries", [(e.name, *e.attr) for e in value])
        else:
            reply = (request, "ok", value)
    except FSError as e:
        reply = (request, "error", e.errno, e.message)
    except MemoryError:
        # A change cut short may have left the driver's state half-made: start afresh.
        os._exit(EXIT_OUT_OF_MEMORY)
    except Exception:
        reply = (request, "bug", traceback.format_exc())
    with suppress(trio.BrokenResourceError):  # the parent has gone: nobody is waiting
        await channel.send(reply)


@contextmanager
def _warnings_kept() -> Iterator[list[tuple[str, str]]]:
    """The warnings logged meanwhile, as (logger, message), kept from this process's log:
    the parent logs them, where the user who mounts sees them (and ``uvfs stats``)."""
    kept: list[tuple[str, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append((record.name, record.getMessage()))

    def not_kept(record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING

    root = logging.getLogger()
    keep = Keep(logging.WARNING)
    for handler in root.handlers:
        handler.addFilter(not_kept)
    root.addHandler(keep)
    try:
        yield kept
    finally:
        root.removeHandler(keep)
        for handler in root.handlers:
            handler.removeFilter(not_kept)


class _Workers:
    """The child's tasks that answer requests: a request goes to one parked since its last
    answer, or to a new one when none is idle (a task spawned per request cost a fifth of
    the child's CPU time per round trip), so requests still run concurrently."""

    def __init__(self, nursery: trio.Nursery, answer: Callable[..., Awaitable[None]]) -> None:
        self._nursery = nursery
        self._answer = answer
        self._idle: list[trio.lowlevel.Task] = []
        self._closed = False

    def submit(self, request: tuple) -> None:
        """Have ``answer(*request)`` run by an idle worker, or a new one."""
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop(), outcome.Value(request))
        else:
            self._nursery.start_soon(self._work, request)

    def close(self) -> None:
        """End every worker once it has answered its request (idle ones at once)."""
        self._closed = True
        while self._idle:
            trio.lowlevel.reschedule(self._idle.pop(), outcome.Value(None))

    async def _work(self, request: tuple | None) -> None:
        task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        while request is not None:
            await self._answer(*request)
            if self._closed:
                return
            self._idle.append(task)
            request = await trio.lowlevel.wait_task_rescheduled(abort)


async def _serve_child(sock: socket.socket, arena: memoryview) -> None:
    from uvfs import _registry
    from uvfs._image import ImageInUse
    from uvfs._source import open_source

    channel = _Channel(sock)
    _, driver_name, sources, options = await channel.receive()
    with ExitStack() as images:
        try:
            driver = _registry.driver_named(driver_name)
            opened = [
                images.enter_context(open_source(s, writable=options.writable)) for s in sources
            ]
            with _warnings_kept() as warnings:
                fs = await driver.open(opened, options)
        except (Refusal, ImageInUse) as e:
            await channel.send(("refused", str(e)))
            return
        except (FSError, OSError) as e:
            await channel.send(("refused", f"{sources[0].path}: cannot read image: {e}"))
            return
        operations = [name for name, protocol in OPERATIONS.items() if isinstance(fs, protocol)]
        async with trio.open_nursery() as sharing:
            if options.memory.budget:
                # The driver's caches count in the user's one budget, as the broker's do in
                # the parent's: an isolated mount holds no more than one in the server.
                from uvfs._budget import share_budget

                await sharing.start(share_budget, options.memory)
            await channel.send(("ready", fs.root, operations, warnings))
            async with trio.open_nursery() as nursery:
                workers = _Workers(nursery, functools.partial(_answer, channel, arena, fs))
                while True:
                    try:
                        workers.submit(await channel.receive())
                    except EOFError:
                        break
                workers.close()
            sharing.cancel_scope.cancel()


if __name__ == "__main__":
    # The parent decides when this process ends (after the driver's close has written
    # everything back), so a Ctrl-C meant for the mount must not kill the driver first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    arena_fd = int(sys.argv[2])
    with mmap.mmap(arena_fd, _SLOTS * _SLOT_SIZE) as arena, memoryview(arena) as view:
        os.close(arena_fd)
        trio.run(_serve_child, socket.socket(fileno=int(sys.argv[1])), view)
