"""Random damage to an image's metadata: every request ends in an answer, FSError or Refusal.

Never another exception, never a hang. Each case overwrites a few random bytes in the
metadata debugfs locates (superblock, descriptors, the used part of the inode table,
directory, extent, indirect and attribute blocks), then opens the image and runs every
read operation over every node it can reach. Seeds are fixed, so a failure reproduces.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from uvfs import FSError, ImageFile, MountOptions, Refusal
from uvfs_fs.ext2 import DRIVER

from .images import debugfs

T = TypeVar("T")

CASES_PER_IMAGE = 150
NODE_BUDGET = 200  # nodes visited per case: damaged directories may loop


def small_tree(root: Path) -> None:
    (root / "d/e").mkdir(parents=True)
    (root / "a").write_bytes(b"hi\n")
    (root / "d/b").write_bytes(bytes(range(256)) * 80)  # 20 KiB: an indirect block at 1 KiB
    (root / "l").symlink_to("a")
    (root / "d/long").symlink_to("x" * 80)
    with open(root / "sparse", "wb") as f:  # many extents; double indirect at 1 KiB
        for i in range(8):
            f.seek(i * 40000)
            f.write(b"z" * 100)
    for i in range(40):
        (root / f"d/e/f{i}").write_bytes(b"%d" % i)
    os.setxattr(root / "a", "user.k", b"v" * 300)  # in a block
    os.setxattr(root / "d", "user.small", b"s")  # in the inode


def metadata_ranges(image: Path, block_size: int) -> list[tuple[int, int]]:
    """Byte ranges of the image's metadata, as debugfs and dumpe2fs locate it."""
    ranges = [(1024, 2048), (2048 if block_size == 1024 else block_size, 2 * block_size + 1024)]
    dump = subprocess.run(["dumpe2fs", str(image)], capture_output=True, text=True).stdout
    table = int(re.search(r"Inode table at (\d+)", dump).group(1))
    ranges.append((table * block_size, table * block_size + 64 * 256))
    for rel in ("", "d", "d/e", "d/b", "sparse", "a"):
        text = debugfs(image, f"stat /{rel}")
        blocks = {int(b) for b in re.findall(r"\((?:ETB\d*|IND|DIND|TIND)\):(\d+)", text)}
        blocks.add(int(text.split("File ACL:")[1].split()[0]))
        if rel in ("", "d", "d/e"):
            blocks.update(int(b) for b in debugfs(image, f"blocks /{rel}").split())
        ranges += [(b * block_size, (b + 1) * block_size) for b in blocks if b]
    return ranges


async def attempt(call: Awaitable[T]) -> T | None:
    """The call's answer, or None when it failed with an errno."""
    try:
        return await call
    except FSError:
        return None


async def exercise(path: Path) -> int:
    """Every read operation on every reachable node; returns how many answered."""
    with ImageFile(str(path)) as img:
        try:
            await DRIVER.describe([img])
            fs = await DRIVER.open([img], MountOptions(force=True))
        except Refusal:
            return 0
        answers = [await attempt(fs.statfs())]
        seen = {fs.root}
        stack = [fs.root]
        budget = NODE_BUDGET
        while stack and budget:
            ino = stack.pop()
            budget -= 1
            answers += [
                await attempt(fs.getattr(ino)),
                await attempt(fs.readlink(ino)),
                await attempt(fs.read(ino, 0, 0, 1 << 16)),
                await attempt(fs.read(ino, 0, 280_000, 1 << 16)),
            ]
            for name in await attempt(fs.listxattr(ino)) or []:
                answers.append(await attempt(fs.getxattr(ino, name)))
            for entry in await attempt(fs.readdir(ino)) or []:
                answers.append(await attempt(fs.lookup(ino, entry.name)))
                if entry.attr.ino not in seen:
                    seen.add(entry.attr.ino)
                    stack.append(entry.attr.ino)
    return sum(answer is not None for answer in answers)


@pytest.mark.parametrize(
    ("fstype", "features", "seed"),
    [
        ("ext2", "^has_journal", 1),
        ("ext4", "^has_journal", 2),
        # Without checksums, damage reaches the checks on the records' contents.
        ("ext4", "^has_journal,^metadata_csum", 3),
    ],
)
async def test_random_damage(tmp_path: Path, fstype: str, features: str, seed: int) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    small_tree(tree)
    image = tmp_path / "image"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", fstype, "-b", "1024", "-O", features, "-d",
         str(tree), str(image), "2M"],
        check=True, capture_output=True,
    )  # fmt: skip
    pristine = image.read_bytes()
    ranges = metadata_ranges(image, 1024)
    assert await exercise(image) > 150
    rng = random.Random(seed)
    damaged = tmp_path / "damaged"
    for case in range(CASES_PER_IMAGE):
        data = bytearray(pristine)
        for _ in range(rng.randint(1, 8)):
            start, end = rng.choice(ranges)
            at = rng.randrange(start, end)
            data[at : at + 4] = rng.choice(
                [bytes([rng.randrange(256)]), b"\0\0\0\0", b"\xff\xff\xff\xff", rng.randbytes(4)]
            )
        damaged.write_bytes(data)
        with trio.fail_after(10):
            try:
                await exercise(damaged)
            except Exception as e:
                raise AssertionError(f"case {case}: {e!r}") from e
