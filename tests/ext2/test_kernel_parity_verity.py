"""An fs-verity file opens as on this kernel, built without CONFIG_FS_VERITY: EOPNOTSUPP,
while its stat, and the rest of the volume, read (e2fsprogs f_verity).

The file is flagged EXT4_VERITY_FL with debugfs on a volume with the verity feature; the
kernel's read-only loop mount of the same bytes is the oracle.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from uvfs import FSError

from .conftest import open_image, resolve
from .images import debugfs

pytestmark = pytest.mark.slow

EXT4_VERITY_FL = 0x00100000
EXT4_EXTENTS_FL = 0x00080000


def kernel_has_verity() -> bool:
    with gzip.open("/proc/config.gz", "rt") as f:
        return "CONFIG_FS_VERITY=y" in f.read()


async def test_verity_file_is_eopnotsupp_as_on_the_kernel(tmp_path: Path, kernel_mount) -> None:
    if kernel_has_verity():
        pytest.skip("this kernel reads fs-verity files: the driver answers as one without")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file").write_bytes(b"verity-protected\n" * 100)
    (tree / "other").write_bytes(b"plain\n")
    image = tmp_path / "image"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-O", "verity", "-d", str(tree), str(image), "8M"],
        check=True,
        capture_output=True,
    )
    debugfs(image, f"sif /file flags {EXT4_VERITY_FL | EXT4_EXTENTS_FL:#x}", "-w")
    before = hashlib.sha256(image.read_bytes()).digest()
    img, fs = await open_image(image)
    with img:
        attr = await resolve(fs, "file")
        with pytest.raises(FSError) as info:
            await fs.open(attr.ino, os.O_RDONLY, None)
        other = await resolve(fs, "other")
        await fs.open(other.ino, os.O_RDONLY, None)
        assert await fs.read(other.ino, 0, 0, 100) == b"plain\n"
    assert info.value.errno == errno.EOPNOTSUPP
    assert hashlib.sha256(image.read_bytes()).digest() == before
    root = kernel_mount(image)
    assert os.lstat(root / "file").st_size == attr.size == 1700
    with pytest.raises(OSError) as kernel:
        open(root / "file", "rb").close()
    assert kernel.value.errno == errno.EOPNOTSUPP
    assert (root / "other").read_bytes() == b"plain\n"
