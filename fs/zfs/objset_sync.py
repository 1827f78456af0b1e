"""Copy-on-write of an object set (module/zfs/dbuf.c dbuf_sync, dnode_sync.c, dmu_objset.c
dmu_objset_sync): a txg's dirty blocks and dnodes written at new places, up to a new root.

A txg's changes to an object set are level-0 blocks of objects and dnodes (a bonus buffer,
a larger dn_maxblkid): `DirtyObjset`. Syncing never writes over a block the last synced
uberblock can reach. Each dirty level-0 block is written at a newly allocated place; the
indirect block above it is read, its pointer replaced, and written anew in turn, up to
the dnode's dn_blkptr; each changed dnode goes into a new copy of its dnode block, a
level-0 block of the meta dnode, whose tree is rewritten the same way; the objset_phys_t,
holding the meta dnode, is written last and its new pointer is the object set's root (for
the MOS, the uberblock's ub_rootbp; for a dataset, its ds_bp). Every pointer replaced is
freed (born in an earlier txg, so the metaslab keeps the space from reuse for
TXG_DEFER_SIZE txgs); every block written is counted with its born size, which the
caller charges to the owner's space accounting (dsl_dataset_block_born / _kill).

How a block is written (dmu_write_policy): metadata (indirect blocks, dnode and objset
blocks, and every type but file and zvol data) takes the pool's metadata compression and
fletcher4 and one more copy than the dataset's data (the MOS: three); data takes the
dataset's compression, checksum and copies. Fill counts are recomputed as dbuf_write_ready
does: 1 per data block, the allocated dnodes of a dnode block, the sum of the children of
an indirect block.

Reads of the old tree go through a `BlockCache`; writes are only collected (`SyncContext`
holds the DVAs and bytes), so a failure before the uberblock leaves the devices as they
were.

A dirty block may also be None: the block is freed and its pointer becomes a hole (all
zeros: the pool versions written here have no hole_birth), and an indirect block left with
only holes is freed in turn (dnode_sync_free_range, free_children). A dirty block beyond
what the dnode's levels address grows the tree first (dnode_increase_indirection): a new
top-level indirect block takes the dnode's old block pointers as its first children, and
dn_blkptr[0] points to it, once per level added.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from uvfs import FSError
from uvfs_fs.zfs.blkptr import DVA, BlockPtr, encode_blkptr, parse_blkptrs
from uvfs_fs.zfs.checksum import (
    ZIO_CHECKSUM_FLETCHER_4,
    ZIO_CHECKSUM_INHERIT,
    ZIO_CHECKSUM_SHA256,
)
from uvfs_fs.zfs.compress import ZIO_COMPRESS_INHERIT, ZIO_COMPRESS_LZJB
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet, parse_objset, read_block
from uvfs_fs.zfs.dnode import (
    DMU_OT_DNODE,
    DMU_OT_NONE,
    DMU_OT_OBJSET,
    DMU_OT_PLAIN_FILE_CONTENTS,
    DNODE_FLAG_USED_BYTES,
    DNODE_MIN_SIZE,
    DNODE_SHIFT,
    DnodePhys,
    encode_dnode,
    parse_dnode,
)
from uvfs_fs.zfs.metaslab import Metaslab, metaslab_alloc, metaslab_free
from uvfs_fs.zfs.zap import ZBT_MICRO, mzap_remove, mzap_set, parse_mzap, zap_block_type
from uvfs_fs.zfs.zio_write import ZERO_BP, WriteProps, zio_write_finish, zio_write_prepare

# dmu_ot[].ot_metadata is false only for these: plain file and zvol data, other uint8/64[].
DATA_TYPES = frozenset({DMU_OT_PLAIN_FILE_CONTENTS, 23, 25, 26})
SPA_DVAS_PER_BP = 3
_META_CHECKSUMS = frozenset({ZIO_CHECKSUM_FLETCHER_4, ZIO_CHECKSUM_SHA256})


@dataclass(frozen=True)
class WritePolicy:
    """How an object set's blocks are written (dmu_write_policy's inputs)."""

    compress: int  # data blocks: the dataset's compression (enum zio_compress)
    checksum: int  # data blocks: the dataset's checksum
    copies: int  # data blocks: the dataset's copies; metadata gets one more (max 3)
    meta_compress: int = ZIO_COMPRESS_LZJB  # the pool's metadata compression
    is_mos: bool = False  # every MOS block gets SPA_DVAS_PER_BP copies

    def props(self, dn: DnodePhys, type: int, level: int, sector: int) -> tuple[WriteProps, int]:
        """The WriteProps and the number of copies of a block of object `dn` (its own
        compression and checksum, unless "inherit", override the dataset's for data)."""
        order = dn.byteorder
        if level == 0 and type in DATA_TYPES and not self.is_mos:
            compress = dn.dn_compress if dn.dn_compress != ZIO_COMPRESS_INHERIT else self.compress
            checksum = dn.dn_checksum if dn.dn_checksum != ZIO_CHECKSUM_INHERIT else self.checksum
            return WriteProps(compress, checksum, type, 0, order, sector=sector), self.copies
        copies = SPA_DVAS_PER_BP if self.is_mos else min(self.copies + 1, SPA_DVAS_PER_BP)
        # Metadata keeps a data checksum that can correct (fletcher4, sha256), else fletcher4.
        checksum = self.checksum if self.checksum in _META_CHECKSUMS else ZIO_CHECKSUM_FLETCHER_4
        props = WriteProps(self.meta_compress, checksum, type, level, order, sector=sector)
        return props, copies


@dataclass
class DirtyObjset:
    """What a txg changes in one object set.

    Attributes:
        blocks: per object, its new level-0 blocks by blkid (each a whole data block), or
            None for a block freed.
        dnodes: per object, its new dnode (bonus, dn_maxblkid ...); its block pointers are
            replaced by the sync when the object also has dirty blocks.
    """

    blocks: dict[int, dict[int, bytes | None]] = field(default_factory=dict)
    dnodes: dict[int, DnodePhys] = field(default_factory=dict)

    def copy(self) -> DirtyObjset:
        """A copy whose dicts may be changed without touching this one."""
        return DirtyObjset({k: dict(v) for k, v in self.blocks.items()}, dict(self.dnodes))

    async def dnode(self, objset: ObjectSet, obj: int) -> DnodePhys:
        """Object `obj`'s dnode as this txg has it so far."""
        return self.dnodes.get(obj) or await objset.dnode(obj)


@dataclass
class Usage:
    """Bytes of blocks (dsl_dataset_block_born/_kill's measures): allocated (all copies),
    physical, and uncompressed (physical for metadata)."""

    used: int = 0
    compressed: int = 0
    uncompressed: int = 0

    def add(self, bp: BlockPtr, sign: int = 1) -> None:
        """Count `bp` (`sign` -1: take it off)."""
        if bp.is_hole or bp.embedded:
            return
        self.used += sign * sum(d.asize for d in bp.dvas)
        self.compressed += sign * bp.psize
        self.uncompressed += sign * (bp.lsize if bp.type in DATA_TYPES else bp.psize)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.used - other.used, self.compressed - other.compressed,
                     self.uncompressed - other.uncompressed)  # fmt: skip


