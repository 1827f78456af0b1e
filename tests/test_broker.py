"""The broker's bookkeeping, driven directly (no kernel): numbering, lookup counts, handles,
directory snapshots, protocol defaults and error mapping."""

from __future__ import annotations

import errno
import logging
import os
import stat

import pytest

from uvfs import Attr, DirEntry, FSError
from uvfs._api import Caller, SetAttr
from uvfs._broker import ROOT, Broker, Timeouts

CALLER = Caller(uid=0, gid=0)


def attr(ino: int, kind: int = stat.S_IFREG) -> Attr:
    return Attr(ino=ino, mode=kind | 0o644, nlink=1, uid=0, gid=0, size=3)


class TreeFS:
    """A small in-memory tree whose root is 2 and which also has a node numbered 1."""

    root = 2

    def __init__(self) -> None:
        self.children: dict[bytes, int] = {b"one": 1, b"five": 5}

    async def getattr(self, ino: int) -> Attr:
        if ino == self.root:
            return attr(ino, stat.S_IFDIR)
        if ino in self.children.values():
            return attr(ino)
        raise FSError(errno.ENOENT)

    async def lookup(self, parent: int, name: bytes) -> Attr:
        if parent != self.root or name not in self.children:
            raise FSError(errno.ENOENT)
        return await self.getattr(self.children[name])

    async def readdir(self, ino: int) -> list[DirEntry]:
        return [DirEntry(name, await self.getattr(i)) for name, i in self.children.items()]

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        if ino == 5:
            raise ValueError("a bug in the driver")
        return b"abc"[offset : offset + size]


class ForgettingTreeFS(TreeFS):
    """TreeFS that keeps node state while the kernel holds references (implements Forget)."""

    def __init__(self) -> None:
        super().__init__()
        self.forgotten: list[int] = []

    def forget(self, ino: int) -> None:
        self.forgotten.append(ino)


def broker(read_only: bool = True) -> tuple[Broker, ForgettingTreeFS]:
    fs = ForgettingTreeFS()
    return Broker(fs, read_only=read_only, cache=None, mount_id=0), fs


async def test_root_is_one_and_the_drivers_node_one_takes_the_roots_number() -> None:
    b, _ = broker()
    assert (await b.getattr(ROOT)).ino == ROOT
    assert stat.S_ISDIR((await b.getattr(ROOT)).mode)
    one = await b.lookup(ROOT, b"one")
    assert one is not None and one.ino == 2
    assert (await b.getattr(2)).ino == 2  # kernel 2 is driver 1
    assert stat.S_ISREG((await b.getattr(2)).mode)
    five = await b.lookup(ROOT, b"five")
    assert five is not None and five.ino == 5


async def test_driver_hears_forget_only_when_the_last_reference_goes() -> None:
    b, fs = broker()
    await b.lookup(ROOT, b"five")
    await b.lookup(ROOT, b"five")
    b.forget(5, 1)
    assert fs.forgotten == []
    assert b.statistics().nodes == 1
    b.forget(5, 1)
    assert fs.forgotten == [5]
    assert b.statistics().nodes == 0
    await b.lookup(ROOT, b"one")
    b.forget(2, 1)  # kernel 2 is driver 1
    assert fs.forgotten == [5, 1]


async def test_readdir_lists_dots_then_entries_with_offsets_and_counts_references() -> None:
    b, _ = broker()
    fh = b.opendir(ROOT)
    entries = await b.readdir(fh, 0)
    assert [e.name for e in entries] == [b".", b"..", b"one", b"five"]
    assert [b.to_kernel(e.attr).ino for e in entries] == [ROOT, ROOT, 2, 5]
    assert all(stat.S_ISDIR(e.attr.mode) for e in entries[:2])  # their d_type
    for entry in entries[:3]:  # the kernel accepted three entries, then its buffer was full
        b.entry_sent(entry)
    assert b.statistics().nodes == 1  # only "one": the dots take no reference
    rest = await b.readdir(fh, 3)
    assert [e.name for e in rest] == [b"five"]
    b.releasedir(fh)
    assert b.statistics().open_dirs == 0


async def test_a_listing_is_a_snapshot_until_read_again_from_the_start() -> None:
    b, fs = broker(read_only=False)
    fh = b.opendir(ROOT)
    await b.readdir(fh, 0)
    fs.children[b"late"] = 7
    assert [e.name for e in await b.readdir(fh, 2)] == [b"one", b"five"]
    assert [e.name for e in await b.readdir(fh, 0)][-1] == b"late"


async def test_missing_names_are_cacheable_unless_negative_timeouts_are_zero() -> None:
    for read_only in (True, False):
        b, _ = broker(read_only=read_only)
        assert await b.lookup(ROOT, b"nope") is None
        assert b.timeouts.negative > 0
    b = Broker(ForgettingTreeFS(), read_only=False, cache=None, mount_id=0,
               timeouts=Timeouts(entry=0, attr=0, negative=0))  # fmt: skip
    with pytest.raises(FSError) as excinfo:
        await b.lookup(ROOT, b"nope")
    assert excinfo.value.errno == errno.ENOENT


