"""Indexed (htree) directories: name hashes against debugfs, lookups through the index against
the linear scan and the kernel, a few reads per lookup, and damaged indexes searched
linearly as the kernel searches them."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
import trio

from uvfs import FSError, MountOptions
from uvfs_fs.ext2 import DRIVER
from uvfs_fs.ext2.htree import DxCorrupt, dx_hash, parse_node, parse_root

from .images import debugfs
from .test_corrupt import poke
from .test_filesystem import CountingImage

NAMES = (
    [f"entry-{i:05d}".encode() for i in range(6000)]
    + ["\u00e9t\u00e9-%d".encode() % i for i in range(800)]  # bytes >= 0x80: signedness shows
    + [b"\xff\x80raw-%d" % i for i in range(800)]
    + [b"long-%d-" % i + b"n" * 200 for i in range(400)]
)
DIR = "d"


def test_hashes_match_debugfs(tmp_path: Path) -> None:
    """legacy, half-MD4 and TEA (signed, as debugfs computes on x86), seeded and not."""
    image = tmp_path / "image"
    subprocess.run(["mke2fs", "-q", "-F", str(image), "1M"], check=True, capture_output=True)
    seed = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    words = list(struct.unpack("<4I", seed.bytes))
    names = [b"a", b"caf\xc3\xa9", b"x" * 40, b"\xff" * 33, b"hello.txt", b"n" * 255]
    for alg, version in (("legacy", 0), ("half_md4", 1), ("tea", 2)):
        for text, seed_words in ((str(seed), words), (str(uuid.UUID(int=0)), [0] * 4)):
            for name in names:
                out = subprocess.run(
                    [
                        b"debugfs",
                        b"-R",
                        b"dx_hash -h %s -s %s %s" % (alg.encode(), text.encode(), name),
                        image,
                    ],
                    check=True,
                    capture_output=True,
                ).stdout
                theirs = int(out.split(b" is ")[1].split()[0], 16)
                assert dx_hash(name, version, seed_words) == theirs & ~1, (alg, text, name)


def test_unsigned_flavours_differ_only_on_high_bytes() -> None:
    seed = [1, 2, 3, 4]
    for version in (0, 1, 2):
        assert dx_hash(b"plain-ascii", version, seed) == dx_hash(b"plain-ascii", version + 3, seed)
        assert dx_hash(b"\xe9t\xe9", version, seed) != dx_hash(b"\xe9t\xe9", version + 3, seed)
    with pytest.raises(DxCorrupt):
        dx_hash(b"x", 6, seed)  # SipHash (casefolded, encrypted names) is not computed


def _root(levels: int = 0, count: int = 1, limit: int = 124, version: int = 1) -> bytes:
    """A 1 KiB dx_root: (1024 - 32) / 8 = 124 entries, 123 before a dx_tail."""
    block = bytearray(1024)
    struct.pack_into("<IBBBB", block, 0x18, 0, version, 8, levels, 0)
    struct.pack_into("<HHI", block, 0x20, limit, count, 1)
    return bytes(block)


@pytest.mark.parametrize(
    "block",
    [
        _root(levels=2),  # deeper than large_dir-less volumes allow
        _root(count=0),
        _root(count=125),  # past the limit
        _root(limit=122),  # not the block's limit
        _root(version=6),  # SipHash
        _root(version=200),
        _root()[:16],
    ],
)
def test_damaged_roots(block: bytes) -> None:
    with pytest.raises(DxCorrupt):
        parse_root(block, csum=False, max_levels=1)


def test_root_and_node_tables() -> None:
    assert parse_root(_root(levels=1), csum=False, max_levels=1).levels == 1
    assert parse_root(_root(limit=123), csum=True, max_levels=1).entries == [(0, 1)]
    node = bytearray(1024)
    struct.pack_into("<HHIII", node, 8, 127, 2, 5, 0x1000, 6)
    assert parse_node(bytes(node), csum=False) == [(0, 5), (0x1000, 6)]
    with pytest.raises(DxCorrupt):
        parse_node(bytes(node), csum=True)  # a dx_tail leaves room for 126


def make_dir_image(image: Path, block_size: int, names: list[bytes], csum: bool = True) -> None:
    """An image whose /d the kernel filled with `names` (the kernel indexes it as it grows)."""
    if os.geteuid() != 0:
        pytest.skip("the kernel makes the directories: loop mounts need root")
    features = [] if csum else ["-O", "^metadata_csum"]
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(block_size), "-N", str(len(names) * 2),
         *features, str(image), "200M"],
        check=True, capture_output=True,
    )  # fmt: skip
    mountpoint = image.with_name(image.name + ".mnt")
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        (mountpoint / DIR).mkdir()
        for name in names:
            os.close(os.open(mountpoint / DIR / os.fsdecode(name), os.O_CREAT | os.O_WRONLY))
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("htree") / "image"
    make_dir_image(image, 1024, NAMES, csum=False)
    return image


async def _lookups(
    image: Path, names: list[bytes]
) -> tuple[dict[bytes, int], dict[bytes, int], bool]:
    """(name -> inode, or -errno) through the index on a fresh open; (name -> inode) from
    the linear scan; whether a lookup fell back to reading the directory whole."""
    with CountingImage(str(image)) as img:
        fs = await DRIVER.open([img], MountOptions())
        ino = (await fs.lookup(fs.root, DIR.encode())).ino
        indexed = {}
        for name in names:
            try:
                indexed[name] = (await fs.lookup(ino, name)).ino
            except FSError as e:
                indexed[name] = -e.errno
        fell_back = fs._dirs.get(ino) is not None
        linear = dict((await fs._directory(ino)).entries)
    return indexed, linear, fell_back


def _kernel_inodes(image: Path, names: list[bytes]) -> dict[bytes, int]:
    """(name -> inode, or -errno) as the kernel looks them up; its EUCLEAN (EFSCORRUPTED)
    is our EIO."""
    mountpoint = image.with_name(image.name + ".ro")
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "loop,ro", str(image), str(mountpoint)], check=True)
    try:
        found = {}
        for name in names:
            try:
                found[name] = os.lstat(mountpoint / DIR / os.fsdecode(name)).st_ino
            except OSError as e:
                found[name] = -(errno.EIO if e.errno == errno.EUCLEAN else e.errno)
        return found
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("alg", "flags"),
    [("kernel", 1)] + [(alg, flags) for alg in ("legacy", "half_md4", "tea") for flags in (1, 2)],
    ids=lambda v: {1: "signed", 2: "unsigned"}.get(v, v),
)
def test_lookups_through_the_index(kernel_dir: Path, tmp_path: Path, alg: str, flags: int) -> None:
    """Every name is found through the index exactly as the linear scan finds it, and as
    the kernel finds it; absent names are ENOENT. The kernel's own index (half-MD4, signed
    as mke2fs sets on x86), and e2fsck -D's rebuild with each hash and flavour (s_flags)."""
    image = Path(shutil.copy(kernel_dir, tmp_path / "image"))
    if alg != "kernel":
        debugfs(image, f"ssv def_hash_version {alg}", "-w")
    debugfs(image, f"ssv flags {flags}", "-w")
    if alg != "kernel":
        done = subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True, check=False)
        assert done.returncode in (0, 1), done.stdout
    text = debugfs(image, f"htree /{DIR}")
    assert "Indirect levels: 1" in text
    if alg != "kernel":
        assert f"Hash Version: {('legacy', 'half_md4', 'tea').index(alg)}" in text
    absent = [b"absent", b"\xe9t\xe9-9999", b"entry-99999"]
    indexed, linear, fell_back = trio.run(_lookups, image, [*NAMES, *absent])
    assert not fell_back
    assert linear.keys() - {b".", b".."} == set(NAMES)
    assert indexed == {
        **{name: linear[name] for name in NAMES},
        **dict.fromkeys(absent, -errno.ENOENT),
    }
    assert _kernel_inodes(image, NAMES) == {name: linear[name] for name in NAMES}


