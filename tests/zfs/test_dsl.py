"""The DSL: dsl_dir_phys_t and dsl_dataset_phys_t records, and the dataset tree of a pool."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest
from zfsfuse import PoolRecord, ZfsFuse

from uvfs import FSError, ImageFile
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet
from uvfs_fs.zfs.dsl import list_datasets, parse_dsl_dataset, parse_dsl_dir
from uvfs_fs.zfs.spa import open_pool


@pytest.mark.parametrize("bo", ["<", ">"])
def test_dsl_dir_offsets(bo: str) -> None:
    words = list(range(100, 100 + 32))
    d = parse_dsl_dir(struct.pack(f"{bo}32Q", *words), bo)
    assert (d.dd_head_dataset_obj, d.dd_parent_obj, d.dd_origin_obj) == (101, 102, 103)
    assert (d.dd_child_dir_zapobj, d.dd_used_bytes, d.dd_quota) == (104, 105, 108)
    assert d.dd_props_zapobj == 110


@pytest.mark.parametrize("bo", ["<", ">"])
def test_dsl_dataset_offsets(bo: str) -> None:
    head = struct.pack(f"{bo}16Q", *range(1, 17))
    ds = parse_dsl_dataset(head + bytes(128) + bytes(64), bo)
    assert (ds.ds_dir_obj, ds.ds_prev_snap_obj, ds.ds_snapnames_zapobj) == (1, 2, 5)
    assert (ds.ds_creation_time, ds.ds_creation_txg, ds.ds_referenced_bytes) == (7, 8, 10)
    assert (ds.ds_guid, ds.ds_flags) == (15, 16)
    assert ds.ds_bp.is_hole


def test_short_bonus_is_eio() -> None:
    for parse in (parse_dsl_dir, parse_dsl_dataset):
        with pytest.raises(FSError) as e:
            parse(bytes(80), "<")
        assert e.value.errno == errno.EIO


@pytest.fixture(scope="module")
def tree(zfs_pool, zfs_fuse: ZfsFuse) -> tuple[PoolRecord, list[str]]:  # type: ignore[no-untyped-def]
    listing: list[str] = []

    def populate(root: Path) -> None:
        run = zfs_fuse.run
        run("zfs", "create", "-o", "compression=gzip", "pdsl/a")
        run("zfs", "create", "pdsl/a/b")
        real = str(root).removeprefix(f"/proc/{zfs_fuse.pid}/root")  # the daemon's path
        run("zfs", "create", "-o", f"mountpoint={real}-elsewhere", "pdsl/c")
        (root / "a" / "file").write_bytes(b"1")
        run("zfs", "snapshot", "pdsl/a@zz-first")
        (root / "a" / "file").write_bytes(b"2")
        run("zfs", "snapshot", "pdsl/a@aa-second")
        run("zfs", "clone", "pdsl/a@zz-first", "pdsl/c/clone")
        listed = run("zfs", "list", "-H", "-r", "-t", "all", "-o", "name,origin", "pdsl")
        listing.extend(listed.splitlines())

    return zfs_pool("dsl", [("disk", 1)], {}, populate), listing


async def test_list_datasets_matches_zfs_list(tree: tuple[PoolRecord, list[str]]) -> None:
    record, listing = tree
    pool = await open_pool([ImageFile(str(v)) for v in record.vdevs])
    mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
    datasets = await list_datasets(mos, pool.name)
    expected = dict(line.split("\t") for line in listing)
    assert {d.name: d.origin or "-" for d in datasets} == expected
    names = [d.name for d in datasets]
    # Parents first; each filesystem's snapshots follow it, oldest first.
    assert names == [
        "pdsl",
        "pdsl/a",
        "pdsl/a@zz-first",
        "pdsl/a@aa-second",
        "pdsl/a/b",
        "pdsl/c",
        "pdsl/c/clone",
    ]
    by = {d.name: d for d in datasets}
    assert by["pdsl/a"].snapshots == ["pdsl/a@zz-first", "pdsl/a@aa-second"]
    assert by["pdsl/a@zz-first"].is_snapshot and by["pdsl/a@zz-first"].parent == "pdsl/a"
    assert by["pdsl/a/b"].parent == "pdsl/a"
    assert by["pdsl/a"].props[b"compression"] != 0  # set locally
    assert b"compression" not in by["pdsl/a/b"].props  # inherited: not in its own ZAP
    assert by["pdsl/c"].props[b"mountpoint"].endswith(b"-elsewhere")
    assert by["pdsl"].props[b"mountpoint"] == str(record.directory / "mnt").encode()
    assert not any(d.encrypted for d in datasets)
