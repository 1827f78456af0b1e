"""Image I/O: positional block access to one image file, locked against a second writer.

A read-only image is opened O_RDONLY, so no code path can change its bytes. Every open
takes a BSD lock on the file: exclusive when writable, shared when read-only, so an image
mounted writable cannot be mounted a second time, writable or not, and an image mounted
read-only cannot be mounted writable. Reads and writes are positional (pread/pwrite): no
shared file offset, so concurrent requests need no lock here. A read that runs past the end
of the image is an I/O error (EIO): a truncated image must not read as zeros.

A block device (/dev/loopN, /dev/sdX) is a source like a file: its size comes from lseek to
the end (st_size is 0 for a device) and its logical sector size from the BLKSSZGET ioctl.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator

import trio

from uvfs._api import FSError

# linux/fs.h: _IO(0x12, 104), the logical sector size of a block device.
_BLKSSZGET = 0x1268

# Below this, writing to the page cache costs less than handing the write to a thread.
_THREAD_THRESHOLD = 256 * 1024
# A read up to this size is done on the trio loop itself while the device answers faster
# than a hand-off to a worker thread and back (tens of microseconds on an SSD or a virtual
# disk; a cold random 4 KiB read of a file needs two or three such reads). A slow device (a
# spinning disk, a network block device) sends them to a thread like large ones, so other
# requests keep moving; the estimate keeps following the device either way.
_INLINE_READ_MAX = 64 * 1024
_INLINE_LATENCY = 200e-6  # seconds: about what a hand-off to a thread and back costs
# While no other task is ready to run, a device this fast still reads on the loop: the
# hand-off would only add its cost to the one request being answered (a cold `find` or a
# reader of random blocks waits for each answer before it asks again), and a request that
# arrives meanwhile waits a read, not a seek of a spinning disk.
_IDLE_INLINE_LATENCY = 2e-3
# Reads up to this size try the page cache through one buffer kept for them (a FUSE READ
# is at most 1 MiB): a fresh one per read cost a zeroing pass and its page faults, about
# as much as the copy of the bytes themselves.
_NOWAIT_BUFFER = 1 << 20


def _never() -> bool:
    return False


_loop_alone: Callable[[], bool] = _never


def read_inline_when(alone: Callable[[], bool]) -> None:
    """Have small reads done on the loop, however slow the device, whenever ``alone()``
    says that nothing else waits on it: the hand-off to a thread would then only add its
    cost. A driver process serving one request at a time says so (`uvfs._isolation.child`);
    the server's loop always has the kernel's other requests and its cache's hits."""
    global _loop_alone
    _loop_alone = alone


@contextlib.contextmanager
def _as_fserror(path: str) -> Iterator[None]:
    """An I/O failure of the image (a full disk, a failing device) is the request's errno,
    not a driver bug: ENOSPC reaches the user as ENOSPC."""
    try:
        yield
    except OSError as e:
        if e.errno is None:
            raise
        raise FSError(e.errno, f"{path}: {os.strerror(e.errno)}") from None


class ImageInUse(Exception):
    """Another process holds a lock on the image that conflicts with ours."""


class ImageFile:
    """One image file (or block device) opened for block I/O.

    Args:
        path: the image file.
        writable: open read-write; otherwise the image's bytes never change.
    """

    def __init__(self, path: str, *, writable: bool = False) -> None:
        self.path = path
        self.writable = writable
        self._fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        try:
            mode = os.fstat(self._fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            try:
                lock = fcntl.LOCK_EX if writable else fcntl.LOCK_SH
                fcntl.flock(self._fd, lock | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ImageInUse(f"{path}: image is in use by another uvfs mount") from None
            self.size = os.lseek(self._fd, 0, os.SEEK_END)
            self.sector_size = 512  # what partition tables count in, unless the device says
            if stat.S_ISBLK(mode):
                answer = fcntl.ioctl(self._fd, _BLKSSZGET, b"\0" * 4)
                self.sector_size = int.from_bytes(answer, "little")
            self._nowait = True
            self._buffer = bytearray()  # `_read_cached`'s, grown on first use
            self._latency = 0.0  # moving average of how long the device takes per read
        except BaseException:
            os.close(self._fd)
            raise

    def read_sync(self, offset: int, size: int) -> bytes:
        """Exactly `size` bytes at `offset`, or EIO when the image ends first."""
        start = time.perf_counter()
        with _as_fserror(self.path):
            data = os.pread(self._fd, size, offset)
        if size <= _INLINE_READ_MAX:
            self._latency += (time.perf_counter() - start - self._latency) / 8
        if len(data) != size:
            raise FSError(errno.EIO, f"{self.path}: {size} bytes at {offset} run past the image")
        return data

    def _read_cached(self, offset: int, size: int) -> bytes:
        """What the page cache holds of the range from its start; maybe less, maybe none."""
        if not self._nowait:
            return b""
        if size > _NOWAIT_BUFFER:
            buffer = bytearray(size)
        else:  # used on the trio thread only, and copied out before anything else runs
            if not self._buffer:
                self._buffer = bytearray(_NOWAIT_BUFFER)
            buffer = self._buffer
        with memoryview(buffer) as view:
            try:
                done = os.preadv(self._fd, [view[:size]], offset, os.RWF_NOWAIT)
            except BlockingIOError:
                return b""
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self._nowait = False  # a file system without RWF_NOWAIT: always use a thread
                return b""
            return bytes(view[:done])

    async def read(self, offset: int, size: int) -> bytes:
        """`read_sync` without holding up the trio loop for long: what is not cached is read
        in a worker thread, unless the read is small and the device fast, or nothing else
        waits on the loop (`read_inline_when`)."""
        if size <= _INLINE_READ_MAX and (
            self._latency < _INLINE_LATENCY
            or _loop_alone()
            or (
                self._latency < _IDLE_INLINE_LATENCY
                and not trio.lowlevel.current_statistics().tasks_runnable
            )
        ):
            return self.read_sync(offset, size)
        data = self._read_cached(offset, size)
        if len(data) == size:
            return data
        rest = await trio.to_thread.run_sync(self.read_sync, offset + len(data), size - len(data))
        return data + rest

    def write_sync(self, offset: int, data: bytes) -> None:
        """Write all of `data` at `offset`."""
        if not self.writable:
            raise FSError(errno.EROFS, f"{self.path}: image is open read-only")
        view = memoryview(data)
        with _as_fserror(self.path):
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        self.size = max(self.size, offset)

    async def write(self, offset: int, data: bytes) -> None:
        """`write_sync`, in a worker thread when large enough to be worth it."""
        if len(data) < _THREAD_THRESHOLD:
            self.write_sync(offset, data)
        else:
            await trio.to_thread.run_sync(self.write_sync, offset, data)

    async def sync(self) -> None:
        """Make every write so far durable (fdatasync)."""
        if self.writable:
            with _as_fserror(self.path):
                await trio.to_thread.run_sync(os.fdatasync, self._fd)

    def close(self) -> None:
        """Release the lock and the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ImageFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
