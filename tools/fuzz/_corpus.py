"""Seed images: real ext2/3/4 images from mke2fs -d and ZFS pools from zfs-fuse, built once.

Each seed is a set of image files (one for ext2, a pool's vdevs for ZFS) under
``<workdir>/seeds/<driver>/<name>/``; a ``ready`` file marks a finished build, so later
runs reuse them (building the ZFS pools takes zfs-fuse half a minute).

The ext2 seeds cover the feature sets a user meets (ext2, ext3 with a journal, ext4 with
and without metadata_csum, 1 and 4 KiB blocks, inline data, ea_inode, a journal left
needing recovery); their tree holds an htree directory (built by
``e2fsck -fD``), xattrs in the inode and in a block, fast and slow symlinks, sparse files
with many extents, devices and hard links. The ZFS seeds are pools zfs-fuse builds (a
single disk and a mirror; micro and fat ZAP directories, snapshots, xattrs) and the shared
real-world pools of other implementations (/work/shared/testdata/zfs).
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.zfs.zfsfuse import ZfsFuse

TESTDATA = Path("/work/shared/testdata/zfs")


def default_workdir() -> Path:
    """Where seeds are kept between runs: named after this module's text, so a change to
    what the seeds hold builds them afresh instead of reusing stale ones."""
    stamp = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    return Path("/var/tmp/uvfs-fuzz") / stamp


class CorpusError(Exception):
    """A seed image cannot be built here (a tool is missing): one line for the user."""


@dataclass(frozen=True, slots=True)
class Seed:
    """One pristine image: its files (a pool's vdevs in order) and a short name."""

    name: str
    files: tuple[Path, ...]


# --- ext2 ------------------------------------------------------------------------------

# name -> mke2fs arguments; every one is built from the same tree.
EXT2_SEEDS: dict[str, tuple[str, ...]] = {
    "ext2-1k": ("-t", "ext2", "-b", "1024"),
    "ext2-4k-rev0": ("-t", "ext2", "-b", "4096", "-r", "0"),
    "ext3-1k": ("-t", "ext3", "-b", "1024", "-J", "size=1"),
    "ext4-1k-nocsum": ("-t", "ext4", "-b", "1024", "-O", "^metadata_csum", "-J", "size=1"),
    "ext4-4k": ("-t", "ext4", "-b", "4096"),
    "ext4-4k-nocsum-64bit": ("-t", "ext4", "-b", "4096", "-O", "^metadata_csum,64bit,^has_journal"),
    "ext4-1k-inline": ("-t", "ext4", "-b", "1024", "-O", "inline_data,^has_journal", "-I", "512"),
    "ext4-4k-eainode": ("-t", "ext4", "-b", "4096", "-O", "ea_inode,^metadata_csum"),
}
# Seeds whose journal is left holding transactions (debugfs jo/jw/jc): the open replays it.
RECOVERY_SEEDS = {"ext3-1k": ("jo",), "ext4-4k": ("jo -c",)}
EXT2_IMAGE_MB = 8


def _write_tree(root: Path) -> None:
    """A small tree with every kind of metadata the ext2 driver reads."""
    root.mkdir(parents=True)
    (root / "files").mkdir()
    (root / "files/tiny").write_bytes(b"hi\n")
    (root / "files/empty").write_bytes(b"")
    for size in (1000, 5000, 70_000):
        (root / f"files/f{size}").write_bytes(bytes(i * 7 % 251 for i in range(size)))
    with open(root / "files/sparse", "wb") as f:  # many extents; indirect levels at 1 KiB
        for i in range(12):
            f.seek(i * 37_000)
            f.write(b"z" * (100 + i))
    os.link(root / "files/tiny", root / "files/hard")
    wide = root / "wide"  # several blocks: e2fsck -D indexes it (htree)
    wide.mkdir()
    for i in range(300):
        (wide / f"entry-{i:04d}-{'n' * (i % 17)}").write_bytes(b"%d" % i)
    deep = root / "a/b/c/d"
    deep.mkdir(parents=True)
    (deep / "leaf").write_bytes(b"leaf\n")
    (root / "links").mkdir()
    os.symlink("../files/tiny", root / "links/fast")
    os.symlink("/".join(["segment"] * 30), root / "links/slow")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", 0o20666, os.makedev(1, 3))
    os.setxattr(root / "files/tiny", "user.small", b"s")
    os.setxattr(root / "files/f1000", "user.big", bytes(range(256)) * 3)
    os.setxattr(root / "wide", "user.dir", b"on a directory")
    os.setxattr(root / "files/f5000", "trusted.t", b"trusted")


def _build_ext2(directory: Path, name: str, args: tuple[str, ...], tree: Path) -> Path:
    image = directory / "image"
    subprocess.run(
        ["mke2fs", "-q", "-F", *args, "-d", str(tree), str(image), f"{EXT2_IMAGE_MB}M"],
        check=True, capture_output=True,
    )  # fmt: skip
    # -D builds htree indexes (mke2fs -d does not); exit status 1 means "fixed": expected.
    done = subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True)
    if done.returncode not in (0, 1):
        raise CorpusError(f"e2fsck -fD {name}: {done.stdout.decode(errors='replace')[-200:]}")
    if name == "ext4-4k-eainode":
        value = directory / "huge-value"
        value.write_bytes(b"E" * 9000)  # beyond a block: its own EA inode
        _debugfs(image, f"ea_set -f {value} /files/f70000 user.huge")
    if name in RECOVERY_SEEDS:
        _leave_journal(image, RECOVERY_SEEDS[name][0], directory)
    return image


