"""Indexed (htree) directories: the name hashes, dx_root and dx_node, and the lookup walk.

An indexed directory (EXT2_INDEX_FL) is an ordinary one whose leaf blocks are sorted into
hash ranges. Block 0 is the dx_root: "." and ".." records (the second spanning the block,
so a linear scan skips the index), a `dx_root_info` (hash version, indirect levels), then a
table of (hash, block) entries whose first slot holds the table's limit and count instead
of a hash. With indirect levels, entries point at dx_node blocks (one unused record
spanning the block, then the same table); the last level points at leaf blocks. Entry i
covers hashes from its own up to the next entry's; the first covers from 0. A name's hash
has its low bit cleared; a range's hash with the low bit set says its leaf continues the
previous one (a collision run split over blocks), so the next leaf must be searched too.

Hashes follow fs/ext4/hash.c: legacy (dx_hack_hash), half-MD4 and TEA, each in a signed and
an unsigned-char flavour (the superblock's s_flags says which the volume was made with),
seeded by s_hash_seed (all zeros: MD4's initial words). A casefolded directory hashes
its names folded (casefold.py). SipHash (casefolded and encrypted names, the hash stored
in each record) is not done: such an index is treated as damaged.

Damage (what the kernel's dx_probe calls a bad dx directory: unknown hash version, unknown
flags, too many levels, a limit that is not the block's, a count of 0 or past the limit, a
cycle) raises `DxCorrupt`, and the caller falls back to a linear scan, as the kernel does;
an entry for a block past the directory's end is EIO for the names it routes, as the
kernel's failed block read is.
The walk reads at most one block per level and then leaves in order; it yields at most
`nblocks` leaves in all, so a hostile index cannot make it loop.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import NamedTuple

from uvfs import FSError
from uvfs_fs.ext2 import _native
from uvfs_fs.ext2.csum import crc32c_le

DX_HASH_LEGACY, DX_HASH_HALF_MD4, DX_HASH_TEA = 0, 1, 2
DX_HASH_UNSIGNED_DELTA = 3  # +3: the unsigned-char flavour of the three above
EXT2_FLAGS_UNSIGNED_HASH = 0x0002  # s_flags
EXT4_HTREE_EOF_32BIT = 0x7FFFFFFF
DX_TAIL_SIZE = 8  # metadata_csum: dx_tail (reserved, checksum) after the entries
DX_ROOT_INFO_AT = 0x18  # after the "." (12 bytes) and ".." (12 bytes) records
DX_NODE_ENTRIES_AT = 8  # after the unused record header spanning the block
DX_BLOCK_MASK = 0x0FFFFFFF  # dx_get_block: the top four bits are reserved

# dx_root_info: reserved_zero, hash_version, info_length, indirect_levels, unused_flags
dx_root_info = struct.Struct("<IBBBB")
dx_countlimit = struct.Struct("<HH")  # limit, count (in the first entry's hash slot)
dx_entry = struct.Struct("<II")  # hash, block

_M = 0xFFFFFFFF


class DxCorrupt(Exception):
    """The index is damaged: look the name up by linear scan instead."""


class DxFrame(NamedTuple):
    """One level of the walk: a table's entries and which one covers the hash."""

    entries: list[tuple[int, int]]  # (hash, block); entries[0]'s hash is implicitly 0
    at: int


# --- hashes ---------------------------------------------------------------------------------


def dx_hash_pair(name: bytes, version: int, seed: Sequence[int]) -> tuple[int, int]:
    """The (major, minor) hashes ext4 files `name` under, for hash `version` (0-5) and
    s_hash_seed. The minor hash only orders a directory's readdir; no-key names of
    encrypted directories carry both (encrypt.py).

    Raises:
        DxCorrupt: for a version this code does not compute.
    """
    if version not in range(2 * DX_HASH_UNSIGNED_DELTA):
        raise DxCorrupt(f"hash version {version}")
    flavour, unsigned = version % DX_HASH_UNSIGNED_DELTA, version >= DX_HASH_UNSIGNED_DELTA
    value, minor = _native.dx_hash(name, flavour, not unsigned, *seed)
    value &= ~1 & _M
    if value == EXT4_HTREE_EOF_32BIT << 1:
        value = (EXT4_HTREE_EOF_32BIT - 1) << 1
    return value, minor


