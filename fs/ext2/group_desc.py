"""Block group descriptors (32-byte ext2 and 64-byte ext4 forms) and where they are stored.

Without meta_bg the descriptors form one table in the blocks right after the superblock.
With meta_bg, descriptor block *m* (from s_first_meta_bg on) lives in the first group of
"meta group" *m*, after that group's superblock backup if it has one, so the table can grow
without moving (e2fsprogs' ext2fs_descriptor_block_loc2).
"""

from __future__ import annotations

from dataclasses import dataclass

from construct import Int16ul, Int32ul, Struct

from uvfs_fs.ext2.record import FastRecord
from uvfs_fs.ext2.superblock import Geometry

# fmt: off
_EXT2_FIELDS = (  # the 32-byte descriptor; a 64bit volume's adds the high halves
    "bg_block_bitmap" / Int32ul,            # 0x00
    "bg_inode_bitmap" / Int32ul,            # 0x04
    "bg_inode_table" / Int32ul,             # 0x08
    "bg_free_blocks_count" / Int16ul,       # 0x0c
    "bg_free_inodes_count" / Int16ul,       # 0x0e
    "bg_used_dirs_count" / Int16ul,         # 0x10
    "bg_flags" / Int16ul,                   # 0x12
    "bg_exclude_bitmap_lo" / Int32ul,       # 0x14
    "bg_block_bitmap_csum_lo" / Int16ul,    # 0x18
    "bg_inode_bitmap_csum_lo" / Int16ul,    # 0x1a
    "bg_itable_unused" / Int16ul,           # 0x1c
    "bg_checksum" / Int16ul,                # 0x1e
)
ext2_group_desc = Struct(*_EXT2_FIELDS).compile()

ext4_group_desc = Struct(
    *_EXT2_FIELDS,
    "bg_block_bitmap_hi" / Int32ul,         # 0x20
    "bg_inode_bitmap_hi" / Int32ul,         # 0x24
    "bg_inode_table_hi" / Int32ul,          # 0x28
    "bg_free_blocks_count_hi" / Int16ul,    # 0x2c
    "bg_free_inodes_count_hi" / Int16ul,    # 0x2e
    "bg_used_dirs_count_hi" / Int16ul,      # 0x30
    "bg_itable_unused_hi" / Int16ul,        # 0x32
    "bg_exclude_bitmap_hi" / Int32ul,       # 0x34
    "bg_block_bitmap_csum_hi" / Int16ul,    # 0x38
    "bg_inode_bitmap_csum_hi" / Int16ul,    # 0x3a
    "bg_reserved" / Int32ul,                # 0x3c
).compile()
# fmt: on


@dataclass(frozen=True, slots=True)
class GroupDesc:
    """One block group's descriptor, low and high halves joined."""

    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    free_blocks_count: int
    free_inodes_count: int
    used_dirs_count: int
    flags: int
    itable_unused: int


_DESC32 = FastRecord(ext2_group_desc, "ext2_group_desc")
_DESC64 = FastRecord(ext4_group_desc, "ext4_group_desc")


def decode_group_desc(raw: bytes, desc_size: int) -> GroupDesc:
    """The descriptor in the first `desc_size` bytes of `raw` (32, or 64 and more)."""
    if desc_size < _DESC64.size:
        d = _DESC32.unpack(raw)
        return GroupDesc(
            block_bitmap=d.bg_block_bitmap,
            inode_bitmap=d.bg_inode_bitmap,
            inode_table=d.bg_inode_table,
            free_blocks_count=d.bg_free_blocks_count,
            free_inodes_count=d.bg_free_inodes_count,
            used_dirs_count=d.bg_used_dirs_count,
            flags=d.bg_flags,
            itable_unused=d.bg_itable_unused,
        )
    d = _DESC64.unpack(raw)
    return GroupDesc(
        block_bitmap=d.bg_block_bitmap | d.bg_block_bitmap_hi << 32,
        inode_bitmap=d.bg_inode_bitmap | d.bg_inode_bitmap_hi << 32,
        inode_table=d.bg_inode_table | d.bg_inode_table_hi << 32,
        free_blocks_count=d.bg_free_blocks_count | d.bg_free_blocks_count_hi << 16,
        free_inodes_count=d.bg_free_inodes_count | d.bg_free_inodes_count_hi << 16,
        used_dirs_count=d.bg_used_dirs_count | d.bg_used_dirs_count_hi << 16,
        flags=d.bg_flags,
        itable_unused=d.bg_itable_unused | d.bg_itable_unused_hi << 16,
    )


