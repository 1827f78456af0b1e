"""ZPL namespace changes in one dataset (zfs_dir.c, zfs_znode.c, zfs_vnops.c): create,
mkdir, unlink, rmdir, rename and setattr, as a txg's changes to its object set
(`DirtyObjset`).

Everything here reads the object set as the last synced txg left it, overlaid with what
the open txg changed so far, and only writes into the `DirtyObjset`; objset_sync.py
turns that into blocks. Old-style znodes (ZPL <= 4) only. An operation is all or nothing:
one refused half-way leaves the txg as it was.

- A new object takes the first free dnode slot not touched in this txg (dmu_object_alloc;
  past the last dnode block, a new block, which the sync adds to the meta dnode). Its
  dnode is dnode_allocate's for the ZPL: one block pointer (the 264-byte znode bonus
  leaves room for one), 512-byte blocks, the parent's indirect block shift and dnode
  flags; a directory's block 0 is an empty micro ZAP with a fresh odd salt and the
  parent's normalization flags. The znode is zfs_mknode's: times now, zp_gen the txg,
  links 1 (a directory 2: its entry and "."), size 0 (a directory 2: "." and ".."),
  and the trivial ACL of its mode (acl.py).
- A directory entry's value is the object number with the file's type (IFTODT) in its top
  four bits (zfs_dirent); the directory's size counts its entries plus 2, and its links
  its subdirectories plus 2. A micro ZAP that is full grows by 512 bytes (zap_lockdir),
  up to 128 KiB; past that, or for a name of 50 bytes or more, it becomes a fat ZAP
  (mzap_upgrade: one leaf holding its entries). In a fat ZAP directory an entry goes
  into (or out of) the leaf its hash picks, and the header counts it; a leaf too full to
  take it splits (zap_expand_leaf) while the embedded pointer table has room for the
  longer prefix; growing the table, and normalized ZAPs, are not written (EOPNOTSUPP).
- Removing the last link frees the object (zfs_znode_delete): its dnode is zeroed and
  the sync lets go of its blocks (onto the deadlist where a snapshot holds them). Objects
  still open elsewhere (the unlinked set) are the FUSE side's concern, later.
"""

from __future__ import annotations

import errno
import random
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from uvfs import FSError
from uvfs_fs.zfs.acl import (
    ZFS_ACL_TRIVIAL,
    ZFS_NO_EXECS_DENIED,
    trivial_acl,
    trivial_acl_flags,
)
from uvfs_fs.zfs.blkptr import BLKPTR_SIZE
from uvfs_fs.zfs.dmu import ObjectSet, read_block
from uvfs_fs.zfs.dnode import (
    DMU_OT_DIRECTORY_CONTENTS,
    DMU_OT_NONE,
    DMU_OT_PLAIN_FILE_CONTENTS,
    DMU_OT_ZNODE,
    DNODE_FLAG_USED_BYTES,
    DNODE_MIN_SIZE,
    DNODE_SHIFT,
    DnodePhys,
    parse_dnode,
)
from uvfs_fs.zfs.objset_sync import DirtyObjset
from uvfs_fs.zfs.zap import (
    MZAP_NAME_LEN,
    ZAP_FLAG_UINT64_KEY,
    Zap,
    fzap_count_entries,
    fzap_leaf_add,
    fzap_leaf_remove,
    fzap_split_leaf,
    fzap_upgrade,
    mzap_create,
    mzap_remove,
    mzap_set,
)
from uvfs_fs.zfs.zio_write import ZERO_BP
from uvfs_fs.zfs.znode import ZNODE_PHYS_SIZE, Znode, encode_znode_phys, parse_znode_phys
from uvfs_fs.zfs.zpl import OBJ_MASK

MASTER_NODE_OBJ = 1  # "ROOT" -> the root directory
DNODE_FLAG_USERUSED_ACCOUNTED = 1 << 1
DN_OLD_MAX_BONUSLEN = DNODE_MIN_SIZE - 64 - BLKPTR_SIZE  # 320: bonus room with one pointer
SPA_MINBLOCKSIZE = 512
MZAP_MAX_BLKSZ = 128 * 1024
_ACL_AT = ZNODE_PHYS_SIZE - 88  # zp_acl


def _now() -> tuple[int, int]:
    now = time.time_ns()
    return now // 10**9, now % 10**9


# A node is named by its path from the dataset's root or by its object number; a directory
# entry by its path or by (directory object, name), as the FUSE side knows them.
Node = str | int
Entry = str | tuple[int, bytes]


