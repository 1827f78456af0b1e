"""``-o isolate`` runs the same driver, unchanged, in a process of its own: it serves the same
view, and when that process dies its requests fail with EIO while the mount stays up."""

from __future__ import annotations

import errno
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_uvfs
from tests.ext2.images import make_image, make_tree
from tests.ext2.test_mount_vs_kernel import view

CRASHY = textwrap.dedent('''
    """A driver with two files; reading "crash" kills the driver's process."""
    import errno, os, stat
    import uvfs

    FILES = {b"calm": (2, b"still here\\n"), b"crash": (3, b"")}


    class CrashyFS:
        root = 1

        async def getattr(self, ino):
            if ino == 1:
                return uvfs.Attr(ino=1, mode=stat.S_IFDIR | 0o755, nlink=2, uid=0, gid=0, size=0)
            for number, data in FILES.values():
                if number == ino:
                    return uvfs.Attr(ino=ino, mode=stat.S_IFREG | 0o444, nlink=1, uid=0,
                                     gid=0, size=len(data) or 10)
            raise uvfs.FSError(errno.ENOENT)

        async def lookup(self, parent, name):
            if name not in FILES:
                raise uvfs.FSError(errno.ENOENT)
            return await self.getattr(FILES[name][0])

        async def read(self, ino, handle, offset, size):
            if ino == 3:
                os._exit(1)
            return FILES[b"calm"][1][offset : offset + size]


    class Driver:
        name = "crashy"

        def probe(self, head):
            return False

        async def open(self, sources, options):
            return CrashyFS()

        async def describe(self, sources):
            return "crashy"


    DRIVER = Driver()
''')


def _children_named(pid: int, text: str) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    return [int(line.split()[0]) for line in out.splitlines() if text in line]


def _server_pid(mountpoint: Path) -> int:
    stats = run_uvfs("stats", str(mountpoint)).stdout
    return int(stats.split("pid ")[1].split(")")[0])


def test_a_dead_driver_process_costs_its_requests_not_the_mount(mount, tmp_path: Path) -> None:
    driver_dir = tmp_path / "driver"
    driver_dir.mkdir()
    (driver_dir / "crashy_driver.py").write_text(CRASHY)
    (driver_dir / "empty.img").touch()
    mnt = mount(driver_dir / "empty.img", fstype="crashy_driver:DRIVER", options="ro,isolate",
                cwd=driver_dir)  # fmt: skip
    server = _server_pid(mnt)
    assert len(_children_named(server, "uvfs._isolation")) == 1
    assert (mnt / "calm").read_bytes() == b"still here\n"

    with pytest.raises(OSError) as excinfo:
        (mnt / "crash").read_bytes()
    assert excinfo.value.errno == errno.EIO
    # The driver is gone; what reaches it fails, the mount and the broker's answers remain.
    with pytest.raises(OSError) as excinfo:
        os.lstat(mnt / "never-looked-up")
    assert excinfo.value.errno == errno.EIO
    assert (mnt / "calm").read_bytes() == b"still here\n"  # from the caches
    assert os.path.ismount(mnt)
    run_uvfs("umount", str(mnt))
    assert not os.path.ismount(mnt)


@pytest.mark.slow
def test_an_isolated_ext2_mount_shows_the_same_view(mount, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the test tree has devices and foreign owners: needs root")
    make_tree(tmp_path / "tree", huge=False)
    image = tmp_path / "image"
    make_image(tmp_path / "tree", image, fstype="ext2", block_size=1024, revision=1,
               filetype=True, size_mb=64)  # fmt: skip
    inside = view(mount(image, options="ro"))
    isolated = mount(image, options="ro,isolate")
    assert len(_children_named(_server_pid(isolated), "uvfs._isolation")) == 1
    assert view(isolated) == inside


def test_every_operation_of_the_api_crosses_the_process_boundary() -> None:
    import typing

    from uvfs import _api
    from uvfs._isolation import OPERATIONS

    protocols = {
        name: proto
        for name, proto in vars(_api).items()
        if isinstance(proto, type) and getattr(proto, "_is_protocol", False)
        and proto not in (typing.Protocol, _api.FileSystem, _api.DriverType)
    }  # fmt: skip
    forwarded = set(OPERATIONS.values())
    assert {name for name, proto in protocols.items() if proto not in forwarded} == set()
    for operation, proto in OPERATIONS.items():
        assert hasattr(proto, operation)
