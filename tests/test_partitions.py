"""Partition tables written by sfdisk and sgdisk read as the tools read them (numbers,
extents, types), at 512- and 4096-byte sectors; damaged tables are refused with one line or,
for a damaged primary GPT, read from the backup with a warning; a partition's window never
reads or writes outside it."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.disks import MBR_SCRIPT, MiB, blank, loop_device, mkfs_at, sfdisk, sfdisk_view
from uvfs import FSError, ImageFile, Refusal, _gpt, _mbr
from uvfs._partitions import Partition, PartitionTable, read_partition_table
from uvfs._window import Window


def _view(table: PartitionTable) -> list[tuple[int, int, int]]:
    ss = table.sector_size
    return [(p.number, p.start // ss, p.size // ss) for p in table.partitions]


def _table(path: Path | str) -> PartitionTable:
    with ImageFile(str(path)) as image:
        table = read_partition_table(image)
    assert table is not None
    return table


def _poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.fixture
def gpt_disk(tmp_path: Path) -> Path:
    need("sgdisk")
    disk = blank(tmp_path / "gpt.img", 64 * MiB)
    subprocess.run(
        ["sgdisk", "-n1:2048:+20M", "-t1:8300", "-n2:0:+10M", "-t2:8200", "-n4:0:+16M",
         "-t4:bf01", "-c4:zfs-data", str(disk)],
        check=True, capture_output=True,
    )  # fmt: skip
    return disk


@pytest.fixture
def mbr_disk(tmp_path: Path) -> Path:
    disk = blank(tmp_path / "mbr.img", 64 * MiB)
    sfdisk(disk, MBR_SCRIPT)
    return disk


def test_record_layouts() -> None:
    """gpt_header_t's fields take 92 bytes, gpt_entry_t 128; an MBR entry 16."""
    assert (_gpt._HEADER.size, _gpt._ENTRY.size, _mbr._ENTRY.size) == (92, 128, 16)


def test_gpt_partitions_are_sfdisks(gpt_disk: Path) -> None:
    table = _table(gpt_disk)
    assert (table.scheme, table.sector_size, table.warnings) == ("gpt", 512, ())
    assert _view(table) == sfdisk_view(gpt_disk)
    assert [p.number for p in table.partitions] == [1, 2, 4]  # slot 3 empty: a gap
    assert [p.type_name for p in table.partitions] == [
        "Linux filesystem",
        "Linux swap",
        "Solaris /usr & Mac ZFS",
    ]


def test_logical_partitions_are_numbered_from_5(mbr_disk: Path) -> None:
    table = _table(mbr_disk)
    assert (table.scheme, table.sector_size) == ("mbr", 512)
    assert _view(table) == sfdisk_view(mbr_disk)
    assert [p.number for p in table.partitions] == [1, 2, 3, 5, 6, 7]
    assert [p.number for p in table.partitions if p.container] == [2]
    assert table.get(6) == Partition(6, 43008 * 512, 12 * MiB, "Linux swap / Solaris")


@pytest.mark.parametrize("label", ["gpt", "dos"])
def test_4096_byte_sectors(tmp_path: Path, label: str) -> None:
    """A 4Kn disk (a loop device with 4096-byte sectors, partitioned by sfdisk): read
    through the block device, whose size and sector size come from the kernel; a GPT is
    found in the plain image file too."""
    disk = blank(tmp_path / "4k.img", 64 * MiB)
    with loop_device(disk, 4096) as device:
        sfdisk(device, f"label: {label}\nstart=256, size=2048\nstart=2304, size=4096\n")
        expected = sfdisk_view(device)
        with ImageFile(device) as image:
            assert (image.size, image.sector_size) == (64 * MiB, 4096)
            table = read_partition_table(image)
        assert table is not None
        assert (table.sector_size, _view(table)) == (4096, expected)
    assert expected == [(1, 256, 2048), (2, 2304, 4096)]
    if label == "gpt":
        assert _view(_table(disk)) == expected


def test_damaged_primary_gpt_header_uses_the_backup(gpt_disk: Path) -> None:
    expected = _view(_table(gpt_disk))
    _poke(gpt_disk, 512 + 40, b"\x07")  # first usable LBA: the header's CRC no longer matches
    table = _table(gpt_disk)
    assert _view(table) == expected
    assert table.warnings == (
        f"{gpt_disk}: primary GPT damaged (header CRC mismatch), using the backup",
    )


