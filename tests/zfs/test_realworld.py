"""Pools made by other ZFS implementations (/work/shared/testdata/zfs), read through the driver."""

from __future__ import annotations

import bz2
import errno
import stat
import subprocess
from pathlib import Path

import pytest

from uvfs import Attr, FSError, ImageFile, MountOptions, Refusal
from uvfs_fs.zfs import DRIVER, ZfsFileSystem

TESTDATA = Path("/work/shared/testdata/zfs")
pytestmark = pytest.mark.skipif(
    not TESTDATA.is_dir(), reason=f"{TESTDATA} (real-world pool images) is absent"
)


@pytest.fixture(scope="session")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Archive stem -> its vdev files, unpacked (sparse) once per session on first use."""
    return _Unpacker(tmp_path_factory.mktemp("realworld"))  # type: ignore[return-value]


class _Unpacker(dict):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, archive: str) -> list[Path]:
        src = TESTDATA / archive
        dest = self.root / archive
        dest.mkdir()
        if ".tar." in archive:
            subprocess.run(["tar", "--sparse", "-xf", src, "-C", dest], check=True)
        else:
            _bunzip_sparse(src, dest / archive.removesuffix(".bz2"))
        files = sorted(p for p in dest.rglob("*") if p.is_file())
        self[archive] = files
        return files


def _bunzip_sparse(src: Path, dest: Path) -> None:
    """Decompress leaving all-zero 64 KiB runs as holes (the images are mostly empty)."""
    zero = bytes(1 << 16)
    with bz2.open(src) as f, open(dest, "wb") as out:
        while chunk := f.read(1 << 16):
            if chunk == zero:
                out.seek(len(chunk), 1)
            else:
                out.write(chunk)
        out.truncate()


async def _open(files: list[Path]) -> ZfsFileSystem:
    return await DRIVER.open([ImageFile(str(f)) for f in files], MountOptions())


async def _path(fs: ZfsFileSystem, path: str) -> Attr:
    attr = await fs.getattr(fs.root)
    for part in path.strip("/").split("/"):
        if part:
            attr = await fs.lookup(attr.ino, part.encode())
    return attr


async def _walk(fs: ZfsFileSystem, ino: int, prefix: str = "") -> dict[str, Attr]:
    out: dict[str, Attr] = {}
    for e in await fs.readdir(ino):
        path = f"{prefix}/{e.name.decode()}"
        out[path] = e.attr
        if stat.S_ISDIR(e.attr.mode):
            out |= await _walk(fs, e.attr.ino, path)
    return out


async def _read_all(fs: ZfsFileSystem, tree: dict[str, Attr]) -> dict[str, bytes]:
    return {
        p: await fs.read(a.ino, 0, 0, a.size + 4096)
        for p, a in tree.items()
        if stat.S_ISREG(a.mode)
    }


@pytest.mark.parametrize("archive", ["zol-0.6.1.tar.bz2", "zol-0.6.2.tar.bz2"])
async def test_zol_06x_every_file_snapshot_and_clone(
    unpacked: dict[str, list[Path]], archive: str
) -> None:
    fs = await _open(unpacked[archive])
    tree = await _walk(fs, fs.root)
    assert len(tree) == 484
    files = await _read_all(fs, tree)
    assert len(files) == 440
    assert all(data == bytes(4096) for data in files.values())  # dd if=/dev/zero, 4 KiB each
    assert {p for p in tree if p.count("/") == 1} == {"/clone", "/fs"}
    # The clone is the snapshot plus one directory made after it.
    snap = await _walk(fs, (await _path(fs, "/fs/.zfs/snapshot/snap")).ino)
    clone = {p.removeprefix("/clone"): a for p, a in tree.items() if p.startswith("/clone/")}
    assert set(clone) - set(snap) == {p for p in clone if p.startswith("/L3DCLONE")}
    assert set(snap) == set(clone) - {p for p in clone if p.startswith("/L3DCLONE")}
    assert ".zfs" not in {e.name.decode() for e in await fs.readdir(tree["/fs"].ino)}
    assert [e.name for e in await fs.readdir((await _path(fs, "/fs/.zfs")).ino)] == [b"snapshot"]
    assert fs.pool.statistics().checksum_errors == 0
    info = await DRIVER.describe([ImageFile(str(f)) for f in unpacked[archive]])
    pool = archive.removesuffix(".tar.bz2")
    assert info.splitlines()[-4:] == [
        f"  {pool}  (at /)",
        f"  {pool}/clone  (clone of {pool}/fs@snap, at /clone)",
        f"  {pool}/fs  (at /fs)",
        f"  {pool}/fs@snap  (at /fs/.zfs/snapshot/snap)",
    ]


async def test_zevo(unpacked: dict[str, list[Path]]) -> None:
    fs = await _open(unpacked["zevo-1.1.1.tar.bz2"])
    tree = await _walk(fs, fs.root)
    files = await _read_all(fs, tree)
    assert {
        p: len(d) for p, d in files.items() if not p.startswith(("/.fsevents", "/fs/.fse"))
    } == {
        "/fs/file1": 6,
        "/fs/file2a": 7,
        "/fs/f_with_data": 512000,
    }
    a = tree["/fs/file2a"]
    assert (stat.S_IMODE(a.mode), a.uid, a.gid) == (0o505, 1234, 4321)
    assert await fs.readlink(tree["/fs/symlink"].ino) == b"this_is_a_symlink"


async def test_removed_xattr_object_fails_only_xattrs(unpacked: dict[str, list[Path]]) -> None:
    fs = await _open(unpacked["zol-znode-removed-xattr.tar.bz2"])
    a = await _path(fs, "/file2")
    assert stat.S_ISREG(a.mode) and a.size == 0
    assert await fs.read(a.ino, 0, 0, 100) == b""
    for call in (fs.listxattr(a.ino), fs.getxattr(a.ino, b"user.test")):
        with pytest.raises(FSError) as e:
            await call
        assert e.value.errno == errno.EIO
    assert await fs.listxattr(fs.root) == []


async def test_big_endian_with_slog(unpacked: dict[str, list[Path]]) -> None:
    fs = await _open(unpacked["zol-0.7.0-rc1-be-ziltest.tar.bz2"])
    assert fs.pool.uberblock.byteorder == ">"
    tree = await _walk(fs, fs.root)
    # Read-only, like a read-only kernel import: the intent log is not replayed.
    assert sorted(tree) == ["/fs", "/fs/sync"]
    assert await fs.read(tree["/fs/sync"].ino, 0, 0, 10) == b"\0"


async def test_zstd(unpacked: dict[str, list[Path]]) -> None:
    # The README's "mangled" blocks still decompress and pass their checksums: every block
    # of both executables reads (a block that did not would be EIO for its range only).
    fs = await _open(unpacked["testpool_zstd.tar.gz"])
    tree = await _walk(fs, fs.root)
    assert sorted(tree) == ["/ppc64_fbsd", "/ppc64_fbsd/zstd", "/x86_64", "/x86_64/zstd"]
    for path, size in (("/ppc64_fbsd/zstd", 146040), ("/x86_64/zstd", 780248)):
        a = tree[path]
        assert a.size == size
        data = b"".join([await fs.read(a.ino, 0, off, 1 << 17) for off in range(0, size, 1 << 17)])
        assert len(data) == size and data.startswith(b"\x7fELF")
    assert fs.pool.statistics().checksum_errors == 0


async def test_unclean_export(unpacked: dict[str, list[Path]]) -> None:
    fs = await _open(unpacked["unclean_export.dat.bz2"])
    assert await fs.readdir(fs.root) == []
    assert stat.S_ISDIR((await fs.getattr(fs.root)).mode)


async def test_encrypted_dataset_sealed_rest_readable(unpacked: dict[str, list[Path]]) -> None:
    fs = await _open(unpacked["cryptv0.dat.bz2"])
    (entry,) = await fs.readdir(fs.root)  # the volume testvol has no place in the tree
    assert entry.name == b"testfs" and stat.S_ISDIR(entry.attr.mode)
    for call in (fs.readdir(entry.attr.ino), fs.lookup(entry.attr.ino, b"x")):
        with pytest.raises(FSError) as e:
            await call
        assert e.value.errno == errno.EACCES
    info = await DRIVER.describe([ImageFile(str(f)) for f in unpacked["cryptv0.dat.bz2"]])
    assert info.splitlines()[-5:] == [
        "  cryptv0  (at /)",
        "  cryptv0/testfs  (encrypted, not readable here, at /testfs)",
        "  cryptv0/testfs@snap1  (encrypted, not readable here, at /testfs/.zfs/snapshot/snap1)",
        "  cryptv0/testvol  (volume, not shown)",
        "  cryptv0/testvol@snap1  (volume, not shown)",
    ]


async def test_v15_pool(unpacked: dict[str, list[Path]]) -> None:
    fs = await _open(unpacked["zfs-pool-v15.dat.bz2"])
    assert fs.pool.version == 15
    assert await fs.readdir(fs.root) == []


async def test_v1_mirror_half(unpacked: dict[str, list[Path]]) -> None:
    fs = await _open(unpacked["zfs-pool-v1mirror2.dat.bz2"])
    assert fs.pool.version == 1
    tree = await _walk(fs, fs.root)
    files = await _read_all(fs, tree)
    assert len(files) == 301
    assert all(len(d) == tree[p].size for p, d in files.items())


async def test_v2_raidz_one_of_three_members_refused(unpacked: dict[str, list[Path]]) -> None:
    # Only the second of three raidz1 members is in the test data: no block can be rebuilt.
    with pytest.raises(Refusal, match="missing member"):
        await _open(unpacked["zfs-pool-v2raidz2.dat.bz2"])


async def test_v999_refused(unpacked: dict[str, list[Path]]) -> None:
    with pytest.raises(Refusal, match="version 999"):
        await _open(unpacked["zfs-pool-v999.dat.bz2"])
