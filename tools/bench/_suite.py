"""Running the measurements: which mounts, in what order, cold and warm.

Cold means the kernel's caches dropped and a fresh mount (a fresh uvfs or fuse2fs process,
a fresh zfs-fuse import, so no userland cache survives either); warm is the same workload
again at once on that mount. Runs go round-robin (run 1 of every cell, then run 2 ...), so
a burst of load from another process on the machine spreads over all systems rather than
landing on one. A cell that fails (an error, a timeout, a wrong answer) records why and is
not tried again; the rest of the run goes on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ._audit import audit
from ._floor import floor_systems
from ._framework import framework
from ._host import BenchError, drop_caches, force_unmount_under, run
from ._images import BIG_FILE, FILES_DIR, SEED, Images
from ._memory import memory
from ._observe import observe
from ._profile import Profiler
from ._results import UVFS, UVFS_ISOLATE, Measurement, Results
from ._sizes import MiB, Sizes
from ._systems import Fuse2fsMount, KernelMount, Mount, UvfsMount

REPO = Path(__file__).resolve().parents[2]
READS = ("seqread", "randread", "find", "du")
ZFS_READS = ("seqread", "find", "du")
# In this order: cp -a copies and rm -rf removes what tar made.
WRITES = ("untar", "cpa", "createfsync", "write", "rmtree")
SUITES = ("ext2", "write", "zfs", "framework", "memory", "audit")
WRITE_SUITES = {"write": "ext2", "write-ext4": "ext4"}  # suite -> the empty image's type
# The zfs driver by module path: it mounts whether or not its entry point is registered.
UVFS_ZFS_TYPE = "zfs"
READ_ONLY_DRIVER = "read-only driver"

PAGE = 4096  # the random reads' size
MountFactory = Callable[[], Mount]
# The probe needs only the standard library: -I -S skip site-packages and the editable
# install's import hooks, a quarter of a second per run once the page cache is dropped.
PROBE = ["-I", "-S", str(Path(__file__).with_name("_probe.py"))]


class Bench:
    """One run of the suite over prepared images; fills `results`."""

    def __init__(
        self,
        sizes: Sizes,
        workdir: Path,
        images: Images,
        results: Results,
        profiler: Profiler | None = None,
        ext2_type: str = "ext2",
    ) -> None:
        self.sizes, self.workdir, self.images, self.results = sizes, workdir, images, results
        self.profiler = profiler
        self.ext2_type = ext2_type  # uvfs mount -t for the ext2 and write suites
        self.mounts = workdir / "mnt"

    def mountpoint(self, system: str) -> Path:
        """An empty directory to mount `system` on."""
        path = self.mounts / system
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- one workload -------------------------------------------------------------------

    def probe(self, workload: str, root: Path) -> float:
        """Run `workload` against the mount at `root` in a child process; its seconds."""
        return self.run_probe(workload, *self._workload_args(workload, root))

    def run_probe(self, kind: str, args: list[object], expect: int | None) -> float:
        """Run the probe's `kind` with `args`; its seconds, once its check equals `expect`."""
        command = [sys.executable, *PROBE, kind, *map(str, args)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.sizes.timeout
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"timed out after {self.sizes.timeout:g} s") from None
        if done.returncode != 0:
            reason = done.stderr.strip() or f"exit status {done.returncode}"
            raise BenchError(reason.splitlines()[-1])
        seconds, check = done.stdout.split()
        if expect is not None and int(check) != expect:
            raise BenchError(f"wrong answer: {check} instead of {expect}")
        return float(seconds)

    def _workload_args(self, workload: str, root: Path) -> tuple[list[object], int | None]:
        """The probe's arguments and the check value it must print (None: not checked)."""
        size = self.sizes.file_bytes
        match workload:
            case "seqread":
                return [root / BIG_FILE], size
            case "randread":
                count = self.sizes.random_reads
                return [root / BIG_FILE, count, SEED], count * PAGE
            case "find":
                return [root / FILES_DIR], self.sizes.files
            case "du":
                return [root / FILES_DIR], None  # block counts differ between filesystems
            case "untar":
                return [self.images.tar, root], None
            case "cpa":
                return [root / FILES_DIR, root / f"{FILES_DIR}-copy"], None
            case "createfsync":
                count = self.sizes.fsync_files
                return [root / "fsynced", count], count
            case "write":
                size = self.sizes.write_bytes or size
                return [root / "written.bin", size], size
            case "rmtree":
                return [root / FILES_DIR], None
        raise ValueError(workload)

    # --- read suites ----------------------------------------------------------------------

    def reads(
        self, suite: str, workloads: tuple[str, ...], systems: dict[str, MountFactory]
    ) -> None:
        """Cold and warm runs of every workload on every system, `sizes.runs` times.

        Each cold run gets a fresh mount, unless `sizes.remount` is off (the smoke test's
        size): then each system is mounted once, and "cold" only drops the kernel's caches.
        """
        held: dict[str, Mount] = {}
        try:
            for _ in range(self.sizes.runs):
                for workload in workloads:
                    for system, mount in systems.items():
                        cold = self.results.cell(suite, workload, "cold", system)
                        warm = self.results.cell(suite, workload, "warm", system)
                        if cold.error:
                            continue
                        try:
                            m = held.get(system) or mount()
                            if not self.sizes.remount:
                                held[system] = m
                            with contextlib.ExitStack() as stack:
                                if self.sizes.remount:
                                    stack.enter_context(m)
                                drop_caches()
                                with self.observed(m, cold):
                                    cold.samples.append(self._cold(suite, workload, m))
                                with self.observed(m, warm):
                                    warm.samples.append(self.probe(workload, m.root))
                        except BenchError as e:
                            cold.error = warm.error = str(e)
                        self.progress(suite, workload, system, cold.samples, cold.error)
        finally:
            for m in held.values():
                m.unmount()

    def observed(self, m: Mount, cell: Measurement) -> contextlib.AbstractContextManager[None]:
        """Around a workload on `m`: its server's requests, CPU time and peak RSS go to `cell`."""
        return observe(m, cell)

    def _cold(self, suite: str, workload: str, m: Mount) -> float:
        """The cold run of `workload` on `m`; with a profiler, a uvfs server is recorded."""
        if self.profiler is None or not isinstance(m, UvfsMount):
            return self.probe(workload, m.root)
        name = f"{suite}-{workload}".replace("/", "-")
        if m.root.name != UVFS:  # another uvfs system (the floor's uvfs-mem): its own name
            name += f"-{m.root.name}"
        with self.profiler.record(m.server(), name):
            return self.probe(workload, m.root)

    def progress(
        self,
        suite: str,
        workload: str,
        system: str,
        samples: list[float],
        error: str | None,
        phase: str = "cold",
    ) -> None:
        shown = error or (f"{samples[-1]:.3f} s" if samples else "-")
        print(f"bench: {suite:<10} {workload:<11} {system:<9} {phase} {shown}", flush=True)

    def ext2(self) -> None:
        """Reads of the ext2 image: kernel, fuse2fs, uvfs, and uvfs with the driver in a
        process of its own (``-o isolate``: what isolation costs); then the broker-cache
        re-read."""
        image = self.images.ext2
        self.reads(
            "ext2",
            READS,
            {
                "kernel": lambda: KernelMount(image, self.mountpoint("kernel"), writable=False),
                "fuse2fs": lambda: Fuse2fsMount(image, self.mountpoint("fuse2fs"), writable=False),
                UVFS: lambda: UvfsMount(
                    [image], self.mountpoint(UVFS), writable=False, fstype=self.ext2_type
                ),
                UVFS_ISOLATE: lambda: UvfsMount(
                    [image],
                    self.mountpoint(UVFS_ISOLATE),
                    writable=False,
                    fstype=self.ext2_type,
                    options=",isolate",
                ),
            },
        )
        self.broker_cache()

    def broker_cache(self) -> None:
        """Read, drop only the kernel's page cache, read again: uvfs's cache answers alone.

        The cache is sized to hold the whole file; ``uvfs stats`` before and after the
        second read must show no miss and no byte from the driver.
        """
        budget = 2 * self.sizes.file_bytes // MiB
        record: dict[str, object] = {"cache_size": f"{budget}M"}
        try:
            with UvfsMount(
                [self.images.ext2],
                self.mountpoint(UVFS),
                writable=False,
                fstype=self.ext2_type,
                options=f",cache_size={budget}M",
            ) as m:
                drop_caches()
                record["first_read_seconds"] = self.probe("seqread", m.root)
                before = m.stats()
                drop_caches(1)
                record["second_read_seconds"] = self.probe("seqread", m.root)
                after = m.stats()
            delta = {k: after[k] - before[k] for k in after if k != "pid"}
            untouched = delta["cache.misses"] == 0 and delta["cache.bytes_from_driver"] == 0
            record.update(before=before, after=after, delta=delta, driver_untouched=untouched)
        except BenchError as e:
            record["error"] = str(e)
        self.results.broker_cache = record

    # --- writes ---------------------------------------------------------------------------

    def write(self) -> None:
        """The writes on ext2, then on ext4 once uvfs writes it (until then it is skipped)."""
        for suite, fstype in WRITE_SUITES.items():
            empty = self.images.empty_ext2 if fstype == "ext2" else self.images.empty_ext4
            self.writes(suite, fstype, empty)

    def writes(self, suite: str, fstype: str, empty: Path) -> None:
        """`WRITES` in order on a fresh copy of the `empty` image; each timed to unmount.

        The ``write`` suite also runs them on the write floor's in-memory systems
        (``_floor.py``), each workload on a server of its own. When uvfs mounts the image
        read-only, nothing is measured: the suite is recorded in ``meta["skipped"]`` with
        the reason.
        """
        scratch = self.workdir / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        # (image, workload) -> a fresh mount; those on the image ignore the workload.
        systems: dict[str, Callable[[Path, str], Mount]] = {
            "kernel": lambda img, _: KernelMount(
                img, self.mountpoint("kernel"), writable=True, fstype=fstype
            ),
            "fuse2fs": lambda img, _: Fuse2fsMount(img, self.mountpoint("fuse2fs"), writable=True),
            UVFS: lambda img, _: self.writable_uvfs(img),
        }
        # The floor is the same whatever the image: measured once, in the ext2 suite.
        floor = floor_systems(self, scratch) if suite == "write" else {}
        systems |= {name: lambda _, w, f=f: f(w) for name, f in floor.items()}
        try:
            reason = None if fstype == "ext2" else self._uvfs_refuses(empty, scratch / "try.img")
            if reason:
                self.results.meta.setdefault("skipped", {})[suite] = reason
                print(f"bench: {suite:<10} skipped: {reason}", flush=True)
                return
            for _ in range(self.sizes.runs):
                for system, mount in systems.items():
                    image = scratch / f"{system}.img"
                    run(["cp", "--sparse=always", empty, image])
                    for i, workload in enumerate(WRITES):
                        cell = self.results.cell(suite, workload, "cold", system)
                        if cell.error:
                            continue
                        try:
                            opened = functools.partial(mount, image, workload)
                            cell.samples.append(self.timed_write(workload, opened, cell))
                        except BenchError as e:
                            cell.error = str(e)
                            # On the image, the later workloads build on this one.
                            for later in WRITES[i + 1 :] if system not in floor else ():
                                other = self.results.cell(suite, later, "cold", system)
                                other.error = other.error or str(e)
                        self.progress(suite, workload, system, cell.samples, cell.error)
                    image.unlink()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _uvfs_refuses(self, empty: Path, copy: Path) -> str | None:
        """Why uvfs does not mount a copy of `empty` read-write; None when it does."""
        run(["cp", "--sparse=always", empty, copy])
        try:
            with self.writable_uvfs(copy):
                return None
        except BenchError as e:
            return f"uvfs: {e}"
        finally:
            copy.unlink()

    def writable_uvfs(self, image: Path) -> Mount:
        m = UvfsMount([image], self.mountpoint(UVFS), writable=True, fstype=self.ext2_type)
        if m.read_only:
            m.unmount()
            raise BenchError(READ_ONLY_DRIVER)
        return m

    def timed_write(self, workload: str, mount: Callable[[], Mount], cell: Measurement) -> float:
        """The workload's seconds plus the unmount's: only then is everything on the image.

        What the server did (`observed`) is counted for the workload, before unmounting.
        """
        with mount() as m:
            drop_caches()
            with self.observed(m, cell):
                seconds = self._cold("write", workload, m)
            start = time.perf_counter()
            m.unmount()
            unmount = time.perf_counter() - start
            cell.unmount.append(unmount)
            return seconds + unmount

    # --- zfs ------------------------------------------------------------------------------

    def zfs(self) -> None:
        """Each compression's pool: zfs-fuse first, then (zfs-fuse stopped) uvfs."""
        from ._zfs import ZfsFuseMount, ensure_pools, private_daemon

        suites = [f"zfs/{c}" for c in self.sizes.compressions]
        try:
            # Stopped on leaving, before uvfs opens the vdevs: never two programs on a pool.
            with private_daemon(self.workdir / "zfs-fuse") as daemon:
                pools = ensure_pools(
                    daemon,
                    self.workdir / self.sizes.name / "zfs",
                    self.images.tree,
                    self.sizes.compressions,
                    self.sizes.zfs_vdev_bytes,
                )
                for suite, pool in zip(suites, pools.values(), strict=True):
                    zfs_fuse = {"zfs-fuse": lambda p=pool: ZfsFuseMount(daemon, p)}
                    self.reads(suite, ZFS_READS, zfs_fuse)
        except BenchError as e:
            self._fail_all(suites, ("zfs-fuse", UVFS), str(e))
            return
        for suite, pool in zip(suites, pools.values(), strict=True):
            self.reads(
                suite,
                ZFS_READS,
                {
                    UVFS: lambda p=pool: UvfsMount(
                        p.vdevs, self.mountpoint(UVFS), writable=False, fstype=UVFS_ZFS_TYPE
                    )
                },
            )

    def _fail_all(self, suites: list[str], systems: tuple[str, ...], error: str) -> None:
        """Give `error` to every cell of `suites` and `systems` that has not measured yet."""
        for suite in suites:
            for workload in ZFS_READS:
                for phase in ("cold", "warm"):
                    for system in systems:
                        cell = self.results.cell(suite, workload, phase, system)
                        if not cell.samples:
                            cell.error = cell.error or error


def run_suites(bench: Bench, suites: tuple[str, ...]) -> None:
    """Run the chosen suites; whatever happens, leave nothing mounted under the workdir."""
    try:
        steps: dict[str, Callable[[], None]] = {
            "ext2": bench.ext2,
            "write": bench.write,
            "zfs": bench.zfs,
            "framework": lambda: framework(bench),
            "memory": lambda: memory(bench),
            "audit": lambda: audit(bench),
        }
        for suite in SUITES:
            if suite in suites:
                steps[suite]()
    finally:
        force_unmount_under(bench.mounts)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True).stdout


def host_facts() -> dict[str, object]:
    """What the numbers depend on: kernel, CPUs, load, the code measured.

    The commit gets ``+dirty`` when uvfs or its drivers have uncommitted changes: the
    numbers then measure the working tree as it was during the run.
    """
    commit = _git("rev-parse", "--short", "HEAD").strip()
    if _git("status", "--porcelain", "--", "uvfs", "fs").strip():
        commit += "+dirty"
    return {
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "load_at_start": os.getloadavg(),
        "commit": commit,
    }
