"""A qcow2 image as a read-only block device: the guest disk, through L1/L2 and backing files.

`Qcow2Image` presents the guest disk with `ImageFile`'s surface, so a partition table or a
driver reads it without knowing. Opening reads the header, the L1 table and the backing
chain, and checks that every L2 table lies inside the file: a damaged image is refused at
once, with a reason. A data or compressed cluster that points past the end of the file is
found only when read, and that read fails with EIO naming the guest offset.

A read maps its range to runs (clusters adjacent in the guest and in the file are one run,
one pread); data runs read like a raw image's, through the page cache without a thread
when possible, the rest in a worker thread. The L2 tables and the last inflated clusters
are kept in small LRU maps behind a lock, since reads come from several threads.

Backing files resolve as QEMU resolves them: a relative name against the directory of the
image naming it; each may be raw or qcow2 with its own backing file.
"""

from __future__ import annotations

import errno
import os
import threading
import zlib

import trio
import zstandard

from uvfs._api import FSError, Refusal
from uvfs._image import ImageFile
from uvfs._lru import LRU
from uvfs._qcow2 import (
    COMPRESSION_ZSTD,
    QCOW2_HEADER_READ,
    Kind,
    Mapping,
    Qcow2Error,
    decode_l2,
    is_qcow2,
    l2_table_offset,
    parse_header,
)

MAX_BACKING_DEPTH = 16  # deeper chains are loops or hostile
_L2_CACHE = 64  # tables (64 KiB each by default: 4 MiB, mapping 32 GiB of guest disk)
_INFLATED_CACHE = 16  # clusters


def open_image(path: str, *, depth: int = 0) -> ImageFile | Qcow2Image:
    """The file at `path` read-only, as the guest disk when it is a qcow2 image."""
    file = ImageFile(path)
    try:
        if file.size >= 4 and is_qcow2(file.read_sync(0, 4)):
            return Qcow2Image(file, depth=depth)
        return file
    except BaseException:
        file.close()
        raise


