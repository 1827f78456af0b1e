"""One fuzz case in-process: open mutated images read-only through a driver and walk them.

The walk calls the driver API the way the broker would for ``find``, ``stat``, ``cat``,
``readlink`` and ``getfattr -d`` over the whole tree: describe, open, statfs, then for
every node reachable from the root getattr, readdir, readlink, open/read/release at the
start, middle and end of the file, listxattr and getxattr of each name; then, in a fresh
open, a lookup of every name listed (and of ".." and a missing name in each directory).

A driver answers a call or fails it with an errno (`FSError`, or an `OSError` that
carries one); a `Refusal` at open is an answer too. Anything else escaping a call is the
failure this fuzzer looks for, and so is an answer the FUSE glue cannot hand to the
kernel (`Unfit`: an attribute pyfuse3 refuses, such as a size of 2^64 - 1, raises
OverflowError in the server), checked by filling pyfuse3's own records as uvfs/_fuse.py
does. The caller adds the other failures (a hang, a dead process, a write).
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pyfuse3

from uvfs import Attr, FSError, ImageFile, MountOptions, Refusal, StatFS
from uvfs._api import Caller

T = TypeVar("T")

NODE_BUDGET = 250  # nodes visited per image: damaged directories may loop or multiply
NAMES_PER_DIR = 16  # names of one directory looked up again (spread over its listing)
READ_SIZE = 1 << 17  # bytes per read call, as a large FUSE read
_MAX_OFFSET = (1 << 63) - 1  # FUSE offsets are signed 64-bit: the kernel sends no more
_ROOT = Caller(uid=0, gid=0)


class Written(Exception):
    """The driver tried to write to an image it opened read-only."""


class Unfit(Exception):
    """A driver answered with a value FUSE cannot carry to the kernel."""


_ENTRY_FIELDS = ("ino", "generation", "mode", "nlink", "uid", "gid", "rdev", "size",
                 "blksize", "blocks", "atime_ns", "mtime_ns", "ctime_ns")  # fmt: skip


def check_attr(attr: Attr) -> None:
    """Raise `Unfit` unless pyfuse3 takes every field of `attr` (as uvfs/_fuse.py sets them)."""
    entry = pyfuse3.EntryAttributes()
    for name in _ENTRY_FIELDS:
        target = name if name == "generation" else f"st_{name}"
        try:
            setattr(entry, target, getattr(attr, name))
        except (OverflowError, TypeError, ValueError) as e:
            raise Unfit(f"inode {attr.ino}: {name} {getattr(attr, name)}: {e}") from None


def check_statfs(s: StatFS) -> None:
    """Raise `Unfit` unless pyfuse3's StatvfsData takes `s`."""
    data = pyfuse3.StatvfsData()
    try:
        data.f_bsize = data.f_frsize = s.block_size
        data.f_blocks, data.f_bfree, data.f_bavail = s.blocks, s.blocks_free, s.blocks_avail
        data.f_files, data.f_ffree, data.f_favail = s.files, s.files_free, s.files_free
        data.f_namemax = s.name_max
    except (OverflowError, TypeError, ValueError) as e:
        raise Unfit(f"statfs {s}: {e}") from None


class FuzzImage(ImageFile):
    """An image opened read-only whose reads can be watched (`on_read`) and whose every
    write attempt is a failure, whatever the driver does with the EROFS it would get."""

    on_read: Callable[[int, int], None] | None = None

    def read_sync(self, offset: int, size: int) -> bytes:
        if self.on_read is not None:
            self.on_read(offset, size)
        return super().read_sync(offset, size)

    async def read(self, offset: int, size: int) -> bytes:
        return self.read_sync(offset, size)  # through read_sync, so on_read sees it

    def write_sync(self, offset: int, data: bytes) -> None:
        raise Written(f"{self.path}: write of {len(data)} bytes at {offset}")

    async def write(self, offset: int, data: bytes) -> None:
        self.write_sync(offset, data)