def dx_hash(name: bytes, version: int, seed: Sequence[int]) -> int:
    """The major hash ext4 files `name` under (`dx_hash_pair`'s first)."""
    return dx_hash_pair(name, version, seed)[0]


# --- index blocks --------------------------------------------------------------------------


def _entries(block: bytes, at: int, limit: int) -> list[tuple[int, int]]:
    """The table at `at`, checked to hold `limit` slots and 1..limit entries."""
    if at + dx_entry.size > len(block):
        raise DxCorrupt("index table past the block")
    got_limit, count = dx_countlimit.unpack_from(block, at)
    if got_limit != limit:
        raise DxCorrupt(f"limit {got_limit}, not {limit}")
    if not 0 < count <= limit:
        raise DxCorrupt(f"count {count} beyond limit {limit}")
    entries = [(h, b & DX_BLOCK_MASK) for h, b in dx_entry.iter_unpack(block[at : at + 8 * count])]
    entries[0] = (0, entries[0][1])
    return entries


class DxRoot(NamedTuple):
    hash_version: int  # as stored: 0-2 (the flavour comes from the superblock)
    levels: int  # indirect levels: dx_node tables between the root and the leaves
    entries: list[tuple[int, int]]


def parse_root(block: bytes, *, csum: bool, max_levels: int) -> DxRoot:
    """Block 0 of an indexed directory (dx_probe's checks).

    Args:
        csum: metadata_csum (a dx_tail ends the table's space).
        max_levels: indirect levels allowed: 1, or 2 with large_dir.
    """
    if len(block) < DX_ROOT_INFO_AT + dx_root_info.size:
        raise DxCorrupt("root block too small")
    _, version, info_length, levels, flags = dx_root_info.unpack_from(block, DX_ROOT_INFO_AT)
    if version not in (DX_HASH_LEGACY, DX_HASH_HALF_MD4, DX_HASH_TEA):
        raise DxCorrupt(f"hash version {version}")
    if flags & 1:
        raise DxCorrupt(f"unknown hash flags {flags:#x}")
    if levels > max_levels:
        raise DxCorrupt(f"{levels} indirect levels")
    at = DX_ROOT_INFO_AT + info_length
    limit = (len(block) - at - (DX_TAIL_SIZE if csum else 0)) // dx_entry.size
    return DxRoot(version, levels, _entries(block, at, limit))


