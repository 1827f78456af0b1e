"""ext3 mounted read-write through uvfs writes its metadata through the journal.

On real FUSE mounts of mke2fs ext3 images: a workload leaves a volume that e2fsck finds
clean and the kernel reads as uvfs showed it; an fsync leaves committed transactions in
the log, and a copy taken then is made whole by replay alone; kill -9 of the server in
the middle of an fsync-heavy workload leaves an image that `e2fsck -fp` (replay and
preen) makes clean, with every file whose fsync returned intact. In process: unlinked
files still open wait on the orphan list, which e2fsck and uvfs's next mount free.

`UVFS_CRASH_ROUNDS=50` runs 50 crash rounds instead of 8 (the closing figures).
"""

from __future__ import annotations

import inspect
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uvfs._runtime import find

from ..conftest import run_uvfs
from .images import debugfs
from .test_crash import CHURN, fsync_file
from .writing import FSTYPE, ROOT, RW, fresh_image, fsck, open_rw, snapshot

pytestmark = pytest.mark.slow

CRASH_ROUNDS = int(os.environ.get("UVFS_CRASH_ROUNDS", "8"))


def ext3_image(path: Path, block_size: int, size_mb: int = 32) -> Path:
    return fresh_image(path, block_size=block_size, size_mb=size_mb, fstype="ext3")


def committed_transactions(image: Path) -> int:
    """Transactions debugfs's logdump finds committed in `image`'s journal."""
    return len(re.findall(r"type 2 \(commit block\)", debugfs(image, "logdump")))


@pytest.mark.parametrize("block_size", [1024, 4096])
def test_workload_then_unmount_is_clean(tmp_path: Path, mount, kernel_mount, block_size) -> None:
    image = ext3_image(tmp_path / "img", block_size)
    mnt = mount(image, options=RW, fstype=FSTYPE)
    rng = random.Random(block_size)
    (mnt / "a" / "b").mkdir(parents=True)
    for i in range(60):
        fsync_file(mnt / "a" / f"f{i}", rng.randbytes(rng.randrange(0, 100_000)))
    for i in range(0, 60, 3):
        os.rename(mnt / "a" / f"f{i}", mnt / "a" / "b" / f"moved{i}")
    for i in range(1, 60, 3):
        os.unlink(mnt / "a" / f"f{i}")
    for i in range(2, 60, 6):
        os.truncate(mnt / "a" / f"f{i}", rng.randrange(0, 5000))
    os.mkdir(mnt / "gone")
    os.rmdir(mnt / "gone")
    os.symlink("a/b/moved0", mnt / "link")
    seen = snapshot(mnt)
    run_uvfs("umount", str(mnt))
    fsck(image)
    dumped = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    assert "needs_recovery" not in dumped and "Journal start:            0\n" in dumped
    assert snapshot(kernel_mount(image, "ext3")) == seen


@pytest.mark.parametrize("block_size", [1024, 4096])
def test_fsync_commits_and_replay_alone_makes_a_copy_whole(
    tmp_path: Path, mount, kernel_mount, block_size: int
) -> None:
    image = ext3_image(tmp_path / "img", block_size)
    mnt = mount(image, options=RW, fstype=FSTYPE)
    (mnt / "d").mkdir()
    files = {f"d/f{i}": os.urandom(1000 * i) for i in range(20)}
    for name, data in files.items():
        fsync_file(mnt / name, data)
    copy = Path(shutil.copy(image, tmp_path / "copy"))  # as a crash would leave it
    assert committed_transactions(copy) >= len(files)
    replay = subprocess.run(["e2fsck", "-fy", str(copy)], capture_output=True, text=True)
    assert "recovering journal" in replay.stdout
    assert "Fix?" not in replay.stdout, replay.stdout  # the journal alone made it whole
    fsck(copy)
    view = kernel_mount(copy, "ext3")
    for name, data in files.items():
        assert (view / name).read_bytes() == data
    run_uvfs("umount", str(mnt))
    fsck(image)


