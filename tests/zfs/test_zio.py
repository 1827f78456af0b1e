"""The read pipeline on hand-built blocks: holes, embedded pointers, ditto copies, gang
blocks, checksum failures and hostile sizes."""

from __future__ import annotations

import errno
import random
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import lz4.block
import pytest
import trio
from conftest import PoolFactory
from test_spa import POOLS, _nicenum, _zdb_counts, populate
from zfsfuse import ZfsFuse, object_contents, walk_pool

from uvfs import FSError
from uvfs._image import ImageFile
from uvfs_fs.zfs import checksum as ck
from uvfs_fs.zfs.blkptr import BlockPtr, parse_blkptr
from uvfs_fs.zfs.label import VDEV_LABEL_START_SIZE
from uvfs_fs.zfs.spa import Pool, open_pool
from uvfs_fs.zfs.vdev import LeafVdev, MirrorVdev, Vdev, VdevStats
from uvfs_fs.zfs.zio import zio_read, zio_read_many

TEXT = b"".join(b"block data %d\n" % i for i in range(200))[:2048]


def _bp(
    dvas: list[tuple[int, int, int, bool]],
    lsize: int,
    psize: int,
    cksum: tuple[int, ...] = (0, 0, 0, 0),
    comp: int = 2,
    func: int = ck.ZIO_CHECKSUM_FLETCHER_4,
    birth: int = 10,
) -> bytes:
    words = [0] * 16
    for i, (vdev, offset, asize, gang) in enumerate(dvas):
        words[2 * i] = (vdev << 32) | (asize >> 9)
        words[2 * i + 1] = (int(gang) << 63) | (offset >> 9)
    words[6] = (
        ((lsize >> 9) - 1) | (((psize >> 9) - 1) << 16) | (comp << 32) | (func << 40)
        | (19 << 48) | (1 << 63)
    )  # fmt: skip
    words[10] = birth
    words[12:16] = cksum
    return struct.pack("<16Q", *words)


def _image(tmp_path: Path, blocks: dict[int, bytes]) -> ImageFile:
    path = tmp_path / "vdev.img"
    with open(path, "wb") as f:
        f.truncate(VDEV_LABEL_START_SIZE + (1 << 20))
        for offset, data in blocks.items():
            f.seek(VDEV_LABEL_START_SIZE + offset)
            f.write(data)
    return ImageFile(str(path))


def _leaf(image: ImageFile | None, stats: VdevStats, guid: int = 1) -> LeafVdev:
    return LeafVdev(type="file", guid=guid, id=0, stats=stats, image=image)


async def _read(vdevs: list[Vdev], raw: bytes, stats: VdevStats) -> bytes:
    return await zio_read(vdevs, parse_blkptr(raw, "<"), stats)


async def test_hole_reads_as_zeros() -> None:
    stats = VdevStats()
    words = [0] * 16
    words[6] = (8 - 1) | (1 << 63)
    assert await _read([], struct.pack("<16Q", *words), stats) == bytes(4096)


async def test_embedded_lz4_payload() -> None:
    data = b"embedded " * 100
    raw = lz4.block.compress(data, store_size=False)
    payload = struct.pack(">I", len(raw)) + raw
    assert len(payload) <= 112
    payload += bytes(112 - len(payload))
    words = [0] * 16
    it = iter(struct.unpack("<14Q", payload))
    for i in (0, 1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 14, 15):
        words[i] = next(it)
    psize = 4 + len(raw)
    words[6] = (len(data) - 1) | ((psize - 1) << 25) | (15 << 32) | (1 << 39) | (19 << 48)
    words[6] |= 1 << 63
    stats = VdevStats()
    assert await _read([], struct.pack("<16Q", *words), stats) == data
    words[6] |= 1 << 40  # embedded type 1 (redacted): no data
    with pytest.raises(FSError) as e:
        await _read([], struct.pack("<16Q", *words), stats)
    assert e.value.errno == errno.EIO


