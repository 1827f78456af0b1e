"""Journal replay against the kernel: real transactions, replayed by uvfs in memory.

Each image gets transactions written by a real tool: debugfs's journal commands
(journal_open/journal_write/journal_close, with and without checksums v2/v3, revokes,
escaped blocks, an uncommitted transaction) or the kernel itself (a copy of a mounted
image taken after fsync, before the journal is checkpointed). The oracle is the kernel:
a copy is mounted read-write, which replays its journal, then compared node by node
(names, attributes, contents, xattrs, statfs) with the driver's view of the original,
whose bytes must not change.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

from uvfs import ImageFile, MountOptions, Refusal
from uvfs_fs.ext2 import DRIVER
from uvfs_fs.ext2.jbd2 import JBD2_MAGIC_NUMBER
from uvfs_fs.ext2.writable import DRIVER as WRITABLE_DRIVER
from uvfs_fs.ext2.writable import WritableExt2

from ..conftest import run_uvfs
from .conftest import resolve
from .images import debugfs, debugfs_w, make_image
from .test_kernel_oracle import compare_with_kernel, writable_loop_mount

pytestmark = pytest.mark.slow

JOURNAL_INO = 8
MAGIC = JBD2_MAGIC_NUMBER.to_bytes(4, "big")


class Transaction(NamedTuple):
    """One journal_write: new contents of some blocks, blocks to revoke, commit or not."""

    blocks: dict[int, bytes]
    revoke: tuple[int, ...] = ()
    commit: bool = True


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def block_size_of(image: Path) -> int:
    return int(re.search(r"Block size:\s+(\d+)", debugfs(image, "stats")).group(1))


def file_blocks(image: Path, rel: str) -> list[int]:
    return [int(b) for b in debugfs(image, f"blocks /{rel}").split()]


def write_journal(
    image: Path, transactions: Sequence[Transaction], open_flags: Sequence[str], work: Path
) -> None:
    """Append `transactions` to `image`'s journal with debugfs (which sets needs_recovery)."""
    script = [f"jo {' '.join(open_flags)}"]
    for n, txn in enumerate(transactions):
        data = work / f"txn{n}"
        data.write_bytes(b"".join(txn.blocks.values()))
        line = "jw"
        if txn.blocks:
            line += f" -b {','.join(map(str, txn.blocks))}"
        if txn.revoke:
            line += f" -r {','.join(map(str, txn.revoke))}"
        if not txn.commit:
            line += " -c"
        script.append(f"{line} {data if txn.blocks else '/dev/null'}")
    script.append("jc")
    debugfs_w(image, *script)
    assert "needs_recovery" in debugfs(image, "features")


def recovered_by_kernel(image: Path, work: Path) -> Path:
    """A copy of `image` whose journal the kernel has replayed (a read-write mount)."""
    copy = Path(shutil.copy(image, work / f"{image.name}.kernel"))
    with writable_loop_mount(copy, work / f"{image.name}.replay"):
        pass
    assert "needs_recovery" not in debugfs(copy, "features")
    return copy


def recovered_by_e2fsck(image: Path, work: Path) -> Path:
    """A copy of `image` whose journal e2fsck has replayed (-E journal_only: no other change)."""
    copy = Path(shutil.copy(image, work / f"{image.name}.e2fsck"))
    done = subprocess.run(
        ["e2fsck", "-E", "journal_only", "-y", str(copy)], capture_output=True, text=True
    )
    assert done.returncode in (0, 1), done.stdout
    return copy


async def assert_replayed_as_kernel(
    image: Path, kernel_mount, work: Path, fstype: str, recovered: Path | None = None
) -> Path:
    """The driver's view of `image` equals the kernel's view of `recovered` (by default a
    copy the kernel itself recovered); the image is untouched."""
    before = sha256(image)
    root = kernel_mount(recovered or recovered_by_kernel(image, work), fstype)
    await compare_with_kernel(image, root)
    assert sha256(image) == before
    return root


def log_block(image: Path, sequence: int, kind: str) -> int:
    """The image block of the `kind` ("descriptor" or "commit") block of transaction `sequence`."""
    found = re.search(
        rf"Found expected sequence {sequence}, type \d \({kind} block\) at block (\d+)",
        debugfs(image, "logdump"),
    )
    return int(debugfs(image, f"bmap <{JOURNAL_INO}> {found.group(1)}").strip())


def flip(image: Path, offset: int) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


# --- metadata transactions: what debugfs changed on a copy, journaled into the original -----

