"""The ext2/3/4 superblock: the on-disk record, feature names, and the geometry it implies.

The superblock sits at byte 1024 of the volume whatever the block size. Its feature words
say what a reader must understand: an unknown *incompat* bit means the data cannot be read
correctly, an unknown *ro_compat* bit only that it cannot be written, an unknown *compat*
bit nothing at all. This module turns the 1024 bytes into a `Geometry` (block size, group
count, descriptor size ...) after checking every value a later loop or offset depends on,
so a hostile superblock is refused here rather than trusted below.
"""

from __future__ import annotations

import struct
import time
import uuid
from dataclasses import dataclass

from construct import Array, Bytes, Container, Int8ul, Int16sl, Int16ul, Int32ul, Int64ul, Struct

from uvfs import Refusal

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
EXT2_SUPER_MAGIC = 0xEF53
EXT2_GOOD_OLD_REV = 0
EXT2_GOOD_OLD_INODE_SIZE = 128
EXT2_GOOD_OLD_FIRST_INO = 11
EXT2_MIN_BLOCK_LOG_SIZE = 10
EXT2_MAX_BLOCK_LOG_SIZE = 16  # 64 KiB
EXT2_MIN_DESC_SIZE = 32
EXT2_MIN_DESC_SIZE_64BIT = 64
EXT2_MAX_DESC_SIZE = 1024

# s_state
EXT2_VALID_FS = 0x0001
EXT2_ERROR_FS = 0x0002

EXT3_FEATURE_INCOMPAT_RECOVER = 0x0004  # needs_recovery: the journal holds transactions