async def test_neighbours_share_one_read_and_a_bad_one_is_read_again(tmp_path: Path) -> None:
    """Four adjacent blocks and one 4 KiB past them (within the gap) cost one leaf read,
    whatever order they are asked in; the one corrupt on the first mirror side is read
    again alone and found on the other side; a hole keeps its place in the answer."""
    blocks = [TEXT[i:] + TEXT[:i] for i in range(5)]
    at = [8192, 10240, 12288, 14336, 20480]
    good = _image(tmp_path, dict(zip(at, blocks, strict=True)))
    bad_path = tmp_path / "bad"
    bad_path.mkdir()
    bad = _image(bad_path, {**dict(zip(at, blocks, strict=True)), 12288: b"X" * 2048})
    stats = VdevStats()
    sides: list[Vdev] = [_leaf(bad, stats), _leaf(good, stats, guid=2)]
    mirror = MirrorVdev(type="mirror", guid=9, id=0, stats=stats, children=sides)
    bps = [
        parse_blkptr(_bp([(0, a, 2048, False)], 2048, 2048, ck.fletcher4(b, "<")), "<")
        for a, b in zip(at, blocks, strict=True)
    ]
    hole = parse_blkptr(struct.pack("<16Q", *([0] * 6 + [(4 - 1) | (1 << 63)] + [0] * 9)), "<")
    order = [bps[3], bps[0], hole, bps[2], bps[1], bps[4]]
    got = await zio_read_many([mirror], order, stats)
    assert got == [blocks[3], blocks[0], bytes(2048), blocks[2], blocks[1], blocks[4]]
    # one read of the run, then the corrupt block: side 0 (fails), side 1
    assert (stats.leaf_reads, stats.checksum_errors, stats.blocks_read) == (3, 1, 6)


async def test_read_many_agrees_with_zio_read(zfs_pool: PoolFactory) -> None:
    """Every block of real pools read all at once is what zio_read gives one by one, raidz
    (never aggregated) and copies=2 included; the single-disk pool needs fewer reads."""
    for key in ("single", "mirror", "raidz1", "stripe"):
        layout, props, ashift = POOLS[key]
        record = zfs_pool(key, layout, props, populate, ashift=ashift)
        pool = await open_pool([ImageFile(str(p)) for p in record.vdevs])
        visited = [v async for v in walk_pool(pool)]
        before = pool.statistics().leaf_reads
        assert await pool.read_bps([v.bp for v in visited]) == [v.data for v in visited], key
        if key == "single":
            assert pool.statistics().leaf_reads - before < len(visited) // 2


async def test_ditto_copy_and_mirror_side_recover(tmp_path: Path) -> None:
    cksum = ck.fletcher4(TEXT, "<")
    good = _image(tmp_path, {8192: TEXT})
    bad_path = tmp_path / "bad"
    bad_path.mkdir()
    bad = _image(bad_path, {8192: b"X" * 2048, 16384: TEXT})
    stats = VdevStats()
    sides: list[Vdev] = [_leaf(bad, stats), _leaf(None, stats), _leaf(good, stats)]
    mirror = MirrorVdev(type="mirror", guid=9, id=0, stats=stats, children=sides)
    raw = _bp([(0, 8192, 2048, False)], 2048, 2048, cksum)
    assert await _read([mirror], raw, stats) == TEXT
    assert (stats.checksum_errors, stats.leaf_errors) == (1, 0)  # the absent side is last
    # The first DVA is bad on its only vdev, the second DVA holds the block.
    lone = _leaf(bad, stats)
    raw = _bp([(0, 8192, 2048, False), (0, 16384, 2048, False)], 2048, 2048, cksum)
    assert await _read([lone], raw, stats) == TEXT
    raw = _bp([(0, 8192, 2048, False), (5, 0, 512, False)], 2048, 2048, cksum)
    with pytest.raises(FSError, match="no copy passes its fletcher4 checksum"):
        await _read([lone], raw, stats)