@pytest.mark.slow
async def test_a_lookup_in_100000_names_reads_a_handful_of_blocks(tmp_path: Path) -> None:
    image = tmp_path / "image"
    names = [b"entry-%06d" % i for i in range(100_000)]
    await trio.to_thread.run_sync(make_dir_image, image, 4096, names)
    with CountingImage(str(image)) as img:
        fs = await DRIVER.open([img], MountOptions())
        ino = (await fs.lookup(fs.root, DIR.encode())).ino
        for name in names[::997]:
            img.reads.clear()
            await fs.lookup(ino, name)
            # The index root and node, the leaf, the child's inode table block, at most.
            assert len(img.reads) <= 4
            assert sum(size for _, size in img.reads) <= 4 * 4096
        assert fs._dirs.get(ino) is None


def _dx_root_offset(image: Path, block_size: int) -> int:
    return int(debugfs(image, f"bmap /{DIR} 0").split()[0]) * block_size


def _first_node_offset(image: Path) -> int:
    """Where the index node the root's first entry names lies (1 KiB blocks)."""
    with open(image, "rb") as f:
        f.seek(_dx_root_offset(image, 1024) + 0x20 + 4)
        (node,) = struct.unpack("<I", f.read(4))
    return int(debugfs(image, f"bmap /{DIR} {node}").split()[0]) * 1024


