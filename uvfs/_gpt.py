"""GUID partition tables (UEFI spec, chapter 5): the header and its entry array, sans-I/O.

A GPT disk keeps two copies: the primary header in LBA 1 with its entries just after it,
and the backup header in the disk's last LBA with its entries just before it. Each header
holds a CRC32 of itself (computed with the CRC field zeroed) and one of its entry array, so
a damaged copy is recognised and the other one used. Partition N is entry N-1: Linux
numbers GPT partitions by slot, so an empty slot leaves a gap in the numbers.

Every LBA here is in logical sectors of the disk (512 or 4096 bytes); the caller says which.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

GPT_SIGNATURE = b"EFI PART"
GPT_HEADER_SIZE = 92  # the fields below; the rest of the sector is reserved
GPT_MAX_ENTRIES = 4096  # far above the 128 every tool writes; bounds hostile headers
GPT_ENTRY_MIN = 128

# gpt_header_t: signature, revision, size, crc, reserved, my LBA, alternate LBA, first and
# last usable LBA, disk GUID, entry array LBA, entry count, entry size, entry array CRC.
_HEADER = struct.Struct("<8sIIII QQQQ 16s QIII")
# gpt_entry_t: type GUID, unique GUID, first and last LBA (inclusive), attributes, name.
_ENTRY = struct.Struct("<16s16sQQQ72s")

# Type GUIDs -> names, as sgdisk prints them.
TYPE_NAMES = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI system partition",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot partition",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux x86-64 root (/)",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux /home",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "6a898cc3-1dd2-11b2-99a6-080020736631": "Solaris /usr & Mac ZFS",  # OpenZFS data
    "6a945a3b-1dd2-11b2-99a6-080020736631": "Solaris reserved 1",  # OpenZFS partition 9
    "516e7cba-6ecf-11d6-8ff8-00022d09712b": "FreeBSD ZFS",
    "48465300-0000-11aa-aa11-00306543ecac": "Apple HFS/HFS+",
}


class GptError(ValueError):
    """This copy of the table is damaged; the message says how."""


@dataclass(frozen=True, slots=True)
class GptHeader:
    """The fields of a header that locate things (LBAs in logical sectors)."""

    hdr_my_lba: int
    hdr_alternate_lba: int
    hdr_first_usable_lba: int
    hdr_last_usable_lba: int
    hdr_entries_lba: int
    hdr_num_entries: int
    hdr_entry_size: int
    hdr_entries_crc32: int

    @property
    def entries_size(self) -> int:
        return self.hdr_num_entries * self.hdr_entry_size


@dataclass(frozen=True, slots=True)
class GptEntry:
    """One used slot: its partition number (slot + 1), type and extent in LBAs."""

    number: int
    type_guid: str
    first_lba: int
    last_lba: int  # inclusive
    name: str

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type_guid, self.type_guid)


def is_gpt_header(sector: bytes) -> bool:
    """Whether `sector` starts with the GPT signature (damaged or not)."""
    return sector[:8] == GPT_SIGNATURE


def parse_header(sector: bytes) -> GptHeader:
    """The header in `sector`; `GptError` when its signature, size or CRC is wrong."""
    if len(sector) < GPT_HEADER_SIZE or not is_gpt_header(sector):
        raise GptError("no GPT signature")
    fields = _HEADER.unpack_from(sector)
    size, crc = fields[2], fields[3]
    if not GPT_HEADER_SIZE <= size <= len(sector):
        raise GptError(f"header size {size}")
    if zlib.crc32(sector[:16] + b"\0\0\0\0" + sector[20:size]) != crc:
        raise GptError("header CRC mismatch")
    header = GptHeader(*fields[5:9], *fields[10:14])
    if header.hdr_entry_size < GPT_ENTRY_MIN or header.hdr_entry_size % 8:
        raise GptError(f"entry size {header.hdr_entry_size}")
    if not 0 < header.hdr_num_entries <= GPT_MAX_ENTRIES:
        raise GptError(f"{header.hdr_num_entries} entries")
    if header.hdr_first_usable_lba > header.hdr_last_usable_lba + 1:
        raise GptError("usable range is inverted")
    return header


def parse_entries(header: GptHeader, raw: bytes) -> list[GptEntry]:
    """The used entries of the array `raw` that `header` describes; `GptError` on a CRC
    mismatch."""
    if len(raw) != header.entries_size or zlib.crc32(raw) != header.hdr_entries_crc32:
        raise GptError("partition entry array CRC mismatch")
    entries = []
    for slot in range(header.hdr_num_entries):
        type_guid, _, first, last, _, name = _ENTRY.unpack_from(raw, slot * header.hdr_entry_size)
        if type_guid == bytes(16):
            continue  # an unused slot
        entries.append(
            GptEntry(
                number=slot + 1,
                type_guid=str(uuid.UUID(bytes_le=type_guid)),
                first_lba=first,
                last_lba=last,
                name=name.decode("utf-16-le", "replace").split("\0", 1)[0],
            )
        )
    return entries