def _gang_header(children: list[bytes], vdev: int, offset: int, birth: int) -> bytes:
    body = b"".join(children) + bytes(512 - 40 - 128 * len(children))
    tail = struct.pack("<Q", ck.ZEC_MAGIC)
    seed = struct.pack("<4Q", vdev, offset, birth, 0)
    words = ck.compute(ck.ZIO_CHECKSUM_GANG_HEADER, body + tail + seed, "<")
    return body + tail + struct.pack("<4Q", *words)


async def test_gang_block(tmp_path: Path) -> None:
    halves = TEXT[:1024], TEXT[1024:]
    kids = [
        _bp([(0, 4096 * (i + 2), 1024, False)], 1024, 1024, ck.fletcher4(h, "<"))
        for i, h in enumerate(halves)
    ]
    header = _gang_header([*kids, bytes(128)], 0, 4096, 10)
    image = _image(tmp_path, {4096: header, 8192: halves[0], 12288: halves[1]})
    stats = VdevStats()
    leaf = _leaf(image, stats)
    raw = _bp([(0, 4096, 512, True)], 2048, 2048, ck.fletcher4(TEXT, "<"))
    assert await _read([leaf], raw, stats) == TEXT
    # The header is seeded with the block's identity: the same bytes elsewhere fail.
    (tmp_path / "moved").mkdir()
    moved = _image(tmp_path / "moved", {12288: header})
    raw = _bp([(0, 12288, 512, True)], 2048, 2048, ck.fletcher4(TEXT, "<"))
    with pytest.raises(FSError):
        await _read([_leaf(moved, stats)], raw, stats)


async def test_unverifiable_checksum_is_counted(tmp_path: Path) -> None:
    stats = VdevStats()
    leaf = _leaf(_image(tmp_path, {0: TEXT}), stats)
    raw = _bp([(0, 0, 2048, False)], 2048, 2048, func=ck.ZIO_CHECKSUM_SKEIN)
    assert await _read([leaf], raw, stats) == TEXT
    assert stats.unverified == 1


async def test_corrupt_compressed_block_is_eio(tmp_path: Path) -> None:
    junk = b"\xff" * 512
    stats = VdevStats()
    leaf = _leaf(_image(tmp_path, {0: junk}), stats)
    raw = _bp([(0, 0, 512, False)], 4096, 512, ck.fletcher4(junk, "<"), comp=3)
    with pytest.raises(FSError) as e:
        await _read([leaf], raw, stats)
    assert e.value.errno == errno.EIO and "lzjb" in str(e.value)


async def test_block_past_the_image_is_eio(tmp_path: Path) -> None:
    stats = VdevStats()
    leaf = _leaf(_image(tmp_path, {}), stats)
    raw = _bp([(0, 1 << 30, 512, False)], 512, 512)
    with pytest.raises(FSError):
        await _read([leaf], raw, stats)
    assert stats.leaf_errors == 1


def _populate_in_many_txgs(daemon: ZfsFuse, pool: str) -> Callable[[Path], dict[str, bytes]]:
    # zfs-fuse gangs by clock tick, a whole txg's allocations at once: give each file its
    # own txg (a property change waits for one), so each has its own chance.
    def populate(root: Path) -> dict[str, bytes]:
        rng = random.Random(5)
        files = {}
        for i in range(24):
            files[f"f{i}"] = rng.randbytes(40 << 10) + TEXT * 8
            (root / f"f{i}").write_bytes(files[f"f{i}"])
            daemon.run("zfs", "set", f"uvfs:round={i}", pool)
        return files

    return populate