# (offset in the root block, bytes): damage dx_probe reports as a bad dx directory
ROOT_DAMAGE = {
    "levels": (0x1E, b"\x05"),
    "unused_flags": (0x1F, b"\x01"),
    "hash_version": (0x1C, b"\x09"),
    "limit": (0x20, struct.pack("<H", 7)),
    "count_zero": (0x22, struct.pack("<H", 0)),
    "count_past_limit": (0x22, struct.pack("<H", 0xFFFF)),
    "node_is_root": (0x24, struct.pack("<I", 0)),  # a cycle back to block 0
    "node_past_end": (0x24, struct.pack("<I", 0x0FFFFFFF)),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(ROOT_DAMAGE))
def test_damaged_index_answers_as_the_kernel(
    kernel_dir: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad dx directory (the kernel's ERR_BAD_DX_DIR) is searched linearly, with a
    warning: every name is still found. An index entry past the directory's end is EIO for
    the names it routes, the others are found through the index. Both as on the kernel."""
    image = Path(shutil.copy(kernel_dir, tmp_path / "image"))
    offset, data = ROOT_DAMAGE[damage]
    poke(image, _dx_root_offset(image, 1024) + offset, data)
    sample = NAMES[::50]
    with caplog.at_level(logging.WARNING, logger="uvfs.ext2"):
        indexed, linear, fell_back = trio.run(_lookups, image, sample)
    assert _kernel_inodes(image, sample) == indexed
    if damage == "node_past_end":
        assert not fell_back
        assert (
            {name for name in sample if indexed[name] != linear[name]}
            == {name for name in sample if indexed[name] == -errno.EIO}
            != set()
        )
    else:
        assert fell_back
        assert indexed == {name: linear[name] for name in sample}
        assert "htree index damaged" in caplog.text


async def test_damaged_leaf_is_euclean_not_an_exception(kernel_dir: Path, tmp_path: Path) -> None:
    """A leaf record with rec_len 0: the search of its leaf stops there and the lookup is
    EUCLEAN, as on the kernel (which also lists that block's other names as missing)."""
    image = Path(shutil.copy(kernel_dir, tmp_path / "image"))
    node_at = _first_node_offset(image)
    with open(image, "rb") as f:
        f.seek(node_at + 8 + 4)
        (leaf,) = struct.unpack("<I", f.read(4))
    leaf_at = int(debugfs(image, f"bmap /{DIR} {leaf}").split()[0]) * 1024
    with open(image, "rb") as f:
        f.seek(leaf_at)
        head = f.read(64)
    name = head[8 : 8 + head[6]]
    poke(image, leaf_at + 4, b"\0\0")
    with CountingImage(str(image)) as img:
        fs = await DRIVER.open([img], MountOptions())
        ino = (await fs.lookup(fs.root, DIR.encode())).ino
        with pytest.raises(FSError) as info:
            await fs.lookup(ino, name)
        assert info.value.errno == errno.EUCLEAN


async def _listing_and_lookup(image: Path, name: bytes) -> tuple[object, int]:
    """The driver's listing of /d (sorted names, or errno) and its lookup of `name`
    (inode, or -errno), on a fresh open: the listing goes through the index."""
    with CountingImage(str(image)) as img:
        fs = await DRIVER.open([img], MountOptions())
        ino = (await fs.lookup(fs.root, DIR.encode())).ino
        try:
            listing: object = sorted(entry.name for entry in await fs.readdir(ino))
        except FSError as e:
            listing = e.errno
        try:
            found = (await fs.lookup(ino, name)).ino
        except FSError as e:
            found = -e.errno
    return listing, found


def _kernel_listing_and_lookup(image: Path, name: bytes) -> tuple[object, int]:
    mountpoint = image.with_name(image.name + ".ro")
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "loop,ro", str(image), str(mountpoint)], check=True)
    try:
        try:
            listing: object = sorted(os.listdir(os.fsencode(mountpoint / DIR)))
        except OSError as e:
            listing = e.errno
        try:
            found = os.lstat(mountpoint / DIR / os.fsdecode(name)).st_ino
        except OSError as e:
            found = -e.errno
        return listing, found
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.mark.slow
def test_a_misfiled_leaf_lists_as_the_kernel(kernel_dir: Path, tmp_path: Path) -> None:
    """A node entry whose hash is raised past names its leaf holds: the kernel's readdir
    (hash rounds through the index) leaves those names out, and so does the driver."""
    image = Path(shutil.copy(kernel_dir, tmp_path / "image"))
    node_at = _first_node_offset(image)
    with open(image, "rb") as f:
        f.seek(node_at + 8)
        table = f.read(8 * 12)
    (low,), (high,) = struct.unpack_from("<I", table, 8 * 5), struct.unpack_from("<I", table, 8 * 6)
    poke(image, node_at + 8 + 8 * 5, struct.pack("<I", (low + (high - low) // 2) & ~1))
    ours = trio.run(_listing_and_lookup, image, NAMES[0])
    assert ours == _kernel_listing_and_lookup(image, NAMES[0])
    assert isinstance(ours[0], list) and 0 < len(NAMES) - len(ours[0]) < len(NAMES)


@pytest.mark.slow
def test_a_bad_index_checksum_is_ebadmsg(tmp_path: Path) -> None:
    """metadata_csum: a node whose dx_tail no longer matches fails the listing and the
    lookups routed through it with EBADMSG, as on the kernel."""
    image = tmp_path / "image"
    make_dir_image(image, 1024, list(NAMES), csum=True)
    node_at = _first_node_offset(image)
    with open(image, "rb") as f:
        f.seek(node_at + 8 + 8 * 3 + 4)  # entry 3's block number: the high bits are unused
        (block,) = struct.unpack("<I", f.read(4))
    poke(image, node_at + 8 + 8 * 3 + 4, struct.pack("<I", block | 1 << 30))
    ours = trio.run(_listing_and_lookup, image, NAMES[0])
    assert ours == _kernel_listing_and_lookup(image, NAMES[0])
    assert ours[0] == errno.EBADMSG
