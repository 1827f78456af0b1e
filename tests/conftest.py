"""Fixtures that mount for real and always clean up: uvfs mounts and kernel loop mounts."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from uvfs import _runtime

UVFS = [sys.executable, "-m", "uvfs.cli"]


def run_uvfs(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess:
    """Run the ``uvfs`` command line; with `check`, fail the test with its stderr."""
    done = subprocess.run([*UVFS, *args], capture_output=True, text=True, timeout=120, **kwargs)
    if check and done.returncode != 0:
        pytest.fail(f"uvfs {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def _is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def force_unmount(path: Path) -> None:
    """Unmount `path` whatever state it is in, and stop its server; used only in teardown.

    A server that outlives a failed test would keep its image locked and, stuck, could
    burn a core for the rest of the run: it is killed if it has not exited on its own.
    """
    if not _is_mounted(path):
        return
    record = _runtime.find(os.path.realpath(path))
    try:
        unmounted = run_uvfs("umount", str(path), check=False).returncode == 0
    except subprocess.TimeoutExpired:
        unmounted = False
    if not unmounted or _is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True, check=False)
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
    if record is not None:
        deadline = time.monotonic() + 5
        while _runtime.find(record.mountpoint) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            if _runtime.find(record.mountpoint) is not None:
                os.kill(record.pid, signal.SIGKILL)


Mounter = Callable[..., Path]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mounter]:
    """``mount(*sources, options="ro", fstype=None, cwd=None) -> mountpoint``.

    Mounts with ``uvfs mount`` (which returns once the mount is live) and unmounts every
    mount at teardown, even when the test failed.
    """
    mounted: list[Path] = []

    def do(
        *sources: os.PathLike | str,
        options: str | None = "ro",
        fstype: str | None = None,
        cwd: os.PathLike | str | None = None,
    ) -> Path:
        mountpoint = tmp_path / f"uvfs-mnt{len(mounted)}"
        mountpoint.mkdir()
        args = ["mount"]
        if fstype:
            args += ["-t", fstype]
        if options:
            args += ["-o", options]
        env = dict(os.environ)
        if cwd is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
        mounted.append(mountpoint)
        run_uvfs(*args, *map(str, sources), str(mountpoint), env=env)
        return mountpoint

    yield do
    for mountpoint in mounted:
        force_unmount(mountpoint)


@pytest.fixture
def kernel_mount(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``kernel_mount(image) -> mountpoint``: the kernel's own read-only loop mount."""
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root")
    mounted: list[Path] = []

    def do(image: Path, fstype: str = "auto") -> Path:
        mountpoint = tmp_path / f"kernel-mnt{len(mounted)}"
        mountpoint.mkdir()
        subprocess.run(
            ["mount", "-t", fstype, "-o", "loop,ro", str(image), str(mountpoint)],
            check=True,
            capture_output=True,
        )
        mounted.append(mountpoint)
        return mountpoint

    yield do
    for mountpoint in mounted:
        subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)


def need(*tools: str) -> None:
    """Skip unless every tool is installed (``make test`` installs them all)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (run make test to install them)")


DOC = Path(__file__).parent.parent / "docs" / "writing-a-driver.md"


def documented(filename: str) -> str:
    """The code of docs/writing-a-driver.md's blocks fenced ```` ```python FILENAME ````,
    joined in order: the file the page tells its reader to write."""
    blocks = re.findall(
        rf"^```python {re.escape(filename)}\n(.*?)^```$", DOC.read_text(), re.M | re.S
    )
    assert blocks, f"no code for {filename} in {DOC}"
    return "\n".join(blocks)


@pytest.fixture
def hello_dir(tmp_path: Path) -> Path:
    """A directory holding docs/writing-a-driver.md's example as hello_driver.py, and an
    empty image, ``empty.img``, for it to mount."""
    directory = tmp_path / "hello"
    directory.mkdir()
    (directory / "hello_driver.py").write_text(documented("hello_driver.py"))
    (directory / "empty.img").touch()
    return directory