# fmt: off
ext2_super_block = Struct(
    "s_inodes_count" / Int32ul,             # 0x000
    "s_blocks_count" / Int32ul,             # 0x004
    "s_r_blocks_count" / Int32ul,           # 0x008
    "s_free_blocks_count" / Int32ul,        # 0x00c
    "s_free_inodes_count" / Int32ul,        # 0x010
    "s_first_data_block" / Int32ul,         # 0x014
    "s_log_block_size" / Int32ul,           # 0x018
    "s_log_cluster_size" / Int32ul,         # 0x01c
    "s_blocks_per_group" / Int32ul,         # 0x020
    "s_clusters_per_group" / Int32ul,       # 0x024
    "s_inodes_per_group" / Int32ul,         # 0x028
    "s_mtime" / Int32ul,                    # 0x02c
    "s_wtime" / Int32ul,                    # 0x030
    "s_mnt_count" / Int16ul,                # 0x034
    "s_max_mnt_count" / Int16sl,            # 0x036
    "s_magic" / Int16ul,                    # 0x038
    "s_state" / Int16ul,                    # 0x03a
    "s_errors" / Int16ul,                   # 0x03c
    "s_minor_rev_level" / Int16ul,          # 0x03e
    "s_lastcheck" / Int32ul,                # 0x040
    "s_checkinterval" / Int32ul,            # 0x044
    "s_creator_os" / Int32ul,               # 0x048
    "s_rev_level" / Int32ul,                # 0x04c
    "s_def_resuid" / Int16ul,               # 0x050
    "s_def_resgid" / Int16ul,               # 0x052
    # EXT2_DYNAMIC_REV only from here on; zeros on a revision 0 volume.
    "s_first_ino" / Int32ul,                # 0x054
    "s_inode_size" / Int16ul,               # 0x058
    "s_block_group_nr" / Int16ul,           # 0x05a
    "s_feature_compat" / Int32ul,           # 0x05c
    "s_feature_incompat" / Int32ul,         # 0x060
    "s_feature_ro_compat" / Int32ul,        # 0x064
    "s_uuid" / Bytes(16),                   # 0x068
    "s_volume_name" / Bytes(16),            # 0x078
    "s_last_mounted" / Bytes(64),           # 0x088
    "s_algorithm_usage_bitmap" / Int32ul,   # 0x0c8
    "s_prealloc_blocks" / Int8ul,           # 0x0cc
    "s_prealloc_dir_blocks" / Int8ul,       # 0x0cd
    "s_reserved_gdt_blocks" / Int16ul,      # 0x0ce
    "s_journal_uuid" / Bytes(16),           # 0x0d0
    "s_journal_inum" / Int32ul,             # 0x0e0
    "s_journal_dev" / Int32ul,              # 0x0e4
    "s_last_orphan" / Int32ul,              # 0x0e8
    "s_hash_seed" / Array(4, Int32ul),      # 0x0ec
    "s_def_hash_version" / Int8ul,          # 0x0fc
    "s_jnl_backup_type" / Int8ul,           # 0x0fd
    "s_desc_size" / Int16ul,                # 0x0fe
    "s_default_mount_opts" / Int32ul,       # 0x100
    "s_first_meta_bg" / Int32ul,            # 0x104
    "s_mkfs_time" / Int32ul,                # 0x108
    "s_jnl_blocks" / Array(17, Int32ul),    # 0x10c
    "s_blocks_count_hi" / Int32ul,          # 0x150
    "s_r_blocks_count_hi" / Int32ul,        # 0x154
    "s_free_blocks_hi" / Int32ul,           # 0x158
    "s_min_extra_isize" / Int16ul,          # 0x15c
    "s_want_extra_isize" / Int16ul,         # 0x15e
    "s_flags" / Int32ul,                    # 0x160
    "s_raid_stride" / Int16ul,              # 0x164
    "s_mmp_update_interval" / Int16ul,      # 0x166
    "s_mmp_block" / Int64ul,                # 0x168
    "s_raid_stripe_width" / Int32ul,        # 0x170
    "s_log_groups_per_flex" / Int8ul,       # 0x174
    "s_checksum_type" / Int8ul,             # 0x175
    "s_encryption_level" / Int8ul,          # 0x176
    "s_reserved_pad" / Int8ul,              # 0x177
    "s_kbytes_written" / Int64ul,           # 0x178
    "s_snapshot_inum" / Int32ul,            # 0x180
    "s_snapshot_id" / Int32ul,              # 0x184
    "s_snapshot_r_blocks_count" / Int64ul,  # 0x188
    "s_snapshot_list" / Int32ul,            # 0x190
    "s_error_count" / Int32ul,              # 0x194
    "s_first_error_time" / Int32ul,         # 0x198
    "s_first_error_ino" / Int32ul,          # 0x19c
    "s_first_error_block" / Int64ul,        # 0x1a0
    "s_first_error_func" / Bytes(32),       # 0x1a8
    "s_first_error_line" / Int32ul,         # 0x1c8
    "s_last_error_time" / Int32ul,          # 0x1cc
    "s_last_error_ino" / Int32ul,           # 0x1d0
    "s_last_error_line" / Int32ul,          # 0x1d4
    "s_last_error_block" / Int64ul,         # 0x1d8
    "s_last_error_func" / Bytes(32),        # 0x1e0
    "s_mount_opts" / Bytes(64),             # 0x200
    "s_usr_quota_inum" / Int32ul,           # 0x240
    "s_grp_quota_inum" / Int32ul,           # 0x244
    "s_overhead_clusters" / Int32ul,        # 0x248
    "s_backup_bgs" / Array(2, Int32ul),     # 0x24c
    "s_encrypt_algos" / Bytes(4),           # 0x254
    "s_encrypt_pw_salt" / Bytes(16),        # 0x258
    "s_lpf_ino" / Int32ul,                  # 0x268
    "s_prj_quota_inum" / Int32ul,           # 0x26c
    "s_checksum_seed" / Int32ul,            # 0x270
    "s_wtime_hi" / Int8ul,                  # 0x274
    "s_mtime_hi" / Int8ul,                  # 0x275
    "s_mkfs_time_hi" / Int8ul,              # 0x276
    "s_lastcheck_hi" / Int8ul,              # 0x277
    "s_first_error_time_hi" / Int8ul,       # 0x278
    "s_last_error_time_hi" / Int8ul,        # 0x279
    "s_first_error_errcode" / Int8ul,       # 0x27a
    "s_last_error_errcode" / Int8ul,        # 0x27b
    "s_encoding" / Int16ul,                 # 0x27c
    "s_encoding_flags" / Int16ul,           # 0x27e
    "s_orphan_file_inum" / Int32ul,         # 0x280
    "s_reserved" / Array(94, Int32ul),      # 0x284
    "s_checksum" / Int32ul,                 # 0x3fc
).compile()
# fmt: on

