"""Space maps (module/zfs/space_map.c, include/sys/space_map.h): a metaslab's allocation log.

A space map is a MOS object (DMU_OT_SPACE_MAP) whose data is an append-only log of 64-bit
words, and whose bonus buffer (space_map_phys_t) says how long the log is and how much
it leaves allocated:

    0   smp_object      (unused)
    8   smp_length      bytes of log in the object
    16  smp_alloc       bytes allocated once the log is replayed (signed)
    24  smp_pad[5], then smp_histogram[32] (only in the newer, 280-byte header)

Each word of the log is one of (bits 63..0):

* debug:    10 | action:2 | syncpass:10 | txg:50 -- the entries after it were written by
            that txg's sync pass, as allocations or frees (the action);
* one-word: 0 | offset:47 | type:1 | run-1:15 -- offset and run in units of the map's
            shift (the vdev's ashift) from the metaslab's start; type 0 alloc, 1 free;
* two-word: 11 | pad:2 | run-1:36 | vdev:24, then type:1 | offset:63 (spacemap_v2: longer
            runs, and a vdev id for log space maps). A two-word entry never straddles a
            block of the object; the word left before a block boundary is a debug entry
            with action, syncpass and txg all zero (padding).

Before spacemap_v2, debug entries were ``1 | action:3 | ...``: the same bits for the
actions ever written (0 and 1), so one decoder reads both generations.

Replaying the log from the start (alloc entries add, free entries remove) gives the
metaslab's allocated space; `replay` refuses a log that allocates allocated space or
frees free space, as space_map_load's range tree does. `encode_entries` writes new
entries: one-word entries only (split into runs of at most 2^15 units) unless the pool
has spacemap_v2.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from uvfs import FSError
from uvfs_fs.zfs.range_tree import RangeError, RangeTree

SM_ALLOC, SM_FREE = 0, 1
SM_NO_VDEVID = 1 << 24
SPACE_MAP_SIZE_V0 = 24  # smp_object, smp_length, smp_alloc: the bonus of older pools
SM_RUN_MAX = 1 << 15  # one-word entries, in map units
SM_OFFSET_MAX = (1 << 47) - 1
SM2_RUN_MAX = 1 << 36
SM2_OFFSET_MAX = (1 << 63) - 1

_DEBUG_PREFIX, _TWO_WORD_PREFIX = 2, 3


class SpaceMapPhys(NamedTuple):
    """space_map_phys_t's header (the histogram is not read)."""

    smp_object: int
    smp_length: int
    smp_alloc: int


def parse_space_map_phys(bonus: bytes, byteorder: str) -> SpaceMapPhys:
    """The header of a space map from its dnode's bonus buffer; EIO when too short."""
    if len(bonus) < SPACE_MAP_SIZE_V0:
        raise FSError(errno.EIO, f"space map header of {len(bonus)} bytes")
    return SpaceMapPhys(*struct.unpack_from(byteorder + "QQq", bonus))


def space_map_phys_append(bonus: bytes, byteorder: str, length: int, alloc: int) -> bytes:
    """The space map header `bonus` after `length` more bytes of log that change the
    allocated total by `alloc` bytes (the histogram, when present, is left as it was)."""
    phys = parse_space_map_phys(bonus, byteorder)
    head = struct.pack(byteorder + "QQq", phys.smp_object, phys.smp_length + length,
                       phys.smp_alloc + alloc)  # fmt: skip
    return head + bonus[SPACE_MAP_SIZE_V0:]


class SmDebug(NamedTuple):
    """A debug entry: the entries after it are `action`s of `txg`'s sync pass `syncpass`."""

    action: int  # SM_ALLOC or SM_FREE (0/0/0: padding before a block boundary)
    syncpass: int
    txg: int


class SmEntry(NamedTuple):
    """An alloc or free entry, in the map's units (its shift) from the map's start."""

    type: int  # SM_ALLOC or SM_FREE
    offset: int
    run: int
    vdev: int = SM_NO_VDEVID  # the vdev a two-word entry names; SM_NO_VDEVID otherwise


SmRecord = SmDebug | SmEntry