CHANGES = """mkdir /newdir
write {new} /newdir/new
symlink /newdir/link /files/small
rm /files/size1024
ea_set /files/small user.journaled from-the-journal
sif /files/size4096 mtime 20300101000000
"""

CASES = [
    pytest.param("ext4", 4096, (), (), id="ext4-4k-64bit-nocsum"),
    pytest.param("ext4", 4096, (), ("-c", "-v", "3"), id="ext4-4k-64bit-csum3"),
    pytest.param("ext4", 1024, ("-O", "^64bit"), ("-c", "-v", "2"), id="ext4-1k-csum2"),
    pytest.param(
        "ext4", 4096, ("-O", "^metadata_csum,^64bit"), ("-c", "-v", "3"), id="ext4-4k-32bit-csum3"
    ),
    pytest.param("ext3", 1024, (), (), id="ext3-1k"),
    pytest.param("ext3", 4096, (), ("-c", "-v", "2"), id="ext3-4k-csum2"),
]


NEW_FILE = b"written through the journal\n" * 400


def journaled_changes(
    tree: Path, image: Path, work: Path, fstype: str, block_size: int, mkfs: tuple[str, ...],
    open_flags: tuple[str, ...],
) -> None:  # fmt: skip
    """Build `image`, make `CHANGES` on a copy with debugfs, and journal every block that
    changed into `image`, in three committed transactions."""
    changed = work / "changed"
    make_image(
        tree, image, fstype=fstype, block_size=block_size, revision=1, filetype=True,
        size_mb=64, extra=mkfs,
    )  # fmt: skip
    shutil.copy(image, changed)
    (work / "new").write_bytes(NEW_FILE)
    subprocess.run(
        ["debugfs", "-w", "-f", "-", str(changed)],
        input=CHANGES.format(new=work / "new"),
        capture_output=True,
        text=True,
        check=True,
    )
    old, want = image.read_bytes(), changed.read_bytes()
    bs = block_size
    differ = [
        b
        for b in range(len(old) // bs)
        if old[b * bs : (b + 1) * bs] != want[b * bs : (b + 1) * bs]
    ]
    third = -(-len(differ) // 3)
    write_journal(
        image,
        [
            Transaction({b: want[b * bs : (b + 1) * bs] for b in part})
            for part in (differ[:third], differ[third : 2 * third], differ[2 * third :])
        ],
        open_flags,
        work,
    )


def assert_changes(root: Path) -> None:
    """Not vacuous: the recovered view has every change."""
    assert (root / "newdir/new").read_bytes() == NEW_FILE
    assert not (root / "files/size1024").exists()
    assert os.getxattr(root / "files/small", "user.journaled") == b"from-the-journal"


@pytest.mark.parametrize(("fstype", "block_size", "mkfs", "open_flags"), CASES)
async def test_metadata_transactions_replay_as_the_kernel_does(
    small_tree: Path,
    tmp_path: Path,
    kernel_mount,
    fstype: str,
    block_size: int,
    mkfs: tuple[str, ...],
    open_flags: tuple[str, ...],
) -> None:
    image = tmp_path / "image"
    journaled_changes(small_tree, image, tmp_path, fstype, block_size, mkfs, open_flags)
    assert_changes(await assert_replayed_as_kernel(image, kernel_mount, tmp_path, fstype))


async def open_writable(image: Path) -> None:
    """Open `image` as a read-write mount does (ext4 goes on read-only), then close it."""
    with ImageFile(str(image), writable=True) as img:
        fs = await WRITABLE_DRIVER.open([img], MountOptions(writable=True))
        if isinstance(fs, WritableExt2):
            await fs.close()


def assert_clean(image: Path) -> None:
    assert "needs_recovery" not in debugfs(image, "features")
    done = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    ("fstype", "block_size", "open_flags"),
    [("ext3", 1024, ()), ("ext4", 4096, ("-c", "-v", "3"))],
    ids=["ext3-1k", "ext4-4k-csum3"],
)
async def test_writable_open_replays_onto_the_image(
    small_tree: Path,
    tmp_path: Path,
    kernel_mount,
    fstype: str,
    block_size: int,
    open_flags: tuple[str, ...],
) -> None:
    """A writable open replays the journal onto the image, as the kernel would: e2fsck
    finds it clean, and it reads as the kernel's own recovery of a copy."""
    image = tmp_path / "image"
    journaled_changes(small_tree, image, tmp_path, fstype, block_size, (), open_flags)
    root = kernel_mount(recovered_by_kernel(image, tmp_path), fstype)
    await open_writable(image)
    assert_clean(image)
    await compare_with_kernel(image, root)
    assert_changes(root)


# --- revokes, escapes, uncommitted and corrupt transactions -------------------------------


def pattern(block_size: int, text: bytes, escaped: bool = True) -> bytes:
    """A block that opens with the jbd2 magic, so the log keeps it escaped."""
    return ((MAGIC if escaped else b"") + text * block_size)[:block_size]


@pytest.fixture(
    params=[("ext4", 4096, ("-c", "-v", "3")), ("ext3", 1024, ())], ids=["ext4", "ext3"]
)
def base(
    request: pytest.FixtureRequest, small_tree: Path, tmp_path: Path
) -> tuple[Path, str, tuple[str, ...]]:
    fstype, block_size, open_flags = request.param
    image = tmp_path / "image"
    make_image(
        small_tree,
        image,
        fstype=fstype,
        block_size=block_size,
        revision=1,
        filetype=True,
        size_mb=64,
    )
    return image, fstype, open_flags


async def test_revoked_escaped_and_uncommitted_blocks(base, tmp_path: Path, kernel_mount) -> None:
    """A revoked block keeps its contents unless rewritten after the revoke; escaped blocks
    get their magic back; an uncommitted transaction is not replayed."""
    image, fstype, open_flags = base
    bs = block_size_of(image)
    x, y, z = file_blocks(image, "files/block")[:3]
    with ImageFile(str(image)) as img:
        original = {b: img.read_sync(b * bs, bs) for b in (x, y, z)}
    write_journal(
        image,
        [
            Transaction({x: pattern(bs, b"revoked "), y: pattern(bs, b"first ")}),
            Transaction({}, revoke=(x, y)),
            Transaction({y: pattern(bs, b"rewritten ")}),
            Transaction({z: pattern(bs, b"uncommitted ")}, commit=False),
        ],
        open_flags,
        tmp_path,
    )
    assert "flags 0x9" in debugfs(image, "logdump -a")  # ESCAPE | LAST_TAG: an escaped copy

    root = await assert_replayed_as_kernel(image, kernel_mount, tmp_path, fstype)
    index = {x: 0, y: 1, z: 2}
    data = (root / "files/block").read_bytes()

    def block(b: int) -> bytes:
        return data[index[b] * bs : (index[b] + 1) * bs]

    assert block(x) == original[x]
    assert block(y) == pattern(bs, b"rewritten ")
    assert block(z) == original[z]


async def test_bad_commit_checksum_ends_replay(
    tmp_path: Path, small_tree: Path, kernel_mount, caplog
) -> None:
    """Transaction 2's commit block fails its checksum: 1 is replayed, 2 and 3 are not.

    The kernel replays transaction 1 too, then refuses to mount ("journal transaction 2 is
    corrupt"); e2fsck replays 1 and goes on, so the kernel's view of its result is the
    oracle, and a read-only open shows it with a warning; a writable one is refused."""
    image = tmp_path / "image"
    make_image(
        small_tree, image, fstype="ext4", block_size=4096, revision=1, filetype=True, size_mb=64
    )
    x, y, z = file_blocks(image, "files/block")[:3]
    write_journal(
        image,
        [
            Transaction({b: pattern(4096, text, False)})
            for b, text in ((x, b"1"), (y, b"2"), (z, b"3"))
        ],
        ("-c", "-v", "3"),
        tmp_path,
    )
    flip(image, log_block(image, 2, "commit") * 4096 + 0x10)  # h_chksum[0]

    recovered = recovered_by_e2fsck(image, tmp_path)
    root = await assert_replayed_as_kernel(image, kernel_mount, tmp_path, "ext4", recovered)
    data = (root / "files/block").read_bytes()
    assert data[:4096] == pattern(4096, b"1", False)
    assert data[4096:8192] != pattern(4096, b"2", False)
    assert data[8192:12288] != pattern(4096, b"3", False)
    before = sha256(image)
    with ImageFile(str(image), writable=True) as img, pytest.raises(Refusal) as info:
        await DRIVER.open([img], MountOptions(writable=True))
    assert str(info.value) == (
        "ext3/4 journal transaction 2 fails its commit checksum: run e2fsck, or mount "
        "read-only (-o ro)"
    )
    assert sha256(image) == before
    assert (
        f"{image}: journal transaction 2 fails its commit checksum: replayed up to it, as "
        "e2fsck does (the kernel refuses this journal)" in [r.getMessage() for r in caplog.records]
    )


@pytest.mark.parametrize("damage", ["descriptor", "copy"])
async def test_corrupt_transaction_is_refused_like_the_kernel(
    tmp_path: Path, small_tree: Path, damage: str
) -> None:
    """A descriptor block, or a block's copy, failing its checksum inside the log: the kernel
    refuses to mount, and so does a read-only open."""
    image = tmp_path / "image"
    make_image(
        small_tree, image, fstype="ext4", block_size=4096, revision=1, filetype=True, size_mb=64
    )
    x, y = file_blocks(image, "files/block")[:2]
    write_journal(
        image,
        [
            Transaction({x: pattern(4096, b"a", False)}),
            Transaction({y: pattern(4096, b"b", False)}),
        ],
        ("-c", "-v", "3"),
        tmp_path,
    )
    descriptor = log_block(image, 2, "descriptor")
    flip(image, descriptor * 4096 + (100 if damage == "descriptor" else 4096 + 100))

    copy = Path(shutil.copy(image, tmp_path / "kernel"))
    (tmp_path / "mnt").mkdir()
    kernel = subprocess.run(
        ["mount", "-t", "ext4", "-o", "loop", str(copy), str(tmp_path / "mnt")],
        capture_output=True,
    )
    if kernel.returncode == 0:
        subprocess.run(["umount", str(tmp_path / "mnt")], check=True)
    assert kernel.returncode != 0
    with ImageFile(str(image)) as img, pytest.raises(Refusal) as info:
        await DRIVER.open([img], MountOptions())
    assert (
        str(info.value)
        == {
            "descriptor": "ext3/4 journal cannot be replayed: journal transaction 2: descriptor "
            "block checksum does not match (the kernel refuses this journal too): run e2fsck",
            "copy": f"ext3/4 journal cannot be replayed: the journal's copies of block(s) {y} fail "
            "their checksums (the kernel refuses this journal too): run e2fsck",
        }[damage]
    )


# --- journals the kernel wrote ------------------------------------------------------------


def kernel_snapshot(image: Path, mountpoint: Path, fstype: str, copy: Path) -> None:
    """Write files on the kernel's mount of `image`, fsync them, and copy the image before
    the journal is checkpointed: a crash image whose journal holds the transactions."""
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", fstype, "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        (mountpoint / "dir").mkdir()
        for i in range(3):
            path = mountpoint / "dir" / f"f{i}"
            path.write_bytes(b"%d kernel data\n" % i * (3000 * (i + 1)))
            os.setxattr(path, "user.n", b"%d" % i)
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        os.rename(mountpoint / "dir" / "f0", mountpoint / "renamed")
        (mountpoint / "dir" / "f1").unlink()
        fd = os.open(mountpoint / "dir", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        shutil.copy(image, copy)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.mark.parametrize(
    ("fstype", "block_size", "mkfs"),
    [
        pytest.param("ext4", 4096, (), id="ext4-4k"),
        pytest.param("ext4", 1024, (), id="ext4-1k"),
        pytest.param("ext3", 1024, (), id="ext3-1k"),
    ],
)
async def test_journal_written_by_the_kernel(
    small_tree: Path,
    tmp_path: Path,
    kernel_mount,
    fstype: str,
    block_size: int,
    mkfs: tuple[str, ...],
) -> None:
    live, image = tmp_path / "live", tmp_path / "image"
    make_image(
        small_tree, live, fstype=fstype, block_size=block_size, revision=1, filetype=True,
        size_mb=64, extra=mkfs,
    )  # fmt: skip
    kernel_snapshot(live, tmp_path / "live-mnt", fstype, image)
    assert "needs_recovery" in debugfs(image, "features")
    assert "Found expected sequence" in debugfs(image, "logdump")
    root = await assert_replayed_as_kernel(image, kernel_mount, tmp_path, fstype)
    assert (root / "renamed").read_bytes() == b"0 kernel data\n" * 3000
    await open_writable(image)  # and replayed onto the image, as a read-write mount does
    assert_clean(image)
    await compare_with_kernel(image, root)


async def test_fast_commits_in_use_are_refused_by_name(small_tree: Path, tmp_path: Path) -> None:
    live, image = tmp_path / "live", tmp_path / "image"
    make_image(
        small_tree, live, fstype="ext4", block_size=4096, revision=1, filetype=True,
        size_mb=64, extra=("-O", "fast_commit"),
    )  # fmt: skip
    mountpoint = tmp_path / "live-mnt"
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(live), str(mountpoint)], check=True)
    try:
        (mountpoint / "dir").mkdir()
        os.sync()  # a full commit: the file below is left to a fast commit
        with open(mountpoint / "dir" / "new", "wb") as f:
            f.write(b"fast-committed\n" * 1000)
            os.fsync(f.fileno())
        shutil.copy(live, image)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    with ImageFile(str(image)) as img, pytest.raises(Refusal) as info:
        await DRIVER.open([img], MountOptions())
    assert re.fullmatch(
        r"ext3/4 journal cannot be replayed: the journal holds ext4 fast commits \(transaction "
        r"\d+\), which uvfs does not replay: let the kernel or e2fsck recover the image first",
        str(info.value),
    )