def _debugfs(image: Path, request: str) -> str:
    done = subprocess.run(
        ["debugfs", "-w", "-R", request, str(image)], capture_output=True, check=True
    )
    return done.stdout.decode(errors="replace")


def _leave_journal(image: Path, open_cmd: str, work: Path) -> None:
    """Write three committed transactions (one revoking a block) that rewrite the group
    descriptor, the root directory and the first inode table block with their own bytes,
    and leave them in the journal, so every open replays them."""
    stats = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True)
    block_size = int(
        next(ln.split()[-1] for ln in stats.stdout.splitlines() if ln.startswith("Block size:"))
    )
    first = 1 if block_size == 1024 else 0
    root = int(_debugfs(image, "blocks /").split()[0])
    table = int(
        next(
            ln.split("Inode table at ")[1].split("-")[0]
            for ln in subprocess.run(
                ["dumpe2fs", str(image)], capture_output=True, text=True
            ).stdout.splitlines()
            if "Inode table at " in ln
        )
    )
    with open(image, "rb") as f:

        def block(n: int) -> bytes:
            f.seek(n * block_size)
            return f.read(block_size)

        picks = [first + 1, root, table]
        contents = {n: block(n) for n in picks}
    script = [open_cmd]
    for n, blocks in enumerate([picks[:2], picks[2:], picks]):
        data = work / f"txn{n}"
        data.write_bytes(b"".join(contents[b] for b in blocks))
        revoke = f" -r {table + 1}" if n == 1 else ""
        script.append(f"jw -b {','.join(map(str, blocks))}{revoke} {data}")
    script.append("jc")
    subprocess.run(
        ["debugfs", "-w", "-f", "-", str(image)],
        input="\n".join(script) + "\n", capture_output=True, text=True, check=True,
    )  # fmt: skip


def ext2_seeds(workdir: Path) -> list[Seed]:
    """Every ext2 seed under `workdir`, built now if not built before."""
    for tool in ("mke2fs", "e2fsck", "debugfs", "dumpe2fs"):
        if shutil.which(tool) is None:
            raise CorpusError(f"{tool} is not installed (make setup installs e2fsprogs)")
    base = workdir / "seeds" / "ext2"
    tree = base / "tree"
    seeds = []
    for name, args in EXT2_SEEDS.items():
        directory = base / name
        if not (directory / "ready").exists():
            if not tree.exists():
                _write_tree(tree)
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            _build_ext2(directory, name, args, tree)
            (directory / "ready").touch()
        seeds.append(Seed(name, (directory / "image",)))
    return seeds


# --- zfs -------------------------------------------------------------------------------

# shared real-world pools: archive -> vdev files it holds that belong to the pool
ZFS_SHARED = (
    "zevo-1.1.1.tar.bz2",
    "zol-0.6.2.tar.bz2",
    "unclean_export.dat.bz2",
    "cryptv0.dat.bz2",
    "zfs-pool-v1mirror2.dat.bz2",
)
ZFS_BUILT = {"fuse-disk": [("disk", 1)], "fuse-mirror": [("mirror", 2)]}