def parse_entries(raw: bytes, byteorder: str) -> list[SmRecord]:
    """Every record of a space map log (`smp_length` bytes of the object), in order.

    Raises:
        FSError: EIO when a two-word entry lacks its second word.
    """
    words = struct.unpack(f"{byteorder}{len(raw) // 8}Q", raw[: len(raw) // 8 * 8])
    out: list[SmRecord] = []
    i = 0
    while i < len(words):
        w = words[i]
        prefix = w >> 62
        if prefix == _DEBUG_PREFIX:
            out.append(SmDebug((w >> 60) & 3, (w >> 50) & 0x3FF, w & ((1 << 50) - 1)))
        elif prefix == _TWO_WORD_PREFIX:
            if i + 1 == len(words):
                raise FSError(errno.EIO, "space map ends inside a two-word entry")
            w2 = words[i + 1]
            run = ((w >> 24) & ((1 << 36) - 1)) + 1
            out.append(SmEntry(w2 >> 63, w2 & SM2_OFFSET_MAX, run, w & 0xFFFFFF))
            i += 1
        else:
            out.append(SmEntry((w >> 15) & 1, (w >> 16) & SM_OFFSET_MAX, (w & 0x7FFF) + 1))
        i += 1
    return out


def replay(records: Iterable[SmRecord], start: int, shift: int, into: RangeTree) -> None:
    """Apply a log's alloc and free entries to `into`, a map starting at byte `start`
    whose units are 2^`shift` bytes.

    Raises:
        FSError: EIO when an entry allocates allocated space or frees free space.
    """
    try:
        for r in records:
            if isinstance(r, SmEntry):
                at, size = start + (r.offset << shift), r.run << shift
                if r.type == SM_ALLOC:
                    into.add(at, size)
                else:
                    into.remove(at, size)
    except RangeError as e:
        raise FSError(errno.EIO, f"space map: {e}") from None


def encode_entries(
    records: Sequence[SmRecord],
    byteorder: str,
    *,
    two_word: bool = False,
    at: int = 0,
    blksz: int = 1 << 12,
) -> bytes:
    """The log words of `records`, to be appended at byte `at` of a map with `blksz`-byte
    blocks.

    Args:
        records: debug records and entries; runs longer than one entry holds are split.
        byteorder: the MOS's byte order.
        two_word: whether the pool has spacemap_v2 (entries that do not fit one word
            become two-word entries, padded so as not to straddle a block); otherwise
            they are split into one-word entries.
        at: where the words start in the object (its smp_length so far).
        blksz: the object's block size.

    Raises:
        ValueError: an offset past what the format can address, or a debug field too big.
    """
    words: list[int] = []
    one = words.append
    for r in records:
        if isinstance(r, SmDebug):
            if r.action >> 2 or r.syncpass >> 10 or r.txg >> 50:
                raise ValueError(f"debug entry fields out of range: {r}")
            one(_DEBUG_PREFIX << 62 | r.action << 60 | r.syncpass << 50 | r.txg)
            continue
        offset, left = r.offset, r.run
        while left > 0:
            if two_word and (left > SM_RUN_MAX or offset > SM_OFFSET_MAX or r.vdev != SM_NO_VDEVID):
                run = min(left, SM2_RUN_MAX)
                if offset > SM2_OFFSET_MAX:
                    raise ValueError(f"space map offset {offset:#x} out of range")
                if (at + 8 * len(words)) % blksz == blksz - 8:
                    one(_DEBUG_PREFIX << 62)  # padding: the entry may not straddle a block
                # SM_NO_VDEVID does not fit the field: upstream's encoding masks it to 0.
                one(_TWO_WORD_PREFIX << 62 | (run - 1) << 24 | (r.vdev & 0xFFFFFF))
                one(r.type << 63 | offset)
            else:
                run = min(left, SM_RUN_MAX)
                if offset > SM_OFFSET_MAX:
                    raise ValueError(f"space map offset {offset:#x} needs a two-word entry")
                one(offset << 16 | r.type << 15 | (run - 1))
            offset += run
            left -= run
    return struct.pack(f"{byteorder}{len(words)}Q", *words)