@dataclass
class Owner:
    """The object set a sync is writing, as its space accounting sees it.

    A replaced block born after the dataset's latest snapshot (`prev_snap_txg`) is freed;
    an older one still belongs to the snapshot and goes to `dead` (for the dataset's
    deadlist) instead. The MOS has no snapshots: prev_snap_txg 0 frees everything.
    """

    prev_snap_txg: int = 0
    born: Usage = field(default_factory=Usage)
    freed: Usage = field(default_factory=Usage)
    dead: list[BlockPtr] = field(default_factory=list)


def _dsize(bp: BlockPtr) -> int:
    return 0 if bp.is_hole or bp.embedded else sum(d.asize for d in bp.dvas)


class SyncContext:
    """One sync pass's allocations and writes (nothing reaches a device here).

    Args:
        txg: the txg being synced.
        metaslabs: every top-level vdev's metaslabs, by vdev id (changed in place).
        ashifts: the ashift of each top-level vdev blocks may go to, by id.
    """

    def __init__(self, txg: int, metaslabs: dict[int, list[Metaslab]], ashifts: dict[int, int]):
        self.txg = txg
        self.metaslabs = metaslabs
        self.ashifts = ashifts
        # Only metaslabs that have a space map take allocations: creating one is later work.
        self._eligible = [ms for v in ashifts for ms in metaslabs[v] if ms.sm_object]
        self.sector = 1 << max(ashifts.values())  # mixed ashifts: the largest fits all
        self.writes: list[tuple[DVA, bytes]] = []
        self.owner = Owner()  # the caller sets the object set being written
        # Every block written, by (asize, copies), in order: what a later pass may rewrite.
        self.allocations: dict[tuple[int, int], list[BlockPtr]] = {}
        self._reserved: dict[tuple[int, int], list[BlockPtr]] = {}
        # A list: frees are only gathered there, for the pool's deferred-free list.
        self.deferred: list[BlockPtr] | None = None
        self.active: frozenset[tuple[int, int]] = frozenset()  # metaslabs to allocate from first

    def rewrite(self, allocations: dict[tuple[int, int], list[BlockPtr]]) -> None:
        """Let this pass put its blocks where an earlier pass of the txg put its own
        (`allocations` of that pass, free in this pass's metaslabs): each request of a
        size and number of copies takes the next such place, and only the rest is
        allocated anew. Those places are reached by no synced uberblock, so overwriting
        them is safe (zio_write_compress's ZIO_FLAG_IO_REWRITE of blocks born in this
        txg); a pass asking for what the one before asked for then writes the same space
        map records, and the passes converge. See `release` for the places left over."""
        self._reserved = {key: list(bps) for key, bps in allocations.items()}
        for bps in allocations.values():
            for bp in bps:
                for dva in bp.dvas:
                    self._metaslab(dva).allocatable.remove(dva.offset, dva.asize)

    def release(self) -> None:
        """Settle the places `rewrite` reserved and no request took: with a deferred-free
        list they stay allocated and go on it (freed next txg, as a late pass frees a
        block of its txg upstream), so a pass never takes back what the one before
        allocated and the space maps only grow from pass to pass; without one, they are
        free again."""
        for key, bps in self._reserved.items():
            for bp in bps:
                for dva in bp.dvas:
                    ms = self._metaslab(dva)
                    if self.deferred is not None:
                        ms.claim(dva.offset, dva.asize)
                    else:
                        ms.allocatable.add(dva.offset, dva.asize)
                if self.deferred is not None:
                    self.deferred.append(bp)
                    self.allocations.setdefault(key, []).append(bp)
        self._reserved = {}

    def _metaslab(self, dva: DVA) -> Metaslab:
        metaslabs = self.metaslabs[dva.vdev]
        return metaslabs[dva.offset >> _ms_shift(metaslabs)]

    def _alloc(self, asize: int, copies: int) -> list[DVA]:
        """`copies` DVAs of `asize` bytes, a place reserved for that size and number of
        copies (`rewrite`) first, else new ones (`_fresh`)."""
        reserved = self._reserved.get((asize, copies))
        if not reserved:
            return self._fresh(asize, copies)
        dvas = list(reserved.pop(0).dvas)
        for dva in dvas:
            self._metaslab(dva).claim(dva.offset, dva.asize)
        return dvas

    def _fresh(self, asize: int, copies: int) -> list[DVA]:
        """`copies` new DVAs of `asize` bytes (plain and mirror vdevs: no parity), each
        in a metaslab of its own where there are enough, so that ditto copies survive
        damage to one region."""
        dvas: list[DVA] = []
        for _ in range(copies):
            taken = {(d.vdev, d.offset >> _ms_shift(self.metaslabs[d.vdev])) for d in dvas}
            spare = [ms for ms in self._eligible if (ms.vdev, ms.id) not in taken]
            dvas.append(metaslab_alloc(spare or self._eligible, asize, self.active))
        return dvas

    def write(self, data: bytes, props: WriteProps, copies: int, fill: int) -> BlockPtr:
        """The pointer to `data` written as `props` say, in `copies` copies."""
        prepared = zio_write_prepare(data, props, self.txg)
        if prepared.physical == b"":
            return prepared.bp  # a hole or an embedded block: nothing to allocate
        asize = -(-len(prepared.physical) // self.sector) * self.sector
        dvas = self._alloc(asize, copies)
        self.writes += [(dva, prepared.physical) for dva in dvas]
        bp = zio_write_finish(prepared, dvas, fill)
        self.allocations.setdefault((asize, copies), []).append(bp)
        self.owner.born.add(bp)
        return bp

    def free(self, bp: BlockPtr) -> None:
        """Let go of the block `bp` points to (born before this txg): freed, or kept for
        the owner's latest snapshot."""
        if bp.is_hole or bp.embedded:
            return
        if bp.birth_txg <= self.owner.prev_snap_txg:
            self.owner.dead.append(bp)
            return
        if any(d.gang for d in bp.dvas):
            raise FSError(errno.EOPNOTSUPP, "freeing gang blocks is not written yet")
        if self.deferred is not None:
            self.deferred.append(bp)
        else:
            for dva in bp.dvas:
                metaslab_free(self.metaslabs[dva.vdev], dva, _ms_shift(self.metaslabs[dva.vdev]))
        self.owner.freed.add(bp)


def _ms_shift(metaslabs: Sequence[Metaslab]) -> int:
    return metaslabs[0].size.bit_length() - 1


def _dnode_fill(block: bytes, byteorder: str) -> int:
    """The allocated dnodes of a dnode block (its pointer's fill)."""
    count, at = 0, 0
    while at < len(block):
        if block[at] != DMU_OT_NONE:
            count += 1
            at += (block[at + 12] + 1) << DNODE_SHIFT  # dn_extra_slots
        else:
            at += DNODE_MIN_SIZE
    return count


@dataclass
class _NewIndirect:
    """An indirect block added above a tree's old top (its first children: the dnode's
    old block pointers); written by the sync like a dirty one, nothing of it to free."""

    children: list[BlockPtr | _NewIndirect]


Child = BlockPtr | _NewIndirect


async def cow_object(
    cache: BlockCache,
    dn: DnodePhys,
    blocks: dict[int, bytes | None],
    ctx: SyncContext,
    policy: WritePolicy,
) -> DnodePhys:
    """`dn` with its level-0 `blocks` (blkid -> bytes, or None to free) written anew, the
    tree grown by as many levels as the highest blkid needs, the indirect blocks above the
    dirty ones rewritten, the old ones freed, and dn_used and dn_maxblkid updated (the
    caller lowers dn_maxblkid in `dn` when it frees a file's tail)."""
    order = dn.byteorder
    epbs = dn.dn_indblkshift - 7
    nlevels = dn.dn_nlevels
    top: list[Child] = list(dn.dn_blkptr)
    while max(blocks) >> (epbs * (nlevels - 1)) >= dn.dn_nblkptr:
        top = [_NewIndirect(top), *[ZERO_BP] * (dn.dn_nblkptr - 1)]
        nlevels += 1
    used = 0

    async def rewrite(level: int, old: Child, dirty: dict[int, bytes | None]) -> BlockPtr:
        nonlocal used
        if level == 0:
            assert isinstance(old, BlockPtr)  # a new indirect block is never at level 0
            (data,) = dirty.values()
            if data is None:
                new = ZERO_BP
            else:
                fill = _dnode_fill(data, order) if dn.dn_type == DMU_OT_DNODE else 1
                props, copies = policy.props(dn, dn.dn_type, level, ctx.sector)
                new = ctx.write(data, props, copies, fill)
        else:
            children = await _children(cache, old, level, 1 << epbs, order)
            groups = _group(dirty, epbs * (level - 1), (1 << epbs) - 1, children)
            for i, group in sorted(groups.items()):
                children[i] = await rewrite(level - 1, children[i], group)
            if all(isinstance(c, BlockPtr) and c.is_hole for c in children):
                new = ZERO_BP  # every child freed: the indirect block goes too
            else:
                ptrs = [c for c in children if isinstance(c, BlockPtr)]
                assert len(ptrs) == len(children)  # a new indirect child is always rewritten
                fill = sum(c.fill for c in ptrs if not c.is_hole)
                props, copies = policy.props(dn, dn.dn_type, level, ctx.sector)
                data = b"".join(encode_blkptr(c, order) for c in ptrs)
                new = ctx.write(data, props, copies, fill)
        if isinstance(old, BlockPtr):
            ctx.free(old)
            used -= _dsize(old)
        used += _dsize(new)
        return new

    for i, group in sorted(_group(blocks, epbs * (nlevels - 1), -1, top).items()):
        top[i] = await rewrite(nlevels - 1, top[i], group)
    if not dn.dn_flags & DNODE_FLAG_USED_BYTES:
        used >>= 9
    written = [blkid for blkid, data in blocks.items() if data is not None]
    return dn._replace(dn_blkptr=tuple(top), dn_nlevels=nlevels, dn_used=dn.dn_used + used,
                       dn_maxblkid=max([dn.dn_maxblkid, *written]))  # fmt: skip


async def _children(
    cache: BlockCache, old: Child, level: int, count: int, order: str
) -> list[Child]:
    """The `count` child pointers of the indirect block `old` at `level` (holes for a
    hole, the old top pointers and holes for a new indirect block)."""
    if isinstance(old, _NewIndirect):
        return old.children + [ZERO_BP] * (count - len(old.children))
    if old.is_hole:
        return [ZERO_BP] * count
    if old.level != level:
        raise FSError(errno.EIO, f"indirect block at level {old.level}, expected {level}")
    return list(parse_blkptrs(await cache.read(old), old.byteorder))


def _group(
    dirty: dict[int, bytes | None], shift: int, mask: int, children: Sequence[Child]
) -> dict[int, dict[int, bytes | None]]:
    """`dirty` by the child each blkid lies under (`blkid >> shift & mask`; mask -1: no
    mask), and the first child too when it is a new indirect block, which must be written
    though nothing under it changed."""
    groups: dict[int, dict[int, bytes | None]] = {}
    if isinstance(children[0], _NewIndirect):
        groups[0] = {}
    for blkid, data in dirty.items():
        groups.setdefault((blkid >> shift) & mask, {})[blkid] = data
    return groups


# Whose space an object's dnode and blocks are, (user, group), or None (used_cbs upstream:
# the ZPL reads its znode).
OwnerIds = Callable[[DnodePhys], "tuple[int, int] | None"]
_USED_OBJECTS = (1024, 1536)  # os_userused_dnode, os_groupused_dnode in objset_phys_t
OBJSET_FLAG_USERACCOUNTING_COMPLETE = 1 << 0


async def _userquota_updates(
    cache: BlockCache, phys: bytes, byteorder: str, deltas: tuple[Counter[int], Counter[int]],
    ctx: SyncContext, policy: WritePolicy,
) -> bytes:  # fmt: skip
    """`phys` with the user and group usage objects moved by `deltas` (bytes by user id,
    by group id): micro ZAPs named by the hex id, entries that reach 0 removed
    (dmu_objset_do_userquota_updates, zap_increment_int)."""
    for at, delta in zip(_USED_OBJECTS, deltas, strict=True):
        dn = parse_dnode(phys[at : at + DNODE_MIN_SIZE], byteorder)
        if dn.dn_type == DMU_OT_NONE or not any(delta.values()):
            continue
        found = await read_block(cache, dn, 0)
        if found is None or zap_block_type(*found) != ZBT_MICRO:
            raise FSError(errno.EOPNOTSUPP, "a fat user or group usage ZAP is not written yet")
        block, order = found
        values = {e.name: e.int() for e in parse_mzap(block, order)}
        for ident, change in sorted(delta.items()):
            name = b"%x" % ident
            value = values.get(name, 0) + change
            block = mzap_set(block, order, name, value) if value else mzap_remove(block, name)
        dn = await cow_object(cache, dn, {0: block}, ctx, policy)
        phys = phys[:at] + encode_dnode(dn) + phys[at + DNODE_MIN_SIZE :]
    return phys


def _charge_ids(deltas: tuple[Counter[int], Counter[int]], ids: tuple[int, int] | None,
                dn: DnodePhys, sign: int) -> None:  # fmt: skip
    if ids is not None:
        amount = sign * (DNODE_MIN_SIZE + dn.used_bytes)
        deltas[0][ids[0]] += amount
        deltas[1][ids[1]] += amount


async def _old_dnode(objset: ObjectSet, obj: int) -> DnodePhys | None:
    """Object `obj`'s dnode as the last synced txg left it; None when it was free."""
    try:
        return await objset.dnode(obj)
    except FSError as e:
        if e.errno != errno.ENOENT:
            raise
        return None


async def _free_tree(cache: BlockCache, bps: Sequence[BlockPtr], ctx: SyncContext) -> None:
    """Let go of every block under `bps` (a freed object's tree: dnode_sync_free)."""
    for bp in bps:
        if bp.is_hole or bp.embedded:
            continue
        if bp.level > 0:
            await _free_tree(cache, parse_blkptrs(await cache.read(bp), bp.byteorder), ctx)
        ctx.free(bp)


async def sync_objset(
    cache: BlockCache,
    root: BlockPtr,
    dirty: DirtyObjset,
    ctx: SyncContext,
    policy: WritePolicy,
    owner_ids: OwnerIds | None = None,
) -> BlockPtr:
    """Write the object set under `root` with `dirty` applied; its new root pointer.

    With `owner_ids` (a ZPL object set), a changed object's dnode size and dn_used move
    from its old owners' usage to its new ones' (when the object set keeps that usage).
    A dirty dnode may be new (a slot free in the last txg, in a dnode block past the meta
    dnode's end too) or free (DMU_OT_NONE: the object's whole tree is let go).
    """
    raw = await cache.read(root)
    objset = ObjectSet(cache, parse_objset(raw, root.byteorder))
    accounting = (
        owner_ids is not None
        and len(raw) >= _USED_OBJECTS[1] + DNODE_MIN_SIZE
        and objset.phys.os_flags & OBJSET_FLAG_USERACCOUNTING_COMPLETE
    )
    deltas: tuple[Counter[int], Counter[int]] = (Counter(), Counter())
    meta = objset.meta
    bsz = meta.datablksz
    dnode_blocks: dict[int, bytearray] = {}
    for obj in sorted(set(dirty.blocks) | set(dirty.dnodes)):
        dn = await dirty.dnode(objset, obj)
        old = await _old_dnode(objset, obj)
        if dn.dn_type == DMU_OT_NONE:
            if old is not None:
                await _free_tree(cache, old.dn_blkptr, ctx)
        elif dirty.blocks.get(obj):
            dn = await cow_object(cache, dn, dirty.blocks[obj], ctx, policy)
        if accounting and owner_ids is not None:
            if old is not None:
                _charge_ids(deltas, owner_ids(old), old, -1)
            _charge_ids(deltas, owner_ids(dn), dn, 1)
        blkid, at = divmod(obj << DNODE_SHIFT, bsz)
        if blkid not in dnode_blocks:
            block = await read_block(cache, meta, blkid)
            if block is not None and block[1] != dn.byteorder:
                raise FSError(errno.EIO, f"dnode block {blkid} of another byte order")
            # No block: past the meta dnode's end, or a hole (every dnode free).
            dnode_blocks[blkid] = bytearray(block[0] if block is not None else bytes(bsz))
        encoded = encode_dnode(dn)
        dnode_blocks[blkid][at : at + len(encoded)] = encoded
    new_meta = await cow_object(cache, meta, {k: bytes(v) for k, v in dnode_blocks.items()},
                                ctx, policy)  # fmt: skip
    phys = encode_dnode(new_meta) + raw[DNODE_MIN_SIZE:]
    if accounting:
        phys = await _userquota_updates(cache, phys, root.byteorder, deltas, ctx, policy)
    fill = sum(bp.fill for bp in new_meta.dn_blkptr if not bp.is_hole)
    props, copies = policy.props(meta, DMU_OT_OBJSET, 0, ctx.sector)
    new_root = ctx.write(phys, props, copies, fill)
    ctx.free(root)
    return new_root


async def append_to_object(
    cache: BlockCache, objset: ObjectSet, dirty: DirtyObjset, obj: int, at: int, data: bytes
) -> DnodePhys:
    """Put `data` at byte `at` of object `obj` in `dirty` (the log objects: space maps,
    bplists), over what its blocks hold before `at`; the dnode as it is in `dirty` so far
    (the caller updates its bonus)."""
    dn = await dirty.dnode(objset, obj)
    bsz = dn.datablksz
    first, skip = divmod(at, bsz)
    pending = dirty.blocks.get(obj, {}).get(first)
    old = (pending, dn.byteorder) if pending is not None else None
    if old is None and skip:
        old = await read_block(cache, dn, first)
    if old is not None and old[1] != dn.byteorder:
        raise FSError(errno.EOPNOTSUPP, f"object {obj}: last block in the other byte order")
    joined = (old[0][:skip] if old else bytes(skip)) + data
    blocks = dirty.blocks.setdefault(obj, {})
    for i in range(0, len(joined), bsz):
        blocks[first + i // bsz] = joined[i : i + bsz].ljust(bsz, b"\0")
    return dn