class Qcow2Image:
    """The guest disk of one qcow2 file (owned: closed with it), read-only.

    Args:
        file: the qcow2 file.
        depth: how many images name this one as backing file (bounds the chain).
    """

    writable = False
    sector_size = 512

    def __init__(self, file: ImageFile, *, depth: int = 0) -> None:
        self.file = file
        self.path = file.path
        try:
            self.header = parse_header(file.read_sync(0, min(QCOW2_HEADER_READ, file.size)))
        except Qcow2Error as e:
            raise Refusal(f"{file.path}: {e}") from None
        self.size = self.header.size
        self._l1 = self._read_l1()
        self._lock = threading.Lock()
        self._l2: LRU[int, tuple[int, ...]] = LRU(_L2_CACHE)
        self._inflated: LRU[int, bytes] = LRU(_INFLATED_CACHE)
        self.backing = self._open_backing(depth)

    def _read_l1(self) -> tuple[int, ...]:
        h, file = self.header, self.file
        if h.l1_table_offset + 8 * h.l1_size > file.size:
            raise Refusal(f"{file.path}: qcow2 L1 table lies past the end of the image")
        raw = file.read_sync(h.l1_table_offset, 8 * h.l1_size)
        l1 = tuple(int.from_bytes(raw[i : i + 8], "big") for i in range(0, len(raw), 8))
        for index, entry in enumerate(l1):
            where = l2_table_offset(entry)
            if where % h.cluster_size or where + h.cluster_size > file.size:
                raise Refusal(
                    f"{file.path}: qcow2 L2 table {index} at byte {where} lies past the end "
                    f"of the image ({file.size} bytes) or is misaligned"
                )
        return l1

    def _open_backing(self, depth: int) -> ImageFile | Qcow2Image | None:
        h = self.header
        if not h.backing_file_size:
            return None
        if depth >= MAX_BACKING_DEPTH:
            raise Refusal(f"{self.path}: backing chain deeper than {MAX_BACKING_DEPTH} images")
        if h.backing_file_offset + h.backing_file_size > self.file.size:
            raise Refusal(f"{self.path}: backing file name lies past the end of the image")
        name = os.fsdecode(self.file.read_sync(h.backing_file_offset, h.backing_file_size))
        path = os.path.join(os.path.dirname(self.path), name)
        try:
            return open_image(path, depth=depth + 1)
        except OSError as e:
            raise Refusal(
                f"{self.path}: backing file {name}: {os.strerror(e.errno or errno.EIO)}"
            ) from None

    # --- reading --------------------------------------------------------------------------

    def _mapping(self, offset: int) -> Mapping:
        """Where the guest cluster holding `offset` lives."""
        h = self.header
        where = l2_table_offset(self._l1[h.l1_index(offset)])
        if where == 0:
            return Mapping(Kind.UNALLOCATED)
        with self._lock:
            table = self._l2.get(where)
        if table is None:
            raw = self.file.read_sync(where, h.cluster_size)
            table = tuple(int.from_bytes(raw[i : i + 8], "big") for i in range(0, len(raw), 8))
            with self._lock:
                self._l2.put(where, table)
        try:
            return decode_l2(table[h.l2_index(offset)], h)
        except Qcow2Error as e:
            raise FSError(errno.EIO, f"{self.path}: guest offset {offset}: {e}") from None

    def _inflate(self, mapping: Mapping, guest: int) -> bytes:
        with self._lock:
            cluster = self._inflated.get(mapping.offset)
        if cluster is not None:
            return cluster
        size = self.header.cluster_size
        # The last compressed cluster may end before its last sector does.
        length = min(mapping.length, self.file.size - mapping.offset)
        stored = self.file.read_sync(mapping.offset, length)
        try:
            if self.header.compression_type == COMPRESSION_ZSTD:
                cluster = zstandard.ZstdDecompressor().decompressobj().decompress(stored)[:size]
            else:
                cluster = zlib.decompressobj(-15).decompress(stored, size)
        except (zlib.error, zstandard.ZstdError) as e:
            raise FSError(errno.EIO, f"{self.path}: guest offset {guest}: {e}") from None
        if len(cluster) != size:
            raise FSError(errno.EIO, f"{self.path}: guest offset {guest}: short cluster")
        with self._lock:
            self._inflated.put(mapping.offset, cluster)
        return cluster

    def _l2_cached(self, offset: int, size: int) -> bool:
        """Whether mapping [offset, offset + size) needs no L2 table read from the file."""
        h = self.header
        for index in range(h.l1_index(offset), h.l1_index(offset + size - 1) + 1):
            where = l2_table_offset(self._l1[index])
            with self._lock:
                if where and self._l2.get(where) is None:
                    return False
        return True

    def _extents(self, offset: int, size: int) -> list[tuple[Mapping, int, int]]:
        """(mapping, guest offset, length) runs covering the range; a DATA mapping's offset
        is the host offset of the run's first byte, and clusters that follow each other in
        the file too (as qemu-img writes them) are one run, so one read."""
        cluster = self.header.cluster_size
        runs: list[tuple[Mapping, int, int]] = []
        while size:
            n = min(size, cluster - offset % cluster)
            mapping = self._mapping(offset)
            if mapping.kind is Kind.DATA:
                mapping = Mapping(Kind.DATA, mapping.offset + offset % cluster)
            last = runs[-1] if runs else None
            if (
                last is not None
                and last[0].kind is mapping.kind
                and mapping.kind is not Kind.COMPRESSED
                and (mapping.kind is not Kind.DATA or last[0].offset + last[2] == mapping.offset)
            ):
                runs[-1] = (last[0], last[1], last[2] + n)
            else:
                runs.append((mapping, offset, n))
            offset += n
            size -= n
        return runs

    def _past_the_end(self, mapping: Mapping, guest: int, size: int) -> bool:
        if mapping.kind is Kind.DATA:
            return mapping.offset + size > self.file.size
        return mapping.kind is Kind.COMPRESSED and mapping.offset >= self.file.size

    def _read_extent(self, mapping: Mapping, guest: int, size: int) -> bytes:
        """The bytes of one run from `_extents`."""
        if self._past_the_end(mapping, guest, size):
            raise FSError(
                errno.EIO, f"{self.path}: guest offset {guest} maps past the end of the image"
            )
        if mapping.kind is Kind.DATA:
            return self.file.read_sync(mapping.offset, size)
        if mapping.kind is Kind.COMPRESSED:
            within = guest % self.header.cluster_size
            return self._inflate(mapping, guest)[within : within + size]
        if mapping.kind is Kind.UNALLOCATED and self.backing is not None:
            present = max(0, min(size, self.backing.size - guest))
            data = self.backing.read_sync(guest, present) if present else b""
            return data + bytes(size - present)
        return bytes(size)

    def _check(self, offset: int, size: int) -> None:
        if offset < 0 or offset + size > self.size:
            raise FSError(errno.EIO, f"{self.path}: {size} bytes at {offset} run past the disk")

    def read_sync(self, offset: int, size: int) -> bytes:
        """Exactly `size` bytes of the guest disk at `offset`, or EIO past its end."""
        self._check(offset, size)
        return b"".join(self._read_extent(*run) for run in self._extents(offset, size))

    async def read(self, offset: int, size: int) -> bytes:
        """`read_sync` without blocking the trio loop: data clusters go through the file's
        own `read` (the page cache without a thread when it can); table reads, inflating
        and backing files run in a worker thread."""
        self._check(offset, size)
        if not size:
            return b""
        if not self._l2_cached(offset, size):
            return await trio.to_thread.run_sync(self.read_sync, offset, size)
        pieces = []
        for mapping, guest, n in self._extents(offset, size):
            if mapping.kind is Kind.DATA and not self._past_the_end(mapping, guest, n):
                pieces.append(await self.file.read(mapping.offset, n))
            elif mapping.kind is Kind.ZERO or (
                mapping.kind is Kind.UNALLOCATED and self.backing is None
            ):
                pieces.append(bytes(n))
            else:
                pieces.append(await trio.to_thread.run_sync(self._read_extent, mapping, guest, n))
        return b"".join(pieces)

    def write_sync(self, offset: int, data: bytes) -> None:
        raise FSError(errno.EROFS, f"{self.path}: qcow2 images are read-only")

    async def write(self, offset: int, data: bytes) -> None:
        self.write_sync(offset, data)

    async def sync(self) -> None:
        """Nothing to write back."""

    def close(self) -> None:
        self.file.close()
        if self.backing is not None:
            self.backing.close()

    def __enter__(self) -> Qcow2Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
