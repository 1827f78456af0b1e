"""The jbd2 writer against real oracles: transactions uvfs logs, replayed by others.

Each image comes from mke2fs, marked needs_recovery as the kernel's read-write mount marks
it; the new contents of real metadata blocks come from debugfs run on copies (an inode
table block after `sif`, a directory block after `ln`), and uvfs only logs them, never
writing them home. Then: e2fsck -fn sees a journal to recover on a consistent image;
debugfs logdump lists exactly the intended layout; the kernel's read-only mount (on a
writable loop device, so that it may replay) and e2fsck -fy replay it to the metadata
debugfs made; uvfs's own recovery finds the same blocks. Journals with checksums v3
(ext4's, as the kernel sets them at mount), v2, v1 and none, 32- and 64-bit tags, at 1 and
4 KiB blocks; a log that wraps (over the fast-commit area, as the kernel's own log does when
it writes no fast commits), with checkpoints forced by a full log; an uncommitted
transaction; a commit whose checksum fails; the flushes between it all.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import trio

from uvfs import ImageFile
from uvfs_fs.ext2 import jbd2
from uvfs_fs.ext2.blockmap import Run
from uvfs_fs.ext2.jbd2 import (
    JBD2_FEATURE_COMPAT_CHECKSUM,
    JBD2_FEATURE_INCOMPAT_64BIT,
    JBD2_FEATURE_INCOMPAT_CSUM_V2,
    JBD2_FEATURE_INCOMPAT_CSUM_V3,
    JBD2_FEATURE_INCOMPAT_FAST_COMMIT,
    JBD2_MAGIC_NUMBER,
)
from uvfs_fs.ext2.journal import JournalLog, recover_journal
from uvfs_fs.ext2.journal_write import JournalWriter
from uvfs_fs.ext2.transaction import Commit

from ..conftest import need
from .images import debugfs, debugfs_w

pytestmark = pytest.mark.slow

V2, V3 = JBD2_FEATURE_INCOMPAT_CSUM_V2, JBD2_FEATURE_INCOMPAT_CSUM_V3
WIDE, FAST = JBD2_FEATURE_INCOMPAT_64BIT, JBD2_FEATURE_INCOMPAT_FAST_COMMIT
ESCAPE, SAME_UUID, LAST_TAG = 1, 2, 8
NOW = 1_700_000_000 * 10**9  # commit times: fixed, one second apart
MAGIC_BLOCK = JBD2_MAGIC_NUMBER.to_bytes(4, "big")


class Config(NamedTuple):
    """An image and the journal features ext4 would load it with."""

    fstype: str
    block_size: int
    compat: int
    incompat: int
    mkfs: tuple[str, ...] = ()


CONFIGS = {
    "ext4-1k-v3": Config("ext4", 1024, 0, V3 | WIDE),
    "ext4-4k-v3": Config("ext4", 4096, 0, V3 | WIDE),
    "ext4-1k-v2": Config("ext4", 1024, 0, V2 | WIDE),
    "ext3-1k": Config("ext3", 1024, 0, 0),
    "ext3-4k-v1": Config("ext3", 4096, JBD2_FEATURE_COMPAT_CHECKSUM, 0),
}


# --- images and tools -----------------------------------------------------------------------


def make_volume(work: Path, config: Config, size_mb: int = 8) -> Path:
    """An mke2fs image holding /file (100 bytes) and /dir/inner, marked needs_recovery."""
    tree = work / "tree"
    (tree / "dir").mkdir(parents=True)
    (tree / "file").write_bytes(b"f" * 100)
    (tree / "dir" / "inner").write_bytes(b"i" * 10)
    image = work / "base.img"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", config.fstype, "-b", str(config.block_size),
         *config.mkfs, "-d", str(tree), str(image), f"{size_mb}M"],
        check=True, capture_output=True,
    )  # fmt: skip
    debugfs_w(image, "feature needs_recovery")  # as the kernel's read-write mount sets it
    return image


def edited(image: Path, name: str, *requests: str) -> Path:
    """A copy of `image` changed by debugfs `requests`."""
    copy = Path(shutil.copy(image, image.with_name(name)))
    debugfs_w(copy, *requests)
    return copy


def blocks_of(image: Path, bs: int) -> list[bytes]:
    data = image.read_bytes()
    return [data[at : at + bs] for at in range(0, len(data), bs)]


def changed(before: Path, after: Path, bs: int) -> dict[int, bytes]:
    """The blocks of `after` that differ from `before`, with their new contents."""
    old, new = blocks_of(before, bs), blocks_of(after, bs)
    return {n: b for n, (a, b) in enumerate(zip(old, new, strict=True)) if a != b}


def dumpe2fs(image: Path) -> str:
    return subprocess.run(
        ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True
    ).stdout


def field(text: str, name: str) -> str:
    return re.search(rf"^{name}:\s+(.*)$", text, re.M).group(1)


def free_blocks(image: Path) -> list[int]:
    """Every free block of `image`, from dumpe2fs's group listing."""
    text = subprocess.run(["dumpe2fs", str(image)], capture_output=True, text=True).stdout
    blocks = []
    for ranges in re.findall(r"^\s+Free blocks: (.+)$", text, re.M):
        for piece in ranges.split(", "):
            lo, _, hi = piece.partition("-")
            blocks += range(int(lo), int(hi or lo) + 1)
    return blocks