# --- external journals, and the command line ----------------------------------------------


async def test_external_journal(tmp_path: Path, small_tree: Path, caplog) -> None:
    """A journal on another device cannot be replayed: read-only warns, writable refuses."""
    image = tmp_path / "image"
    make_image(
        small_tree, image, fstype="ext4", block_size=4096, revision=1, filetype=True, size_mb=64
    )
    for field, value in (("journal_inum", 0), ("journal_dev", 0x0801), ("journal_uuid", "random")):
        debugfs(image, f"ssv {field} {value}", "-w")
    debugfs(image, "feature needs_recovery", "-w")
    before = sha256(image)
    with ImageFile(str(image)) as img:
        fs = await DRIVER.open([img], MountOptions())
        assert (await resolve(fs, "files/small")).size == 12
    assert [r.getMessage() for r in caplog.records] == [
        f"{image}: the journal is on an external device and is not replayed; "
        "recent changes may be missing"
    ]
    with (
        ImageFile(str(image), writable=True) as img,
        pytest.raises(Refusal, match="needs recovery"),
    ):
        await DRIVER.open([img], MountOptions(writable=True))
    assert sha256(image) == before


async def test_uvfs_mount(small_tree: Path, tmp_path: Path, mount) -> None:
    """uvfs mount -o ro shows the replayed files and leaves the image as it was; a
    read-write mount replays onto the image first (ext4 then goes on read-only)."""
    image = tmp_path / "image"
    make_image(
        small_tree, image, fstype="ext4", block_size=4096, revision=1, filetype=True, size_mb=64
    )
    x = file_blocks(image, "files/block")[0]
    write_journal(
        image, [Transaction({x: pattern(4096, b"mounted ")})], ("-c", "-v", "3"), tmp_path
    )
    before = sha256(image)
    root = mount(image)
    with open(root / "files/block", "rb") as f:
        assert f.read(4096) == pattern(4096, b"mounted ")
    run_uvfs("umount", str(root))
    assert sha256(image) == before
    root = mount(image, options=None)
    with open(root / "files/block", "rb") as f:
        assert f.read(4096) == pattern(4096, b"mounted ")
    run_uvfs("umount", str(root))
    assert_clean(image)