# Joined values the writer changes -> (low field, high field, bits in the low field).
_SPLIT = {
    "free_blocks_count": ("bg_free_blocks_count", "bg_free_blocks_count_hi", 16),
    "free_inodes_count": ("bg_free_inodes_count", "bg_free_inodes_count_hi", 16),
    "used_dirs_count": ("bg_used_dirs_count", "bg_used_dirs_count_hi", 16),
    "itable_unused": ("bg_itable_unused", "bg_itable_unused_hi", 16),
    "block_bitmap_csum": ("bg_block_bitmap_csum_lo", "bg_block_bitmap_csum_hi", 16),
    "inode_bitmap_csum": ("bg_inode_bitmap_csum_lo", "bg_inode_bitmap_csum_hi", 16),
    "flags": ("bg_flags", None, 16),
}


def update_group_desc(raw: bytearray, offset: int, desc_size: int, **values: int) -> None:
    """Store joined `values` (`_SPLIT`'s names) into the descriptor at `offset` of `raw`:
    low halves, and high halves in 64-byte descriptors; other fields keep their bytes."""
    record = _DESC64 if desc_size >= _DESC64.size else _DESC32
    d = record.unpack(raw, offset)
    changes = {}
    for name, value in values.items():
        low, high, bits = _SPLIT[name]
        changes[low] = value & ((1 << bits) - 1)
        if high is not None and record is _DESC64:
            changes[high] = value >> bits
    record.struct.pack_into(raw, offset, *d._replace(**changes))


def group_has_super(geo: Geometry, group: int) -> bool:
    """Whether `group` holds a superblock (and descriptor table) copy."""
    if group == 0:
        return True
    if "sparse_super2" in geo.features:
        return group in geo.backup_bgs
    if group == 1 or "sparse_super" not in geo.features:
        return True
    if group & 1 == 0:
        return False
    for base in (3, 5, 7):
        n = base
        while n < group:
            n *= base
        if n == group:
            return True
    return False


def group_first_block(geo: Geometry, group: int) -> int:
    """The first block of block group `group`."""
    return geo.first_data_block + group * geo.blocks_per_group


def desc_block(geo: Geometry, index: int) -> int:
    """The block holding descriptor block number `index` of the table (primary copy)."""
    # 1 KiB blocks starting at block 0 (bigalloc): the superblock fills block 1, not 0.
    adjust = geo.block_size == 1024 and geo.first_data_block == 0
    if index < geo.first_meta_bg:
        return geo.first_data_block + 1 + adjust + index
    group = index * geo.descs_per_block
    return group_first_block(geo, group) + group_has_super(geo, group) + adjust


def desc_location(geo: Geometry, group: int) -> tuple[int, int]:
    """(block, byte offset in it) of the descriptor of `group`."""
    index, slot = divmod(group, geo.descs_per_block)
    return desc_block(geo, index), slot * geo.desc_size


def desc_blocks_count(geo: Geometry) -> int:
    """How many blocks the whole descriptor table takes."""
    return -(-geo.groups_count // geo.descs_per_block)


def _count_supers(geo: Geometry, groups: int) -> int:
    """How many of groups [0, groups) hold a superblock copy, without visiting each."""
    if groups <= 0:
        return 0
    if "sparse_super2" in geo.features:
        return 1 + len({g for g in geo.backup_bgs if 0 < g < groups})
    if "sparse_super" not in geo.features:
        return groups
    count = 1 + (groups > 1)
    for base in (3, 5, 7):
        power = base
        while power < groups:
            count += 1
            power *= base
    return count


def metadata_overhead(geo: Geometry, reserved_gdt_blocks: int) -> int:
    """Blocks taken by superblocks, descriptors, bitmaps and inode tables (not the journal).

    Counted as the kernel's ext4_calculate_overhead counts them, but in closed form: a
    hostile superblock can claim billions of groups.
    """
    n, dpb = geo.groups_count, geo.descs_per_block
    itable_blocks = -(-geo.inodes_per_group * geo.inode_size // geo.block_size)
    classic = min(n, geo.first_meta_bg * dpb)  # groups under the contiguous table
    supers = _count_supers(geo, n)
    table = geo.first_meta_bg if "meta_bg" in geo.features else desc_blocks_count(geo)
    descs = _count_supers(geo, classic) * table
    if n > classic:
        # meta_bg: one descriptor block in the first, second and last group of each meta
        # group (fewer when the meta group has fewer than three groups).
        full, rest = divmod(n - classic, dpb)
        descs += full * min(dpb, 3) + len({g for g in (0, 1, dpb - 1) if g < rest})
    return (
        geo.first_data_block + supers * (1 + reserved_gdt_blocks) + descs + n * (itable_blocks + 2)
    )
