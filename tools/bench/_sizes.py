"""How big each benchmark run is: the full suite, ``--quick`` and the test suite's tiny one."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class Sizes:
    """Every knob that changes the images or how long a run takes.

    The fields that shape the images (`image_bytes` ... `zfs_vdev_bytes`) make up the recipe
    hash of the image cache; the others only change how the images are measured.
    """

    name: str
    image_bytes: int  # the ext2 image read by the read suites
    file_bytes: int  # the sequential-read file
    files: int  # small files in the find / du / tar tree
    dirs: int  # ... spread evenly over this many directories
    zfs_vdev_bytes: int  # one vdev file per pool
    compressions: tuple[str, ...]  # one zfs-fuse pool per compression
    random_reads: int  # 4 KiB preads per random-read run
    runs: int  # the median is taken over this many runs
    timeout: float  # seconds allowed for one measurement before it counts as failed
    remount: bool = True  # a fresh mount for every cold run (off: one mount per system)
    write_image_bytes: int = 0  # the empty ext2 and ext4 images of the writes (0: image_bytes)
    write_bytes: int = 0  # the written file (0: file_bytes)
    fsync_files: int = 2_000  # small files created and fsynced one by one
    null_files: int = 20_000  # files in the null tree: one LOOKUP each (framework suite)
    null_requests: int = 50_000  # GETATTRs, and 4 KiB READs, per framework measurement
    memory_file_bytes: int | None = None  # the memory suite's big read (None: file_bytes)
    audit_runs: int = 7  # audited and plain runs of each audit command (seconds each)

    def recipe(self) -> dict[str, object]:
        """The fields that determine the built images (the cache is rebuilt when they change)."""
        return {
            "image_bytes": self.image_bytes,
            "file_bytes": self.file_bytes,
            "files": self.files,
            "dirs": self.dirs,
            "zfs_vdev_bytes": self.zfs_vdev_bytes,
            "write_image_bytes": self.write_image_bytes,
            "fsync_files": self.fsync_files,
        }


# zfs-fuse 0.7 offers on|off|lzjb|gzip|gzip-[1-9]|zle; "on" is lzjb and gzip is gzip-6.
ZFS_FUSE_COMPRESSIONS = ("off", "lzjb", "gzip", "zle")

FULL = Sizes(
    name="full",
    image_bytes=512 * MiB,
    file_bytes=256 * MiB,
    files=20_000,
    dirs=200,
    zfs_vdev_bytes=512 * MiB,
    compressions=ZFS_FUSE_COMPRESSIONS,
    random_reads=2_000,
    runs=3,
    timeout=300,
    memory_file_bytes=2048 * MiB,
    write_image_bytes=1024 * MiB,  # the tree, its copy, 2,000 small files and 512 MiB
    write_bytes=512 * MiB,
)
QUICK = Sizes(
    name="quick",
    image_bytes=128 * MiB,
    file_bytes=64 * MiB,
    files=2_000,
    dirs=20,
    zfs_vdev_bytes=128 * MiB,
    compressions=ZFS_FUSE_COMPRESSIONS,
    random_reads=500,
    runs=1,
    timeout=60,
    null_files=5_000,
    null_requests=10_000,
    audit_runs=3,
    write_image_bytes=256 * MiB,
    fsync_files=500,
)
# The smoke test's size: every workload and system once, within seconds, so it mounts
# each system once per suite (its numbers mean nothing). 64 MiB is the smallest vdev
# zpool accepts.
TINY = Sizes(
    name="tiny",
    image_bytes=32 * MiB,
    file_bytes=4 * MiB,
    files=200,
    dirs=10,
    zfs_vdev_bytes=64 * MiB,
    compressions=("lzjb",),
    random_reads=100,
    runs=1,
    timeout=30,
    remount=False,
    null_files=500,
    null_requests=1_000,
    audit_runs=1,
    fsync_files=50,
)
