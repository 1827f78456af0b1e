"""The file tree our driver shows, against zfs-fuse's own view of the same pool.

One pool is built once for the module through a zfs-fuse daemon with xattrs on: files of
every type and size, hard links, sparse and deep files, xattrs, a 5,000-entry directory,
child datasets with other compression and record sizes, one mounted deep inside the root
dataset and one outside it, a snapshot recorded when it was made and then diverged from,
and a clone of it. The records taken through zfs-fuse's FUSE mounts before export are
the oracle; our driver reads the exported vdev file with no mount.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from trees import Node, differences, record_fs, record_os, xattr_daemon
from zfsfuse import PoolRecord, ZfsFuse, build_pool

from uvfs import Attr, FSError, ImageFile, MountOptions
from uvfs_fs.zfs import DRIVER, ZfsFileSystem
from uvfs_fs.zfs.zap import Zap
from uvfs_fs.zfs.znode import Znode
from uvfs_fs.zfs.zpl import OBJ_BITS, OBJ_MASK, _xattr_shown, _xattr_stored

POOL = "rich"
OLD_MTIME = 1_234_567_890
BIG_XATTR = bytes(range(256)) * 40


@dataclass
class Built:
    record: PoolRecord
    tree: dict[str, Node]  # the whole pool as zfs-fuse shows it, `outside` by name at the root
    snapshot: dict[str, Node]  # snapfs as it was when snapfs@s1 was taken
    data: dict[str, bytes]  # contents of some files, by path
    used: int  # `zfs get used` of the root dataset, bytes
    datasets: list[str]  # `zfs list -t all`


def _populate(root: Path, run: object, directory: Path) -> tuple[dict, dict, dict]:
    """Fill the pool; returns (snapshot record, extra tree records, file contents)."""
    zfs = run  # daemon.run
    data: dict[str, bytes] = {}

    def write(rel: str, content: bytes) -> None:
        (root / rel).write_bytes(content)
        data[rel] = content

    write("small.txt", b"hello, zfs\n")
    write("empty", b"")
    write("big.bin", os.urandom((3 << 20) + 1234))
    with open(root / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(10 << 20)
        f.write(b"tail")
    os.makedirs(root / "sub/deeper")
    os.link(root / "small.txt", root / "sub/h2")
    os.link(root / "small.txt", root / "sub/deeper/h3")
    os.symlink("small.txt", root / "to-small")
    os.symlink("/" + "long/" * 60 + "target", root / "long-link")
    os.mknod(root / "chr", 0o20620, os.makedev(4, 64))
    os.mknod(root / "blk", 0o60660, os.makedev(8, 1))
    os.mknod(root / "fifo", 0o10644)
    write("ünïcödé-名前", b"unicode\n")
    write("n" * 255, b"long name\n")
    write("owned", b"x")
    os.chown(root / "owned", 1234, 5678)
    os.chmod(root / "owned", 0o4751)
    os.mkdir(root / "sticky", 0o1777)
    os.chmod(root / "sticky", 0o1777)
    os.utime(root / "sub/deeper", (OLD_MTIME, OLD_MTIME))
    os.setxattr(root / "small.txt", "user.color", b"blue")
    os.setxattr(root / "small.txt", "user.mid", bytes(range(100)))
    write("xattr-big", b"a file with a 10 KiB xattr\n")
    os.setxattr(root / "xattr-big", "user.big", BIG_XATTR)
    os.setxattr(root / "sub", "user.on-a-dir", b"")
    os.mkdir(root / "many")
    for i in range(5000):
        if i % 500 == 0:
            os.mkdir(root / f"many/dir-{i:05d}")
        else:
            os.close(os.open(root / f"many/entry-{i:05d}", os.O_CREAT | os.O_WRONLY, 0o600))

    def create(name: str, *props: str) -> None:
        args = [a for p in props for a in ("-o", p)]
        zfs("zfs", "create", *args, f"{POOL}/{name}")

    create("gz", "compression=gzip-9")
    write("gz/text", b"the quick brown fox jumps over the lazy dog\n" * 5000)
    create("zle", "compression=zle")
    write("zle/zeros", bytes(300_000) + b"x" + bytes(100_000))
    create("deep", "compression=off", "recordsize=512")
    write("deep/f", os.urandom(200_000))  # 391 records of 512 bytes: three levels
    create("nested")
    create("nested/inner")
    write("nested/inner/f", b"inner\n")
    os.makedirs(root / "a/spot-parent")
    create("placed", f"mountpoint={directory}/mnt/a/spot-parent/spot")
    write("a/spot-parent/spot/f", b"placed\n")
    create("outside", f"mountpoint={directory}/other")
    other = root.parent / "other"
    (other / "f").write_bytes(b"outside\n")
    # aaa comes first in the dataset tree but is mounted inside zzz: it must be placed
    # after zzz (shortest mountpoint first, as `zfs mount -a` does).
    create("zzz")
    create("aaa", f"mountpoint={directory}/mnt/zzz/inner")
    # Never mounted; its child is, in the root dataset's directory of that name.
    create("container", "canmount=off")
    create("container/kid")
    write("container/kid/f", b"kid\n")
    create("snapfs")
    write("snapfs/keep", b"kept\n")
    write("snapfs/change", b"before\n")
    write("snapfs/gone", b"deleted later\n")
    zfs("zfs", "snapshot", f"{POOL}/snapfs@s1")
    snapshot = record_os(root / "snapfs")
    (root / "snapfs/gone").unlink()
    with open(root / "snapfs/change", "ab") as f:
        f.write(b"after\n")
    write("snapfs/new", b"new\n")
    zfs("zfs", "snapshot", f"{POOL}/snapfs@s2")
    zfs("zfs", "clone", f"{POOL}/snapfs@s1", f"{POOL}/clonefs")
    write("clonefs/only-in-clone", b"clone\n")
    (root / "clonefs/keep").unlink()
    write("zzz/inner/f", b"in aaa\n")
    outside = {"outside": _lstat_node(other)} | {
        f"outside/{k}": v for k, v in record_os(other).items()
    }
    return snapshot, outside, data


def _lstat_node(path: Path) -> Node:
    (node,) = (v for k, v in record_os(path.parent).items() if k == path.name)
    return node


def _build(daemon: ZfsFuse, directory: Path, populate: Callable[[Path], None]) -> PoolRecord:
    """build_pool, tried a second time in a fresh directory when zfs-fuse fails.

    Now and then (about one run in five here) zfs-fuse fails `zpool create`, or writes a
    pool in which zdb finds bad checksums: the oracle itself is at fault then, not us.
    """
    props = {"compression": "lzjb", "atime": "off"}
    for attempt in range(2):
        where = directory if attempt == 0 else directory.with_name("pool-retry")
        try:
            return build_pool(daemon, where, POOL, [("disk", 1)], props, populate, size=128 << 20)
        except subprocess.CalledProcessError as e:
            failure = f"{e.cmd} failed: {e.stderr!r} {str(e.stdout)[-2000:]}"
            with contextlib.suppress(subprocess.CalledProcessError):
                daemon.run("zpool", "export", "-f", POOL)
    raise RuntimeError(failure)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("zpl")
    directory = work / "pool"
    out: dict[str, object] = {}
    with xattr_daemon(work / "daemon") as daemon:

        def populate(root: Path) -> None:
            real = Path(str(root).removeprefix(f"/proc/{daemon.pid}/root"))  # daemon's path
            snapshot, outside, data = _populate(root, daemon.run, real.parent)
            out["snapshot"], out["data"] = snapshot, data
            tree = record_os(root) | outside
            # zfs-fuse hands back 8 bytes of garbage for values over 128 bytes (seen here
            # with 200 and 10240): our reading is checked against what was written.
            tree["xattr-big"] = replace(tree["xattr-big"], xattrs=((b"user.big", BIG_XATTR),))
            out["tree"] = tree

        record = _build(daemon, directory, populate)
        # After the export, every txg is on disk: what zfs says now is what we must read.
        daemon.run("zpool", "import", "-d", str(record.directory), POOL)
        used = daemon.run("zfs", "get", "-Hp", "-o", "value", "used", POOL)
        datasets = daemon.run("zfs", "list", "-H", "-r", "-t", "all", "-o", "name", POOL)
        daemon.run("zpool", "export", POOL)
    return Built(record, out["tree"], out["snapshot"], out["data"], int(used), datasets.split())  # type: ignore[arg-type]


async def _open(built: Built) -> ZfsFileSystem:
    return await DRIVER.open([ImageFile(str(v)) for v in built.record.vdevs], MountOptions())


async def _path(fs: ZfsFileSystem, path: str) -> Attr:
    attr = await fs.getattr(fs.root)
    for part in path.strip("/").split("/"):
        if part:
            attr = await fs.lookup(attr.ino, part.encode())
    return attr


async def test_whole_tree_matches_zfs_fuse(built: Built) -> None:
    fs = await _open(built)
    ours = await record_fs(fs, fs.root)
    assert differences(ours, built.tree) == []
    assert len([p for p in ours if p.startswith("many/")]) == 5000


async def test_snapshot_matches_record_taken_then(built: Built) -> None:
    fs = await _open(built)
    snap = await _path(fs, "/snapfs/.zfs/snapshot/s1")
    assert differences(await record_fs(fs, snap.ino), built.snapshot) == []
    assert sorted(built.snapshot) == ["change", "gone", "keep"]
    s2 = await record_fs(fs, (await _path(fs, "/snapfs/.zfs/snapshot/s2")).ino)
    assert s2 == {p[7:]: n for p, n in built.tree.items() if p.startswith("snapfs/")}


async def test_clone_is_the_snapshot_plus_its_changes(built: Built) -> None:
    fs = await _open(built)
    clone = await record_fs(fs, (await _path(fs, "/clonefs")).ino)
    assert sorted(clone) == ["change", "gone", "only-in-clone"]
    assert clone["gone"].digest == built.snapshot["gone"].digest
    info = await DRIVER.describe([ImageFile(str(v)) for v in built.record.vdevs])
    assert f"  {POOL}/clonefs  (clone of {POOL}/snapfs@s1, at /clonefs)" in info.splitlines()
    assert f"  {POOL}/aaa  (at /zzz/inner)" in info.splitlines()
    assert f"  {POOL}/outside  (at /outside)" in info.splitlines()
    assert f"  {POOL}/container  (canmount=off, not shown)" in info.splitlines()
    assert f"  {POOL}/container/kid  (at /container/kid)" in info.splitlines()


async def test_snapdir_is_hidden_but_found(built: Built) -> None:
    fs = await _open(built)
    snapfs = await _path(fs, "/snapfs")
    assert b".zfs" not in {e.name for e in await fs.readdir(snapfs.ino)}
    ctl = await fs.lookup(snapfs.ino, b".zfs")
    assert stat.S_ISDIR(ctl.mode)
    assert [e.name for e in await fs.readdir(ctl.ino)] == [b"snapshot"]
    snapdir = await fs.lookup(ctl.ino, b"snapshot")
    assert sorted(e.name for e in await fs.readdir(snapdir.ino)) == [b"s1", b"s2"]
    for parent, name in ((snapdir.ino, b"s3"), (ctl.ino, b"other")):
        with pytest.raises(FSError) as e:
            await fs.lookup(parent, name)
        assert e.value.errno == errno.ENOENT
    s1 = await fs.lookup(snapdir.ino, b"s1")
    with pytest.raises(FSError):  # no .zfs inside a snapshot
        await fs.lookup(s1.ino, b".zfs")
    # A subdirectory is not a dataset root: no .zfs there either.
    with pytest.raises(FSError):
        await fs.lookup((await _path(fs, "/sub")).ino, b".zfs")


async def test_inode_numbers(built: Built) -> None:
    fs = await _open(built)
    assert fs.root != 1 and fs.root >> OBJ_BITS == 0
    tree = {}
    stack = [("", fs.root)]
    while stack:
        rel, ino = stack.pop()
        for e in await fs.readdir(ino):
            tree[f"{rel}/{e.name.decode()}"] = e.attr
            if stat.S_ISDIR(e.attr.mode):
                stack.append((f"{rel}/{e.name.decode()}", e.attr.ino))
    links = {tree[p].ino for p in ("/small.txt", "/sub/h2", "/sub/deeper/h3")}
    assert len(links) == 1 and tree["/small.txt"].nlink == 3
    by_ino: dict[int, str] = {}
    for path, a in tree.items():
        if a.ino in by_ino and not path.startswith("/sub/"):
            raise AssertionError(f"{path} and {by_ino[a.ino]} share inode {a.ino}")
        by_ino.setdefault(a.ino, path)
    datasets = {tree[f"/{name}"].ino >> OBJ_BITS for name in ("gz", "zle", "deep", "snapfs")}
    assert len(datasets) == 4 and 0 not in datasets
    again = await _open(built)
    for path in ("/gz/text", "/nested/inner/f", "/many/entry-04999"):
        assert (await _path(again, path)).ino == tree[path].ino


async def test_big_directory_is_a_fat_zap(built: Built) -> None:
    fs = await _open(built)
    many = await _path(fs, "/many")
    m = fs.datasets[0]
    assert m.objset is not None
    zap = await Zap.open(m.objset, many.ino & OBJ_MASK)
    assert zap.phys is not None and zap.phys.zap_num_entries == 5000
    for i in range(0, 5000, 7):
        name = f"dir-{i:05d}" if i % 500 == 0 else f"entry-{i:05d}"
        a = await fs.lookup(many.ino, name.encode())
        assert stat.S_ISDIR(a.mode) == (i % 500 == 0)
    with pytest.raises(FSError) as e:
        await fs.lookup(many.ino, b"entry-05000")
    assert e.value.errno == errno.ENOENT


async def test_deep_tree_and_partial_reads(built: Built) -> None:
    fs = await _open(built)
    a = await _path(fs, "/deep/f")
    m = fs.datasets[a.ino >> OBJ_BITS]
    assert m.objset is not None
    dn = await m.objset.dnode(a.ino & OBJ_MASK)
    assert (dn.datablksz, dn.dn_nlevels) == (512, 3)
    source = built.data["deep/f"]
    for offset, size in ((0, 1), (511, 2), (65535, 70000), (131071, 4097), (199_997, 100)):
        assert await fs.read(a.ino, 0, offset, size) == source[offset : offset + size]
    big = await _path(fs, "/big.bin")
    got = await fs.read(big.ino, 0, 131071, 300_000)
    assert got == built.data["big.bin"][131071 : 131071 + 300_000]


async def test_sparse_file_reads_holes_as_zeros(built: Built) -> None:
    fs = await _open(built)
    a = await _path(fs, "/sparse")
    assert a.size == (10 << 20) + 4
    assert await fs.read(a.ino, 0, 0, 8) == b"head" + bytes(4)
    assert await fs.read(a.ino, 0, 5 << 20, 1 << 20) == bytes(1 << 20)
    assert await fs.read(a.ino, 0, (10 << 20) - 2, 100) == bytes(2) + b"tail"
    assert a.blocks < 64  # the hole takes no space


async def test_errors(built: Built) -> None:
    fs = await _open(built)
    small = await _path(fs, "/small.txt")
    cases = [
        (fs.read(fs.root, 0, 0, 10), errno.EISDIR),
        (fs.readlink(small.ino), errno.EINVAL),
        (fs.lookup(small.ino, b"x"), errno.ENOTDIR),
        (fs.readdir(small.ino), errno.ENOTDIR),
        (fs.lookup(fs.root, b"no-such-name"), errno.ENOENT),
        (fs.getattr(12345), errno.ENOENT),
        (fs.getattr(999 << OBJ_BITS | 4), errno.ENOENT),
        (fs.getxattr(small.ino, b"user.nope"), errno.ENODATA),
        (fs.getxattr(fs.root, b"user.color"), errno.ENODATA),
    ]
    for call, expected in cases:
        with pytest.raises(FSError) as e:
            await call
        assert e.value.errno == expected
    assert await fs.getxattr(small.ino, b"user.color") == b"blue"
    assert await fs.getxattr((await _path(fs, "/xattr-big")).ino, b"user.big") == BIG_XATTR


async def test_statfs(built: Built) -> None:
    fs = await _open(built)
    st = await fs.statfs()
    size = 128 << 20
    assert st.block_size == 512
    # zfs's figure comes from an import whose own txgs (pool history, deferred frees) shift
    # the root's used space before the export we read: up to ~300 KiB seen here. Within
    # 1 MiB still tells the root's used space from the other figures (referenced, a
    # child's, the pool's).
    assert abs((st.blocks - st.blocks_free) * 512 - built.used) <= 1 << 20
    assert 0.9 * size < st.blocks * 512 <= size
    assert st.blocks_avail == st.blocks_free
    assert st.files > st.files_free > 0


async def test_datasets_as_zfs_lists_them(built: Built) -> None:
    fs = await _open(built)
    assert sorted(m.ds.name for m in fs.datasets) == sorted(built.datasets)
    assert f"{POOL}/snapfs@s2" in built.datasets


def _xdr_nvlist(pairs: dict[str, bytes]) -> bytes:
    """A packed XDR nvlist of byte arrays, as zfs_sa_set_xattr writes ZPL_DXATTR."""

    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)

    out = b"\x01\x01\x00\x00" + struct.pack(">ii", 0, 1)
    for name, value in pairs.items():
        body = struct.pack(">I", len(name)) + pad(name.encode())
        body += struct.pack(">ii", 10, len(value)) + pad(value)  # DATA_TYPE_BYTE_ARRAY
        out += struct.pack(">ii", 8 + len(body), 8 + len(body)) + body
    return out + struct.pack(">ii", 0, 0)


def test_sa_xattrs_and_linux_names() -> None:
    z = Znode(0o100644, 0, 0, 0, 1, 0, 0, 0, 0, 0, (0, 0), (0, 0), (0, 0), (0, 0))
    nv = _xdr_nvlist({"compat": b"old", "user.new": b"new", "trusted.t": b"t"})
    got = ZfsFileSystem._sa_xattrs(replace(z, dxattr=nv))
    assert got == {b"compat": b"old", b"user.new": b"new", b"trusted.t": b"t"}
    assert [_xattr_shown(n) for n in got] == [b"user.compat", b"user.new", b"trusted.t"]
    assert _xattr_stored(b"user.compat") == [b"compat", b"user.compat"]
    assert _xattr_stored(b"user.trusted.x") == [b"user.trusted.x"]
    assert _xattr_stored(b"security.selinux") == [b"security.selinux"]
    with pytest.raises(FSError) as e:
        ZfsFileSystem._sa_xattrs(replace(z, dxattr=nv[:-12]))
    assert e.value.errno == errno.EIO


@pytest.mark.slow
def test_through_a_real_mount(built: Built, mount) -> None:  # type: ignore[no-untyped-def]
    mnt = mount(*built.record.vdevs, fstype="uvfs_fs.zfs:DRIVER")
    seen = record_os(mnt)
    # One FUSE mount: no st_dev change at dataset roots, and st_ino is our inode number.
    assert (
        differences(
            {p: replace(n, obj=0) for p, n in seen.items()},
            {p: replace(n, obj=0) for p, n in built.tree.items()},
        )
        == []
    )
    assert os.stat(mnt / "sub/deeper/h3").st_ino == os.stat(mnt / "small.txt").st_ino
    assert ".zfs" not in os.listdir(mnt / "snapfs")
    assert sorted(os.listdir(mnt / "snapfs/.zfs/snapshot")) == ["s1", "s2"]
    snap = record_os(mnt / "snapfs/.zfs/snapshot/s1")
    assert {p: replace(n, obj=0) for p, n in snap.items()} == {
        p: replace(n, obj=0) for p, n in built.snapshot.items()
    }
