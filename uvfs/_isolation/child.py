"""The driver process: it opens the images and the driver, then answers the broker's
requests concurrently (see `uvfs._isolation`). Run as ``python -m uvfs._isolation.child
SOCKET_FD ARENA_FD`` by `uvfs._isolation.process`."""

from __future__ import annotations

import functools
import logging
import mmap
import os
import signal
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import outcome
import trio

from uvfs._api import Attr, FSError, Layout, Refusal
from uvfs._isolation.wire import EXIT_OUT_OF_MEMORY, NO_SLOT, OPERATIONS, SLOT_SIZE, SLOTS, Channel

# Requests the receiving task answers itself when no other is being answered: they change
# nothing and seldom wait (a driver answers them from its caches, or with small image reads,
# done inline while it is alone), and a hand-off to a worker costs a pass of the scheduler:
# one epoll_wait of five system calls per round trip (its CPU time is below what this loaded
# machine lets us measure). Requests that come meanwhile wait in the socket, as they do
# while an inline image read blocks the loop.
_ANSWERED_INLINE = frozenset(
    {"lookup", "getattr", "readdir", "read_layout", "readlink", "getxattr", "listxattr", "statfs"}
)


async def _answer(
    channel: Channel, arena: memoryview, fs: Any, request: int, operation: str, args: tuple,
    slot: int,
) -> None:  # fmt: skip
    try:
        if operation == "forget":
            fs.forget(*args)
            return
        value = await getattr(fs, operation)(*args)
        if slot != NO_SLOT:  # a read's bytes, at most the size asked for: they fit
            start = slot * SLOT_SIZE
            arena[start : start + len(value)] = value
            reply: tuple = (request, "slot", len(value))
        elif type(value) is Attr:
            reply = (request, "attr", *value)
        elif type(value) is Layout:  # extents as tuples: a tenth of a NamedTuple's pickling
            extents = [tuple(e) for e in value.extents]
            reply = (request, "layout", value.start, value.end, value.size, extents)
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
        self._busy = 0  # requests received and not yet answered

    def alone(self) -> bool:
        """Whether a single request is being answered: a read blocking the loop then holds
        up only requests still in the socket, unknown to this process."""
        return self._busy == 1

    def idle(self) -> bool:
        """Whether no request is being answered."""
        return self._busy == 0

    async def answer_here(self, request: tuple) -> None:
        """Answer `request` in the calling task, counted as a worker's would be."""
        self._busy += 1
        try:
            await self._answer(*request)
        finally:
            self._busy -= 1

    def submit(self, request: tuple) -> None:
        """Have ``answer(*request)`` run by an idle worker, or a new one."""
        self._busy += 1
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
            try:
                await self._answer(*request)
            finally:
                self._busy -= 1
            if self._closed:
                return
            self._idle.append(task)
            request = await trio.lowlevel.wait_task_rescheduled(abort)


async def _serve_child(sock: socket.socket, arena: memoryview) -> None:
    from uvfs import _registry
    from uvfs._image import ImageInUse, read_inline_when
    from uvfs._source import open_source

    channel = Channel(sock)
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
                # Alone, the driver's image reads are done inline: nothing else waits, and a
                # thread's hand-off cost up to a tenth of this process's CPU per cold read.
                read_inline_when(workers.alone)
                while True:
                    try:
                        # Waiting first costs no pass of the scheduler: the worker just
                        # given a request needs one anyway, and a request just answered
                        # here was the only one known.
                        request = await channel.receive(wait_first=True)
                    except EOFError:
                        break
                    if request[1] in _ANSWERED_INLINE and workers.idle():
                        await workers.answer_here(request)
                    else:
                        workers.submit(request)
                workers.close()
            sharing.cancel_scope.cancel()


if __name__ == "__main__":
    # The parent decides when this process ends (after the driver's close has written
    # everything back), so a Ctrl-C meant for the mount must not kill the driver first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    arena_fd = int(sys.argv[2])
    with mmap.mmap(arena_fd, SLOTS * SLOT_SIZE) as arena, memoryview(arena) as view:
        os.close(arena_fd)
        trio.run(_serve_child, socket.socket(fileno=int(sys.argv[1])), view)
