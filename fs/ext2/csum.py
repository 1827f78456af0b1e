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
"""

from __future__ import annotations

import struct

import crc32c as _crc32c

_MASK = 0xFFFFFFFF
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# ext2_dir_entry_tail: a 12-byte unused record ending a leaf block
EXT2_DIR_TAIL_SIZE = 12
_DIR_TAIL_HEAD = struct.pack("<IHBB", 0, EXT2_DIR_TAIL_SIZE, 0, 0xDE)

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


def superblock_ok(raw: bytes) -> bool:
    """Whether s_checksum matches the 1024-byte superblock `raw`."""
    return crc32c_le(_MASK, raw[:S_CHECKSUM]) == _U32.unpack_from(raw, S_CHECKSUM)[0]


def inode_ok(raw: bytes, seed: int, ino: int, generation: int, extra_isize: int) -> bool:
    """Whether the checksum halves stored in inode slot `raw` match it.

    Only the low 16 bits exist when i_extra_isize does not reach i_checksum_hi.
    """
    has_hi = len(raw) > 128 and extra_isize >= EXT4_INODE_CSUM_HI_EXTRA_END
    data = bytearray(raw)
    provided = int.from_bytes(raw[L_I_CHECKSUM_LO : L_I_CHECKSUM_LO + 2], "little")
    data[L_I_CHECKSUM_LO : L_I_CHECKSUM_LO + 2] = b"\0\0"
    if has_hi:
        provided |= int.from_bytes(raw[I_CHECKSUM_HI : I_CHECKSUM_HI + 2], "little") << 16
        data[I_CHECKSUM_HI : I_CHECKSUM_HI + 2] = b"\0\0"
    calculated = crc32c_le(inode_seed(seed, ino, generation), bytes(data))
    return provided == (calculated if has_hi else calculated & 0xFFFF)


def extent_block_ok(block: bytes, seed: int, eh_max: int) -> bool:
    """Whether the ext4_extent_tail after `eh_max` entries matches the node before it."""
    end = 12 + 12 * eh_max
    if end + 4 > len(block):
        return False
    return crc32c_le(seed, block[:end]) == _U32.unpack_from(block, end)[0]


def dir_block_ok(block: bytes, seed: int) -> bool:
    """Whether a directory leaf block ends in a checksum tail that matches it."""
    tail = len(block) - EXT2_DIR_TAIL_SIZE
    if block[tail : tail + 8] != _DIR_TAIL_HEAD:
        return False
    return crc32c_le(seed, block[:tail]) == _U32.unpack_from(block, tail + 8)[0]


def xattr_block_ok(block: bytes, seed: int, blocknr: int) -> bool:
    """Whether h_checksum matches the attribute block stored at block `blocknr`."""
    data = bytearray(block)
    data[H_CHECKSUM : H_CHECKSUM + 4] = b"\0\0\0\0"
    crc = crc32c_le(crc32c_le(seed, _U64.pack(blocknr)), bytes(data))
    return crc == _U32.unpack_from(block, H_CHECKSUM)[0]