async def test_error_recorded_in_the_journal(small_tree: Path, tmp_path: Path, caplog) -> None:
    """An aborted journal (s_errno set) puts the volume in the error state, as the kernel
    does at mount: a read-only open warns and reads the replayed volume."""
    image = tmp_path / "image"
    make_image(
        small_tree, image, fstype="ext3", block_size=1024, revision=1, filetype=True, size_mb=64
    )
    x = file_blocks(image, "files/block")[0]
    write_journal(image, [Transaction({x: pattern(1024, b"aborted ")})], (), tmp_path)
    journal_sb = int(debugfs(image, f"bmap <{JOURNAL_INO}> 0").strip())
    with open(image, "r+b") as f:  # s_errno = -EIO; no checksum covers it without csum v2/v3
        f.seek(journal_sb * 1024 + 0x20)
        f.write((-5 & 0xFFFFFFFF).to_bytes(4, "big"))
    kernel_view = recovered_by_kernel(image, tmp_path)
    assert "with errors" in debugfs(kernel_view, "stats")
    with ImageFile(str(image)) as img:
        fs = await DRIVER.open([img], MountOptions())
        attr = await resolve(fs, "files/block")
        assert await fs.read(attr.ino, 0, 0, 1024) == pattern(1024, b"aborted ")
    assert [r.getMessage() for r in caplog.records] == [
        f"{image}: ext2 filesystem has errors or was not cleanly unmounted; "
        "reading it as it is (run e2fsck)"
    ]