def journal_runs(image: Path) -> list[Run]:
    """The journal inode's block map, from debugfs's stat (indirect and index blocks left
    out: only entries with logical block numbers)."""
    listing = re.split(r"^(?:BLOCKS|EXTENTS):$", debugfs(image, "stat <8>"), flags=re.M)[1]
    runs = []
    for lo, hi, start in re.findall(r"\((\d+)(?:-(\d+))?\):(\d+)", listing):
        runs.append(Run(int(lo), int(start), int(hi or lo) - int(lo) + 1))
    return runs


async def open_writer(image: ImageFile, path: Path, config: Config) -> JournalWriter:
    """A writer of `path`'s journal with the features `config` loads it with."""
    bs, runs = config.block_size, journal_runs(path)
    raw = await image.read(runs[0].physical * bs, jbd2.JOURNAL_SUPERBLOCK_SIZE)
    raw = jbd2.with_features(raw, config.compat, config.incompat)
    count = int(field(dumpe2fs(path), "Block count"))
    return await JournalWriter.open(image, runs, bs, count, raw)


async def commit_uncommitted(writer: JournalWriter, txn, now_ns: int) -> Commit:
    """Write `txn`'s log blocks durably but never its commit block (a crash in between)."""
    plan = writer.journal.commit(txn, now_ns // 10**9, now_ns % 10**9)
    await writer.write_log(plan.log)
    await writer.image.sync()
    return plan


@contextlib.contextmanager
def kernel_mount(image: Path, mountpoint: Path) -> Iterator[subprocess.CompletedProcess]:
    """The kernel's read-only mount of `image` on a writable loop device (on a read-only one
    it refuses to replay); yields mount's result, unmounts and detaches whatever happens."""
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        mountpoint.mkdir(exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "ext4", "-o", "ro", loop, str(mountpoint)],
            capture_output=True,
            text=True,
        )
        try:
            yield done
        finally:
            if done.returncode == 0:
                subprocess.run(["umount", str(mountpoint)], capture_output=True, check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)


