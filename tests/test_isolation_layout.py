"""An isolated read-only mount reads file data from the image where the driver's read layouts
place it (`ReadLayout`), asking the driver process once per file window, not once per read;
it asks again after a restart, and a writable mount never reads that way."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import need, run_uvfs
from uvfs._layout import WINDOW

BIG = 3 * 1024 * 1024 + 123  # several 1 MiB reads, an odd tail


def _image(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    need("mke2fs")
    rng = random.Random(7)
    files = {
        "big": rng.randbytes(BIG),
        "small": b"a small file\n",
        "empty": b"",
    }
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, data in files.items():
        (tree / name).write_bytes(data)
    with open(tree / "sparse", "wb") as f:  # data, a hole, data
        f.write(b"head")
        f.seek(5 << 20)
        f.write(b"tail")
    files["sparse"] = b"head" + bytes((5 << 20) - 4) + b"tail"
    image = tmp_path / "ext2.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "4096", "-d", str(tree),
                    str(image), "32M"], check=True, capture_output=True)  # fmt: skip
    return image, files


def _driver(mountpoint: Path) -> dict:
    return json.loads(run_uvfs("stats", "--json", str(mountpoint)).stdout)["driver"]


def _read_everything(mountpoint: Path, files: dict[str, bytes], rng: random.Random) -> None:
    """Each file whole, then at random offsets in random sizes, checked byte for byte; the
    kernel's page cache dropped first, so that every read reaches the server."""
    for name, data in files.items():
        with open(mountpoint / name, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert f.read() == data, name
            for _ in range(20):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                offset, size = rng.randrange(len(data) + 2), rng.choice([1, 4096, 70000])
                assert os.pread(f.fileno(), size, offset) == data[offset : offset + size]


def test_reads_come_from_the_image_through_layouts(mount, tmp_path: Path) -> None:
    """Every read (cache_size=0: every one reaches the broker's proxy) is answered from the
    image; the driver is asked one layout per file window, and again by the new process
    after a restart."""
    image, files = _image(tmp_path)
    assert all(len(data) <= WINDOW for data in files.values())
    read = len([data for data in files.values() if data])  # the kernel never reads "empty"
    mnt = mount(image, options="ro,isolate,cache_size=0")
    rng = random.Random(14)
    _read_everything(mnt, files, rng)
    driver = _driver(mnt)
    assert driver["layouts"] == read
    reads = driver["layout_reads"]
    assert reads >= 20 * read
    os.kill(driver["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while _driver(mnt)["restarts"] < 1:
        assert time.monotonic() < deadline, "the driver was not restarted"
        time.sleep(0.05)
    _read_everything(mnt, files, rng)
    driver = _driver(mnt)
    assert driver["layouts"] == 2 * read
    assert driver["layout_reads"] > reads


def test_a_writable_mount_reads_through_the_driver(mount, tmp_path: Path) -> None:
    """Writes move a file's bytes: a read-write mount never reads by layout, and a file
    overwritten and truncated reads back as written."""
    image, files = _image(tmp_path)
    mnt = mount(image, options="rw,isolate,cache_size=0")
    _read_everything(mnt, files, random.Random(1))
    with open(mnt / "big", "r+b") as f:
        f.write(b"new" * 1000)
        f.truncate(5000)
    assert (mnt / "big").read_bytes() == (b"new" * 1000 + files["big"][3000:])[:5000]
    assert _driver(mnt)["layouts"] == 0


@pytest.mark.parametrize("options", ["ro", "ro,isolate"])
def test_uvfs_stats_shows_layout_counts(mount, tmp_path: Path, options: str) -> None:
    """`uvfs stats --json` has the counts for every mount: zero in-process."""
    image, _ = _image(tmp_path)
    mnt = mount(image, options=options)
    driver = _driver(mnt)
    assert driver["layouts"] == 0 and driver["layout_reads"] == 0
