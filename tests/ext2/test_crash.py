"""kill -9 of a rw mount in the middle of writes: e2fsck -fy repairs, fsync'd files survive.

Files are written and fsync'd while another process keeps creating, overwriting,
truncating and deleting other files (so blocks are freed and allocated again); then the
churn goes on alone for a random while and the server is killed with SIGKILL, possibly in
the middle of a periodic flush.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uvfs._runtime import find

from .writing import FSTYPE, RW, fresh_image, fsck

CHURN = """
import os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
os.makedirs(os.path.join(root, "churn"), exist_ok=True)
while True:
    path = os.path.join(root, "churn", "f%d" % rng.randrange(40))
    try:
        action = rng.random()
        if action < 0.6:
            grow = os.path.exists(path) and os.path.getsize(path) < 1_000_000
            with open(path, "ab" if grow and rng.random() < 0.5 else "wb") as f:
                f.write(rng.randbytes(rng.randrange(1, 200_000)))
        elif action < 0.8:
            os.truncate(path, rng.randrange(0, 50_000))
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        break  # the mount is gone
"""


def fsync_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.slow
@pytest.mark.parametrize(("block_size", "seed"), [(1024, 1), (4096, 2), (1024, 3)])
def test_kill_9_keeps_every_fsynced_file(
    tmp_path: Path, mount, kernel_mount, block_size: int, seed: int
) -> None:
    rng = random.Random(seed)
    image = fresh_image(tmp_path / "img", block_size=block_size, size_mb=256)
    mnt = mount(image, options=RW, fstype=FSTYPE)
    record = find(os.path.realpath(mnt))
    assert record is not None
    churn = subprocess.Popen([sys.executable, "-c", CHURN, str(mnt), str(seed)])
    synced: dict[str, bytes] = {}
    try:
        (mnt / "kept").mkdir()
        deadline = time.monotonic() + rng.uniform(1.0, 3.0)
        while time.monotonic() < deadline and len(synced) < 200:
            name = f"kept/file{len(synced)}"
            synced[name] = rng.randbytes(rng.randrange(0, 300_000))
            fsync_file(mnt / name, synced[name])
        time.sleep(rng.uniform(0.2, 3.0))  # the churn alone, nothing fsync'd meanwhile
        os.kill(record.pid, signal.SIGKILL)
    finally:
        churn.wait(timeout=60)
    subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, check=False)
    repair = subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, text=True)
    assert repair.returncode in (0, 1), repair.stdout  # 1: errors found and corrected
    fsck(image)
    view = kernel_mount(image)
    assert len(synced) > 3
    for name, data in synced.items():
        assert (view / name).read_bytes() == data, name