@pytest.mark.parametrize("layout", [[("disk", 1)], [("raidz1", 3)]])
async def test_real_gang_blocks(
    layout: list[tuple[str, int]], zfs_pool: PoolFactory, zfs_fuse: ZfsFuse
) -> None:
    key = f"gang-{layout[0][0]}"
    with zfs_fuse.gang_blocks() as forced:
        if not forced:
            pytest.skip("this zfs-fuse build has no metaslab_gang_bang to set")
        populate = _populate_in_many_txgs(zfs_fuse, "p" + key.replace("-", ""))
        record = zfs_pool(key, layout, {"compression": "lzjb"}, populate)
    pool = await open_pool([ImageFile(str(p)) for p in record.vdevs])
    gangs = 0
    counts: Counter[int] = Counter()
    async for v in walk_pool(pool):
        gangs += any(d.gang for d in v.bp.dvas)
        counts[v.bp.type] += 1
    assert gangs > 0
    zdb = _zdb_counts(zfs_fuse, record)
    assert _nicenum(counts[19]) == zdb["ZFS plain file"]
    objects = await object_contents(pool)
    for name, want in record.files.items():
        assert any(got[: len(want)] == want for got in objects), name


async def test_hostile_block_pointers(zfs_pool: PoolFactory) -> None:
    """Random and bit-flipped pointers read as bytes of lsize or EIO, nothing else."""
    layout, props, ashift = POOLS["raidz1"]
    record = zfs_pool("raidz1", layout, props, populate, ashift=ashift)
    pool = await open_pool([ImageFile(str(p)) for p in record.vdevs])
    indirect = [v.data async for v in walk_pool(pool) if v.level > 0]
    real = [b[i : i + 128] for b in indirect for i in range(0, len(b), 128) if any(b[i : i + 128])]
    assert len(real) > 10
    rng = random.Random(11)
    cases = [rng.randbytes(128) for _ in range(100)]
    for _ in range(400):
        raw = bytearray(rng.choice(real))
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(128)] ^= 1 << rng.randrange(8)
        cases.append(bytes(raw))
    for raw in cases:
        for order in "<>":
            bp = parse_blkptr(raw, order)
            try:
                data = await pool.read_bp(bp)
            except FSError as e:
                assert e.errno == errno.EIO
            else:
                assert len(data) == bp.lsize


async def test_concurrent_reads_agree(zfs_pool: PoolFactory) -> None:
    layout, props, ashift = POOLS["raidz2"]
    record = zfs_pool("raidz2", layout, props, populate, ashift=ashift)
    pool = await open_pool([ImageFile(str(p)) for p in record.vdevs])
    visited = [v async for v in walk_pool(pool)]
    got: dict[int, bytes] = {}

    async def fetch(i: int) -> None:
        got[i] = await pool.read_bp(visited[i].bp)

    async with trio.open_nursery() as nursery:
        for i in range(len(visited)):
            nursery.start_soon(fetch, i)
    assert [got[i] for i in range(len(visited))] == [v.data for v in visited]


async def _prefetch_all(pool: Pool, bps: list[BlockPtr]) -> list[list[bytes | None]]:
    """What `prefetch_bps` delivers for each of `bps`, once it has answered for all."""
    got: dict[int, list[bytes | None]] = {id(bp): [] for bp in bps}

    def deliver(bp: BlockPtr, data: bytes | None) -> None:
        got[id(bp)].append(data)

    pool.prefetch_bps(bps, deliver)
    with trio.fail_after(30):
        while not all(got.values()):
            await trio.sleep(0.01)
    await trio.sleep(0.05)  # time to deliver anything twice
    return [got[id(bp)] for bp in bps]


async def test_prefetch_delivers_every_pointer_once(zfs_pool: PoolFactory) -> None:
    """Read-ahead calls back once per pointer on the trio thread: with the verified block
    on a leaf vdev, with None where it does not read ahead (raidz), so no reader waits
    forever."""
    for key in ("single", "raidz1"):
        layout, props, ashift = POOLS[key]
        record = zfs_pool(key, layout, props, populate, ashift=ashift)
        pool = await open_pool([ImageFile(str(p)) for p in record.vdevs])
        visited = [v async for v in walk_pool(pool) if v.level == 0 and v.bp.dvas]
        answers = await _prefetch_all(pool, [v.bp for v in visited])
        if key == "single":
            assert answers == [[v.data] for v in visited]
        else:
            assert answers == [[None]] * len(visited)
