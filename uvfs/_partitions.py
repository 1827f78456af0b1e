"""Partition tables: which partitions a disk holds, from its GPT or MBR (with logical ones).

`read_partition_table` reads only what it needs (sector 0, the GPT header and array, the
chain of extended boot records) through the device's `read_sync`, hands the bytes to the
sans-I/O parsers in `_gpt` and `_mbr`, and checks the result as a whole: a partition that
ends past the disk, or two that overlap, make the table unusable (`Refusal`), so no
partition can read outside itself or another's bytes.

Sector size: a GPT is looked for in LBA 1 at the device's logical sector size first, then at
the other common one (512 or 4096), which finds the tables of 4Kn disks in image files. An
MBR has no such mark: its LBAs are taken in the device's logical sectors (512 for a file,
what the kernel reports for a block device), as the kernel's loop driver does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from uvfs import _gpt, _mbr
from uvfs._api import Refusal

SECTOR_SIZES = (512, 4096)
MAX_LOGICAL = 256  # the kernel's limit on partitions per disk; bounds a looping EBR chain


class SectorDevice(Protocol):
    """What reading a table needs of a device."""

    path: str
    size: int
    sector_size: int

    def read_sync(self, offset: int, size: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its number as in /dev/sdaN, byte extent and type name."""

    number: int
    start: int  # bytes from the start of the disk
    size: int  # bytes
    type_name: str
    container: bool = False  # an extended partition: it holds the logical ones

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True, slots=True)
class PartitionTable:
    """A disk's partitions, in number order, and what was wrong but worked around."""

    scheme: str  # "gpt" or "mbr"
    sector_size: int
    partitions: tuple[Partition, ...]
    warnings: tuple[str, ...] = ()

    def get(self, number: int) -> Partition | None:
        return next((p for p in self.partitions if p.number == number), None)


def read_partition_table(device: SectorDevice) -> PartitionTable | None:
    """The partition table of `device`, None when it has none; `Refusal` when damaged."""
    if device.size < 512:
        return None
    entries = _mbr.parse_mbr(device.read_sync(0, 512))
    if entries is None:
        return None
    gpt = _find_gpt(device)
    if gpt is not None:
        return gpt
    if any(e.mbr_type == _mbr.MBR_TYPE_PROTECTIVE for e in entries):
        raise Refusal(f"{device.path}: protective MBR but no GPT header (primary or backup)")
    if not entries:
        return None  # a boot sector with no partitions: not a partitioned disk
    return _mbr_table(device, entries)


# --- GPT ----------------------------------------------------------------------------------------


def _find_gpt(device: SectorDevice) -> PartitionTable | None:
    """The GPT at whichever sector size has one (a signature in LBA 1 or the last LBA)."""
    sizes = sorted(SECTOR_SIZES, key=lambda s: s != device.sector_size)
    for sector_size in sizes:
        if device.size < 2 * sector_size:
            continue
        last = device.size // sector_size - 1
        if _gpt.is_gpt_header(device.read_sync(sector_size, 8)) or _gpt.is_gpt_header(
            device.read_sync(last * sector_size, 8)
        ):
            return _gpt_table(device, sector_size)
    return None


def _gpt_copy(device: SectorDevice, sector_size: int, lba: int) -> list[_gpt.GptEntry]:
    """The entries of the header in `lba` and its array; `GptError` if either is damaged."""
    if not 0 < lba < device.size // sector_size:
        raise _gpt.GptError(f"header LBA {lba} is outside the disk")
    header = _gpt.parse_header(device.read_sync(lba * sector_size, sector_size))
    if header.hdr_my_lba != lba:
        raise _gpt.GptError(f"header in LBA {lba} says it is in LBA {header.hdr_my_lba}")
    start = header.hdr_entries_lba * sector_size
    if start + header.entries_size > device.size:
        raise _gpt.GptError("partition entry array past the end of the disk")
    return _gpt.parse_entries(header, device.read_sync(start, header.entries_size))