async def test_a_driver_bug_is_eio_for_that_request_and_the_broker_goes_on(caplog) -> None:
    b, _ = broker()
    await b.lookup(ROOT, b"five")
    fh = await b.open(5, 0, CALLER)
    with caplog.at_level(logging.ERROR, logger="uvfs.broker"), pytest.raises(FSError) as exc:
        await b.read(fh, 0, 3)
    assert exc.value.errno == errno.EIO
    assert "driver failed in read" in caplog.text
    assert "a bug in the driver" in caplog.text
    fh2 = await b.open(2, 0, CALLER)
    assert await b.read(fh2, 1, 10) == b"bc"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda b: b.readlink(ROOT), errno.EINVAL),
        (lambda b: b.getxattr(ROOT, b"user.x"), errno.ENODATA),
        (lambda b: b.setxattr(ROOT, b"user.x", b"1", 0, CALLER), errno.ENOTSUP),
        (lambda b: b.removexattr(ROOT, b"user.x"), errno.ENOTSUP),
        (lambda b: b.mkdir(ROOT, b"d", 0o755, CALLER), errno.EROFS),
        (lambda b: b.unlink(ROOT, b"one"), errno.EROFS),
        (lambda b: b.rename(ROOT, b"one", ROOT, b"two", 0), errno.EROFS),
        (lambda b: b.create(ROOT, b"n", 0o644, 0, CALLER), errno.EROFS),
    ],
)
async def test_absent_operations_answer_their_documented_errno(call, expected: int) -> None:
    b, _ = broker()
    with pytest.raises(FSError) as excinfo:
        await call(b)
    assert excinfo.value.errno == expected


async def test_absent_listxattr_and_statfs_have_empty_defaults() -> None:
    b, _ = broker()
    assert await b.listxattr(ROOT) == ()
    s = await b.statfs()
    assert (s.block_size, s.blocks, s.files) == (4096, 0, 0)


async def test_handles_are_released_at_close() -> None:
    b, _ = broker()
    await b.open(ROOT, 0, CALLER)
    assert b.statistics().open_files == 1
    await b.close()
    assert b.statistics().open_files == 0


class CountingFS(TreeFS):
    """TreeFS that counts the reads reaching it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int]] = []

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        return b"abc"[offset : offset + size]


async def test_reads_through_the_buffer_cache_reach_the_driver_once() -> None:
    from uvfs._cache import BufferCache

    fs = CountingFS()
    b = Broker(fs, read_only=True, cache=BufferCache(1 << 20), mount_id=7)
    fh = await b.open(2, 0, CALLER)
    assert await b.read(fh, 0, 4096) == b"abc"
    await b.release(fh)
    fh = await b.open(2, 0, CALLER)  # a later open of the same file: still cached
    assert await b.read(fh, 0, 4096) == b"abc"
    assert await b.read(fh, 1, 2) == b"bc"
    assert fs.reads == [(0, 4096)]
    stats = b.cache.statistics(7)
    assert (stats.hits, stats.misses, stats.bytes_from_driver) == (2, 1, 3)


class CountingTreeFS(TreeFS):
    """TreeFS that counts the metadata calls reaching it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def getattr(self, ino: int) -> Attr:
        self.calls.append("getattr")
        return await super().getattr(ino)

    async def lookup(self, parent: int, name: bytes) -> Attr:
        self.calls.append("lookup")
        return await super().lookup(parent, name)

    async def readdir(self, ino: int) -> list[DirEntry]:
        self.calls.append("readdir")
        return await super().readdir(ino)


async def test_read_only_mounts_remember_names_attributes_and_listings() -> None:
    fs = CountingTreeFS()
    b = Broker(fs, read_only=True, cache=None, mount_id=0)
    for _ in range(3):
        await b.lookup(ROOT, b"five")
        assert await b.lookup(ROOT, b"nope") is None
        await b.getattr(5)
        await b.readdir(b.opendir(ROOT), 0)
    # Only the first round reaches the driver (TreeFS's lookup and readdir call its own
    # getattr: 1 + 1 for the lookups and the stat, 2 in the listing; none for "." and "..",
    # whose number and type the broker knows).
    assert sorted(fs.calls) == ["getattr"] * 4 + ["lookup"] * 2 + ["readdir"]
    stats = b.statistics()
    assert (stats.metadata_hits, stats.metadata_misses) == (8, 4)


async def test_writable_mounts_ask_the_driver_every_time() -> None:
    fs = CountingTreeFS()
    b = Broker(fs, read_only=False, cache=None, mount_id=0)
    await b.getattr(5)
    await b.getattr(5)
    assert fs.calls == ["getattr", "getattr"]


async def test_a_driver_that_forgets_nodes_gets_no_remembered_answers() -> None:
    """An answer kept past a forget would name a node the driver has dropped."""

    class Forgetting(CountingTreeFS):
        def forget(self, ino: int) -> None:
            pass

    fs = Forgetting()
    b = Broker(fs, read_only=True, cache=None, mount_id=0)
    await b.getattr(5)
    await b.getattr(5)
    assert fs.calls == ["getattr", "getattr"]


class FileFS(TreeFS):
    """TreeFS whose node 5 is a writable file of `data`, truncated by setattr."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray(b"old contents")

    async def getattr(self, ino: int) -> Attr:
        base = await super().getattr(ino)
        return base._replace(size=len(self.data)) if ino == 5 else base

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    async def write(self, ino: int, handle: int, offset: int, data: bytes) -> int:
        self.data[offset : offset + len(data)] = data
        return len(data)

    async def setattr(self, ino: int, changes: SetAttr, caller: Caller) -> Attr:
        if changes.size is not None:
            del self.data[changes.size :]
        return await self.getattr(ino)


async def test_open_with_o_trunc_leaves_no_stale_bytes_in_the_cache() -> None:
    from uvfs._cache import BufferCache

    fs = FileFS()
    b = Broker(fs, read_only=False, cache=BufferCache(1 << 20), mount_id=0)
    fh = await b.open(5, os.O_RDWR, CALLER)
    assert await b.read(fh, 0, 100) == b"old contents"  # now cached
    fh = await b.open(5, os.O_WRONLY | os.O_TRUNC, CALLER)
    assert fs.data == b""  # the broker truncated: this driver has no open of its own
    await b.write(fh, 0, b"new")
    assert await b.read(fh, 0, 100) == b"new"
