"""What crosses between the broker and a driver process: framed pickles over a socket,
read data through shared-memory slots (see `uvfs._isolation`)."""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

import trio

from uvfs import _api as api

_HEADER = struct.Struct(">I")
_MAX_FRAME = 1 << 30
_SOCKET_BUFFER = 4 << 20
SLOT_SIZE = 1 << 20  # the kernel's largest FUSE read (max_pages 256)
SLOTS = 8  # reads answered through shared memory at once; later ones go inline
NO_SLOT = -1

# Operation name -> the protocol that declares it; `forget` is the one synchronous call.
OPERATIONS: dict[str, type] = {
    "readdir": api.ReadDir, "open": api.Open, "read": api.Read, "read_layout": api.ReadLayout,
    "release": api.Release,
    "readlink": api.ReadLink, "statfs": api.StatFs, "getxattr": api.GetXattr,
    "listxattr": api.ListXattr, "forget": api.Forget, "close": api.Close, "write": api.Write,
    "create": api.Create, "mknod": api.MkNod, "mkdir": api.MkDir, "symlink": api.SymLink,
    "link": api.Link, "unlink": api.Unlink, "rmdir": api.RmDir, "rename": api.Rename,
    "setattr": api.SetAttrs, "fsync": api.Fsync, "sync": api.Sync, "setxattr": api.SetXattr,
    "removexattr": api.RemoveXattr,
}  # fmt: skip

EXIT_OUT_OF_MEMORY = 3  # the child's exit status after a MemoryError


class Channel:
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

    async def receive(self, *, wait_first: bool = False) -> Any:
        """The next message, or raise EOFError when the other end has gone.

        With `wait_first`, a message not held already is waited for before the socket is
        read: when it cannot have come yet, that saves a read finding nothing (a system
        call and an exception, a few percent of a round trip's CPU)."""
        readable = not wait_first
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
            if not readable:
                await self._wait_readable()
                readable = True
                continue
            try:
                with memoryview(self._buffer) as view, view[self._end :] as room:
                    received = self._sock.recv_into(room)
            except BlockingIOError:
                await self._wait_readable()
                continue
            except OSError:
                raise EOFError from None
            if not received:
                raise EOFError
            self._end += received

    async def _wait_readable(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self._sock)
        except trio.ClosedResourceError:
            raise EOFError from None

    def close(self) -> None:
        if self._sock.fileno() != -1:  # not closed yet
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
