"""Crash isolation: a driver served from a process of its own (``uvfs mount -o isolate``).

Because the driver API carries only plain data, the same driver runs in the broker's process
or behind a socket without a change. The parent holds an `isolated` filesystem: a proxy that
implements exactly the operations the real filesystem implements, each one a message to the
child. The child opens the images itself (so it holds their locks), opens the driver, and
answers requests concurrently, each in its own task, replies tagged with the request's id.

Wire format: frames of a 4-byte big-endian length and a pickle. Parent to child:
``("open", driver, sources, options)`` once, then ``(id, operation, args)``; child to parent:
``("ready", root, operations)`` or ``("refused", message)``, then ``(id, "ok", value)``,
``(id, "error", errno, message)`` or ``(id, "bug", traceback)``. Pickle is safe here: both
ends are this program, started by the same user, over a private socketpair.

When the child dies, every request in flight and every later one fails with EIO and the
mount stays up: a driver bug costs its own requests, never the broker or the kernel mount.
"""

from __future__ import annotations

import errno
import itertools
import logging
import pickle
import signal
import socket
import struct
import sys
import traceback
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from uvfs import _api as api
from uvfs._api import FSError, MountOptions, Refusal

if TYPE_CHECKING:
    from uvfs._source import Source

log = logging.getLogger("uvfs.isolation")

_HEADER = struct.Struct(">I")
_MAX_FRAME = 1 << 30

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


class _Channel:
    """Frames over a stream socket; sends from several tasks go out whole, one at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._send_lock = trio.StrictFIFOLock()
        self._buffer = bytearray()

    async def send(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._send_lock:
            await self.stream.send_all(_HEADER.pack(len(data)) + data)

    async def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            chunk = await self.stream.receive_some(max(65536, size - len(self._buffer)))
            if not chunk:
                return False
            self._buffer += chunk
        return True

    async def receive(self) -> Any:
        """The next message, or raise EOFError when the other end has gone."""
        if not await self._fill(_HEADER.size):
            raise EOFError
        (size,) = _HEADER.unpack_from(self._buffer)
        if size > _MAX_FRAME or not await self._fill(_HEADER.size + size):
            raise EOFError
        frame = bytes(self._buffer[_HEADER.size : _HEADER.size + size])
        del self._buffer[: _HEADER.size + size]
        return pickle.loads(frame)


# --- the parent's side -------------------------------------------------------------------------


class _Proxy:
    """Forwards each call to the driver process and waits for its answer."""

    def __init__(self, channel: _Channel, root: int) -> None:
        self.root = root
        self._channel = channel
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[tuple]] = {}
        self._outbox_send, self._outbox = trio.open_memory_channel[tuple](float("inf"))
        self._dead = False

    async def _call(self, operation: str, *args: object) -> Any:
        if self._dead:
            raise FSError(errno.EIO, "the driver process has exited")
        request = next(self._ids)
        send, receive = trio.open_memory_channel[tuple](1)
        self._waiting[request] = send
        try:
            self._outbox_send.send_nowait((request, operation, args))
            reply = await receive.receive()
        finally:
            del self._waiting[request]
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "error":
            raise FSError(reply[1], reply[2])
        log.error("driver process failed in %s:\n%s", operation, reply[1])
        raise FSError(errno.EIO)

    def _cast(self, operation: str, *args: object) -> None:
        """Send without waiting for the answer (for the synchronous `forget`)."""
        if not self._dead:
            self._outbox_send.send_nowait((next(self._ids), operation, args))

    async def run(self) -> None:
        """Send queued requests and route replies, until the child goes."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop)
            try:
                while True:
                    request, *reply = await self._channel.receive()
                    waiter = self._waiting.get(request)
                    if waiter is not None:
                        waiter.send_nowait(tuple(reply))
            except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            self._dead = True
            log.error("the driver process has exited; its requests now fail with EIO")
            for waiter in self._waiting.values():
                waiter.send_nowait(("error", errno.EIO, "the driver process has exited"))
            nursery.cancel_scope.cancel()

    async def _send_loop(self) -> None:
        async for message in self._outbox:
            try:
                await self._channel.send(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


def _proxy_class(operations: Sequence[str]) -> type[_Proxy]:
    """A `_Proxy` subclass with exactly `operations`, so the broker's protocol checks see
    what the real filesystem implements."""
    methods: dict[str, Any] = {
        "lookup": lambda self, *a: self._call("lookup", *a),
        "getattr": lambda self, *a: self._call("getattr", *a),
    }
    for name in operations:
        if name == "forget":
            methods[name] = lambda self, *a: self._cast("forget", *a)
        else:
            methods[name] = lambda self, *a, _name=name: self._call(_name, *a)
    return type("IsolatedFileSystem", (_Proxy,), methods)


@asynccontextmanager
async def isolated(
    driver: str, sources: Sequence[Source], options: MountOptions
) -> AsyncIterator[api.FileSystem]:
    """Open `sources` with `driver` (a name or ``module:attribute``) in a child process.

    Raises `Refusal` when the child cannot open them; the child is stopped on exit.
    """
    parent, child = socket.socketpair()
    with parent, child:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "uvfs._isolation", str(child.fileno())],
            pass_fds=(child.fileno(),),
        )
        child.close()
        channel = _Channel(trio.SocketStream(trio.socket.from_stdlib_socket(parent)))
        async with AsyncExitStack() as stack:
            stack.push_async_callback(_stop, process)
            stack.push_async_callback(channel.stream.aclose)  # first: the child sees EOF, exits
            await channel.send(("open", driver, list(sources), options))
            try:
                reply = await channel.receive()
            except EOFError:
                raise Refusal(f"the {driver} driver process exited while opening") from None
            if reply[0] == "refused":
                raise Refusal(reply[1])
            _, root, operations = reply
            proxy = _proxy_class(operations)(channel, root)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(proxy.run)
                yield proxy
                nursery.cancel_scope.cancel()


