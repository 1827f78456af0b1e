"""metadata_csum: crc32c checksums of the superblock, inodes, extent, directory, xattr blocks.

ext4 uses crc32c without the customary final inversion ("crc32c_le" in the kernel and
e2fsprogs), chained from a seed: the filesystem seed is crc32c_le(~0, s_uuid), or
s_checksum_seed with metadata_csum_seed; an inode's seed chains its number and generation
onto that. Each record's checksum covers its bytes with the checksum field itself zeroed
(or, for blocks with a tail, the bytes before the tail). The `crc32c` package computes the
standard (inverted) form, so crc32c_le(seed, data) = ~crc32c(data, ~seed).

Group descriptor checksums are not checked: the kernel only warns about them on a
read-only mount. Index (htree) blocks carry their checksum in a dx_tail and are skipped,
as a linear scan reads no names from them.

The write side seals what it writes with the same definitions (`seal_*`, `*_csum`): one
function per structure computes the checksum, and both verifying and sealing call it.
Group descriptors have two checksums: crc32c's low half under metadata_csum, else the
crc16 of uninit_bg ("gdt_csum", e2fsprogs' ext2fs_group_desc_csum).
"""

from __future__ import annotations

import struct

import crc32c as _crc32c

_MASK = 0xFFFFFFFF
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# ext2_dir_entry_tail: a 12-byte unused record ending a leaf block
EXT2_DIR_TAIL_SIZE = 12
DIR_TAIL_HEAD = struct.pack("<IHBB", 0, EXT2_DIR_TAIL_SIZE, 0, 0xDE)

# Where the checksums sit in their records.
S_CHECKSUM = 0x3FC  # ext2_super_block.s_checksum
L_I_CHECKSUM_LO = 0x7C  # ext2_inode.l_i_checksum_lo
I_CHECKSUM_HI = 0x82  # ext2_inode_large.i_checksum_hi
EXT4_INODE_CSUM_HI_EXTRA_END = 4  # i_extra_isize must reach past i_checksum_hi
H_CHECKSUM = 0x10  # ext2_ext_attr_header.h_checksum


def crc32c_le(seed: int, data: bytes) -> int:
    """The kernel's crc32c_le: crc32c of `data` from `seed`, without pre- or post-inversion."""
    return ~_crc32c.crc32c(data, ~seed & _MASK) & _MASK


def fs_seed(s_uuid: bytes, s_checksum_seed: int, csum_seed_feature: bool) -> int:
    """The filesystem's checksum seed."""
    return s_checksum_seed if csum_seed_feature else crc32c_le(_MASK, s_uuid)


def inode_seed(seed: int, ino: int, generation: int) -> int:
    """The seed of everything that belongs to inode `ino` (its extent and directory blocks)."""
    return crc32c_le(crc32c_le(seed, _U32.pack(ino)), _U32.pack(generation))


def superblock_csum(raw: bytes) -> int:
    """s_checksum of the 1024-byte superblock `raw`."""
    return crc32c_le(_MASK, raw[:S_CHECKSUM])


def superblock_ok(raw: bytes) -> bool:
    """Whether s_checksum matches the 1024-byte superblock `raw`."""
    return superblock_csum(raw) == _U32.unpack_from(raw, S_CHECKSUM)[0]


def seal_superblock(raw: bytearray) -> None:
    """Store s_checksum into the 1024-byte superblock `raw`."""
    _U32.pack_into(raw, S_CHECKSUM, superblock_csum(raw))


def _inode_csum(
    raw: bytes, seed: int, ino: int, generation: int, extra_isize: int
) -> tuple[int, bool]:
    """(checksum of inode slot `raw`, whether i_checksum_hi exists).

    Only the low 16 bits exist when i_extra_isize does not reach i_checksum_hi.
    """
    has_hi = len(raw) > 128 and extra_isize >= EXT4_INODE_CSUM_HI_EXTRA_END
    data = bytearray(raw)
    data[L_I_CHECKSUM_LO : L_I_CHECKSUM_LO + 2] = b"\0\0"
    if has_hi:
        data[I_CHECKSUM_HI : I_CHECKSUM_HI + 2] = b"\0\0"
    calculated = crc32c_le(inode_seed(seed, ino, generation), bytes(data))
    return (calculated if has_hi else calculated & 0xFFFF), has_hi


def inode_ok(raw: bytes, seed: int, ino: int, generation: int, extra_isize: int) -> bool:
    """Whether the checksum halves stored in inode slot `raw` match it."""
    calculated, has_hi = _inode_csum(raw, seed, ino, generation, extra_isize)
    provided = int.from_bytes(raw[L_I_CHECKSUM_LO : L_I_CHECKSUM_LO + 2], "little")
    if has_hi:
        provided |= int.from_bytes(raw[I_CHECKSUM_HI : I_CHECKSUM_HI + 2], "little") << 16
    return provided == calculated