# --- features ------------------------------------------------------------------------------

COMPAT, INCOMPAT, RO_COMPAT = 0, 1, 2  # e2p's order: dumpe2fs lists the words in this order

# e2fsprogs' names (lib/e2p/feature.c); where it has two names for a bit, its first.
FEATURE_NAMES: dict[tuple[int, int], str] = {
    (COMPAT, 0x0001): "dir_prealloc",
    (COMPAT, 0x0002): "imagic_inodes",
    (COMPAT, 0x0004): "has_journal",
    (COMPAT, 0x0008): "ext_attr",
    (COMPAT, 0x0010): "resize_inode",
    (COMPAT, 0x0020): "dir_index",
    (COMPAT, 0x0040): "lazy_bg",
    (COMPAT, 0x0100): "snapshot_bitmap",
    (COMPAT, 0x0200): "sparse_super2",
    (COMPAT, 0x0400): "fast_commit",
    (COMPAT, 0x0800): "stable_inodes",
    (COMPAT, 0x1000): "orphan_file",
    (RO_COMPAT, 0x0001): "sparse_super",
    (RO_COMPAT, 0x0002): "large_file",
    (RO_COMPAT, 0x0008): "huge_file",
    (RO_COMPAT, 0x0010): "uninit_bg",
    (RO_COMPAT, 0x0020): "dir_nlink",
    (RO_COMPAT, 0x0040): "extra_isize",
    (RO_COMPAT, 0x0100): "quota",
    (RO_COMPAT, 0x0200): "bigalloc",
    (RO_COMPAT, 0x0400): "metadata_csum",
    (RO_COMPAT, 0x0800): "replica",
    (RO_COMPAT, 0x1000): "read-only",
    (RO_COMPAT, 0x2000): "project",
    (RO_COMPAT, 0x4000): "shared_blocks",
    (RO_COMPAT, 0x8000): "verity",
    (RO_COMPAT, 0x10000): "orphan_present",
    (INCOMPAT, 0x0001): "compression",
    (INCOMPAT, 0x0002): "filetype",
    (INCOMPAT, 0x0004): "needs_recovery",
    (INCOMPAT, 0x0008): "journal_dev",
    (INCOMPAT, 0x0010): "meta_bg",
    (INCOMPAT, 0x0040): "extent",
    (INCOMPAT, 0x0080): "64bit",
    (INCOMPAT, 0x0100): "mmp",
    (INCOMPAT, 0x0200): "flex_bg",
    (INCOMPAT, 0x0400): "ea_inode",
    (INCOMPAT, 0x1000): "dirdata",
    (INCOMPAT, 0x2000): "metadata_csum_seed",
    (INCOMPAT, 0x4000): "large_dir",
    (INCOMPAT, 0x8000): "inline_data",
    (INCOMPAT, 0x10000): "encrypt",
    (INCOMPAT, 0x20000): "casefold",
}

# The incompat features this reader understands. needs_recovery is handled apart (a
# read-only open replays the journal in memory, see filesystem.py); mmp only guards
# writers; metadata_csum_seed only moves the checksum seed; large_dir allows a third
# htree level (htree.py); inline_data and ea_inode are read (inline_data.py, xattr.py);
# casefolded directories are matched as the kernel folds (casefold.py), encrypted ones are
# shown as the kernel shows them without the key (encrypt.py).
SUPPORTED_INCOMPAT = frozenset(
    {"filetype", "meta_bg", "extent", "64bit", "mmp", "flex_bg", "metadata_csum_seed", "large_dir",
     "inline_data", "ea_inode", "casefold", "encrypt"}
)  # fmt: skip