def _split(path: str) -> tuple[str, bytes]:
    """(parent path, last name) of `path`."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise FSError(errno.EINVAL, f"{path!r}: no name")
    return "/".join(parts[:-1]), parts[-1].encode()


class ZplTxg:
    """One ZPL object set's namespace as the open txg has it.

    Args:
        objset: the object set as the last synced txg left it.
        dirty: the open txg's changes to it (changed in place).
        txg: the open txg (a new znode's zp_gen).
    """

    def __init__(self, objset: ObjectSet, dirty: DirtyObjset, txg: int) -> None:
        self.objset = objset
        self.dirty = dirty
        self.txg = txg

    # ---- objects and znodes ---------------------------------------------------------------

    async def dnode(self, obj: int) -> DnodePhys:
        """Object `obj`'s dnode; ENOENT when it is free."""
        dn = await self.dirty.dnode(self.objset, obj)
        if dn.dn_type == DMU_OT_NONE:
            raise FSError(errno.ENOENT, f"object {obj} is free")
        return dn

    async def znode(self, obj: int) -> tuple[DnodePhys, Znode]:
        dn = await self.dnode(obj)
        if dn.dn_bonustype != DMU_OT_ZNODE:
            raise FSError(errno.EOPNOTSUPP, f"object {obj}: SA attributes are not written yet")
        return dn, parse_znode_phys(dn.dn_bonus, dn.byteorder)

    def put_znode(self, obj: int, dn: DnodePhys, z: Znode) -> None:
        """Record `z` as object `obj`'s znode (its ACL and any inline tail kept)."""
        acl = dn.dn_bonus[_ACL_AT:ZNODE_PHYS_SIZE]
        bonus = encode_znode_phys(z, acl, dn.byteorder) + dn.dn_bonus[ZNODE_PHYS_SIZE:]
        self.dirty.dnodes[obj] = dn._replace(dn_bonus=bonus)

    async def _change(
        self, obj: int, size_delta: int, links_delta: int, now: tuple[int, int] | None = None
    ) -> None:
        """A directory's size and links moved by the deltas, its mtime and ctime `now`."""
        dn, z = await self.znode(obj)
        z = replace(z, size=z.size + size_delta, links=z.links + links_delta)
        self.put_znode(obj, dn, z if now is None else replace(z, mtime=now, ctime=now))

    async def _alloc(self) -> int:
        """The first dnode slot free on disk and untouched in this txg."""
        meta = self.objset.meta
        bsz = meta.datablksz
        for blkid in range((OBJ_MASK + 1) * DNODE_MIN_SIZE // bsz):
            # Past the meta dnode's end, no block: free slots, but those taken this txg.
            found = await read_block(self.objset.cache, meta, blkid)
            block = found[0] if found is not None else bytes(bsz)
            at = 0
            while at < bsz:
                obj = (blkid * bsz + at) >> DNODE_SHIFT
                if block[at] == DMU_OT_NONE:
                    if obj and obj not in self.dirty.dnodes and obj <= OBJ_MASK:
                        return obj
                    at += DNODE_MIN_SIZE
                else:
                    at += (block[at + 12] + 1) << DNODE_SHIFT  # dn_extra_slots
        raise FSError(errno.ENOSPC, "no free object number")

    # ---- directories ----------------------------------------------------------------------

    async def _zap(self, dir_obj: int) -> Zap:
        """Directory `dir_obj`'s ZAP as this txg has it."""
        dn = await self.dnode(dir_obj)
        return await Zap.open(self.objset, dn, self.dirty.blocks.get(dir_obj, {}))

    async def entries(self, dir_obj: int) -> dict[bytes, int]:
        """Directory `dir_obj`'s entries (name -> dirent value)."""
        return {e.name: e.int() for e in await (await self._zap(dir_obj)).entries()}

    async def lookup(self, dir_obj: int, name: bytes) -> int | None:
        """The dirent value of `name` in `dir_obj`, None when absent."""
        try:
            return (await (await self._zap(dir_obj)).lookup(name)).int()
        except FSError as e:
            if e.errno != errno.ENOENT:
                raise
            return None

    async def resolve(self, path: Node) -> int:
        """The object `path` names (relative to the dataset's root); ENOENT, ENOTDIR."""
        if isinstance(path, int):
            await self.dnode(path)
            return path
        root = await Zap.open(self.objset, MASTER_NODE_OBJ)
        obj = (await root.lookup(b"ROOT")).int()
        for part in filter(None, path.split("/")):
            if not stat.S_ISDIR((await self.znode(obj))[1].mode):
                raise FSError(errno.ENOTDIR, f"{path}: not a directory on the way")
            value = await self.lookup(obj, part.encode())
            if value is None:
                raise FSError(errno.ENOENT, f"{path}: no such file or directory")
            obj = value & OBJ_MASK
        return obj

    async def _parent(self, path: Entry) -> tuple[int, bytes]:
        parent, name = path if isinstance(path, tuple) else _split(path)
        dir_obj = await self.resolve(parent)
        if not stat.S_ISDIR((await self.znode(dir_obj))[1].mode):
            raise FSError(errno.ENOTDIR, f"{path}: parent is not a directory")
        return dir_obj, name

    async def _add_entry(self, dir_obj: int, name: bytes, value: int) -> None:
        """zap_add of a new name: mzap_addent, growing a full micro ZAP by a sector
        (zap_lockdir), or into its leaf of a fat ZAP."""
        zap = await self._zap(dir_obj)
        if zap.micro is None:
            await self._fat_edit(dir_obj, zap, name, value)
            return
        block, order = zap.block0, zap.byteorder
        try:
            if len(name) >= MZAP_NAME_LEN:
                raise ValueError("a long name")
            try:
                block = mzap_set(block, order, name, value)
            except ValueError:
                if len(block) + SPA_MINBLOCKSIZE > MZAP_MAX_BLKSZ:
                    raise
                block = mzap_set(block.ljust(len(block) + SPA_MINBLOCKSIZE, b"\0"), order,
                                 name, value)  # fmt: skip
                self.dirty.dnodes[dir_obj] = zap.dn._replace(dn_datablkszsec=len(block) >> 9)
            self.dirty.blocks.setdefault(dir_obj, {})[0] = block
        except ValueError:
            await self._upgrade(dir_obj, zap)
            await self._fat_edit(dir_obj, await self._zap(dir_obj), name, value)

    async def _upgrade(self, dir_obj: int, zap: Zap) -> None:
        """mzap_upgrade: the directory becomes a fat ZAP of 16 KiB blocks, its header in
        block 0 and its entries in leaf 1."""
        try:
            block0, leaf = fzap_upgrade(zap.block0, zap.byteorder)
        except ValueError:
            raise FSError(errno.EOPNOTSUPP, "a micro ZAP this big: not upgraded yet") from None
        self.dirty.blocks[dir_obj] = {0: block0, 1: leaf}
        self.dirty.dnodes[dir_obj] = zap.dn._replace(
            dn_datablkszsec=len(block0) >> 9, dn_maxblkid=1
        )

    async def _remove_entry(self, dir_obj: int, name: bytes) -> None:
        zap = await self._zap(dir_obj)
        if zap.micro is None:
            await self._fat_edit(dir_obj, zap, name, None)
        else:
            self.dirty.blocks.setdefault(dir_obj, {})[0] = mzap_remove(zap.block0, name)

    async def _fat_edit(self, dir_obj: int, zap: Zap, name: bytes, value: int | None) -> None:
        """Add `name` -> `value` to, or (None) remove `name` from, its leaf of the fat
        ZAP `zap`, splitting the leaf as often as it takes to make room
        (zap_expand_leaf), and count it in the header."""
        p = zap.phys
        assert p is not None
        if p.zap_normflags or p.zap_flags & ZAP_FLAG_UINT64_KEY:
            raise FSError(errno.EOPNOTSUPP, "normalized or integer-keyed fat ZAPs: not written")
        blocks = self.dirty.blocks.setdefault(dir_obj, {})
        while True:
            h, blkid = await zap.leaf_of(name)
            found = await zap.block(blkid)
            if found is None:
                raise FSError(errno.EIO, f"fat zap: leaf block {blkid} is a hole")
            leaf, order = found
            if value is None:
                changed = fzap_leaf_remove(leaf, order, h, name)
                if changed is None:
                    return
                break
            try:
                changed = fzap_leaf_add(leaf, order, h, name, value)
                break
            except ValueError:
                pass
            try:
                block0, kept, newblk, new = fzap_split_leaf(zap.block0, leaf, blkid, order)
            except ValueError:
                raise FSError(errno.EOPNOTSUPP, "growing a fat ZAP's pointer table is not "
                                                "written") from None  # fmt: skip
            blocks |= {0: block0, blkid: kept, newblk: new}
            dn = await self.dnode(dir_obj)
            self.dirty.dnodes[dir_obj] = dn._replace(dn_maxblkid=max(dn.dn_maxblkid, newblk))
            zap = await self._zap(dir_obj)
        blocks[blkid] = changed
        blocks[0] = fzap_count_entries(zap.block0, order, -1 if value is None else 1)

    # ---- operations -----------------------------------------------------------------------

    @contextmanager
    def _all_or_nothing(self) -> Iterator[None]:
        """An operation's changes stay only if it completes: a refused one (EEXIST, a
        fat ZAP needed half-way ...) leaves the txg as it found it."""
        saved = self.dirty.copy()
        try:
            yield
        except BaseException:
            self.dirty.blocks, self.dirty.dnodes = saved.blocks, saved.dnodes
            raise

    async def create(self, path: Entry, mode: int, uid: int = 0, gid: int = 0) -> int:
        """A new empty regular file (S_IFREG in `mode`) or directory (S_IFDIR) at
        `path`; its object number. EEXIST, ENOENT, ENOTDIR; EINVAL for other types."""
        with self._all_or_nothing():
            is_dir = stat.S_ISDIR(mode)
            if not (is_dir or stat.S_ISREG(mode)):
                raise FSError(errno.EINVAL, f"{path}: only files and directories are created")
            parent, name = await self._parent(path)
            if await self.lookup(parent, name) is not None:
                raise FSError(errno.EEXIST, f"{path}: exists")
            pdn = await self.dnode(parent)
            obj = await self._alloc()
            order, now = pdn.byteorder, _now()
            two = 2 if is_dir else 0  # a directory's "." and "..", in its size and links
            z = Znode(mode=mode, size=two, uid=uid, gid=gid, links=max(two, 1), parent=parent,
                      gen=self.txg, flags=trivial_acl_flags(mode, is_dir), rdev=0, xattr=0,
                      atime=now, mtime=now, ctime=now, crtime=now)  # fmt: skip
            bonus = encode_znode_phys(z, trivial_acl(mode, order), order)
            used_flags = DNODE_FLAG_USED_BYTES | DNODE_FLAG_USERUSED_ACCOUNTED
            free = parse_dnode(bytes(DNODE_MIN_SIZE), order)
            nblkptr = 1 + (DN_OLD_MAX_BONUSLEN - len(bonus)) // BLKPTR_SIZE
            self.dirty.dnodes[obj] = free._replace(
                dn_type=DMU_OT_DIRECTORY_CONTENTS if is_dir else DMU_OT_PLAIN_FILE_CONTENTS,
                dn_indblkshift=pdn.dn_indblkshift,
                dn_nlevels=1,
                dn_nblkptr=nblkptr,
                dn_bonustype=DMU_OT_ZNODE,
                dn_flags=pdn.dn_flags & used_flags,
                dn_datablkszsec=SPA_MINBLOCKSIZE >> 9,
                dn_bonuslen=len(bonus),
                dn_blkptr=(ZERO_BP,) * nblkptr,
                dn_bonus=bonus,
            )
            if is_dir:
                pzap = await self._zap(parent)
                normflags = pzap.phys.zap_normflags if pzap.phys else _mz_normflags(pzap)
                salt = random.getrandbits(64) | 1
                self.dirty.blocks[obj] = {0: mzap_create(order, salt, normflags)}
            await self._add_entry(parent, name, (stat.S_IFMT(mode) >> 12) << 60 | obj)
            await self._change(parent, 1, int(is_dir), now)
            return obj

    async def unlink(self, path: Entry, *, directory: bool = False) -> None:
        """Remove the entry `path` (rmdir with `directory`: it must be an empty
        directory); the object is freed with its last link. ENOENT, EISDIR, ENOTDIR,
        ENOTEMPTY; EOPNOTSUPP for files with an xattr directory."""
        with self._all_or_nothing():
            parent, name = await self._parent(path)
            value = await self.lookup(parent, name)
            if value is None:
                raise FSError(errno.ENOENT, f"{path}: no such file or directory")
            obj = value & OBJ_MASK
            is_dir = await self._check_removable(path, obj, directory)
            await self._remove_entry(parent, name)
            now = _now()
            await self._change(parent, -1, -int(is_dir), now)
            await self._drop_link(obj, is_dir, now)

    async def _check_removable(self, path: Entry, obj: int, directory: bool) -> bool:
        """Whether object `obj` is a directory, after rmdir's or unlink's checks."""
        _, z = await self.znode(obj)
        is_dir = stat.S_ISDIR(z.mode)
        if directory and not is_dir:
            raise FSError(errno.ENOTDIR, f"{path}: not a directory")
        if not directory and is_dir:
            raise FSError(errno.EISDIR, f"{path}: is a directory")
        if is_dir and await self.entries(obj):
            raise FSError(errno.ENOTEMPTY, f"{path}: directory not empty")
        if z.xattr:
            raise FSError(errno.EOPNOTSUPP, f"{path}: freeing xattr directories is not written")
        return is_dir

    async def _drop_link(self, obj: int, is_dir: bool, now: tuple[int, int]) -> None:
        """One link of `obj` gone: free it with its last (a directory's "." goes too)."""
        dn, z = await self.znode(obj)
        if is_dir or z.links <= 1:
            self.dirty.dnodes[obj] = parse_dnode(bytes(DNODE_MIN_SIZE), dn.byteorder)
            self.dirty.blocks.pop(obj, None)
        else:
            self.put_znode(obj, dn, replace(z, links=z.links - 1, ctime=now))

    async def rename(self, src: Entry, dst: Entry) -> None:
        """Move the entry `src` to `dst` (rename(2)): an existing `dst` is replaced (a
        file by a file, an empty directory by a directory); a directory moved to another
        parent moves its ".." link. EINVAL for a directory into itself."""
        with self._all_or_nothing():
            sp, sname = await self._parent(src)
            dp, dname = await self._parent(dst)
            value = await self.lookup(sp, sname)
            if value is None:
                raise FSError(errno.ENOENT, f"{src}: no such file or directory")
            obj = value & OBJ_MASK
            _, z = await self.znode(obj)
            is_dir = stat.S_ISDIR(z.mode)
            if is_dir:
                up = dp
                while True:  # dst's parent must not lie inside src
                    if up == obj:
                        raise FSError(errno.EINVAL, f"{dst}: inside {src}")
                    parent = (await self.znode(up))[1].parent
                    if parent == up:
                        break
                    up = parent
            old = await self.lookup(dp, dname)
            if old is not None and old & OBJ_MASK == obj:
                return
            now = _now()
            if old is not None:
                old_dir = await self._check_removable(dst, old & OBJ_MASK, is_dir)
                await self._remove_entry(dp, dname)
                await self._change(dp, -1, -int(old_dir))
                await self._drop_link(old & OBJ_MASK, old_dir, now)
            await self._remove_entry(sp, sname)
            moved = int(is_dir and sp != dp)  # ".." now links the new parent
            await self._change(sp, -1, -moved, now)
            await self._add_entry(dp, dname, value)
            await self._change(dp, 1, moved, now)
            dn, z = await self.znode(obj)
            self.put_znode(obj, dn, replace(z, parent=dp, ctime=now))

    async def setattr(
        self,
        path: Node,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        atime: tuple[int, int] | None = None,
        mtime: tuple[int, int] | None = None,
    ) -> None:
        """Change `path`'s permission bits, owner, group, atime or mtime (zfs_setattr);
        its ctime becomes now. A new mode replaces the trivial ACL by the one of the new
        mode (zfs_acl_chmod): a file whose ACL is not trivial is refused (EOPNOTSUPP),
        since its other entries would have to be kept. ENOENT, ENOTDIR."""
        obj = await self.resolve(path)
        dn, z = await self.znode(obj)
        z = replace(z, ctime=_now())
        acl = dn.dn_bonus[_ACL_AT:ZNODE_PHYS_SIZE]
        if mode is not None:
            if not z.flags & ZFS_ACL_TRIVIAL:
                raise FSError(errno.EOPNOTSUPP, f"{path}: chmod of a non-trivial ACL")
            mode = stat.S_IFMT(z.mode) | (mode & 0o7777)
            execs = ZFS_NO_EXECS_DENIED if mode & 0o111 == 0o111 else 0
            z = replace(z, mode=mode, flags=z.flags & ~ZFS_NO_EXECS_DENIED | execs)
            acl = trivial_acl(mode, dn.byteorder)
        if uid is not None:
            z = replace(z, uid=uid)
        if gid is not None:
            z = replace(z, gid=gid)
        if atime is not None:
            z = replace(z, atime=atime)
        if mtime is not None:
            z = replace(z, mtime=mtime)
        bonus = encode_znode_phys(z, acl, dn.byteorder) + dn.dn_bonus[ZNODE_PHYS_SIZE:]
        self.dirty.dnodes[obj] = dn._replace(dn_bonus=bonus)


def _mz_normflags(zap: Zap) -> int:
    """A micro ZAP's mz_normflags."""
    return int.from_bytes(zap.block0[16:24], "little" if zap.byteorder == "<" else "big")
