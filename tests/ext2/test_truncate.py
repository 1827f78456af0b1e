"""Setting and freeing indirect block maps: exact pointers in memory, then on real images."""

from __future__ import annotations

import numpy as np
import pytest

from uvfs import SetAttr
from uvfs_fs.ext2.bmap import missing_indirect, set_run
from uvfs_fs.ext2.truncate import truncate_blocks

from .images import debugfs
from .writing import ROOT, fresh_image, fsck, open_rw

PER = 4  # pointers per indirect block: tiny, so every level is reached quickly


class Store:
    """Indirect blocks in memory, handed out from block 1000 on."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self.changed_blocks: set[int] = set()
        self.next = 1000

    async def pointers(self, block: int) -> np.ndarray:
        return np.frombuffer(self.blocks[block], dtype="<u4")

    def changed(self, block: int) -> None:
        self.changed_blocks.add(block)

    async def new_indirect(self, goal: int) -> int:
        block, self.next = self.next, self.next + 1
        self.blocks[block] = bytearray(4 * PER)
        return block


async def mapped(i_block: np.ndarray, store: Store, count: int) -> list[int]:
    """Physical block of each logical block below `count` (0 for holes), walked by hand."""
    out = []
    for logical in range(count):
        if logical < 12:
            out.append(int(i_block[logical]))
            continue
        rel, slot, depth = logical - 12, 12, 1
        while rel >= PER**depth:
            rel -= PER**depth
            slot, depth = slot + 1, depth + 1
        ptr = int(i_block[slot])
        for level in reversed(range(depth)):
            if not ptr:
                break
            ptr = int((await store.pointers(ptr))[(rel // PER**level) % PER])
        out.append(ptr)
    return out


async def test_set_run_builds_every_level_and_truncate_frees_it_exactly() -> None:
    store = Store()
    i_block = np.zeros(15, dtype="<u4")
    total = 12 + PER + PER**2 + 10  # into the triple indirect tree
    # ind; dind and its 4 ind; tind, one dind and the 3 ind its 10 blocks need
    needed = 1 + (1 + PER) + (1 + 1 + 3)
    assert await missing_indirect(i_block, 0, total, PER, store) == needed
    assert await set_run(i_block, 0, 5000, total, PER, store) == needed
    assert await mapped(i_block, store, total) == list(range(5000, 5000 + total))
    assert await missing_indirect(i_block, 0, total, PER, store) == 0

    # Cut inside the double indirect tree: its tail and the whole triple tree go.
    keep = 12 + PER + 5
    before = set(store.blocks)
    freed = await truncate_blocks(i_block, keep, PER, store)
    data = [b for b in freed if b >= 5000]
    assert sorted(data) == list(range(5000 + keep, 5000 + total))
    meta = {b for b in freed if b < 5000}
    assert len(meta) == 5 + (PER - 2)  # the triple tree, and dind's last two ind blocks
    assert meta <= before
    assert await mapped(i_block, store, total) == [*range(5000, 5000 + keep)] + [0] * (total - keep)
    assert int(i_block[14]) == 0

    freed = await truncate_blocks(i_block, 0, PER, store)
    assert not i_block.any()
    assert len(freed) == keep + 1 + 1 + 2  # data, ind, dind and its two remaining ind


async def test_truncate_skips_holes() -> None:
    store = Store()
    i_block = np.zeros(15, dtype="<u4")
    await set_run(i_block, 3, 700, 1, PER, store)
    await set_run(i_block, 12 + PER + 7, 800, 2, PER, store)
    # 801 sits alone in the third ind block under dind: both go.
    assert await truncate_blocks(i_block, 12 + PER + 8, PER, store) == [801, 1002]
    assert sorted(await truncate_blocks(i_block, 1, PER, store)) == sorted([700, 800, 1001, 1000])


@pytest.mark.parametrize("block_size", [1024, 4096])
async def test_truncating_real_files(tmp_path, block_size: int) -> None:
    image = fresh_image(tmp_path / "img", block_size=block_size, size_mb=64)
    per = block_size // 4
    triple = (12 + per + per**2) * block_size  # first byte mapped by the triple tree
    async with open_rw(image) as fs:
        a, _ = await fs.create(fs.root, b"f", 0o644, 0, ROOT)
        for offset in (0, 12 * block_size, (12 + per) * block_size, triple):
            await fs.write(a.ino, 0, offset, b"x" * (3 * block_size))
        used = (await fs.getattr(a.ino)).blocks
        # 12 data blocks of 4 runs of 3, plus ind; dind + ind; tind + dind + ind.
        assert used == (12 + 1 + 2 + 3) * block_size // 512
        await fs.setattr(a.ino, SetAttr(size=triple + 1), ROOT)
        assert (await fs.getattr(a.ino)).blocks == used - 2 * block_size // 512
        await fs.setattr(a.ino, SetAttr(size=(12 + per) * block_size), ROOT)
        assert (await fs.getattr(a.ino)).blocks == (6 + 1) * block_size // 512
        await fs.setattr(a.ino, SetAttr(size=5), ROOT)
        assert (await fs.getattr(a.ino)).blocks == block_size // 512
        assert await fs.read(a.ino, 0, 0, 100) == b"xxxxx"
    fsck(image)
    assert debugfs(image, "cat /f") == "xxxxx"