def _gpt_table(device: SectorDevice, sector_size: int) -> PartitionTable:
    warnings: list[str] = []
    try:
        entries = _gpt_copy(device, sector_size, 1)
    except _gpt.GptError as primary:
        try:
            entries = _gpt_copy(device, sector_size, device.size // sector_size - 1)
        except _gpt.GptError as backup:
            raise Refusal(
                f"{device.path}: GPT damaged: primary: {primary}; backup: {backup}"
            ) from None
        warnings.append(f"{device.path}: primary GPT damaged ({primary}), using the backup")
    partitions = []
    for e in entries:
        if e.last_lba < e.first_lba:
            raise Refusal(f"{device.path}: GPT partition {e.number} ends before it starts")
        start = e.first_lba * sector_size
        size = (e.last_lba - e.first_lba + 1) * sector_size
        partitions.append(Partition(e.number, start, size, e.type_name))
    return _checked(device, "gpt", sector_size, partitions, warnings)


# --- MBR ----------------------------------------------------------------------------------------


def _mbr_table(device: SectorDevice, entries: list[_mbr.MbrEntry]) -> PartitionTable:
    ss = device.sector_size
    partitions = [
        Partition(e.slot + 1, e.mbr_first_lba * ss, e.mbr_sectors * ss, e.type_name, e.extended)
        for e in entries
    ]
    containers = [p for p in partitions if p.container]
    if len(containers) > 1:
        raise Refusal(f"{device.path}: more than one extended partition")
    _check_within(device, containers)  # before its EBRs are read
    logical = _logical(device, containers[0]) if containers else []
    return _checked(device, "mbr", ss, partitions + logical, [])


def _logical(device: SectorDevice, container: Partition) -> list[Partition]:
    """The logical partitions of `container`, numbered from 5 along the EBR chain."""
    ss = device.sector_size
    found: list[Partition] = []
    link, seen = 0, set()  # the next EBR, in sectors from the container's start
    while True:
        where = container.start + link * ss
        if link in seen or len(found) >= MAX_LOGICAL:
            raise Refusal(f"{device.path}: the chain of logical partitions loops")
        seen.add(link)
        if not container.start <= where < container.end or where + 512 > device.size:
            raise Refusal(f"{device.path}: an extended boot record lies outside its container")
        entries = _mbr.parse_mbr(device.read_sync(where, 512))
        if entries is None:
            if found:
                raise Refusal(f"{device.path}: extended boot record at {where} is damaged")
            return found  # an empty container, as the kernel reads it
        data = [e for e in entries if not e.extended]
        if data:
            e = data[0]
            part = Partition(
                5 + len(found), where + e.mbr_first_lba * ss, e.mbr_sectors * ss, e.type_name
            )
            if not (container.start <= part.start and part.end <= container.end):
                raise Refusal(f"{device.path}: partition {part.number} lies outside its container")
            found.append(part)
        nxt = [e for e in entries if e.extended]
        if not nxt:
            return found
        link = nxt[0].mbr_first_lba


# --- checks ---------------------------------------------------------------------------------


def _check_within(device: SectorDevice, partitions: Iterable[Partition]) -> None:
    for p in partitions:
        if p.end > device.size:
            raise Refusal(
                f"{device.path}: partition {p.number} ends past the end of the disk "
                f"(byte {p.end} of {device.size})"
            )


def _check_disjoint(device: SectorDevice, partitions: Iterable[Partition]) -> None:
    ordered = sorted(partitions, key=lambda p: p.start)
    for a, b in itertools.pairwise(ordered):
        if b.start < a.end:
            raise Refusal(f"{device.path}: partitions {a.number} and {b.number} overlap")


def _checked(
    device: SectorDevice,
    scheme: str,
    sector_size: int,
    partitions: list[Partition],
    warnings: list[str],
) -> PartitionTable:
    """The table, once no partition leaves the disk and none overlaps another (a container
    may hold logical partitions but overlaps nothing else)."""
    _check_within(device, partitions)
    _check_disjoint(device, [p for p in partitions if not p.container])
    _check_disjoint(device, [p for p in partitions if p.number <= 4])
    ordered = tuple(sorted(partitions, key=lambda p: p.number))
    return PartitionTable(scheme, sector_size, ordered, tuple(warnings))