async def test_unlinked_open_files_wait_on_the_orphan_list(tmp_path: Path) -> None:
    """Unlinked files still open are on the orphan list, in the same transactions; after a
    crash, replay and e2fsck's orphan processing free them with nothing else to fix, and so
    does uvfs's next writable mount."""
    image = ext3_image(tmp_path / "img", 1024)
    async with open_rw(image) as fs:
        inos = []
        for i in range(4):
            a, _ = await fs.create(fs.root, b"f%d" % i, 0o644, os.O_WRONLY, ROOT)
            await fs.write(a.ino, 0, 0, os.urandom(50_000))
            inos.append(a.ino)
        for i in range(3):
            await fs.unlink(fs.root, b"f%d" % i)
        fs.forget(inos[1])  # freed by the next request: off the middle of the list
        await fs.fsync(inos[3], 0, False)
        crashed = Path(shutil.copy(image, tmp_path / "crashed"))
    assert fs.sb.s_last_orphan == 0
    fsck(image)
    replayed = Path(shutil.copy(crashed, tmp_path / "replayed"))
    done = subprocess.run(["e2fsck", "-fy", str(replayed)], capture_output=True, text=True)
    cleared = re.findall(r"Clearing orphaned inode (\d+)", done.stdout)
    assert cleared == [str(inos[2]), str(inos[0])], done.stdout
    assert "Fix?" not in done.stdout, done.stdout
    fsck(replayed)
    async with open_rw(crashed) as fs:
        assert [e.name for e in await fs.readdir(fs.root)] == [b"lost+found", b"f3"]
    fsck(crashed)
    assert debugfs(crashed, f"testi <{inos[0]}>").strip().endswith("is not in use")


def kept_content(seed: int, n: int) -> bytes:
    """What the fsync workload of round `seed` writes into its `n`th file."""
    rng = random.Random(seed * 100_003 + n)
    return rng.randbytes(rng.randrange(0, 150_000))


# Writes kept/f<n> and fsyncs it, printing n once fsync returned: half directly, half as
# a temporary file fsync'd, renamed into place and its directory fsync'd; a directory is
# made and removed now and then.
FSYNCER = (
    "import os, random, sys\n"
    + inspect.getsource(kept_content)
    + """
root, seed = sys.argv[1], int(sys.argv[2])
kept = os.path.join(root, "kept")
try:
    os.makedirs(kept, exist_ok=True)
    for n in range(1_000_000):
        data = kept_content(seed, n)
        path = os.path.join(kept, "f%d" % n)
        target = path if n % 2 else path + ".tmp"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        if target != path:
            os.rename(target, path)
            dirfd = os.open(kept, os.O_RDONLY)
            os.fsync(dirfd)
            os.close(dirfd)
        if n % 7 == 0:
            os.mkdir(os.path.join(kept, "d%d" % n))
            if n % 14:
                os.rmdir(os.path.join(kept, "d%d" % n))
        print(n, flush=True)
except OSError:
    pass  # the server is gone
"""
)


@pytest.mark.parametrize("fstype", ["ext3", "ext4"])
@pytest.mark.parametrize("seed", range(CRASH_ROUNDS))
def test_kill_9_during_fsyncs(tmp_path: Path, mount, kernel_mount, seed: int, fstype) -> None:
    """Fsyncs and churn (blocks freed and reused, so revokes) on a fresh mount, the server
    killed at a random moment; then `e2fsck -fp`, a clean `e2fsck -fn`, and every file
    whose fsync returned read back by the kernel. ext4: mke2fs's defaults (extents,
    64bit, metadata_csum, journal checksums v3)."""
    rng = random.Random(seed)
    image = fresh_image(
        tmp_path / "img", block_size=(1024, 4096)[seed % 2], size_mb=128, fstype=fstype
    )
    mnt = mount(image, options=RW, fstype=FSTYPE)
    record = find(os.path.realpath(mnt))
    assert record is not None
    churn = subprocess.Popen([sys.executable, "-c", CHURN, str(mnt), str(seed)])
    fsyncer = subprocess.Popen(
        [sys.executable, "-c", FSYNCER, str(mnt), str(seed)], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(rng.uniform(0.3, 2.5))
        os.kill(record.pid, signal.SIGKILL)
    finally:
        out, _ = fsyncer.communicate(timeout=60)
        churn.wait(timeout=60)
    subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, check=False)
    preen = subprocess.run(["e2fsck", "-fp", str(image)], capture_output=True, text=True)
    assert preen.returncode in (0, 1), preen.stdout + preen.stderr  # 1: fixed by preening
    fsck(image)
    synced = [int(line) for line in out.split()]
    assert synced, "no fsync returned before the kill"
    view = kernel_mount(image, fstype)
    for n in synced:
        assert (view / "kept" / f"f{n}").read_bytes() == kept_content(seed, n), n
