"""The parent's side of one driver process: starting it, its requests and replies, its
death (see `uvfs._isolation`)."""

from __future__ import annotations

import errno
import itertools
import logging
import math
import mmap
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import trio

from uvfs._api import Attr, DirEntry, Extent, FSError, Layout, MountOptions, Refusal

if TYPE_CHECKING:
    from uvfs._source import Source


from uvfs._isolation.wire import EXIT_OUT_OF_MEMORY, NO_SLOT, SLOT_SIZE, SLOTS, Channel

log = logging.getLogger("uvfs.isolation")

# The child keeps the memory it frees: a read's buffers (a MiB or more each) otherwise come
# from fresh pages every time, and faulting and zeroing them cost more than the read.
_MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"

# A request unanswered for this long means the process hangs (-o driver_timeout=SECS).
DEFAULT_TIMEOUT = 60.0
_UNTIMED = frozenset({"close"})  # the unmount's write-back takes what it takes


class Died(Exception):
    """The driver process died; `sent`: after the request reached it (it may have run)."""

    def __init__(self, sent: bool) -> None:
        super().__init__(sent)
        self.sent = sent


class LostInFlight(FSError):
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


class DriverProcess:
    """One child process serving the driver: its socket and the requests it has not answered.

    No task of its own reads the replies: a request's task does, while no other does, and
    hands each reply it reads to the request's task; when it has its own, it wakes another
    waiting one to read on. So a request that is alone in flight (a sequential reader) costs
    no switch to a reader task and back, a fifth of the parent's CPU time per round trip.
    """

    def __init__(
        self, process: trio.Process, channel: Channel, arena: mmap.mmap, timeout: float
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.alive = True
        self.timeout = timeout  # seconds a request may take before the process counts as hung
        self._channel = channel
        self._arena = arena
        self._free_slots = list(range(SLOTS))  # a stack: the slot used last is warm
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiter] = {}
        self._reading = False  # a task is receiving replies
        self._dead = trio.Event()
        self._nursery: trio.Nursery | None = None

    @classmethod
    async def start(
        cls, driver: str, sources: Sequence[Source], options: MountOptions, timeout: float
    ) -> tuple[DriverProcess, int, list[str]]:
        """A new process that has opened `sources` with `driver`, its root and operations;
        killed as hung when a request takes longer than `timeout` seconds.

        Raises `Refusal` when the driver refuses them and `Died` when the process exits
        first; either way it is gone.
        """
        parent, child = socket.socketpair()
        arena_fd = os.memfd_create("uvfs-replies", os.MFD_CLOEXEC)
        try:
            os.ftruncate(arena_fd, SLOTS * SLOT_SIZE)
            arena = mmap.mmap(arena_fd, SLOTS * SLOT_SIZE)
            with child:
                fds = (child.fileno(), arena_fd)
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "uvfs._isolation.child", *map(str, fds)],
                    pass_fds=fds,
                    env={**os.environ, "GLIBC_TUNABLES": _MALLOC_TUNABLES},
                )
        except BaseException:
            parent.close()
            raise
        finally:
            os.close(arena_fd)  # the mappings keep the memory
        self = cls(process, Channel(parent), arena, timeout)
        channel = self._channel
        try:
            await channel.send(("open", driver, list(sources), options))
            reply = await channel.receive()
            if reply[0] == "refused":
                raise Refusal(reply[1])
        except (EOFError, trio.BrokenResourceError):
            await self.stop()
            raise Died(sent=True) from None
        except BaseException:
            await self.stop()
            raise
        _, root, operations, warnings = reply
        for name, message in warnings:  # here, where `uvfs mount` and its log hear them
            logging.getLogger(name).warning("%s", message)
        return self, root, operations

    async def call(self, operation: str, args: tuple) -> list:
        """Send one request; its reply as ``[kind, ...]``. `Died` if the process goes, or
        if it does not answer in time: then it is killed as hung."""
        if not self.alive:
            raise Died(sent=False)
        request = next(self._ids)
        slot = NO_SLOT
        if operation == "read" and args[3] <= SLOT_SIZE and self._free_slots:
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
            raise Died(sent=False) from None
        # Alone in flight, just sent: its reply cannot have come yet.
        wait_first = len(self._waiting) == 1
        while waiter.reply is _NO_REPLY:
            if self._reading:
                await waiter.park()
            else:
                await self._read_until(waiter, wait_first=wait_first)
            wait_first = False
        if waiter.reply is None:
            raise Died(sent=True)
        return waiter.reply

    async def _read_until(self, waiter: _Waiter, *, wait_first: bool) -> None:
        """Receive replies, handing each to its request, until `waiter` has its own or the
        process is gone; then wake another waiting request to read on. `wait_first`: for
        the socket to be readable before reading it (`Channel.receive`)."""
        self._reading = True
        try:
            while waiter.reply is _NO_REPLY:
                try:
                    request, *reply = await self._channel.receive(wait_first=wait_first)
                    wait_first = False
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
            start = waiter.slot * SLOT_SIZE
            reply = ["ok", self._arena[start : start + reply[1]]]
        elif kind == "attr":
            reply = ["ok", _new_tuple(Attr, reply[1:])]
        elif kind == "entries":
            entries = [_new_tuple(DirEntry, (e[0], _new_tuple(Attr, e[1:]))) for e in reply[1]]
            reply = ["ok", entries]
        elif kind == "layout":
            extents = tuple([_new_tuple(Extent, e) for e in reply[4]])
            reply = ["ok", Layout(reply[1], reply[2], reply[3], extents)]
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
            message = (next(self._ids), operation, args, NO_SLOT)
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
        if slot != NO_SLOT:
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
