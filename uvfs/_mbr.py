"""Master boot records and extended boot records (the DOS partition table), sans-I/O.

Sector 0 holds four 16-byte entries at byte 446 and the signature 55 AA at 510. An entry of
an extended type (05, 0F, 85) is a container: its first sector is an extended boot record
(EBR) with the same layout, whose first entry is a logical partition (start relative to
that EBR) and whose second entry links to the next EBR (start relative to the container).
Linux numbers the primaries 1-4 by slot and the logical partitions 5, 6, ... in chain
order. Type EE covering the disk is the protective MBR of a GPT disk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MBR_SIGNATURE = b"\x55\xaa"
MBR_ENTRIES_OFFSET = 446
MBR_TYPE_PROTECTIVE = 0xEE
MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})

# status, CHS first, type, CHS last, first LBA, sector count
_ENTRY = struct.Struct("<B3sB3sII")

# Type byte -> name, as fdisk prints it.
TYPE_NAMES = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT",
    0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Ext'd (LBA)",
    0x82: "Linux swap / Solaris",
    0x83: "Linux",
    0x85: "Linux extended",
    0x8E: "Linux LVM",
    0xA5: "FreeBSD",
    0xBF: "Solaris",
    0xEE: "GPT",
    0xEF: "EFI (FAT-12/16/32)",
    0xFD: "Linux raid autodetect",
}


@dataclass(frozen=True, slots=True)
class MbrEntry:
    """One used entry of an MBR or EBR: its slot (0-3), type and extent in sectors."""

    slot: int
    mbr_type: int
    mbr_first_lba: int  # relative: to the disk (MBR), the EBR or the container (EBR links)
    mbr_sectors: int

    @property
    def extended(self) -> bool:
        return self.mbr_type in MBR_EXTENDED_TYPES

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.mbr_type, f"type 0x{self.mbr_type:02x}")


def parse_mbr(sector: bytes) -> list[MbrEntry] | None:
    """The used entries of the boot record `sector`, or None when it is not one (no
    signature, or a status byte other than 00/80, as in a filesystem's boot sector)."""
    if len(sector) < 512 or sector[510:512] != MBR_SIGNATURE:
        return None
    entries = []
    for slot in range(4):
        where = MBR_ENTRIES_OFFSET + _ENTRY.size * slot
        status, _, kind, _, first, count = _ENTRY.unpack_from(sector, where)
        if status not in (0x00, 0x80):
            return None
        if kind != 0 and count != 0:
            entries.append(MbrEntry(slot, kind, first, count))
    return entries