def seal_inode(raw: bytearray, seed: int, ino: int, generation: int) -> None:
    """Store the checksum halves into inode slot `raw` (its i_extra_isize as stored)."""
    extra_isize = int.from_bytes(raw[128:130], "little") if len(raw) > 128 else 0
    calculated, has_hi = _inode_csum(raw, seed, ino, generation, extra_isize)
    raw[L_I_CHECKSUM_LO : L_I_CHECKSUM_LO + 2] = (calculated & 0xFFFF).to_bytes(2, "little")
    if has_hi:
        raw[I_CHECKSUM_HI : I_CHECKSUM_HI + 2] = (calculated >> 16).to_bytes(2, "little")


def extent_block_ok(block: bytes, seed: int, eh_max: int) -> bool:
    """Whether the ext4_extent_tail after `eh_max` entries matches the node before it."""
    end = 12 + 12 * eh_max
    if end + 4 > len(block):
        return False
    return crc32c_le(seed, block[:end]) == _U32.unpack_from(block, end)[0]


def seal_extent_block(block: bytearray, seed: int, eh_max: int) -> None:
    """Store the ext4_extent_tail after `eh_max` entries of extent node `block`."""
    end = 12 + 12 * eh_max
    _U32.pack_into(block, end, crc32c_le(seed, bytes(block[:end])))


def has_dir_tail(block: bytes) -> bool:
    """Whether directory block `block` ends in a checksum tail's fixed head."""
    tail = len(block) - EXT2_DIR_TAIL_SIZE
    return block[tail : tail + 8] == DIR_TAIL_HEAD


def dir_block_ok(block: bytes, seed: int) -> bool:
    """Whether a directory leaf block ends in a checksum tail that matches it."""
    if not has_dir_tail(block):
        return False
    tail = len(block) - EXT2_DIR_TAIL_SIZE
    return crc32c_le(seed, block[:tail]) == _U32.unpack_from(block, tail + 8)[0]


def seal_dir_block(block: bytearray, seed: int) -> None:
    """Write the checksum tail (head and crc) over the last 12 bytes of leaf `block`."""
    tail = len(block) - EXT2_DIR_TAIL_SIZE
    block[tail : tail + 8] = DIR_TAIL_HEAD
    _U32.pack_into(block, tail + 8, crc32c_le(seed, bytes(block[:tail])))


def _xattr_block_csum(block: bytes, seed: int, blocknr: int) -> int:
    data = bytearray(block)
    data[H_CHECKSUM : H_CHECKSUM + 4] = b"\0\0\0\0"
    return crc32c_le(crc32c_le(seed, _U64.pack(blocknr)), bytes(data))


def xattr_block_ok(block: bytes, seed: int, blocknr: int) -> bool:
    """Whether h_checksum matches the attribute block stored at block `blocknr`."""
    return _xattr_block_csum(block, seed, blocknr) == _U32.unpack_from(block, H_CHECKSUM)[0]


def seal_xattr_block(block: bytearray, seed: int, blocknr: int) -> None:
    """Store h_checksum into the attribute block `block`, stored at block `blocknr`."""
    _U32.pack_into(block, H_CHECKSUM, _xattr_block_csum(block, seed, blocknr))


def bitmap_csum(seed: int, bitmap: bytes) -> int:
    """The checksum of a block or inode bitmap's live bytes (the group descriptor holds it:
    low half, and the high half in 64-byte descriptors)."""
    return crc32c_le(seed, bitmap)


BG_CHECKSUM = 0x1E  # ext4_group_desc.bg_checksum


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def crc16(crc: int, data: bytes) -> int:
    """The ANSI crc16 (reflected polynomial 0xA001) of `data` from `crc`, as lib/crc16.c."""
    for byte in data:
        crc = (crc >> 8) ^ _CRC16[(crc ^ byte) & 0xFF]
    return crc


def group_desc_csum(desc: bytes, group: int, *, seed: int | None, uuid: bytes) -> int:
    """bg_checksum of descriptor `desc` of `group`: crc32c from the filesystem `seed` under
    metadata_csum, else (`seed` None, uninit_bg) crc16 from the volume's `uuid`."""
    group_le = _U32.pack(group)
    if seed is not None:
        data = bytes(desc[:BG_CHECKSUM]) + b"\0\0" + bytes(desc[BG_CHECKSUM + 2 :])
        return crc32c_le(crc32c_le(seed, group_le), data) & 0xFFFF
    crc = crc16(crc16(0xFFFF, uuid), group_le)
    crc = crc16(crc, bytes(desc[:BG_CHECKSUM]))
    return crc16(crc, bytes(desc[BG_CHECKSUM + 2 :])) if len(desc) > BG_CHECKSUM + 2 else crc
