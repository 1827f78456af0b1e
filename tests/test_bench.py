"""Smoke test of the benchmark suite (tools/bench): every workload and system, tiny sizes;
and the write floor's in-memory model."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench._audit import COMMANDS
from tools.bench._framework import WORKLOADS as FRAMEWORK
from tools.bench._ramtree import RENAME_EXCHANGE, ROOT, RamTree
from tools.bench._results import BARE, TARGETS, UVFS_ISOLATE, UVFS_RAM, workload_ops
from tools.bench._sizes import TINY
from tools.bench._suite import READS, WRITES, ZFS_READS

REPO = Path(__file__).resolve().parents[1]
# Images are cached here across test runs (built once, a few seconds); runs sharing it queue.
WORKDIR = Path("/var/tmp/uvfs-bench-smoke")


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0, reason="the benchmark needs root: loop mounts, drop_caches, zfs-fuse"
)
def test_tiny_run_reports_every_workload_and_system(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--tiny", "--workdir", str(WORKDIR),
         "--results", str(tmp_path / "results")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    cells = {(r["suite"], r["workload"], r["phase"]): r["systems"] for r in results["rows"]}
    # ext4 writes are measured once uvfs writes ext4; until then the run says why not.
    skipped = results["meta"].get("skipped", {})
    assert set(skipped) <= {"write-ext4"}
    writes = ["write"] + [s for s in ("write-ext4",) if s not in skipped]
    floor = {BARE, UVFS_RAM}  # the write floor (ext2 suite only): the in-memory tree
    expected = {
        **{
            ("ext2", w, p): {"uvfs", "kernel", "fuse2fs", UVFS_ISOLATE}
            for w in READS
            for p in ("cold", "warm")
        },
        **{
            (suite, w, "cold"): {"uvfs", "kernel", "fuse2fs"}
            | (floor if suite == "write" else set())
            for suite in writes
            for w in WRITES
        },
        **{
            (f"zfs/{c}", w, p): {"uvfs", "zfs-fuse"}
            for c in TINY.compressions
            for w in ZFS_READS
            for p in ("cold", "warm")
        },
        **{("framework", w, "cold"): {"uvfs", "pyfuse3"} for w in FRAMEWORK},
        **{("memory", w, "cold"): {"uvfs"} for w in ("bigread", "untar")},
        **{("audit", w, "warm"): {"uvfs", "plain"} for w in COMMANDS},
    }
    assert {key: set(systems) for key, systems in cells.items()} == expected
    # The peers must have produced numbers (uvfs may still show n/a with its reason).
    for systems in cells.values():
        for name, cell in systems.items():
            assert (cell["seconds"] is not None) != (cell["error"] is not None), (name, cell)
            if name != "uvfs":
                assert cell["seconds"] is not None, (name, cell)
    # Every FUSE server measured shows its CPU time and peak RSS (not the audit's overlay,
    # nor the zfs-fuse daemon, which serves other pools too); uvfs servers and the write
    # floor's bare pyfuse3 their requests too.
    for (suite, workload, _), systems in cells.items():
        for name, cell in systems.items():
            if cell["seconds"] is None or suite == "audit" or name in ("kernel", "zfs-fuse"):
                continue
            assert len(cell["cpu"]) == len(cell["peak_rss"]) == len(cell["samples"])
            assert min(cell["peak_rss"]) > 1 << 20, (suite, workload, name, cell)
            if name in ("uvfs", UVFS_RAM) or (suite == "write" and name == BARE):
                assert len(cell["requests"]) == len(cell["samples"]), (suite, workload, name)
    # Told what uvfs tells the kernel, bare pyfuse3 gets the requests uvfs gets, but for
    # forgets: the kernel sends them in batches as large as the server's pace allows.
    for workload in WRITES:
        floor = cells["write", workload, "cold"]
        bare, uvfs_mem = floor[BARE]["requests"][0], floor[UVFS_RAM]["requests"][0]
        assert abs(bare - uvfs_mem) <= 0.05 * uvfs_mem + 10, (workload, bare, uvfs_mem)
    # On the null tree each system call is one request (plus the file's open and release).
    sizes = results["meta"]["sizes"]
    for workload in FRAMEWORK:
        count = workload_ops(workload, sizes)[0]
        requests = cells["framework", workload, "cold"]["uvfs"]["requests"]
        assert all(count <= n <= count + 3 for n in requests), (workload, requests)
    assert [t["text"] for t in results["targets"]] == [t.text for t in TARGETS]
    assert "issue 10: " in done.stdout and " targets met" in done.stdout
    assert "write floor: " in done.stdout
    assert {"driver_untouched", "error"} & set(results["broker_cache"])
    assert (tmp_path / "results" / "chart.png").stat().st_size > 10_000
    assert "uvfs/kernel" in done.stdout
    assert not any(
        str(tmp_path) in line for line in Path("/proc/self/mounts").read_text().splitlines()
    )


class _Errno(Exception):
    """The error the write floor's model raises in these tests (it takes the server's)."""


def test_ram_tree_keeps_names_links_and_bytes_as_a_filesystem_does() -> None:
    tree = RamTree(_Errno)
    a = tree.mkdir(ROOT, b"a", 0o755, 0, 0)
    b = tree.mkdir(ROOT, b"b", 0o755, 0, 0)
    sub = tree.mkdir(a.ino, b"sub", 0o700, 0, 0)
    f = tree.create(b.ino, b"f", 0o644, 1000, 1000)
    assert tree.write(f.ino, 5, b"xy") == 2
    assert tree.read(f.ino, 0, 100) == b"\0\0\0\0\0xy"  # the hole reads as zeros
    assert [n.nlink for n in (tree.nodes[ROOT], a, b, sub, f)] == [4, 3, 2, 2, 1]
    # Exchanged across parents, the directory takes its ".." link along.
    tree.rename(a.ino, b"sub", b.ino, b"f", RENAME_EXCHANGE)
    assert (tree.lookup(a.ino, b"sub"), tree.lookup(b.ino, b"f")) == (f, sub)
    assert (a.nlink, b.nlink) == (2, 3)
    with pytest.raises(_Errno) as e:
        tree.rmdir(ROOT, b"b")
    assert e.value.args == (errno.ENOTEMPTY,)
    tree.setattr(f.ino, size=3, mode=0o600)
    assert (tree.read(f.ino, 0, 100), stat.S_IMODE(f.mode)) == (b"\0\0\0", 0o600)
    with pytest.raises(_Errno) as e:
        tree.getxattr(f.ino, b"security.capability")
    assert e.value.args == (errno.ENODATA,)
    tree.unlink(a.ino, b"sub")
    assert f.ino not in tree.nodes and tree.listing(a.ino) == []
