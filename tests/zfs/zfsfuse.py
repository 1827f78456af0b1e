"""Test helpers: run the zfs-fuse daemon privately, build pools from file vdevs, walk them.

`ZfsFuse` runs one Debian zfs-fuse daemon in a private mount namespace (its own /run for
the control socket and lock, its own /etc/zfs for zpool.cache), so several test sessions,
or a host daemon, never meet; commands run inside it with nsenter, and the datasets it
mounts are visible to this process under ``/proc/<pid>/root``. `build_pool` creates a
pool from a layout and properties, lets a callback populate the mounted dataset and
exports the pool, so its files can be read by our code and by ``zdb -e``.
`ZfsFuse.gang_blocks` makes the daemon write gang blocks, which it otherwise only does on
a fragmented, nearly full pool.

`walk_pool` is the oracle-side traversal: it reads every block reachable from the active
uberblock (the MOS and each dataset's object set, every dnode's block tree) through
`Pool.read_bp`, so that every block's checksum is verified on the way.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from uvfs_fs.zfs.blkptr import BlockPtr, parse_blkptrs
from uvfs_fs.zfs.dmu import parse_objset
from uvfs_fs.zfs.dnode import DMU_OT_DSL_DATASET, DNODE_MIN_SIZE, parse_dnode
from uvfs_fs.zfs.dsl import parse_dsl_dataset
from uvfs_fs.zfs.spa import Pool

ZFS_FUSE = "/usr/sbin/zfs-fuse"
GANG_BANG_DEFAULT = 128 * 1024 + 1  # metaslab_gang_bang: SPA_MAXBLOCKSIZE + 1
COMMAND_TIMEOUT = 120  # seconds: a wedged daemon fails the test instead of hanging it


def available() -> str | None:
    """Why zfs-fuse cannot run here, or None when it can."""
    if not os.path.exists(ZFS_FUSE):
        return f"{ZFS_FUSE} is not installed"
    if os.geteuid() != 0:
        return "zfs-fuse needs root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class ZfsFuse:
    """One zfs-fuse daemon in a private mount namespace.

    Args:
        workdir: a scratch directory for its /etc/zfs and log.
        options: more zfs-fuse options, e.g. ``["-x"]`` to allow extended attributes.
    """

    def __init__(self, workdir: Path, options: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.options = list(options)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The daemon's pid (also its namespace's)."""
        assert self._proc is not None, "daemon not started"
        return self._proc.pid

    def start(self) -> None:
        """Start the daemon and wait until it answers commands."""
        etc = self.workdir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        script = (
            "mount -t tmpfs tmpfs /run && mkdir -p /run/lock && "
            f"mount --bind {etc} /etc/zfs && "
            # zfs-fuse keeps its pool list (zpool.cache) here: a shared one would make every
            # daemon import, and write to, the pools of all the others.
            "mkdir -p /var/lib/zfs && mount -t tmpfs tmpfs /var/lib/zfs && "
            f"exec {ZFS_FUSE} {shlex.join(self.options)} -n --no-kstat-mount -p /run/zfs-fuse.pid"
        )
        log = open(self.workdir / "daemon.log", "wb")  # noqa: SIM115 - the daemon keeps it
        self._proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"zfs-fuse exited: {(self.workdir / 'daemon.log').read_text()}")
            if os.path.exists(f"/proc/{self.pid}/root/run/zfs/zfs_socket"):
                try:
                    self.run("zpool", "list")
                    return
                except subprocess.CalledProcessError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("zfs-fuse did not start within 30 s")
            time.sleep(0.1)

    def run(self, *args: str) -> str:
        """Run a command (zpool, zfs, zdb ...) inside the daemon's namespace; its stdout."""
        out = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", *args],
            capture_output=True,
            check=False,
            timeout=COMMAND_TIMEOUT,
        )
        if out.returncode != 0:
            err = subprocess.CalledProcessError(out.returncode, args, out.stdout, out.stderr)
            err.add_note(out.stderr.decode(errors="replace").strip())
            raise err
        return out.stdout.decode()

    def visible(self, path: str | Path) -> Path:
        """Where this process sees `path` of the daemon's namespace (its FUSE mounts)."""
        return Path(f"/proc/{self.pid}/root{Path(path).resolve()}")

    @contextlib.contextmanager
    def gang_blocks(self, min_size: int = 4097) -> Iterator[bool]:
        """While inside, the daemon gangs a quarter of its allocations of `min_size` or more.

        Sets the tunable ``metaslab_gang_bang`` (default SPA_MAXBLOCKSIZE + 1: allocations
        at least that large fail one time in four, by clock tick, and are written as gang
        blocks) in the running daemon's memory, and restores it on the way out. The binary
        is stripped, so the variable is found as the one 64-bit word of .data holding its
        default. Yields False, changing nothing, when this build has no such single word.
        """
        binary = ZFS_FUSE.split()[0]
        sections = subprocess.run(
            ["readelf", "-S", "-W", binary], capture_output=True, text=True, check=True
        ).stdout
        fields = next(line.split() for line in sections.splitlines() if " .data " in line)
        at = fields.index(".data")
        vaddr, offset, size = (int(fields[at + i], 16) for i in (2, 3, 4))
        with open(binary, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        default = struct.pack("<Q", GANG_BANG_DEFAULT)
        hits = [i for i in range(0, size - 7, 8) if data[i : i + 8] == default]
        if len(hits) != 1:
            yield False
            return
        maps = Path(f"/proc/{self.pid}/maps").read_text().splitlines()
        base = next(
            int(line.split("-")[0], 16)
            for line in maps
            if line.split()[-1] == binary and int(line.split()[2], 16) == 0
        )
        with open(f"/proc/{self.pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(base + vaddr + hits[0])
            mem.write(struct.pack("<Q", min_size))
            try:
                yield True
            finally:
                mem.seek(base + vaddr + hits[0])
                mem.write(default)

    def export(self, pool: str) -> None:
        """Export `pool`, waiting out a mount still busy with the kernel's last releases.

        FUSE sends RELEASE after close(2) returns, so right after populating, the unmount
        inside ``zpool export`` can find the mount busy for a moment.
        """
        self.run_until_not_busy("zpool", "export", pool)

    def run_until_not_busy(self, tool: str, verb: str, target: str, tries: int = 40) -> None:
        """``TOOL VERB TARGET``, again while it fails because a mount is busy (the kernel's
        last releases), then forced (``TOOL VERB -f TARGET``)."""
        for _ in range(tries):
            try:
                self.run(tool, verb, target)
                return
            except subprocess.CalledProcessError as e:
                if b"busy" not in e.stderr:
                    raise
                time.sleep(0.25)
        self.run(tool, verb, "-f", target)

    def stop(self) -> None:
        """Export every pool and stop the daemon; its namespace and mounts go with it."""
        if self._proc is None:
            return
        try:
            if self._proc.poll() is None:
                for name in self.run("zpool", "list", "-H", "-o", "name").split():
                    self.run("zpool", "export", "-f", name)
        except (subprocess.SubprocessError, OSError):
            pass  # stopping the daemon below still tears the namespace down
        finally:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None


@dataclass(frozen=True)
class PoolRecord:
    """A built, exported pool: where its vdevs are and what it was made of."""

    name: str
    directory: Path  # holds the vdev files (pass to ``zdb -e -p``)
    vdevs: list[Path]  # in the order of the layout
    layout: tuple[tuple[str, int], ...]
    properties: dict[str, str]
    config: str  # ``zdb -e -p DIR POOL`` output: the label config, the tree of record
    files: dict[str, bytes] = field(default_factory=dict)  # what populate returned


def build_pool(
    daemon: ZfsFuse,
    directory: Path,
    name: str,
    layout: Sequence[tuple[str, int]],
    properties: dict[str, str] | None = None,
    populate: Callable[[Path], dict[str, bytes] | None] | None = None,
    *,
    size: int = 64 << 20,
    ashift: int = 9,
) -> PoolRecord:
    """Create pool `name` from file vdevs, populate it, export it.

    Args:
        daemon: the running zfs-fuse.
        directory: where the vdev files go (created if needed).
        name: the pool name.
        layout: top-level vdevs as (type, width): ("disk", 1), ("mirror", 2),
            ("raidz1".."raidz3", n); several entries stripe.
        properties: dataset properties set at creation (compression, checksum, copies,
            recordsize ...).
        populate: called with the mounted root dataset's path; may create more datasets
            through ``daemon.run("zfs", ...)``; what it returns is kept in the record.
        size: bytes per vdev file.
        ashift: sector size exponent of every top-level vdev.
    """
    directory.mkdir(parents=True, exist_ok=True)
    spec: list[str] = []
    vdevs: list[Path] = []
    for t, (kind, width) in enumerate(layout):
        if kind != "disk":
            spec.append(kind)
        for i in range(width):
            path = directory / f"{name}-{t}-{i}.img"
            with open(path, "wb") as f:
                f.truncate(size)
            vdevs.append(path)
            spec.append(str(path))
    args = ["zpool", "create", "-f", "-o", f"ashift={ashift}", "-m", str(directory / "mnt")]
    for key, value in (properties or {}).items():
        args += ["-O", f"{key}={value}"]
    daemon.run(*args, name, *spec)
    try:
        files = populate(daemon.visible(directory / "mnt")) if populate else None
    finally:
        daemon.export(name)
    config = daemon.run("zdb", "-e", "-p", str(directory), name)
    return PoolRecord(
        name, directory, vdevs, tuple(layout), dict(properties or {}), config, files or {}
    )


@dataclass(frozen=True)
class Visited:
    """One block reached by `walk_pool`."""

    objset: int  # 0 for the MOS, else the dataset object number
    object: int
    level: int
    blkid: int
    bp: BlockPtr
    data: bytes


MAX_OBJECTS = 1 << 16  # the test pools are small; a bound keeps a bad walk finite


async def _walk_tree(
    pool: Pool, bp: BlockPtr, level: int, blkid: int, indblkshift: int
) -> AsyncIterator[tuple[int, int, BlockPtr, bytes]]:
    if bp.is_hole:
        return
    data = await pool.read_bp(bp)
    yield level, blkid, bp, data
    if level > 0:
        per = 1 << (indblkshift - 7)
        for i, child in enumerate(parse_blkptrs(data, bp.byteorder)):
            async for item in _walk_tree(pool, child, level - 1, blkid * per + i, indblkshift):
                yield item


async def walk_pool(pool: Pool) -> AsyncIterator[Visited]:
    """Every block of the MOS and of every dataset's object set, read and verified."""
    pending = [(0, pool.uberblock.ub_rootbp)]
    seen_objsets: set[int] = set()
    while pending:
        objset_id, os_bp = pending.pop(0)
        raw = await pool.read_bp(os_bp)
        yield Visited(objset_id, -1, 0, 0, os_bp, raw)
        if os_bp.encrypted:
            continue  # an encrypted dataset's dnodes cannot be read without its key
        meta = parse_objset(raw, os_bp.byteorder).os_meta_dnode
        dnode_blocks: list[tuple[int, BlockPtr, bytes]] = []
        for i, bp in enumerate(meta.dn_blkptr):
            top = meta.dn_nlevels - 1
            async for level, blkid, child, data in _walk_tree(
                pool, bp, top, i, meta.dn_indblkshift
            ):
                yield Visited(objset_id, 0, level, blkid, child, data)
                if level == 0:
                    dnode_blocks.append((blkid, child, data))
        for blkid, block_bp, block in dnode_blocks:
            per_block = len(block) // DNODE_MIN_SIZE
            slot = 0
            while slot < per_block:
                obj = blkid * per_block + slot
                dn = parse_dnode(block[slot * DNODE_MIN_SIZE :], block_bp.byteorder)
                slot += dn.dn_extra_slots + 1
                if dn.dn_type == 0 or obj == 0:
                    continue
                assert obj < MAX_OBJECTS
                for i, bp in enumerate(dn.dn_blkptr):
                    async for level, bid, child, data in _walk_tree(
                        pool, bp, dn.dn_nlevels - 1, i, dn.dn_indblkshift
                    ):
                        yield Visited(objset_id, obj, level, bid, child, data)
                # A zapified dataset (extensible_dataset) changes its dn_type, not its bonus.
                if objset_id == 0 and dn.dn_bonustype == DMU_OT_DSL_DATASET:
                    ds = parse_dsl_dataset(dn.dn_bonus, block_bp.byteorder)
                    if not ds.ds_bp.is_hole and obj not in seen_objsets:
                        seen_objsets.add(obj)
                        pending.append((obj, ds.ds_bp))


async def object_contents(pool: Pool, objset: int = -1, dn_type: int = 19) -> list[bytes]:
    """The level-0 bytes of every object of `dn_type` (plain files), holes as zeros.

    `objset` -1 takes every dataset's objects.
    """
    blocks: dict[tuple[int, int], dict[int, bytes]] = {}
    types: dict[tuple[int, int], int] = {}
    async for v in walk_pool(pool):
        if v.level == 0 and v.object > 0 and (objset == -1 or v.objset == objset):
            blocks.setdefault((v.objset, v.object), {})[v.blkid] = v.data
            types[(v.objset, v.object)] = v.bp.type
    out = []
    for key, parts in blocks.items():
        if types[key] != dn_type:
            continue
        size = max(len(b) for b in parts.values())
        out.append(b"".join(parts.get(i, bytes(size)) for i in range(max(parts) + 1)))
    return out
