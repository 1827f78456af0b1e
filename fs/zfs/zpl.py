"""The ZFS POSIX layer: a whole pool as one read-only file tree (the driver's FileSystem).

What is shown. The pool's root dataset sits at the mount's root. A child dataset appears
where the kernel's ZFS would mount it: at its `mountpoint` property (set or inherited) when
that lies inside the root dataset's mountpoint and its parent directory exists (placed
shortest mountpoint first, as `zfs mount -a` mounts), otherwise by name in its parent
dataset's root directory. Its root replaces the (usually empty) directory of that name, or
is added. Volumes and filesystems with canmount=off have no place. Every filesystem's root
has a hidden `.zfs` (absent from readdir, found by lookup, like snapdir=hidden) holding
`snapshot/<name>/`, the snapshot's root. An encrypted dataset (no key here) is an empty
directory whose lookups and listing fail with EACCES; a dataset whose object set cannot be
read (or of a ZPL version above 5) fails with EIO; the rest of the pool reads normally.
Like a read-only kernel import, the intent log is not replayed: what the last committed
txg holds is what is shown.

Inode numbers. `ino = index << 48 | object`: `index` numbers the datasets and snapshots in
the order `dsl.list_datasets` gives them (fixed at open, so stable for the mount), `object`
is the ZPL object number (below 2^48, DN_MAX_OBJECT). Hard links therefore share one inode
number. Objects 2^48 - 1 .. 2^48 - 3 are never allocated by ZFS and name this driver's own
nodes: a dataset's `.zfs`, its `.zfs/snapshot`, and the root of a dataset that cannot be
read. Inode number 1 would be object 1 of the root dataset, its master node, never a file.

Files. Directories are ZAPs whose values are `type << 60 | object`. Attributes come from
the old znode bonus (ZPL <= 4) or from SA attributes (bonus and spill); see znode.py.
Extended attributes come from SA xattrs (an nvlist in ZPL_DXATTR) and from the xattr
directory (one file per attribute); a stored name with no Linux namespace prefix is shown
as `user.<name>`, as the Linux kernel's ZFS does (zpl_xattr.c), and `user.x` is looked up
as `x` and then as `user.x`. An xattr directory that cannot be read is EIO for that file's
xattrs only.

Cold walks. A listing answers with every entry's attributes, so it first reads the dnode
blocks of all its entries several at a time (as zfs_readdir prefetches them), then the
first blocks of its subdirectories, which a walk (find, du) lists next.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from uvfs import LRU, Attr, ChargedLRU, DirEntry, FSError, MemoryBudget, StatFS

from .dmu import DMU_OST_ZFS, BlockCache, ObjectSet
from .dnode import DMU_OT_SA, DMU_OT_ZNODE, DnodePhys
from .dsl import Dataset, list_datasets
from .nvlist import NvlistError, unpack_nvlist
from .sa import SaRegistry, load_registry, parse_sa
from .spa import Pool
from .zap import LEAF_CACHE_BYTES, Zap
from .znode import Znode, linux_rdev, parse_znode_phys, znode_from_sa

ZPL_VERSION_MAX = 5  # SA-based files; no later version exists
OBJ_BITS = 48
OBJ_MASK = (1 << OBJ_BITS) - 1
OBJ_CTLDIR = OBJ_MASK  # <dataset root>/.zfs
OBJ_SNAPDIR = OBJ_MASK - 1  # <dataset root>/.zfs/snapshot
OBJ_SEALED = OBJ_MASK - 2  # the root of a dataset that cannot be read
ZFS_CANMOUNT_OFF = 0
ZFS_CTLDIR_NAME = b".zfs"
ZFS_SNAPDIR_NAME = b"snapshot"
LINUX_XATTR_PREFIXES = (b"user.", b"trusted.", b"security.", b"system.")
MAX_SYMLINK = 1 << 16
XATTR_SIZE_MAX = 1 << 16  # Linux's limit on one value
MAX_PATH_DEPTH = 256
ZNODE_CHARGE = 2048  # budget bytes per cached znode: it (~750) and the dnode it holds (~1450)
ZAP_ENTRY_CHARGE = 256  # budget bytes per parsed micro ZAP entry (measured: ~190)
MAX_CONFIG = 16 << 20
ZFS_DIRENT_TYPE_SHIFT = 60  # a directory entry's value: type << 60 | object (ZPL >= 2)
DT_DIR = 4
READ_STREAMS = 64  # files whose last read position is remembered, to spot sequential reads
READ_AHEAD_MIN = 1 << 20  # a sequential read has at least this much read ahead
YIELD_EVERY = 256  # directory entries between checkpoints while listing a big directory


@dataclass(slots=True)
class DatasetView:
    """One dataset or snapshot as this mount shows it (`describe` reports these too)."""

    index: int
    ds: Dataset
    objset: ObjectSet | None = None
    root_obj: int = 0
    registry: SaRegistry | None = None
    sa_attrs_obj: int = 0
    error: int = 0  # EACCES (encrypted) or EIO (unreadable): the root is sealed
    os_type: int = 0  # DMU_OST_ZFS for a filesystem; 0 until read
    reason: str = ""  # why the root is sealed, for the error message
    path: tuple[bytes, ...] = ()  # where its root appears, from the pool root
    snapshots: dict[bytes, int] = field(default_factory=dict)  # name -> index
    opened: bool = False


def _zap_charge(zap: Zap) -> int:
    """Budget bytes for an open ZAP (directory): block 0 and its parsed micro entries, or
    block 0 and the most its cache of parsed leaves may come to (twice their bytes)."""
    if zap.micro is not None:
        return len(zap.block0) + len(zap.micro) * ZAP_ENTRY_CHARGE
    return len(zap.block0) + 2 * LEAF_CACHE_BYTES


def _xattr_shown(stored: bytes) -> bytes:
    return stored if stored.startswith(LINUX_XATTR_PREFIXES) else b"user." + stored


def _xattr_stored(name: bytes) -> list[bytes]:
    """The names an xattr `name` (as Linux asks for it) may be stored under."""
    if name.startswith(b"user."):
        bare = name[5:]
        return [name] if bare.startswith(LINUX_XATTR_PREFIXES) else [bare, name]
    return [name]


class ZfsFileSystem:
    """A read-only view of one imported pool. Create with `ZfsFileSystem.from_pool`.

    (Not `open`: a method of that name would make it an `Open` filesystem to the broker.)
    """

    def __init__(self, pool: Pool, cache: BlockCache, mos: ObjectSet) -> None:
        self.pool = pool
        self.cache = cache
        self.mos = mos
        self.datasets: list[DatasetView] = []
        self.by_name: dict[str, DatasetView] = {}
        # (dataset index, directory object) -> {name: dataset index mounted there}
        self.mounts: dict[tuple[int, int], dict[bytes, int]] = {}
        self.root = 0
        self._znodes: ChargedLRU[int, tuple[Znode, DnodePhys]] = cache.memory.lru("zfs znodes")
        self._zaps: ChargedLRU[int, Zap] = cache.memory.lru("zfs zaps")
        self._read_ends: LRU[int, int] = LRU(READ_STREAMS)  # ino -> where its last read ended
        self._size: int | None = None

    @classmethod
    async def from_pool(cls, pool: Pool, memory: MemoryBudget | None = None) -> ZfsFileSystem:
        """Read the pool's dataset tree and place every filesystem, caching within `memory`
        (the mount's budget; default a budget of its own).

        Raises FSError when the MOS or the root dataset cannot be read.
        """
        cache = BlockCache(pool, memory)
        mos = await ObjectSet.open(cache, pool.uberblock.ub_rootbp)
        fs = cls(pool, cache, mos)
        try:
            salt = await (await Zap.open(mos, 1)).lookup(b"org.illumos:checksum_salt")
            pool.checksum_salt = salt.value
        except FSError as e:
            if e.errno != errno.ENOENT:
                raise
        for ds in await list_datasets(mos, pool.name):
            m = DatasetView(len(fs.datasets), ds)
            fs.datasets.append(m)
            fs.by_name[ds.name] = m
            if ds.is_snapshot and ds.parent in fs.by_name:
                snap = ds.name.split("@", 1)[1].encode(errors="surrogateescape")
                fs.by_name[ds.parent].snapshots[snap] = m.index
        root = fs.datasets[0]
        await fs._open_dataset(root)
        if root.error:
            raise FSError(root.error, root.reason)
        fs.root = fs._ino(root, root.root_obj)
        await fs._place_children()
        return fs

    # --- datasets ------------------------------------------------------------------------

    async def _open_dataset(self, m: DatasetView) -> None:
        """Open a dataset's object set and ZPL master node, or mark it sealed."""
        if m.opened:
            return
        m.opened = True
        try:
            # The objset header is only authenticated, not encrypted: its type reads.
            objset = await ObjectSet.open(self.cache, m.ds.phys.ds_bp)
            m.os_type = objset.phys.os_type
            if m.ds.encrypted:
                m.error = errno.EACCES
                m.reason = f"{m.ds.name} is encrypted (no key here)"
                return
            if m.os_type != DMU_OST_ZFS:
                raise FSError(errno.EIO, f"{m.ds.name} is not a filesystem")
            master = await Zap.open(objset, 1)
            if (await master.lookup(b"VERSION")).int() > ZPL_VERSION_MAX:
                raise FSError(errno.EIO, f"{m.ds.name}: ZPL version newer than {ZPL_VERSION_MAX}")
            m.root_obj = (await master.lookup(b"ROOT")).int()
            try:
                m.sa_attrs_obj = (await master.lookup(b"SA_ATTRS")).int()
            except FSError as e:
                if e.errno != errno.ENOENT:
                    raise
            if not 0 < m.root_obj < OBJ_SEALED:
                raise FSError(errno.EIO, f"{m.ds.name}: root object {m.root_obj}")
            m.objset = objset
        except FSError as e:
            m.error = errno.EIO
            m.reason = f"{m.ds.name} cannot be read: {e}"

    def _mountpoint(self, m: DatasetView) -> bytes:
        """The dataset's effective mountpoint property (inherited when not set)."""
        ds = m.ds
        depth = 0
        suffix: list[str] = []
        while depth < MAX_PATH_DEPTH:  # bounded: names nest at most MAX_PATH_DEPTH deep
            mp = ds.props.get(b"mountpoint")
            if isinstance(mp, bytes):
                break
            if ds.parent is None or ds.parent not in self.by_name:
                mp = b"/" + ds.name.encode(errors="surrogateescape")
                suffix = []
                break
            suffix.insert(0, ds.name.rsplit("/", 1)[1])
            ds = self.by_name[ds.parent].ds
            depth += 1
        else:
            return b"none"
        if mp in (b"none", b"legacy"):
            return mp
        tail = "/".join(suffix).encode(errors="surrogateescape")
        return (mp.rstrip(b"/") + b"/" + tail) if tail else mp

    async def _place_children(self) -> None:
        """Attach every child filesystem to a directory of the dataset it appears in.

        Like `zfs mount -a`, mountpoints inside the root's tree are taken shortest first,
        so a filesystem mounted inside another one's tree lands in that one. The rest go
        by name into their parent's root, parents first.
        """
        root = self.datasets[0]
        base = self._mountpoint(root)
        placed: list[DatasetView] = [root]
        inside: list[tuple[tuple[bytes, ...], DatasetView]] = []
        by_name: list[DatasetView] = []
        for m in self.datasets[1:]:
            await self._open_dataset(m)
            if m.ds.is_snapshot or m.os_type not in (0, DMU_OST_ZFS):
                continue  # volumes have no place in the tree
            if m.ds.props.get(b"canmount") == ZFS_CANMOUNT_OFF:
                continue  # never mounted: its children still are, inside its parent's tree
            rel = self._relative(base, self._mountpoint(m))
            if rel:
                inside.append((rel, m))
            else:
                by_name.append(m)
        for rel, m in sorted(inside, key=lambda item: len(item[0])):
            where = await self._walk(placed, rel)
            if where is None:  # its directory is missing
                by_name.append(m)
            else:
                self._attach(m, rel, *where)
                placed.append(m)
        by_name.sort(key=lambda m: m.index)  # parents before children
        for m in by_name:
            parent = self.by_name[m.ds.parent or ""]
            if parent.index in {p.index for p in placed} and not parent.error:
                name = m.ds.name.rsplit("/", 1)[1].encode(errors="surrogateescape")
                self._attach(m, (*parent.path, name), parent, parent.root_obj)
                placed.append(m)

    def _attach(
        self, m: DatasetView, rel: tuple[bytes, ...], host: DatasetView, dir_obj: int
    ) -> None:
        m.path = rel
        self.mounts.setdefault((host.index, dir_obj), {})[rel[-1]] = m.index

    @staticmethod
    def _relative(base: bytes, mountpoint: bytes) -> tuple[bytes, ...]:
        if not mountpoint.startswith(b"/") or mountpoint in (b"none", b"legacy"):
            return ()
        prefix = base.rstrip(b"/") + b"/"
        if base not in (b"none", b"legacy") and mountpoint.startswith(prefix):
            return tuple(p for p in mountpoint[len(prefix) :].split(b"/") if p)
        return ()

    async def _walk(
        self, placed: list[DatasetView], rel: tuple[bytes, ...]
    ) -> tuple[DatasetView, int] | None:
        """The (dataset, directory) that holds the last component of `rel`, if it exists."""
        host = max(
            (p for p in placed if rel[: len(p.path)] == p.path and len(p.path) < len(rel)),
            key=lambda p: len(p.path),
        )
        if host.error:
            return None
        obj = host.root_obj
        for name in rel[len(host.path) : -1]:
            try:
                obj = await self._dir_lookup(host, obj, name)
                z, _ = await self._znode(host, obj)
            except FSError:
                return None
            if not stat.S_ISDIR(z.mode):
                return None
        return host, obj

    # --- inode numbers and objects -------------------------------------------------------

    @staticmethod
    def _ino(m: DatasetView, obj: int) -> int:
        return m.index << OBJ_BITS | obj

    async def _node(self, ino: int) -> tuple[DatasetView, int]:
        index, obj = ino >> OBJ_BITS, ino & OBJ_MASK
        if index >= len(self.datasets) or obj == 0:
            raise FSError(errno.ENOENT, f"no inode {ino}")
        m = self.datasets[index]
        await self._open_dataset(m)
        return m, obj

    async def _znode(self, m: DatasetView, obj: int) -> tuple[Znode, DnodePhys]:
        key = self._ino(m, obj)
        hit = self._znodes.get(key)
        if hit is not None:
            return hit
        if m.objset is None:
            raise FSError(m.error or errno.EIO)
        dn = await m.objset.dnode(obj)
        if dn.dn_bonustype == DMU_OT_ZNODE:
            z = parse_znode_phys(dn.dn_bonus, dn.byteorder)
        elif dn.dn_bonustype == DMU_OT_SA:
            z = znode_from_sa(*await self._sa_attrs(m, dn))
        else:
            raise FSError(errno.EIO, f"object {obj}: bonus type {dn.dn_bonustype} is no znode")
        self._znodes.put(key, (z, dn), ZNODE_CHARGE)
        return z, dn

    async def _sa_attrs(self, m: DatasetView, dn: DnodePhys) -> tuple[dict[str, bytes], str]:
        if m.registry is None:
            if not m.sa_attrs_obj or m.objset is None:
                raise FSError(errno.EIO, f"{m.ds.name}: SA file without SA registry")
            m.registry = await load_registry(m.objset, m.sa_attrs_obj)
        attrs, bo = parse_sa(dn.dn_bonus, m.registry)
        if dn.dn_spill is not None and not dn.dn_spill.is_hole:
            spill, _ = parse_sa(await self.cache.read(dn.dn_spill), m.registry)
            attrs = {**spill, **attrs}
        return attrs, bo

    async def _zap(self, m: DatasetView, obj: int) -> Zap:
        key = self._ino(m, obj)
        zap = self._zaps.get(key)
        if zap is None:
            assert m.objset is not None
            zap = await Zap.open(m.objset, obj)
            self._zaps.put(key, zap, _zap_charge(zap))
        return zap

    async def _dir_lookup(self, m: DatasetView, dir_obj: int, name: bytes) -> int:
        entry = await (await self._zap(m, dir_obj)).lookup(name)
        return entry.int() & OBJ_MASK

    def _synthetic(self, ino: int, mode: int, nlink: int, m: DatasetView) -> Attr:
        t = m.ds.phys.ds_creation_time * 1_000_000_000
        return Attr(ino, mode, nlink, 0, 0, 0, atime_ns=t, mtime_ns=t, ctime_ns=t)

    async def _attr(self, m: DatasetView, obj: int) -> Attr:
        ino = self._ino(m, obj)
        if obj == OBJ_CTLDIR:
            return self._synthetic(ino, stat.S_IFDIR | 0o555, 3, m)
        if obj == OBJ_SNAPDIR:
            return self._synthetic(ino, stat.S_IFDIR | 0o555, 2 + len(m.snapshots), m)
        if obj == OBJ_SEALED:
            return self._synthetic(ino, stat.S_IFDIR | 0o755, 2, m)
        z, dn = await self._znode(m, obj)
        mode = z.mode
        rdev = linux_rdev(z.rdev) if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 0
        return Attr(
            ino=ino,
            mode=mode,
            nlink=z.links,
            uid=z.uid & 0xFFFFFFFF,
            gid=z.gid & 0xFFFFFFFF,
            size=z.size,
            rdev=rdev,
            blocks=((dn.used_bytes + 256) >> 9) + 1,  # as dmu_object_size_from_db: + the dnode
            blksize=dn.datablksz,
            atime_ns=z.atime[0] * 1_000_000_000 + z.atime[1],
            mtime_ns=z.mtime[0] * 1_000_000_000 + z.mtime[1],
            ctime_ns=z.ctime[0] * 1_000_000_000 + z.ctime[1],
            generation=z.gen,
        )

    async def _root_attr(self, index: int) -> Attr:
        """The attributes of dataset `index`'s root, as seen from where it is attached."""
        m = self.datasets[index]
        await self._open_dataset(m)
        if m.error:
            return await self._attr(m, OBJ_SEALED)
        return await self._attr(m, m.root_obj)

    # --- operations ----------------------------------------------------------------------

    async def getattr(self, ino: int) -> Attr:
        """The attributes of node `ino`."""
        m, obj = await self._node(ino)
        if m.error and obj != OBJ_SEALED:
            raise FSError(m.error)
        return await self._attr(m, obj)

    async def lookup(self, parent: int, name: bytes) -> Attr:
        """The node called `name` in directory `parent`."""
        m, obj = await self._node(parent)
        if m.error:
            raise FSError(m.error, m.reason)
        if obj == OBJ_CTLDIR:
            if name != ZFS_SNAPDIR_NAME:
                raise FSError(errno.ENOENT)
            return await self._attr(m, OBJ_SNAPDIR)
        if obj == OBJ_SNAPDIR:
            snap = m.snapshots.get(name)
            if snap is None:
                raise FSError(errno.ENOENT)
            return await self._root_attr(snap)
        child = self.mounts.get((m.index, obj), {}).get(name)
        if child is not None:
            return await self._root_attr(child)
        if name == ZFS_CTLDIR_NAME and obj == m.root_obj and not m.ds.is_snapshot:
            return await self._attr(m, OBJ_CTLDIR)
        z, _ = await self._znode(m, obj)
        if not stat.S_ISDIR(z.mode):
            raise FSError(errno.ENOTDIR)
        return await self._attr(m, await self._dir_lookup(m, obj, name))

    async def readdir(self, ino: int) -> Sequence[DirEntry]:
        """All entries of directory `ino` (no "." or "..", no `.zfs`)."""
        m, obj = await self._node(ino)
        if m.error:
            raise FSError(m.error, m.reason)
        if obj == OBJ_CTLDIR:
            return [DirEntry(ZFS_SNAPDIR_NAME, await self._attr(m, OBJ_SNAPDIR))]
        if obj == OBJ_SNAPDIR:
            return [DirEntry(n, await self._root_attr(i)) for n, i in m.snapshots.items()]
        z, _ = await self._znode(m, obj)
        if not stat.S_ISDIR(z.mode):
            raise FSError(errno.ENOTDIR)
        mounted = self.mounts.get((m.index, obj), {})
        entries = await (await self._zap(m, obj)).entries()
        assert m.objset is not None  # _znode succeeded
        values = [int.from_bytes(e.value[:8], "big") for e in entries if e.intlen == 8]
        await m.objset.prefetch_dnodes(v & OBJ_MASK for v in values)
        # A walk lists the subdirectories next: their ZAPs are read now, several at once.
        await m.objset.prefetch_first_blocks(
            [v & OBJ_MASK for v in values if v >> ZFS_DIRENT_TYPE_SHIFT == DT_DIR]
        )
        out = []
        for i, e in enumerate(entries):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await trio.lowlevel.checkpoint()  # cached entries never yield: let others run
            if e.name not in mounted:
                out.append(DirEntry(e.name, await self._attr(m, e.int() & OBJ_MASK)))
        for name, index in mounted.items():
            out.append(DirEntry(name, await self._root_attr(index)))
        return out

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset` of a regular file."""
        m, obj = await self._node(ino)
        if m.error or obj >= OBJ_SEALED:
            raise FSError(m.error or errno.EISDIR)
        z, dn = await self._znode(m, obj)
        if stat.S_ISDIR(z.mode):
            raise FSError(errno.EISDIR)
        end = min(offset + size, z.size)
        if offset >= end:
            return b""
        # A read that starts where the last one of this file ended is sequential: the
        # blocks of the next request's worth are read ahead, in the background.
        sequential = self._read_ends.get(ino) == offset
        self._read_ends.put(ino, end)
        if m.objset is None:
            raise FSError(m.error or errno.EIO)
        ahead = min(max(size, READ_AHEAD_MIN), z.size - end) if sequential else 0
        return await m.objset.read(dn, offset, end - offset, ahead=ahead)

    async def readlink(self, ino: int) -> bytes:
        """The target of symbolic link `ino`."""
        m, obj = await self._node(ino)
        if m.error or obj >= OBJ_SEALED:
            raise FSError(m.error or errno.EINVAL)
        z, dn = await self._znode(m, obj)
        if not stat.S_ISLNK(z.mode):
            raise FSError(errno.EINVAL)
        if z.symlink is not None:
            return z.symlink
        if z.size > MAX_SYMLINK:
            raise FSError(errno.EIO, f"symlink of {z.size} bytes")
        return await read_object_range(m, dn, 0, z.size)

    async def statfs(self) -> StatFS:
        """Pool-wide space: the root dataset's use against the pool's size."""
        root = self.datasets[0]
        used = root.ds.dir.dd_used_bytes
        size = await self._pool_size()
        if root.ds.dir.dd_quota:
            size = min(size, root.ds.dir.dd_quota)
        avail = max(size - used, 0)
        bs = 1 << 9
        objects = sum(bp.fill for bp in root.objset.meta.dn_blkptr) if root.objset else 0
        cap = (1 << 64) - 1  # statfs counts are u64: damaged sizes and fills must not pass
        return StatFS(
            block_size=bs,
            blocks=min(max(size, used) // bs, cap),
            blocks_free=min(avail // bs, cap),
            blocks_avail=min(avail // bs, cap),
            files=min(objects + (avail >> 9), cap),
            files_free=min(avail >> 9, cap),
        )

    async def _pool_size(self) -> int:
        """The sum of the top-level vdevs' sizes, from the MOS copy of the pool config."""
        if self._size is None:
            try:
                obj = (await (await Zap.open(self.mos, 1)).lookup(b"config")).int()
                dn = await self.mos.dnode(obj)
                length = int.from_bytes(dn.dn_bonus[:8], "little" if dn.byteorder == "<" else "big")
                if length > MAX_CONFIG:
                    raise FSError(errno.EIO, f"pool config of {length} bytes")
                tree = unpack_nvlist(await self.mos.read(dn, 0, length)).get("vdev_tree")
            except (FSError, NvlistError):
                tree = None
            children = tree.get("children", []) if isinstance(tree, dict) else []
            self._size = sum(
                c["asize"]
                for c in children
                if isinstance(c, dict) and isinstance(c.get("asize"), int)
            )
        return self._size

    async def listxattr(self, ino: int) -> Sequence[bytes]:
        """The names of all extended attributes of `ino`."""
        m, obj = await self._node(ino)
        if m.error or obj >= OBJ_SEALED:
            return []
        z, _ = await self._znode(m, obj)
        names = [_xattr_shown(n) for n in self._sa_xattrs(z)]
        if z.xattr:
            try:
                entries = await (await self._zap(m, z.xattr)).entries()
            except FSError as e:
                raise FSError(errno.EIO, f"xattr directory {z.xattr}: {e}") from None
            names += [_xattr_shown(e.name) for e in entries]
        return names

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        """The value of extended attribute `name`; ENODATA when unset."""
        m, obj = await self._node(ino)
        if m.error or obj >= OBJ_SEALED:
            raise FSError(errno.ENODATA)
        z, _ = await self._znode(m, obj)
        candidates = _xattr_stored(name)
        sa = self._sa_xattrs(z)
        for stored in candidates:
            if stored in sa:
                return sa[stored]
        if not z.xattr:
            raise FSError(errno.ENODATA)
        try:
            xdir = await self._zap(m, z.xattr)
            for stored in candidates:
                try:
                    obj = (await xdir.lookup(stored)).int() & OBJ_MASK
                except FSError as e:
                    if e.errno == errno.ENOENT:
                        continue
                    raise
                xz, xdn = await self._znode(m, obj)
                if xz.size > XATTR_SIZE_MAX:
                    raise FSError(errno.EIO, f"xattr {stored!r} of {xz.size} bytes")
                return await read_object_range(m, xdn, 0, xz.size)
        except FSError as e:
            raise FSError(errno.EIO, f"xattr directory {z.xattr}: {e}") from None
        raise FSError(errno.ENODATA)

    @staticmethod
    def _sa_xattrs(z: Znode) -> dict[bytes, bytes]:
        if not z.dxattr:
            return {}
        try:
            nv = unpack_nvlist(z.dxattr)
        except NvlistError as e:
            raise FSError(errno.EIO, f"SA xattrs: {e}") from None
        return {
            k.encode(errors="surrogateescape"): v for k, v in nv.items() if isinstance(v, bytes)
        }


async def read_object_range(m: DatasetView, dn: DnodePhys, offset: int, size: int) -> bytes:
    """`size` bytes of an object of dataset `m`."""
    if m.objset is None:
        raise FSError(m.error or errno.EIO)
    return await m.objset.read(dn, offset, size)