async def _answer(call: Awaitable[T]) -> T | None:
    """The call's answer, or None when it failed with an errno; anything else propagates."""
    try:
        return await call
    except FSError:
        return None
    except OSError as e:
        if e.errno is None:
            raise
        return None


class Walk:
    """Walks one open filesystem; `data_reads` is True while file contents are being read
    (so a recorder can tell metadata reads from data reads)."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.data_reads = False
        self.answers = 0
        self.names: list[tuple[int, bytes]] = []  # (directory, name) that readdir listed

    async def _call(self, name: str, *args: object) -> Any:
        method = getattr(self.fs, name, None)
        if method is None:
            return None
        answer = await _answer(method(*args))
        self.answers += answer is not None
        if isinstance(answer, Attr):
            check_attr(answer)
        elif isinstance(answer, StatFS):
            check_statfs(answer)
        elif name == "readdir" and answer is not None:
            for entry in answer:
                check_attr(entry.attr)
        return answer

    async def _read_file(self, ino: int, size: int) -> None:
        handle = 0
        if hasattr(self.fs, "open"):
            handle = await _answer(self.fs.open(ino, 0, _ROOT))
            if handle is None:
                return
        offsets = sorted({0, min(size // 2, _MAX_OFFSET), min(max(size - 100, 0), _MAX_OFFSET)})
        self.data_reads = True
        try:
            for offset in offsets:
                await self._call("read", ino, handle, offset, READ_SIZE)
        finally:
            self.data_reads = False
        await self._call("release", ino, handle)

    async def lookups(self, names: Sequence[tuple[int, bytes]]) -> None:
        """Look up `names`, and in each of their directories ".." and a missing name."""
        for parent in dict.fromkeys(parent for parent, _ in names):
            await self._call("lookup", parent, b"..")
            await self._call("lookup", parent, b"no such name \xff")
        for parent, name in names:
            await self._call("lookup", parent, name)

    async def run(self) -> None:
        """Every read operation on every node reachable from the root, within budget; the
        names listed are kept in `names` for `lookups`."""
        fs = self.fs
        await self._call("statfs")
        seen = {fs.root}
        stack = [fs.root]
        nodes = NODE_BUDGET
        while stack and nodes:
            ino = stack.pop()
            nodes -= 1
            attr = await self._call("getattr", ino)
            mode = attr.mode if attr is not None else 0
            if stat.S_ISLNK(mode):
                await self._call("readlink", ino)
            elif stat.S_ISREG(mode):
                await self._read_file(ino, attr.size)
            for name in await self._call("listxattr", ino) or []:
                await self._call("getxattr", ino, name)
            if not stat.S_ISDIR(mode):
                continue
            listing = await self._call("readdir", ino) or []
            step = max(1, len(listing) // NAMES_PER_DIR)
            self.names += [(ino, entry.name) for entry in listing[::step]]
            for entry in listing:
                if entry.attr.ino not in seen:
                    seen.add(entry.attr.ino)
                    stack.append(entry.attr.ino)


async def walk_images(
    driver: Any, images: Sequence[ImageFile], on_open: Callable[[Walk], None] | None = None
) -> int:
    """Describe and open `images` with `driver`, walk the result; how many calls answered.

    The names the walk listed are then looked up in a second open of the images, whose
    caches are empty, so each lookup takes the driver's own path (an htree or fat ZAP
    hash lookup) rather than the listing read before. Only an exception that is not an
    errno (or a `Refusal` from describe/open) escapes.
    """
    with contextlib.suppress(Refusal, FSError):
        await driver.describe(images)
    names: list[tuple[int, bytes]] = []
    answers = 0
    for lookups in (False, True):
        try:
            fs = await driver.open(images, MountOptions())
        except (Refusal, FSError):
            return answers
        walk = Walk(fs)
        if on_open is not None and not lookups:
            on_open(walk)
        try:
            await (walk.lookups(names) if lookups else walk.run())
        finally:
            if hasattr(fs, "close"):
                await _answer(fs.close())
        names = walk.names
        answers += walk.answers
    return answers