def feature_names(compat: int, incompat: int, ro_compat: int) -> list[str]:
    """Every feature set in the three words, named as dumpe2fs names them, in its order.

    Bits e2fsprogs does not know are named like it does: ``FEATURE_I5`` (word, bit).
    """
    names = []
    for word, bits in ((COMPAT, compat), (INCOMPAT, incompat), (RO_COMPAT, ro_compat)):
        for bit in range(32):
            mask = 1 << bit
            if bits & mask:
                names.append(FEATURE_NAMES.get((word, mask), f"FEATURE_{'CIR'[word]}{bit}"))
    return names


# What blkid still calls ext2 (and ext3, with a journal): any other incompatible or
# read-only-compatible feature makes an ext4 (util-linux libblkid/src/superblocks/ext.c).
_EXT2_FEATURES = frozenset(
    {"filetype", "meta_bg", "needs_recovery", "sparse_super", "large_file", "FEATURE_R2"}
)


def ext_generation(raw: bytes) -> str:
    """``ext2``, ``ext3`` or ``ext4`` for the superblock bytes `raw`, as blkid names it."""
    compat, incompat, ro_compat = struct.unpack_from("<III", raw, 0x5C)
    beyond = set(feature_names(0, incompat, ro_compat)) - _EXT2_FEATURES
    if beyond:
        return "ext4"
    return "ext3" if compat & 0x0004 else "ext2"  # has_journal


def sb_features(sb: Container) -> frozenset[str]:
    """The names of every feature set in superblock `sb` (a parsed `ext2_super_block`)."""
    return frozenset(
        feature_names(sb.s_feature_compat, sb.s_feature_incompat, sb.s_feature_ro_compat)
    )


# --- geometry ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Geometry:
    """What the superblock implies for finding things, checked against hostile values."""

    block_size: int
    blocks_count: int  # s_blocks_count with s_blocks_count_hi on 64bit volumes
    first_data_block: int
    blocks_per_group: int
    inodes_per_group: int
    inodes_count: int
    inode_size: int
    first_ino: int
    desc_size: int
    groups_count: int
    first_meta_bg: int  # groups below this keep the contiguous descriptor table
    backup_bgs: tuple[int, ...]  # sparse_super2: the only groups with a backup superblock
    features: frozenset[str]
    cluster_ratio: int = 1  # bigalloc: blocks per allocation cluster

    @property
    def descs_per_block(self) -> int:
        return self.block_size // self.desc_size