def _populate(daemon: ZfsFuse, name: str, mnt: Path) -> None:
    """Fill a zfs-fuse pool: files of several sizes, a fat ZAP directory, symlinks, a
    child dataset and a snapshot."""
    (mnt / "files").mkdir()
    (mnt / "files/tiny").write_bytes(b"hi\n")
    for size in (3000, 200_000, 1_500_000):
        (mnt / f"files/f{size}").write_bytes(bytes(i * 7 % 251 for i in range(size)))
    with open(mnt / "files/sparse", "wb") as f:
        for i in range(6):
            f.seek(i * 300_000)
            f.write(b"z" * 1000)
    wide = mnt / "wide"  # beyond a micro ZAP: a fat ZAP with leaf chains
    wide.mkdir()
    for i in range(700):
        (wide / f"entry-{i:04d}-{'n' * (i % 40)}").write_bytes(b"")
    (mnt / "a/b/c").mkdir(parents=True)
    os.symlink("../files/tiny", mnt / "a/fast")
    os.symlink("/".join(["segment"] * 30), mnt / "a/slow")
    os.link(mnt / "files/tiny", mnt / "a/hard")
    run = daemon.run
    with contextlib.suppress(OSError):  # zfs-fuse without -x keeps no xattrs
        os.setxattr(mnt / "files/tiny", "user.small", b"s")
    run("zfs", "snapshot", f"{name}@snap")
    run("zfs", "create", "-o", "compression=gzip", f"{name}/child")
    (Path(str(mnt) + "/child") / "file").write_bytes(b"child data\n" * 500)


def _unpack(archive: Path, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".dat.bz2"):
        out = dest / archive.name[: -len(".bz2")]
        with bz2.open(archive) as f, open(out, "wb") as o:
            while chunk := f.read(1 << 20):
                if chunk.count(0) == len(chunk):
                    o.seek(len(chunk), 1)  # keep zero runs as holes
                else:
                    o.write(chunk)
            o.truncate()
        return [out]
    subprocess.run(["tar", "--sparse", "-xf", str(archive), "-C", str(dest)], check=True)
    with tarfile.open(archive) as t:
        names = sorted(m.name for m in t.getmembers() if m.isfile())
    return [dest / n for n in names]


def _zfs_fuse_pools(base: Path) -> list[Seed]:
    """The zfs-fuse pools, built in a private daemon if any is missing."""
    wanted = [base / name for name in ZFS_BUILT]
    if not all((d / "ready").exists() for d in wanted):
        from tests.zfs import zfsfuse  # the test suite's daemon and pool builder

        reason = zfsfuse.available()
        if reason:
            raise CorpusError(f"cannot build zfs-fuse pools: {reason}")
        daemon = zfsfuse.ZfsFuse(base / "daemon", options=["-x"])
        daemon.start()
        try:
            for (name, layout), directory in zip(ZFS_BUILT.items(), wanted, strict=True):
                if (directory / "ready").exists():
                    continue
                shutil.rmtree(directory, ignore_errors=True)
                pool = "fz" + name.replace("-", "")
                zfsfuse.build_pool(
                    daemon, directory, pool, layout, {"compression": "lzjb"},
                    lambda mnt, pool=pool: _populate(daemon, pool, mnt),
                )  # fmt: skip
                (directory / "ready").touch()
        finally:
            daemon.stop()
    return [Seed(d.name, tuple(sorted(d.glob("*.img")))) for d in wanted]


def zfs_seeds(workdir: Path) -> list[Seed]:
    """Every ZFS seed under `workdir`: zfs-fuse's pools and the shared real-world ones."""
    base = workdir / "seeds" / "zfs"
    seeds = _zfs_fuse_pools(base)
    for archive in ZFS_SHARED:
        src = TESTDATA / archive
        if not src.exists():
            continue  # the shared images are optional: zfs-fuse's pools suffice
        directory = base / archive.split(".tar")[0].split(".dat")[0]
        if not (directory / "ready").exists():
            shutil.rmtree(directory, ignore_errors=True)
            files = _unpack(src, directory / "files")
            (directory / "files.txt").write_text("\n".join(str(p) for p in files))
            (directory / "ready").touch()
        files = [Path(p) for p in (directory / "files.txt").read_text().split("\n")]
        seeds.append(Seed(directory.name, tuple(files)))
    return seeds


def seeds(driver: str, workdir: Path) -> list[Seed]:
    """The seeds of `driver` ("ext2" or "zfs")."""
    return ext2_seeds(workdir) if driver == "ext2" else zfs_seeds(workdir)
