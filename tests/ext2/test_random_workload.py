"""A seeded random workload on a rw mount and on a local directory, side by side.

Every operation runs on both trees; its outcome (the errno, or what it returned) must be
the same, and every `CHECK_EVERY` operations the two trees must look the same. After the
last one the volume is unmounted, e2fsck -fn must find nothing, and the kernel's own ext2
driver must show the very tree the model holds.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import run_uvfs
from .writing import FSTYPE, RW, fresh_image, fsck, snapshot

OPERATIONS = 6000
CHECK_EVERY = 500


class Workload:
    """Picks operations on paths that exist (mostly) and applies them to a tree.

    Args:
        seed: for the random choices.
        model: the model tree, consulted to forget paths that no longer exist.
    """

    def __init__(self, seed: int, model: Path) -> None:
        self.rng = random.Random(seed)
        self.model = model
        self.files: list[str] = []
        self.dirs: list[str] = [""]

    def _pick(self, pool: list[str]) -> str | None:
        """A path of `pool` that still exists in the model (gone ones are dropped)."""
        while pool:
            i = self.rng.randrange(len(pool))
            if pool[i] == "" or os.path.lexists(self.model / pool[i]):
                return pool[i]
            pool[i] = pool[-1]
            pool.pop()
        return None

    def name(self) -> str:
        rng = self.rng
        if rng.random() < 0.05:
            return "L" * rng.randrange(200, 256)  # long names, up to the limit
        return "".join(rng.choice("abcdefgh") for _ in range(rng.randrange(1, 12)))

    def new_path(self) -> str:
        parent = self._pick(self.dirs) or ""
        return f"{parent}/{self.name()}" if parent else self.name()

    def any_path(self) -> str:
        if self.rng.random() < 0.9:
            found = self._pick(self.files if self.rng.random() < 0.7 else self.dirs)
            if found:
                return found
        return self.new_path()

    def data(self) -> bytes:
        size = self.rng.choice([1, 100, 1000, 4096, 5000, 70000, 300000])
        return self.rng.randbytes(self.rng.randrange(1, size + 1))

    def offset(self) -> int:
        return self.rng.choice([0, 0, 1000, 4095, 70000, 300_000, 3_000_000])

    def next(self) -> tuple[str, Callable[[Path], object]]:
        """One operation: its description, and a function doing it under a root."""
        rng = self.rng
        kind = rng.choices(
            ["write", "append", "trunc_open", "truncate", "mkdir", "rmdir", "unlink",
             "rename", "link", "symlink", "chmod", "fsync", "utime", "setxattr",
             "removexattr"],
            weights=[20, 5, 3, 6, 8, 4, 6, 8, 3, 3, 3, 1, 2, 3, 1],
        )[0]  # fmt: skip
        if kind in ("write", "append", "trunc_open"):
            path = (self._pick(self.files) if rng.random() < 0.7 else None) or self.new_path()
            data, offset = self.data(), self.offset()
            flags = os.O_WRONLY | os.O_CREAT
            flags |= {"append": os.O_APPEND, "trunc_open": os.O_TRUNC}.get(kind, 0)

            def write(root: Path) -> object:
                fd = os.open(root / path, flags, 0o644)
                try:
                    return os.pwrite(fd, data, offset) if kind == "write" else os.write(fd, data)
                finally:
                    os.close(fd)

            self.files.append(path)
            return f"{kind} {path} {len(data)}@{offset}", write
        if kind == "truncate":
            path, size = self.any_path(), rng.choice([0, 1, 1023, 4096, 100_000, 2_000_000])
            return f"truncate {path} {size}", lambda root: os.truncate(root / path, size)
        if kind == "mkdir":
            path = self.new_path()
            self.dirs.append(path)
            return f"mkdir {path}", lambda root: os.mkdir(root / path)
        if kind == "rmdir":
            path = self._pick(self.dirs) or self.new_path()
            return f"rmdir {path}", lambda root: os.rmdir(root / path)
        if kind == "unlink":
            path = self.any_path()
            return f"unlink {path}", lambda root: os.unlink(root / path)
        if kind == "rename":
            src = self.any_path()
            dst = self.any_path() if rng.random() < 0.3 else self.new_path()
            if src in self.dirs:
                self.dirs.append(dst)
            else:
                self.files.append(dst)
            return f"rename {src} {dst}", lambda root: os.rename(root / src, root / dst)
        if kind == "link":
            src, dst = self.any_path(), self.new_path()
            self.files.append(dst)
            return f"link {src} {dst}", lambda root: os.link(root / src, root / dst)
        if kind == "symlink":
            target = "t" * rng.choice([1, 30, 59, 60, 61, 200, 1000])
            path = self.new_path()
            self.files.append(path)
            return f"symlink {path}", lambda root: os.symlink(target, root / path)
        if kind == "chmod":
            path, mode = self.any_path(), rng.choice([0o644, 0o600, 0o755, 0o2755, 0o1777])
            return f"chmod {path} {mode:o}", lambda root: os.chmod(root / path, mode)
        if kind in ("setxattr", "removexattr"):
            path, name = self.any_path(), f"user.{rng.choice('abc')}"
            value = rng.randbytes(rng.choice([0, 10, 100, 250]))  # three fit one 1 KiB block
            if kind == "setxattr":
                return f"setxattr {path} {name}", lambda root: os.setxattr(
                    root / path, name, value, follow_symlinks=False
                )
            return f"removexattr {path} {name}", lambda root: os.removexattr(
                root / path, name, follow_symlinks=False
            )
        if kind == "utime":
            path, ns = self.any_path(), rng.randrange(0, 2**31) * 10**9 + rng.randrange(10**9)
            return f"utime {path}", lambda root: os.utime(root / path, ns=(ns, ns))
        path = self.any_path()

        def fsync(root: Path) -> object:
            fd = os.open(root / path, os.O_RDONLY)
            try:
                return os.fsync(fd)
            finally:
                os.close(fd)

        return f"fsync {path}", fsync


def outcome(do: Callable[[Path], object], root: Path) -> object:
    try:
        return do(root)
    except OSError as e:
        return errno.errorcode[e.errno]


@pytest.mark.slow
@pytest.mark.parametrize(("block_size", "seed"), [(1024, 1), (4096, 2)])
def test_random_workload(tmp_path: Path, mount, kernel_mount, block_size: int, seed: int) -> None:
    image = fresh_image(tmp_path / "img", block_size=block_size, size_mb=128)
    mnt = mount(image, options=RW, fstype=FSTYPE)
    model = tmp_path / "model"
    model.mkdir()
    workload = Workload(seed, model)
    done: list[str] = []
    for step in range(1, OPERATIONS + 1):
        what, do = workload.next()
        done.append(what)
        mine, theirs = outcome(do, mnt), outcome(do, model)
        assert mine == theirs, (what, done[-20:])
        if step % CHECK_EVERY == 0:
            assert snapshot(mnt, times=False) == snapshot(model, times=False), done[-20:]
    seen = snapshot(mnt)
    run_uvfs("umount", str(mnt))
    fsck(image)
    assert snapshot(kernel_mount(image)) == seen
    assert snapshot(kernel_mount(image), times=False) == snapshot(model, times=False)


@pytest.mark.slow
def test_parallel_workloads(tmp_path: Path, mount, kernel_mount) -> None:
    """Four workloads at once, each in its own directory: requests interleave in the server."""
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=128)
    mnt = mount(image, options=RW, fstype=FSTYPE)
    model = tmp_path / "model"
    failures: list[str] = []

    def worker(seed: int) -> None:
        mine, theirs = mnt / f"w{seed}", model / f"w{seed}"
        mine.mkdir()
        theirs.mkdir(parents=True)
        workload = Workload(seed, model)
        for _ in range(OPERATIONS // 4):
            what, do = workload.next()
            a, b = outcome(do, mine), outcome(do, theirs)
            if a != b:
                failures.append(f"{what}: {a} != {b}")
                return

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(10, 14)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert snapshot(mnt, times=False) == snapshot(model, times=False)
    run_uvfs("umount", str(mnt))
    fsck(image)
    assert snapshot(kernel_mount(image), times=False) == snapshot(model, times=False)