def test_damaged_primary_gpt_entries_use_the_backup(gpt_disk: Path) -> None:
    expected = _view(_table(gpt_disk))
    _poke(gpt_disk, 1024 + 3 * 128 + 32, b"\x01")  # an empty slot's first LBA
    table = _table(gpt_disk)
    assert _view(table) == expected
    assert table.warnings == (
        f"{gpt_disk}: primary GPT damaged (partition entry array CRC mismatch), using the backup",
    )


def test_both_gpt_copies_damaged_is_refused(gpt_disk: Path) -> None:
    _poke(gpt_disk, 512 + 40, b"\x07")
    _poke(gpt_disk, 64 * MiB - 512 + 40, b"\x07")
    with pytest.raises(Refusal) as refused:
        _table(gpt_disk)
    assert str(refused.value) == (
        f"{gpt_disk}: GPT damaged: primary: header CRC mismatch; backup: header CRC mismatch"
    )


def test_a_protective_mbr_without_any_gpt_header_is_refused(gpt_disk: Path) -> None:
    _poke(gpt_disk, 512, bytes(8))  # both signatures gone: nothing says where the table is
    _poke(gpt_disk, 64 * MiB - 512, bytes(8))
    with pytest.raises(Refusal) as refused:
        _table(gpt_disk)
    assert str(refused.value) == f"{gpt_disk}: protective MBR but no GPT header (primary or backup)"


def test_overlapping_partitions_are_refused(mbr_disk: Path) -> None:
    _poke(mbr_disk, 446 + 2 * 16 + 8, (4096).to_bytes(4, "little"))  # 3 now starts inside 1
    with pytest.raises(Refusal, match=r"^\S+: partitions 1 and 3 overlap$"):
        _table(mbr_disk)


def test_overlapping_logical_partitions_are_refused(mbr_disk: Path) -> None:
    first_ebr = 18432 * 512  # at the start of the extended partition, as sfdisk puts it
    _poke(mbr_disk, first_ebr + 446 + 12, (30000).to_bytes(4, "little"))  # 5 grows into 6
    with pytest.raises(Refusal, match=r"^\S+: partitions 5 and 6 overlap$"):
        _table(mbr_disk)


def test_a_partition_past_the_end_is_refused(mbr_disk: Path) -> None:
    with open(mbr_disk, "r+b") as f:
        f.truncate(48 * MiB)  # partition 3 and the extended partition now end past the end
    with pytest.raises(Refusal) as refused:
        _table(mbr_disk)
    assert str(refused.value) == (
        f"{mbr_disk}: partition 2 ends past the end of the disk (byte {49 * MiB} of {48 * MiB})"
    )


def test_a_looping_chain_of_logical_partitions_is_refused(mbr_disk: Path) -> None:
    first_ebr = 18432 * 512
    _poke(mbr_disk, first_ebr + 446 + 16 + 8, (0).to_bytes(4, "little"))  # link to itself
    with pytest.raises(Refusal, match=r"^\S+: the chain of logical partitions loops$"):
        _table(mbr_disk)


def test_images_without_a_table(tmp_path: Path) -> None:
    """A filesystem image, and a boot sector whose status bytes are not 00/80, hold none."""
    plain = blank(tmp_path / "fs.img", 8 * MiB)
    mkfs_at(plain, 0, 8 * MiB, "ext2")
    boot = blank(tmp_path / "boot.img", MiB)
    _poke(boot, 446, b"\x12" + bytes(15))
    _poke(boot, 510, b"\x55\xaa")
    for path in (plain, boot):
        with ImageFile(str(path)) as image:
            assert read_partition_table(image) is None


async def test_a_window_stays_inside_its_partition(mbr_disk: Path) -> None:
    table = _table(mbr_disk)
    six = table.get(6)
    assert six is not None
    _poke(mbr_disk, six.end, b"neighbour")
    with ImageFile(str(mbr_disk), writable=True) as image:
        window = Window(image, six.start, six.size, "disk partition 6")
        assert window.size == 12 * MiB
        await window.write(0, b"first")
        assert await window.read(0, 5) == b"first"
        with pytest.raises(FSError) as read_past:
            await window.read(six.size - 4, 8)
        assert read_past.value.errno == errno.EIO
        with pytest.raises(FSError) as write_past:
            await window.write(six.size - 4, b"12345678")
        assert write_past.value.errno == errno.ENOSPC
    raw = mbr_disk.read_bytes()
    assert raw[six.start : six.start + 5] == b"first"
    assert raw[six.end - 4 : six.end + 9] == bytes(4) + b"neighbour"