def parse_node(block: bytes, *, csum: bool) -> list[tuple[int, int]]:
    """The entries of a dx_node block."""
    space = len(block) - DX_NODE_ENTRIES_AT - (DX_TAIL_SIZE if csum else 0)
    return _entries(block, DX_NODE_ENTRIES_AT, space // dx_entry.size)


def dx_csum_ok(block: bytes, *, root: bool, seed: int) -> bool:
    """metadata_csum: whether an index block's dx_tail holds its checksum
    (ext4_dx_csum_verify): crc32c, from the directory's inode seed, over the block up to
    its last entry, then dt_reserved and a zero checksum. A root whose info is not the
    usual 8 bytes, or a table whose limit leaves no room for the tail, fails."""
    if root:
        if block[DX_ROOT_INFO_AT : DX_ROOT_INFO_AT + 4] != bytes(4) or block[0x1D] != 8:
            return False
        at = DX_ROOT_INFO_AT + 8
    else:
        at = DX_NODE_ENTRIES_AT
    limit, count = dx_countlimit.unpack_from(block, at)
    tail = at + limit * dx_entry.size
    if tail > len(block) - DX_TAIL_SIZE or count > limit:
        return False
    crc = crc32c_le(seed, block[: at + count * dx_entry.size])
    crc = crc32c_le(crc, block[tail : tail + 4] + bytes(4))
    return crc == int.from_bytes(block[tail + 4 : tail + 8], "little")


def _covering(entries: list[tuple[int, int]], hash_: int) -> int:
    """The index of the last entry whose hash is at most `hash_` (entry 0 covers from 0)."""
    lo, hi = 1, len(entries) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if entries[mid][0] > hash_:
            hi = mid - 1
        else:
            lo = mid + 1
    return lo - 1


def _inside(block: int, nblocks: int) -> int:
    """`block`, checked to be in the directory: past its end it cannot be read, which
    the kernel reports as corruption of the name's lookup rather than a bad index."""
    if block >= nblocks:
        raise FSError(errno.EIO, f"htree entry for block {block} past the directory's end")
    return block


async def dx_leaves(
    root: bytes,
    name: bytes,
    *,
    target: int | None = None,
    seed: Sequence[int],
    unsigned: bool,
    csum: bool,
    max_levels: int,
    nblocks: int,
    read_block: Callable[[int], Awaitable[bytes]],
) -> AsyncIterator[int]:
    """The leaf blocks that may hold `name`, in order: its hash's leaf, then any leaves
    continuing its collision run (ext4_dx_find_entry and ext4_htree_next_block).

    Args:
        root: directory block 0.
        name: the bytes the directory hashes for the name looked up (casefold.py folds
            them first); target: its hash instead, when only that is known (a long
            no-key name of an encrypted directory, encrypt.py).
        seed: s_hash_seed; unsigned: s_flags has EXT2_FLAGS_UNSIGNED_HASH.
        nblocks: the directory's blocks: every block number must be below it.
        read_block: reads a directory block by its logical number.

    Raises:
        DxCorrupt: the index is damaged; the caller falls back to a linear scan.
        FSError: EIO for a block past the directory's end.
    """
    info = parse_root(root, csum=csum, max_levels=max_levels)
    version = info.hash_version + (DX_HASH_UNSIGNED_DELTA if unsigned else 0)
    if target is None:
        target = dx_hash(name, version, seed)

    async def node(block: int, path: list[int]) -> list[tuple[int, int]]:
        if block in path:
            raise DxCorrupt(f"index cycle through block {block}")
        return parse_node(await read_block(_inside(block, nblocks)), csum=csum)

    # Walk down: frames[i] is level i's table; the last frame's entry names a leaf.
    frames = [DxFrame(info.entries, _covering(info.entries, target))]
    path = [0]
    while len(frames) <= info.levels:
        block = frames[-1].entries[frames[-1].at][1]
        entries = await node(block, path)
        path.append(block)
        frames.append(DxFrame(entries, _covering(entries, target)))
    for _ in range(nblocks):
        yield _inside(frames[-1].entries[frames[-1].at][1], nblocks)
        # The next leaf, if its range continues this hash (its hash's low bit set).
        level = len(frames) - 1
        while level >= 0 and frames[level].at + 1 >= len(frames[level].entries):
            level -= 1
        if level < 0:
            return
        frames[level] = DxFrame(frames[level].entries, frames[level].at + 1)
        if frames[level].entries[frames[level].at][0] & ~1 != target:
            return
        for below in range(level + 1, len(frames)):
            block = frames[below - 1].entries[frames[below - 1].at][1]
            frames[below] = DxFrame(await node(block, path[:below]), 0)
    raise DxCorrupt("more leaves than the directory has blocks")


# --- listings -------------------------------------------------------------------------------

_NO_MORE = 0xFFFFFFFF  # ~0: no leaf follows


class _Cursor:
    """dx_probe's frames for one hash, and ext4_htree_next_block's step to the next leaf."""

    def __init__(
        self,
        info: DxRoot,
        csum: bool,
        nblocks: int,
        read_block: Callable[[int], Awaitable[bytes]],
    ) -> None:
        self.info, self.csum, self.nblocks, self.read_block = info, csum, nblocks, read_block
        self.frames: list[DxFrame] = []

    async def _node(self, below: int) -> list[tuple[int, int]]:
        block = self.frames[below - 1].entries[self.frames[below - 1].at][1]
        return parse_node(await self.read_block(_inside(block, self.nblocks)), csum=self.csum)

    async def probe(self, hash_: int) -> int:
        """Walk down to the leaf covering `hash_`; its block."""
        self.frames = [DxFrame(self.info.entries, _covering(self.info.entries, hash_))]
        while len(self.frames) <= self.info.levels:
            entries = await self._node(len(self.frames))
            self.frames.append(DxFrame(entries, _covering(entries, hash_)))
        return self.leaf()

    def leaf(self) -> int:
        return _inside(self.frames[-1].entries[self.frames[-1].at][1], self.nblocks)

    def covers(self, hash_: int) -> bool:
        """Whether a probe for `hash_` comes down to the current leaf (a lookup would start
        there)."""
        return all(_covering(frame.entries, hash_) == frame.at for frame in self.frames)

    async def next_leaf(self) -> int:
        """Step to the next leaf in index order; the hash its entry starts at, or
        `_NO_MORE` when the index has no more leaves."""
        level = len(self.frames) - 1
        while self.frames[level].at + 1 >= len(self.frames[level].entries):
            if level == 0:
                return _NO_MORE
            level -= 1
        self.frames[level] = DxFrame(self.frames[level].entries, self.frames[level].at + 1)
        start = self.frames[level].entries[self.frames[level].at][0]
        for below in range(level + 1, len(self.frames)):
            self.frames[below] = DxFrame(await self._node(below), 0)
        return start


async def dx_listing(
    root: bytes,
    *,
    csum: bool,
    max_levels: int,
    nblocks: int,
    read_node: Callable[[int], Awaitable[bytes]],
    read_leaf: Callable[[int], Awaitable[bytes]],
    leaf_records: Callable[[bytes], list[tuple[bytes, int]]],
    hashed: Callable[[bytes], bytes],
    seed: Sequence[int],
    unsigned: bool,
) -> tuple[list[tuple[bytes, int]], bool]:
    """The (name, inode) records an indexed directory lists, in the kernel's order
    (ext4_dx_readdir and ext4_htree_fill_tree): from hash 0 up, each round probes the
    index for the current hash, reads leaves in index order until it holds a name and the
    next leaf starts a new hash, and returns the names of hash at least the current one
    in (hash, minor hash) order; the next round starts at the next leaf's hash. So a
    damaged index lists what the kernel lists: a name filed in a leaf whose range is past
    its hash is left out. "." and ".." come from the root, with hashes 0 and 2.

    Args:
        root: block 0; read_node, read_leaf: read an index node or a leaf by its
            logical number; leaf_records: the used records a leaf lists (kernel rules);
        hashed: the bytes a stored name is hashed by (its fold in a casefolded
            directory); seed, unsigned: as for `dx_leaves`.

    Returns:
        The records, and whether each one lies in the leaf a probe for its hash comes
        down to: if not (a damaged index, or a collision run across leaves), a lookup
        through the index may miss a listed name, as the kernel's does.

    Raises:
        DxCorrupt: the index is damaged: the kernel lists the directory linearly.
    """
    info = parse_root(root, csum=csum, max_levels=max_levels)
    version = info.hash_version + (DX_HASH_UNSIGNED_DELTA if unsigned else 0)
    dot, dotdot = (int.from_bytes(root[at : at + 4], "little") for at in (0, 12))
    cursor = _Cursor(info, csum, nblocks, read_node)
    out: list[tuple[bytes, int]] = []
    routed = True
    current: tuple[int, int] = (0, 0)
    for _ in range(nblocks + 2):  # a round per leaf at most, while the index is in order
        tree: dict[tuple[int, int], list[tuple[bytes, int]]] = {}
        if current == (0, 0):
            _store(tree, (0, 0), (b".", dot))
        if current <= (2, 0):
            _store(tree, (2, 0), (b"..", dotdot))
        next_hash = _NO_MORE
        leaf = await cursor.probe(current[0])
        for _ in range(nblocks):
            for name, ino in leaf_records(await read_leaf(leaf)):
                key = dx_hash_pair(hashed(name), version, seed)
                if key >= current:
                    _store(tree, key, (name, ino))
                    routed = routed and cursor.covers(key[0])
            next_hash = await cursor.next_leaf()
            if next_hash == _NO_MORE or (tree and not next_hash & 1):
                break
            leaf = cursor.leaf()
        if not tree:
            break
        for key in sorted(tree):
            out += tree[key]
            current = key
        if next_hash == _NO_MORE:
            break
        current = (next_hash, 0)
    return out, routed


def _store(
    tree: dict[tuple[int, int], list[tuple[bytes, int]]],
    key: tuple[int, int],
    record: tuple[bytes, int],
) -> None:
    """Add `record` under `key`, as ext4_htree_store_dirent chains a collision: right
    after the chain's first record."""
    tree.setdefault(key, []).insert(1, record)
