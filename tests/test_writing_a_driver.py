"""The example driver in docs/writing-a-driver.md mounts and behaves as the document says."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest


def test_the_example_driver_mounts_and_serves_its_file(mount, hello_dir: Path) -> None:
    mnt = mount(hello_dir / "empty.img", fstype="hello_driver:DRIVER", options=None, cwd=hello_dir)
    assert os.listdir(mnt) == ["hello.txt"]
    assert (mnt / "hello.txt").read_bytes() == b"Hello, world!\n"
    st = os.lstat(mnt / "hello.txt")
    assert (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size) == (
        stat.S_IFREG,
        0o444,
        14,
    )
    assert stat.S_ISDIR(os.lstat(mnt).st_mode)
    with pytest.raises(FileNotFoundError):
        os.lstat(mnt / "missing")
    # The driver has no write side, so the broker mounted it read-only.
    with pytest.raises(OSError) as excinfo:
        (mnt / "new").write_bytes(b"x")
    assert excinfo.value.errno == errno.EROFS