def geometry(sb: Container, image_size: int) -> Geometry:
    """Check superblock `sb` and derive its `Geometry`; `Refusal` for anything unreadable.

    Args:
        sb: a parsed `ext2_super_block`.
        image_size: bytes in the image, to refuse a truncated one as the kernel does.
    """
    s = sb  # short alias: every line below reads a field
    if s.s_magic != EXT2_SUPER_MAGIC:
        raise Refusal("not an ext2/ext3/ext4 filesystem: bad superblock magic")
    if s.s_rev_level == EXT2_GOOD_OLD_REV:
        # Revision 0 predates the feature words: whatever they hold is noise.
        features: frozenset[str] = frozenset()
    elif s.s_rev_level == 1:
        features = sb_features(s)
    else:
        raise Refusal(f"unsupported ext2 revision {s.s_rev_level}")
    unknown = [
        name
        for name in feature_names(0, s.s_feature_incompat if features else 0, 0)
        if name not in SUPPORTED_INCOMPAT and name != "needs_recovery"
    ]
    if unknown:
        raise Refusal(f"unsupported ext2 feature(s): {', '.join(unknown)}")

    log = s.s_log_block_size + EXT2_MIN_BLOCK_LOG_SIZE
    if not EXT2_MIN_BLOCK_LOG_SIZE <= log <= EXT2_MAX_BLOCK_LOG_SIZE:
        raise Refusal(f"corrupt ext2 superblock: block size 2^{log}")
    block_size = 1 << log
    blocks_count = s.s_blocks_count
    if "64bit" in features:
        blocks_count |= s.s_blocks_count_hi << 32
        desc_size = s.s_desc_size
        if not EXT2_MIN_DESC_SIZE_64BIT <= desc_size <= EXT2_MAX_DESC_SIZE or desc_size & (
            desc_size - 1
        ):
            raise Refusal(f"corrupt ext2 superblock: group descriptor size {desc_size}")
    else:
        desc_size = EXT2_MIN_DESC_SIZE
    if s.s_rev_level == EXT2_GOOD_OLD_REV:
        inode_size, first_ino = EXT2_GOOD_OLD_INODE_SIZE, EXT2_GOOD_OLD_FIRST_INO
    else:
        inode_size, first_ino = s.s_inode_size, s.s_first_ino
    if not EXT2_GOOD_OLD_INODE_SIZE <= inode_size <= block_size or inode_size & (inode_size - 1):
        raise Refusal(f"corrupt ext2 superblock: inode size {inode_size}")

    cluster_ratio = 1
    if "bigalloc" in features:
        cluster_log = s.s_log_cluster_size + EXT2_MIN_BLOCK_LOG_SIZE
        if not log <= cluster_log <= log + 16:
            raise Refusal(f"corrupt ext2 superblock: cluster size 2^{cluster_log}")
        cluster_ratio = 1 << (cluster_log - log)
    first_data_block = s.s_first_data_block
    per_group = s.s_blocks_per_group
    ipg = s.s_inodes_per_group
    if not 0 < per_group <= 8 * block_size * cluster_ratio or not 0 < ipg <= 8 * block_size:
        raise Refusal("corrupt ext2 superblock: blocks or inodes per group out of range")
    if first_data_block >= blocks_count:
        raise Refusal("corrupt ext2 superblock: first data block beyond the end")
    groups_count = -(-(blocks_count - first_data_block) // per_group)
    if s.s_inodes_count != groups_count * ipg:
        raise Refusal(
            f"corrupt ext2 superblock: {s.s_inodes_count} inodes for {groups_count} groups of {ipg}"
        )
    if blocks_count * block_size > image_size:
        raise Refusal(
            f"ext2 image is truncated: {image_size} bytes, the superblock says "
            f"{blocks_count} blocks of {block_size}"
        )
    return Geometry(
        block_size=block_size,
        blocks_count=blocks_count,
        first_data_block=first_data_block,
        blocks_per_group=per_group,
        inodes_per_group=ipg,
        inodes_count=s.s_inodes_count,
        inode_size=inode_size,
        first_ino=first_ino,
        desc_size=desc_size,
        groups_count=groups_count,
        first_meta_bg=s.s_first_meta_bg if "meta_bg" in features else groups_count,
        backup_bgs=tuple(s.s_backup_bgs),
        features=features,
        cluster_ratio=cluster_ratio,
    )


def volume_uuid(sb: Container) -> str:
    """s_uuid as dumpe2fs prints it, or ``<none>`` when null."""
    raw = sb.s_uuid
    return str(uuid.UUID(bytes=raw)) if any(raw) else "<none>"


# --- the human summary -------------------------------------------------------------------

_ERRORS_BEHAVIOUR = {1: "Continue", 2: "Remount read-only", 3: "Panic"}
_CREATOR_OS = {0: "Linux", 1: "Hurd", 2: "Masix", 3: "FreeBSD", 4: "Lites"}


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _tstamp(sb: Container, name: str) -> int:
    return sb[name] | sb[name + "_hi"] << 32


def describe(sb: Container) -> str:
    """A summary of superblock `sb` in the words and layout of ``dumpe2fs -h``."""
    if sb.s_magic != EXT2_SUPER_MAGIC:
        raise Refusal("not an ext2/ext3/ext4 filesystem: bad superblock magic")
    # A damaged s_log_block_size must not become a number of a billion digits.
    block_size = 1 << (min(sb.s_log_block_size, 32) + EXT2_MIN_BLOCK_LOG_SIZE)
    dynamic = sb.s_rev_level != EXT2_GOOD_OLD_REV
    features = (
        feature_names(sb.s_feature_compat, sb.s_feature_incompat, sb.s_feature_ro_compat)
        if dynamic
        else []
    )
    bigalloc = "bigalloc" in features
    wide = "64bit" in features
    state = " clean" if sb.s_state & EXT2_VALID_FS else " not clean"
    if sb.s_state & EXT2_ERROR_FS:
        state += " with errors"
    revision = {0: "original", 1: "dynamic"}.get(sb.s_rev_level, "unknown")
    inode_size = sb.s_inode_size if dynamic else EXT2_GOOD_OLD_INODE_SIZE
    rows: list[tuple[str, object]] = [
        ("Filesystem volume name", _text(sb.s_volume_name) or "<none>"),
        ("Last mounted on", _text(sb.s_last_mounted) or "<not available>"),
        ("Filesystem UUID", volume_uuid(sb)),
        ("Filesystem magic number", f"0x{sb.s_magic:04X}"),
        ("Filesystem revision #", f"{sb.s_rev_level} ({revision})"),
        ("Filesystem features", " ".join(features) or "(none)"),
        ("Filesystem state", state[1:]),
        ("Errors behavior", _ERRORS_BEHAVIOUR.get(sb.s_errors, "Unknown (continue)")),
        ("Filesystem OS type", _CREATOR_OS.get(sb.s_creator_os, "(unknown os)")),
        ("Inode count", sb.s_inodes_count),
        ("Block count", sb.s_blocks_count | (sb.s_blocks_count_hi << 32 if wide else 0)),
        (
            "Reserved block count",
            sb.s_r_blocks_count | (sb.s_r_blocks_count_hi << 32 if wide else 0),
        ),
    ]
    if sb.s_overhead_clusters:
        rows.append(("Overhead clusters", sb.s_overhead_clusters))
    rows += [
        (
            "Free blocks",
            sb.s_free_blocks_count | (sb.s_free_blocks_hi << 32 if wide else 0),
        ),
        ("Free inodes", sb.s_free_inodes_count),
        ("First block", sb.s_first_data_block),
        ("Block size", block_size),
        (
            "Cluster size" if bigalloc else "Fragment size",
            1 << (min(sb.s_log_cluster_size, 32) + EXT2_MIN_BLOCK_LOG_SIZE),
        ),
    ]
    if wide:
        rows.append(("Group descriptor size", sb.s_desc_size))
    if sb.s_reserved_gdt_blocks:
        rows.append(("Reserved GDT blocks", sb.s_reserved_gdt_blocks))
    rows += [
        ("Blocks per group", sb.s_blocks_per_group),
        ("Clusters per group" if bigalloc else "Fragments per group", sb.s_clusters_per_group),
        ("Inodes per group", sb.s_inodes_per_group),
        (
            "Inode blocks per group",
            -(-sb.s_inodes_per_group * inode_size // block_size),
        ),
    ]
    if sb.s_first_meta_bg:
        rows.append(("First meta block group", sb.s_first_meta_bg))
    if sb.s_log_groups_per_flex:
        rows.append(("Flex block group size", 1 << sb.s_log_groups_per_flex))
    if _tstamp(sb, "s_mkfs_time"):
        rows.append(("Filesystem created", time.ctime(_tstamp(sb, "s_mkfs_time"))))
    mtime = _tstamp(sb, "s_mtime")
    rows += [
        ("Last mount time", time.ctime(mtime) if mtime else "n/a"),
        ("Last write time", time.ctime(_tstamp(sb, "s_wtime"))),
        ("Mount count", sb.s_mnt_count),
        ("Maximum mount count", sb.s_max_mnt_count),
        ("Last checked", time.ctime(_tstamp(sb, "s_lastcheck"))),
    ]
    if dynamic:
        rows += [("First inode", sb.s_first_ino), ("Inode size", sb.s_inode_size)]
    if sb.s_journal_inum:
        rows.append(("Journal inode", sb.s_journal_inum))
    return "".join(f"{key + ':':<26}{value}\n" for key, value in rows)