async def _stop(process: trio.Process) -> None:
    with trio.move_on_after(10) as waited:
        await process.wait()
    if waited.cancelled_caught:
        process.kill()
        await process.wait()


# --- the child's side --------------------------------------------------------------------------


async def _answer(channel: _Channel, fs: Any, request: int, operation: str, args: tuple) -> None:
    try:
        if operation == "forget":
            fs.forget(*args)
            return
        reply: tuple = (request, "ok", await getattr(fs, operation)(*args))
    except FSError as e:
        reply = (request, "error", e.errno, e.message)
    except Exception:
        reply = (request, "bug", traceback.format_exc())
    await channel.send(reply)


async def _serve_child(sock: socket.socket) -> None:
    from uvfs import _registry
    from uvfs._image import ImageInUse
    from uvfs._source import open_source

    channel = _Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    _, driver_name, sources, options = await channel.receive()
    with ExitStack() as images:
        try:
            driver = _registry.driver_named(driver_name)
            opened = [
                images.enter_context(open_source(s, writable=options.writable)) for s in sources
            ]
            fs = await driver.open(opened, options)
        except (Refusal, ImageInUse) as e:
            await channel.send(("refused", str(e)))
            return
        except (FSError, OSError) as e:
            await channel.send(("refused", f"{sources[0].path}: cannot read image: {e}"))
            return
        operations = [name for name, protocol in OPERATIONS.items() if isinstance(fs, protocol)]
        await channel.send(("ready", fs.root, operations))
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    request, operation, args = await channel.receive()
                except (EOFError, trio.BrokenResourceError):
                    break
                nursery.start_soon(_answer, channel, fs, request, operation, args)


if __name__ == "__main__":
    # The parent decides when this process ends (after the driver's close has written
    # everything back), so a Ctrl-C meant for the mount must not kill the driver first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trio.run(_serve_child, socket.socket(fileno=int(sys.argv[1])))