def e2fsck(image: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(["e2fsck", *flags, str(image)], capture_output=True, text=True)


def features(image: Path) -> list[str]:
    return field(dumpe2fs(image), "Filesystem features").split()


@pytest.fixture(autouse=True)
def _tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root")
    need("mke2fs", "debugfs", "dumpe2fs", "e2fsck", "losetup")


# --- three transactions over real metadata --------------------------------------------------


class Journaled(NamedTuple):
    """An image whose journal holds two committed transactions and one uncommitted."""

    path: Path
    config: Config
    base: Path  # the image as mke2fs left it: every block outside the journal is still so
    expected: dict[int, bytes]  # what a correct replay writes: block -> contents
    untouched: list[int]  # blocks logged but revoked, or uncommitted: replay leaves them
    inode_block: int
    dir_block: int
    spare: list[int]  # the free blocks used: revoked, escaped, uncommitted
    tids: list[int]
    plans: list[Commit]


async def journaled(work: Path, config: Config) -> Journaled:
    """T1 logs an inode table block (mode 0600, size 200), a free block and a free block
    opening with the jbd2 magic (escaped); T2 logs that inode block again (links 2) and a
    directory block (a second name for the file), and revokes T1's free block; T3 logs the
    inode block once more (mode 0700) and another free block, and is never committed."""
    base = make_volume(work, config)
    bs = config.block_size
    v1 = edited(base, "v1.img", "sif /file mode 0100600", "sif /file size 200")
    v2 = edited(v1, "v2.img", "sif /file links_count 2", "ln /file /dir/newname")
    v3 = edited(v2, "v3.img", "sif /file mode 0100700")
    (inode_block, inode_v1), = changed(base, v1, bs).items()  # fmt: skip
    d2 = changed(v1, v2, bs)
    assert inode_block in d2 and len(d2) == 2
    (dir_block,) = set(d2) - {inode_block}
    assert list(changed(v2, v3, bs)) == [inode_block]
    revoked, escaped, uncommitted = free_blocks(base)[-3:]
    magic = MAGIC_BLOCK + b"escaped!" * (bs // 8 - 1) + b"tail"
    path = Path(shutil.copy(base, work / "journaled.img"))
    with ImageFile(str(path), writable=True) as image:
        writer = await open_writer(image, path, config)
        t1 = writer.begin()
        t1.write(inode_block, inode_v1)
        t1.write(revoked, b"R" * bs)
        t1.write(escaped, magic)
        plans = [await writer.commit(t1, NOW)]
        t2 = writer.begin()
        for block, data in d2.items():
            t2.write(block, data)
        t2.revoke(revoked)
        plans.append(await writer.commit(t2, NOW + 10**9))
        t3 = writer.begin()
        t3.write(inode_block, blocks_of(v3, bs)[inode_block])
        t3.write(uncommitted, b"U" * bs)
        plans.append(await commit_uncommitted(writer, t3, NOW + 2 * 10**9))
    # Nothing went home: outside the journal, the image is still mke2fs's.
    journal = {run.physical + n for run in journal_runs(base) for n in range(run.count)}
    assert set(changed(base, path, bs)) <= journal
    expected = {inode_block: d2[inode_block], dir_block: d2[dir_block], escaped: magic}
    return Journaled(
        path, config, base, expected, [revoked, uncommitted], inode_block, dir_block,
        [revoked, escaped, uncommitted], [t1.tid, t2.tid, t3.tid], plans,
    )  # fmt: skip


def assert_replayed(image: Path, j: Journaled) -> None:
    """`image` holds exactly what replaying `j` writes, and the rest as mke2fs left it."""
    bs = j.config.block_size
    now, base = blocks_of(image, bs), blocks_of(j.base, bs)
    assert {b: now[b] for b in j.expected} == j.expected
    assert [now[b] for b in j.untouched] == [base[b] for b in j.untouched]


@pytest.fixture(params=list(CONFIGS), scope="module")
def config(request: pytest.FixtureRequest) -> Config:
    return CONFIGS[request.param]


@pytest.fixture(scope="module")
def j(tmp_path_factory: pytest.TempPathFactory, config: Config) -> Journaled:
    """The journaled image of `config`, made once: tests read it, or change copies."""
    return trio.run(journaled, tmp_path_factory.mktemp("journaled"), config)


async def test_e2fsck_sees_a_journal_to_recover(j: Journaled) -> None:
    """e2fsck -fn skips the recovery it would do, and finds the image itself consistent
    (nothing was written home); the journal superblock points at the first transaction,
    with the features ext4 loads it with."""
    done = e2fsck(j.path, "-fn")
    assert done.returncode == 0, done.stdout
    assert "Warning: skipping journal recovery because doing a read-only filesystem check." in (
        done.stdout + done.stderr
    )
    head = dumpe2fs(j.path)
    assert (field(head, "Journal start"), field(head, "Journal sequence")) == (
        "1",
        f"0x{j.tids[0]:08x}",
    )
    expected = {
        V3: "journal_checksum_v3",
        V2: "journal_checksum_v2",
        JBD2_FEATURE_COMPAT_CHECKSUM: "journal_checksum",
    }
    names = [name for bit, name in expected.items() if (j.config.incompat | j.config.compat) & bit]
    if j.config.incompat & WIDE:
        names.insert(0, "journal_64bit")
    assert field(head, "Journal features") == (" ".join(names) or "(none)")


async def test_logdump_lists_the_transactions(j: Journaled) -> None:
    """debugfs logdump reads the layout the writer means: T1 at s_first (descriptor, three
    copies with the escaped one flagged, commit), T2 (revoke block, descriptor, two copies,
    commit), T3's descriptor and copies, then the end of the journal."""
    t1, t2, t3 = j.tids
    revoked, escaped, uncommitted = j.spare

    def descriptor(tid: int, at: int, blocks: list[int]) -> list[str]:
        lines = [
            f"Found expected sequence {tid}, type 1 (descriptor block) at block {at}",
            f"Dumping descriptor block, sequence {tid}, at block {at}:",
        ]
        for n, block in enumerate(sorted(blocks)):
            flags = (ESCAPE if block == escaped else 0) | (SAME_UUID if n else 0)
            flags |= LAST_TAG if n == len(blocks) - 1 else 0
            lines.append(
                f"  FS block {block} logged at journal block {at + 1 + n} (flags 0x{flags:x})"
            )
        return lines

    def commit(tid: int, at: int) -> list[str]:
        return [f"Found expected sequence {tid}, type 2 (commit block) at block {at}"]

    expected = [
        f"Journal starts at block 1, transaction {t1}",
        *descriptor(t1, 1, [j.inode_block, revoked, escaped]),
        *commit(t1, 5),
        f"Found expected sequence {t2}, type 5 (revoke table) at block 6",
        f"Dumping revoke block, sequence {t2}, at block 6:",
        f"  Revoke FS block {revoked}",
        *descriptor(t2, 7, [j.inode_block, j.dir_block]),
        *commit(t2, 10),
        *descriptor(t3, 11, [j.inode_block, uncommitted]),
        "No magic number at block 14: end of journal.",
    ]
    assert debugfs(j.path, "logdump -a").splitlines() == expected


async def test_the_kernel_replays_them(j: Journaled, tmp_path: Path) -> None:
    """The kernel's read-only mount replays T1 and T2 (the revoked block and uncommitted T3
    left out) and shows debugfs's metadata: mode, size, link count, the second name."""
    copy = Path(shutil.copy(j.path, tmp_path / "kernel.img"))
    with kernel_mount(copy, tmp_path / "mnt") as done:
        assert done.returncode == 0, done.stderr
        root = tmp_path / "mnt"
        st = os.stat(root / "file")
        assert (stat.filemode(st.st_mode), st.st_size, st.st_nlink) == ("-rw-------", 200, 2)
        assert sorted(os.listdir(root / "dir")) == ["inner", "newname"]
        assert os.stat(root / "dir" / "newname").st_ino == st.st_ino
    assert_replayed(copy, j)
    assert "needs_recovery" not in features(copy)
    assert field(dumpe2fs(copy), "Journal start") == "0"


async def test_e2fsck_replays_them_and_ends_clean(j: Journaled, tmp_path: Path) -> None:
    """e2fsck -fy replays the same blocks and finds nothing else to fix."""
    copy = Path(shutil.copy(j.path, tmp_path / "e2fsck.img"))
    done = e2fsck(copy, "-fy")
    assert (done.returncode, f"{copy}: recovering journal" in done.stdout) == (0, True), done.stdout
    assert_replayed(copy, j)
    again = e2fsck(copy, "-fn")
    assert again.returncode == 0, again.stdout


async def test_uvfs_recovery_finds_the_same_blocks(j: Journaled) -> None:
    """recovery.py replays T1 and T2 to the same block map, the revoke hit once."""
    bs = j.config.block_size
    with ImageFile(str(j.path)) as image:
        count = int(field(dumpe2fs(j.path), "Block count"))
        replay = await recover_journal(image, journal_runs(j.path), bs, count)
        copies = {
            block: jbd2.unescape(await image.read(at * bs, bs), flags)
            for block, (at, flags) in replay.copies.items()
        }
    assert copies == j.expected
    recovery = replay.recovery
    assert (recovery.start_transaction, recovery.end_transaction) == (j.tids[0], j.tids[2])
    assert (recovery.revoke_hits, recovery.failed_commit) == (1, None)


# --- a bad commit checksum ----------------------------------------------------------------


async def test_a_bad_commit_checksum_ends_replay(tmp_path: Path) -> None:
    """T2's commit block damaged (its checksum field: a commit whose checksum fails only
    past its header the kernel takes for a torn write of a good one): the kernel replays T1,
    then refuses the journal (EUCLEAN); e2fsck replays T1 and goes on clean; uvfs reports T2."""
    config = CONFIGS["ext4-1k-v3"]
    j = await journaled(tmp_path, config)
    bs = config.block_size
    at, _ = j.plans[1].commit
    count = int(field(dumpe2fs(j.path), "Block count"))
    where = JournalLog(journal_runs(j.path), count).image_block(at)
    with open(j.path, "r+b") as f:
        f.seek(where * bs + jbd2.H_CHKSUM)
        byte = f.read(1)[0]
        f.seek(where * bs + jbd2.H_CHKSUM)
        f.write(bytes([byte ^ 0xFF]))
    t1_only = j._replace(
        expected={j.inode_block: blocks_of(tmp_path / "v1.img", bs)[j.inode_block],
                  j.spare[1]: j.expected[j.spare[1]], j.spare[0]: b"R" * bs},
        untouched=[j.dir_block, j.spare[2]],
    )  # fmt: skip
    copy = Path(shutil.copy(j.path, tmp_path / "kernel.img"))
    with kernel_mount(copy, tmp_path / "mnt") as done:
        assert (done.returncode, "Structure needs cleaning" in done.stderr) == (32, True)
    assert_replayed(copy, t1_only)

    copy = Path(shutil.copy(j.path, tmp_path / "e2fsck.img"))
    done = e2fsck(copy, "-fy")
    assert f"Journal transaction {j.tids[1]} was corrupt, replay was aborted." in done.stdout
    assert_replayed(copy, t1_only)
    assert e2fsck(copy, "-fn").returncode == 0

    with ImageFile(str(j.path)) as image:
        count = int(field(dumpe2fs(j.path), "Block count"))
        replay = await recover_journal(image, journal_runs(j.path), bs, count)
    assert (replay.recovery.failed_commit, sorted(replay.copies)) == (
        j.tids[1],
        sorted(t1_only.expected),
    )


# --- a log that wraps, checkpoints forced by a full log -------------------------------------


async def test_the_log_wraps_and_checkpoints_free_it(tmp_path: Path) -> None:
    """A 2064-block journal with ext4's fast-commit feature (16 blocks): uvfs writes no
    fast commits, so the feature goes and the log runs to s_maxlen, as in the kernel's
    journal_reset. 24 transactions of 150 blocks (pool blocks rewritten across
    transactions) fill the log, so commits checkpoint the oldest transactions first
    (s_start moves on) and the log wraps at block 2064. The live transactions, crossing it,
    replay (kernel, e2fsck, uvfs) to every block's newest contents, the last transaction's
    inode and directory blocks included; a final checkpoint puts it all home and empties
    the journal."""
    config = Config("ext4", 1024, 0, V3 | WIDE | FAST, ("-O", "fast_commit", "-J", "size=2"))
    base = make_volume(tmp_path, config, size_mb=16)
    bs = config.block_size
    edit = edited(base, "edit.img", "sif /file mode 0100600", "ln /file /dir/newname",
                  "sif /file links_count 2")  # fmt: skip
    metadata = changed(base, edit, bs)
    pool = free_blocks(base)[:300]
    path = Path(shutil.copy(base, tmp_path / "journaled.img"))
    expected: dict[int, bytes] = {}
    plans: list[Commit] = []
    with ImageFile(str(path), writable=True) as image:
        writer = await open_writer(image, path, config)
        jsb = writer.journal.jsb
        assert (jsb.first, jsb.last, jsb.maxlen, jsb.has(FAST)) == (1, 2064, 2064, False)
        for n in range(24):
            txn = writer.begin()
            for k in range(150):
                block = pool[(n * 37 + k) % len(pool)]
                txn.write(block, f"{block}:{n};".encode().ljust(bs, b"."))
            if n == 23:
                for block, data in metadata.items():
                    txn.write(block, data)
            expected.update(txn.blocks)
            plans.append(await writer.commit(txn, NOW + n * 10**9))
        journal = writer.journal
        live = journal.live
        oldest = next(p for p in plans if p.tid == live[0])
        start = min(at for at, _ in oldest.log if at)
        checkpointed = [t for p in plans if p.checkpoint for t in p.checkpoint.transactions]
        assert checkpointed == [p.tid for p in plans[: len(checkpointed)]]
        assert live == [p.tid for p in plans[len(checkpointed) :]] and len(live) > 5
        assert journal.head < start  # the live part of the log crosses its end
        written = [at for p in plans for at, _ in [*p.log, p.commit] if at]
        assert (min(written), max(written)) == (1, 2063)
        head = dumpe2fs(path)
        assert field(head, "Journal features") == "journal_64bit journal_checksum_v3"
        assert (field(head, "Journal start"), field(head, "Journal sequence")) == (
            str(start),
            f"0x{live[0]:08x}",
        )
        # Replayed by others, from a copy; the blocks home are those of the checkpoints.
        copy = Path(shutil.copy(path, tmp_path / "kernel.img"))
        with kernel_mount(copy, tmp_path / "mnt") as done:
            assert done.returncode == 0, done.stderr
            st = os.stat(tmp_path / "mnt" / "file")
            assert (stat.filemode(st.st_mode), st.st_nlink) == ("-rw-------", 2)
        now = blocks_of(copy, bs)
        assert {b: now[b] for b in expected} == expected
        copy = Path(shutil.copy(path, tmp_path / "e2fsck.img"))
        assert e2fsck(copy, "-fy").returncode == 0
        now = blocks_of(copy, bs)
        assert {b: now[b] for b in expected} == expected
        assert e2fsck(copy, "-fn").returncode == 0
        count = int(field(head, "Block count"))
        replay = await recover_journal(image, journal_runs(path), bs, count)
        assert (replay.recovery.start_transaction, replay.recovery.end_transaction) == (
            live[0],
            (live[-1] + 1),
        )
        live_blocks = {b for p in plans if p.tid in live for b in _logged(p, jsb)}
        assert set(replay.copies) == live_blocks
        # The last checkpoint: everything home, the journal empty.
        final = await writer.checkpoint()
        assert final is not None and final.transactions == live
    now = blocks_of(path, bs)
    assert {b: now[b] for b in expected} == expected
    head = dumpe2fs(path)
    assert (field(head, "Journal start"), field(head, "Journal sequence")) == (
        "0",
        f"0x{live[-1] + 1:08x}",
    )
    assert e2fsck(path, "-fn").returncode == 0


def _logged(plan: Commit, jsb: jbd2.JournalSuper) -> list[int]:
    """The filesystem blocks a commit plan's descriptors list."""
    return [
        tag.blocknr
        for at, block in plan.log
        if at and (head := jbd2.decode_header(block)) and head.blocktype == 1
        and head.sequence == plan.tid
        for tag in jbd2.decode_tags(block, jsb)
    ]  # fmt: skip


# --- barriers -------------------------------------------------------------------------------


class Recorder:
    """A block device that notes each write (as the journal or home blocks it covers) and
    each flush, passing them on to `device`."""

    def __init__(self, device: ImageFile, bs: int, journal: dict[int, int]) -> None:
        self.device, self.bs, self.journal = device, bs, journal
        self.path, self.size, self.sector_size = device.path, device.size, device.sector_size
        self.writable = True
        self.ops: list[str] = []

    async def read(self, offset: int, size: int) -> bytes:
        return await self.device.read(offset, size)

    async def write(self, offset: int, data: bytes) -> None:
        first, count = offset // self.bs, -(-len(data) // self.bs)
        names = [f"j{self.journal[b]}" if b in self.journal else "home" for b in
                 range(first, first + count)]  # fmt: skip
        self.ops.append(" ".join(dict.fromkeys(names)) if "home" in names else " ".join(names))
        await self.device.write(offset, data)

    async def sync(self) -> None:
        self.ops.append("flush")
        await self.device.sync()


async def test_commits_and_checkpoints_keep_jbd2s_barriers(tmp_path: Path) -> None:
    """A commit writes its log blocks (the journal superblock with them while the journal
    was empty), flushes, writes the commit block, flushes; a checkpoint writes home,
    flushes, then the journal superblock, and flushes before the log is reused."""
    config = CONFIGS["ext4-4k-v3"]
    path = make_volume(tmp_path, config)
    bs = config.block_size
    journal = {run.physical + n: run.logical + n for run in journal_runs(path)
               for n in range(run.count)}  # fmt: skip
    pool = free_blocks(path)[-3:]
    with ImageFile(str(path), writable=True) as image:
        device = Recorder(image, bs, journal)
        writer = await open_writer(image, path, config)
        writer.image = device
        txn = writer.begin()
        txn.write(pool[0], b"a" * bs)
        txn.write(pool[1], b"b" * bs)
        await writer.commit(txn, NOW)
        txn = writer.begin()
        txn.write(pool[2], b"c" * bs)
        txn.revoke(pool[0])
        await writer.commit(txn, NOW + 10**9)
        await writer.checkpoint()
    assert device.ops == [
        "j0", "j1 j2 j3", "flush", "j4", "flush",  # T1: superblock, descriptor, 2 copies
        "j5 j6 j7", "flush", "j8", "flush",  # T2: revoke, descriptor, copy
        "home", "flush", "j0", "flush",  # the checkpoint
    ]  # fmt: skip
    now = blocks_of(path, bs)
    assert [now[b][:1] for b in pool] == [b"\0", b"b", b"c"]  # block 0 revoked: not home
    assert field(dumpe2fs(path), "Journal start") == "0"


# --- crashes --------------------------------------------------------------------------------


class Tape:
    """An image in memory that keeps every write, and every flush as None, in order."""

    def __init__(self, image: bytes) -> None:
        self.data = bytearray(image)
        self.path, self.size, self.sector_size, self.writable = "tape", len(image), 512, True
        self.ops: list[tuple[int, bytes] | None] = []

    async def read(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    async def write(self, offset: int, data: bytes) -> None:
        self.data[offset : offset + len(data)] = data
        self.ops.append((offset, data))

    async def sync(self) -> None:
        self.ops.append(None)


def crashed(base: bytes, ops: list[tuple[int, bytes] | None], cut: int, keep: bool) -> bytes:
    """The image a crash before op `cut` leaves: every write a flush covered, and the
    writes since the last flush all kept (`keep`) or all lost."""
    flushed = max((n for n, op in enumerate(ops[:cut]) if op is None), default=-1)
    image = bytearray(base)
    for n, op in enumerate(ops[:cut]):
        if op is not None and (n < flushed or keep):
            image[op[0] : op[0] + len(op[1])] = op[1]
    return bytes(image)


async def test_a_crash_anywhere_leaves_old_or_new(tmp_path: Path) -> None:
    """Two transactions over real metadata and their checkpoint, cut at every write or
    flush, the unflushed writes kept or lost: e2fsck -fy replays each image to a clean
    state holding exactly the transactions whose commit block was on disk (so every one
    whose commit returned), and recovery.py agrees."""
    config = CONFIGS["ext4-1k-v3"]
    base = make_volume(tmp_path, config)
    bs = config.block_size
    v1 = edited(base, "v1.img", "sif /file mode 0100600", "sif /file size 200")
    v2 = edited(v1, "v2.img", "sif /file links_count 2", "ln /file /dir/newname")
    d1, d2 = changed(base, v1, bs), changed(v1, v2, bs)
    watched = sorted({*d1, *d2})
    states = [tuple(blocks_of(p, bs)[b] for b in watched) for p in (base, v1, v2)]
    original = base.read_bytes()
    tape = Tape(original)
    count = int(field(dumpe2fs(base), "Block count"))
    runs = journal_runs(base)
    raw = jbd2.with_features(await tape.read(runs[0].physical * bs, 1024), 0, V3 | WIDE)
    writer = await JournalWriter.open(tape, runs, bs, count, raw)
    commits = []  # op index of each commit block write
    for n, changes in enumerate((d1, d2)):
        txn = writer.begin()
        for block, data in changes.items():
            txn.write(block, data)
        await writer.commit(txn, NOW + n * 10**9)
        commits.append(len(tape.ops) - 2)
    await writer.checkpoint()
    seen: dict[bytes, int] = {}
    for cut in range(len(tape.ops) + 1):
        for keep in (False, True):
            image = crashed(original, tape.ops, cut, keep)
            durable = [c for c in commits if c < cut and (keep or c + 1 < cut)]
            if image in seen:
                assert seen[image] == len(durable)
                continue
            seen[image] = len(durable)
            path = tmp_path / "crashed.img"
            path.write_bytes(image)
            fixed = e2fsck(path, "-fy")
            assert fixed.returncode == 0, (cut, keep, fixed.stdout)
            now = blocks_of(path, bs)
            assert tuple(now[b] for b in watched) == states[len(durable)], (cut, keep)
            assert e2fsck(path, "-fn").returncode == 0
            replay = await recover_journal(Tape(image), runs, bs, count)
            copies = {
                b: jbd2.unescape(image[at * bs : at * bs + bs], flags)
                for b, (at, flags) in replay.copies.items()
            }
            replayed = tuple(copies.get(b, image[b * bs : b * bs + bs]) for b in watched)
            assert replayed == states[len(durable)], (cut, keep)
    assert sorted(set(seen.values())) == [0, 1, 2] and len(tape.ops) == 14
