"""The DSL: the pool's tree of datasets, snapshots and clones, as recorded in the MOS.

The MOS object directory (object 1, a ZAP) names the root DSL directory ("root_dataset").
A DSL directory (bonus `dsl_dir_phys_t`) is one node of the dataset namespace: its head
dataset, its parent, the ZAP of child directories (names starting with "$" are internal:
$MOS, $FREE, $ORIGIN), its properties ZAP and, for a clone, the origin snapshot. A
dataset (bonus `dsl_dataset_phys_t`) holds `ds_bp`, the block pointer of its object set;
a head dataset names its snapshots in `ds_snapnames_zapobj`. Snapshots and clones are
datasets like any other: reading one is reading the object set under its `ds_bp`.

An encrypted dataset's DSL directory is a ZAP with a "com.datto:crypto_key_obj" entry
(the native encryption feature); its object set cannot be read without the key.

dsl_dir_phys_t (offsets in bytes): 0 dd_creation_time, 8 dd_head_dataset_obj,
16 dd_parent_obj, 24 dd_origin_obj, 32 dd_child_dir_zapobj, 40 dd_used_bytes,
48 dd_compressed_bytes, 56 dd_uncompressed_bytes, 64 dd_quota, 72 dd_reserved,
80 dd_props_zapobj, 88 dd_deleg_zapobj, 96 dd_flags, 104 dd_used_breakdown[5], 144 dd_clones.

dsl_dataset_phys_t: 0 ds_dir_obj, 8 ds_prev_snap_obj, 16 ds_prev_snap_txg,
24 ds_next_snap_obj, 32 ds_snapnames_zapobj, 40 ds_num_children, 48 ds_creation_time,
56 ds_creation_txg, 64 ds_deadlist_obj, 72 ds_referenced_bytes, 80 ds_compressed_bytes,
88 ds_uncompressed_bytes, 96 ds_unique_bytes, 104 ds_fsid_guid, 112 ds_guid,
120 ds_flags, 128 ds_bp (blkptr_t), 256 ds_next_clones_obj, 264 ds_props_obj, 272 ds_userrefs_obj.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field

from construct import Bytes, Int64ub, Int64ul, Struct

from uvfs import FSError

from .blkptr import BLKPTR_SIZE, BlockPtr, encode_blkptr, parse_blkptr
from .dmu import ObjectSet
from .dnode import DMU_OT_DSL_DIR, DnodePhys
from .zap import Zap, ZapEntry

DD_FIELD_CRYPTO_KEY_OBJ = b"com.datto:crypto_key_obj"
MAX_DATASETS = 100_000  # bounds the walk over a hostile MOS
MAX_DEPTH = 64


def _dir_struct(u64: type) -> Struct:
    return Struct(
        "dd_creation_time" / u64,  # 0
        "dd_head_dataset_obj" / u64,  # 8
        "dd_parent_obj" / u64,  # 16
        "dd_origin_obj" / u64,  # 24
        "dd_child_dir_zapobj" / u64,  # 32
        "dd_used_bytes" / u64,  # 40
        "dd_compressed_bytes" / u64,  # 48
        "dd_uncompressed_bytes" / u64,  # 56
        "dd_quota" / u64,  # 64
        "dd_reserved" / u64,  # 72
        "dd_props_zapobj" / u64,  # 80
    ).compile()


def _dataset_struct(u64: type) -> Struct:
    return Struct(
        "ds_dir_obj" / u64,  # 0
        "ds_prev_snap_obj" / u64,  # 8
        "ds_prev_snap_txg" / u64,  # 16
        "ds_next_snap_obj" / u64,  # 24
        "ds_snapnames_zapobj" / u64,  # 32
        "ds_num_children" / u64,  # 40
        "ds_creation_time" / u64,  # 48
        "ds_creation_txg" / u64,  # 56
        "ds_deadlist_obj" / u64,  # 64
        "ds_referenced_bytes" / u64,  # 72
        "ds_compressed_bytes" / u64,  # 80
        "ds_uncompressed_bytes" / u64,  # 88
        "ds_unique_bytes" / u64,  # 96
        "ds_fsid_guid" / u64,  # 104
        "ds_guid" / u64,  # 112
        "ds_flags" / u64,  # 120
        "ds_bp" / Bytes(BLKPTR_SIZE),  # 128
    ).compile()


_DIR = {"<": _dir_struct(Int64ul), ">": _dir_struct(Int64ub)}
_DATASET = {"<": _dataset_struct(Int64ul), ">": _dataset_struct(Int64ub)}
_DIR_SIZE = 88
_DATASET_SIZE = 256


@dataclass(frozen=True, slots=True)
class DslDirPhys:
    """The dsl_dir_phys_t fields a reader needs."""

    dd_head_dataset_obj: int
    dd_parent_obj: int
    dd_origin_obj: int
    dd_child_dir_zapobj: int
    dd_used_bytes: int
    dd_quota: int
    dd_props_zapobj: int


@dataclass(frozen=True, slots=True)
class DslDatasetPhys:
    """The dsl_dataset_phys_t fields a reader needs."""

    ds_dir_obj: int
    ds_prev_snap_obj: int
    ds_snapnames_zapobj: int
    ds_creation_time: int
    ds_creation_txg: int
    ds_referenced_bytes: int
    ds_guid: int
    ds_flags: int
    ds_bp: BlockPtr
    ds_prev_snap_txg: int = 0
    ds_deadlist_obj: int = 0
    ds_next_snap_obj: int = 0


def parse_dsl_dir(bonus: bytes, byteorder: str) -> DslDirPhys:
    """Decode a dsl_dir_phys_t bonus buffer."""
    if len(bonus) < _DIR_SIZE:
        raise FSError(errno.EIO, "dsl_dir: bonus too short")
    d = _DIR[byteorder].parse(bonus)
    return DslDirPhys(
        d.dd_head_dataset_obj,
        d.dd_parent_obj,
        d.dd_origin_obj,
        d.dd_child_dir_zapobj,
        d.dd_used_bytes,
        d.dd_quota,
        d.dd_props_zapobj,
    )


DD_FLAG_USED_BREAKDOWN = 1 << 0
DD_USED_HEAD, DD_USED_SNAP, DD_USED_CHILD = 0, 1, 2
_DD_USED_BYTES, _DD_FLAGS, _DD_USED_BREAKDOWN = 40, 96, 104


Usage3 = tuple[int, int, int]  # allocated, physical, uncompressed bytes


def _add_u64(out: bytearray, byteorder: str, at: int, delta: int) -> None:
    """Add `delta` to the u64 at `at`, wrapping as the C counters do."""
    fmt = byteorder + "Q"
    struct.pack_into(fmt, out, at, (struct.unpack_from(fmt, out, at)[0] + delta) & (2**64 - 1))


def dsl_dir_diduse_space(
    bonus: bytes, byteorder: str, kind: int, used: int, compressed: int, uncompressed: int
) -> bytes:
    """The dsl_dir_phys_t `bonus` with `used` (allocated), `compressed` (psize) and
    `uncompressed` bytes added to its totals and, when it keeps a breakdown, to
    dd_used_breakdown[`kind`] (DD_USED_HEAD for its own dataset or the MOS,
    DD_USED_CHILD for a child directory's change)."""
    out = bytearray(bonus)
    for i, delta in enumerate((used, compressed, uncompressed)):
        _add_u64(out, byteorder, _DD_USED_BYTES + 8 * i, delta)
    (flags,) = struct.unpack_from(byteorder + "Q", out, _DD_FLAGS)
    if flags & DD_FLAG_USED_BREAKDOWN:
        _add_u64(out, byteorder, _DD_USED_BREAKDOWN + 8 * kind, used)
    return bytes(out)


def dsl_dir_transfer_space(bonus: bytes, byteorder: str, used: int, src: int, dst: int) -> bytes:
    """The dsl_dir_phys_t `bonus` with `used` bytes moved from dd_used_breakdown[`src`]
    to [`dst`] (a head's blocks that now only its snapshots hold); totals unchanged."""
    out = bytearray(bonus)
    (flags,) = struct.unpack_from(byteorder + "Q", out, _DD_FLAGS)
    if flags & DD_FLAG_USED_BREAKDOWN:
        _add_u64(out, byteorder, _DD_USED_BREAKDOWN + 8 * src, -used)
        _add_u64(out, byteorder, _DD_USED_BREAKDOWN + 8 * dst, used)
    return bytes(out)


_DS_REFERENCED_BYTES, _DS_UNIQUE_BYTES, _DS_BP = 72, 96, 128


def dsl_dataset_diduse_space(
    bonus: bytes, byteorder: str, referenced: Usage3, unique: int, ds_bp: BlockPtr | None = None
) -> bytes:
    """The dsl_dataset_phys_t `bonus` with `referenced` (used, compressed, uncompressed)
    added to ds_referenced_bytes, ds_compressed_bytes and ds_uncompressed_bytes, `unique`
    to ds_unique_bytes and, when given, `ds_bp` as its object set's new root."""
    out = bytearray(bonus)
    for i, delta in enumerate(referenced):
        _add_u64(out, byteorder, _DS_REFERENCED_BYTES + 8 * i, delta)
    _add_u64(out, byteorder, _DS_UNIQUE_BYTES, unique)
    if ds_bp is not None:
        out[_DS_BP : _DS_BP + BLKPTR_SIZE] = encode_blkptr(ds_bp, byteorder)
    return bytes(out)


def parse_dsl_dataset(bonus: bytes, byteorder: str) -> DslDatasetPhys:
    """Decode a dsl_dataset_phys_t bonus buffer."""
    if len(bonus) < _DATASET_SIZE:
        raise FSError(errno.EIO, "dsl_dataset: bonus too short")
    d = _DATASET[byteorder].parse(bonus)
    return DslDatasetPhys(
        d.ds_dir_obj,
        d.ds_prev_snap_obj,
        d.ds_snapnames_zapobj,
        d.ds_creation_time,
        d.ds_creation_txg,
        d.ds_referenced_bytes,
        d.ds_guid,
        d.ds_flags,
        parse_blkptr(d.ds_bp, byteorder),
        d.ds_prev_snap_txg,
        d.ds_deadlist_obj,
        d.ds_next_snap_obj,
    )


PropValue = int | bytes


def prop_value(entry: ZapEntry) -> PropValue:
    """A property as stored: a string (1-byte integers) or an integer."""
    return entry.string() if entry.intlen == 1 else entry.int()


@dataclass(slots=True)
class Dataset:
    """One filesystem, snapshot or clone of the pool, named as `zfs list` names it."""

    name: str  # "pool/a/b", or "pool/a@snap" for a snapshot
    ds_obj: int
    dir_obj: int
    phys: DslDatasetPhys
    dir: DslDirPhys
    parent: str | None  # the parent filesystem; for a snapshot, the filesystem it is of
    props: dict[bytes, PropValue] = field(default_factory=dict)  # set locally, not inherited
    encrypted: bool = False
    origin: str | None = None  # for a clone, the snapshot it was made from
    snapshots: list[str] = field(default_factory=list)

    @property
    def is_snapshot(self) -> bool:
        """Whether this is a snapshot (read-only by nature)."""
        return "@" in self.name


async def _dsl_dir(mos: ObjectSet, obj: int) -> tuple[DslDirPhys, DnodePhys]:
    dn = await mos.dnode(obj)
    return parse_dsl_dir(dn.dn_bonus, dn.byteorder), dn


async def _dsl_dataset(mos: ObjectSet, obj: int) -> DslDatasetPhys:
    dn = await mos.dnode(obj)
    return parse_dsl_dataset(dn.dn_bonus, dn.byteorder)


async def _is_encrypted(mos: ObjectSet, dn: DnodePhys) -> bool:
    if dn.dn_type == DMU_OT_DSL_DIR or dn.dn_blkptr[0].is_hole:
        return False  # a plain DSL dir has no ZAP, hence no crypto key object
    try:
        await (await Zap.open(mos, dn)).lookup(DD_FIELD_CRYPTO_KEY_OBJ)
    except FSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


async def _props(mos: ObjectSet, obj: int) -> dict[bytes, PropValue]:
    if obj == 0:
        return {}
    out: dict[bytes, PropValue] = {}
    for e in await (await Zap.open(mos, obj)).entries():
        if e.intlen in (1, 8) and e.value:
            out[e.name] = prop_value(e)
    return out


async def list_datasets(mos: ObjectSet, pool_name: str) -> list[Dataset]:
    """Every filesystem, snapshot and clone, parents before children, each filesystem
    followed by its snapshots (oldest first).

    Raises FSError(EIO) on a MOS that does not describe a dataset tree.
    """
    objdir = await Zap.open(mos, 1)
    root = (await objdir.lookup(b"root_dataset")).int()
    out: list[Dataset] = []
    by_obj: dict[int, str] = {}
    todo: list[tuple[int, str, str | None, int]] = [(root, pool_name, None, 0)]
    seen: set[int] = set()
    while todo:  # bounded: each DSL dir is visited once, at most MAX_DATASETS of them
        dir_obj, name, parent, depth = todo.pop()
        if dir_obj in seen or depth > MAX_DEPTH or len(out) >= MAX_DATASETS:
            raise FSError(errno.EIO, f"dsl: dataset tree loops or is too large at {name}")
        seen.add(dir_obj)
        dd, dn = await _dsl_dir(mos, dir_obj)
        encrypted = await _is_encrypted(mos, dn)
        head = Dataset(
            name,
            dd.dd_head_dataset_obj,
            dir_obj,
            await _dsl_dataset(mos, dd.dd_head_dataset_obj),
            dd,
            parent,
            await _props(mos, dd.dd_props_zapobj),
            encrypted,
        )
        out.append(head)
        by_obj[head.ds_obj] = name
        snaps = []
        if head.phys.ds_snapnames_zapobj:
            zap = await Zap.open(mos, head.phys.ds_snapnames_zapobj)
            for e in await zap.entries():
                obj = e.int()
                phys = await _dsl_dataset(mos, obj)
                snap_name = f"{name}@{e.name.decode(errors='surrogateescape')}"
                snaps.append(Dataset(snap_name, obj, dir_obj, phys, dd, name, {}, encrypted))
        snaps.sort(key=lambda s: s.phys.ds_creation_txg)
        head.snapshots = [s.name for s in snaps]
        for s in snaps:
            by_obj[s.ds_obj] = s.name
        out += snaps
        if dd.dd_child_dir_zapobj:
            children = await (await Zap.open(mos, dd.dd_child_dir_zapobj)).entries()
            for e in sorted(children, key=lambda e: e.name, reverse=True):
                if not e.name.startswith(b"$"):
                    child = f"{name}/{e.name.decode(errors='surrogateescape')}"
                    todo.append((e.int(), child, name, depth + 1))
    for ds in out:
        if not ds.is_snapshot and ds.dir.dd_origin_obj:
            ds.origin = by_obj.get(ds.dir.dd_origin_obj)
    return out
