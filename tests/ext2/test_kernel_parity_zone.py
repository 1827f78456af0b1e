"""The journal's blocks are in the system zone: an inode claiming one is EUCLEAN, as on the
kernel (ext4_protect_reserved_inode files the journal inode's blocks there, for it alone).

Each case points one inode of test_iget's ext4 volume at a block of its journal with
debugfs and compares the driver's lookup with ``lstat`` on the kernel's read-only loop
mount of the same bytes; the image is not written.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
from pathlib import Path

import pytest

from .images import debugfs
from .test_iget import driver_view, kernel_errno, volumes  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

JOURNAL_INO = 8


@pytest.mark.parametrize(
    ("field", "journal_block"),
    [
        pytest.param("block[5]", 0, id="extent-at-journal-start"),  # ee_start_lo
        pytest.param("block[5]", 100, id="extent-inside-journal"),
        pytest.param("file_acl", 7, id="xattr-block-in-journal"),
    ],
)
async def test_a_file_in_the_journal_is_euclean(
    volumes: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    kernel_mount,
    field: str,
    journal_block: int,
) -> None:
    image = Path(shutil.copy(volumes["ext4"], tmp_path / "image"))
    block = int(debugfs(image, f"bmap <{JOURNAL_INO}> {journal_block}"))
    debugfs(image, f"sif /file {field} {block}", "-w")
    before = hashlib.sha256(image.read_bytes()).digest()
    assert await driver_view(image, "file") == (errno.EUCLEAN, b"still readable\n")
    assert hashlib.sha256(image.read_bytes()).digest() == before
    assert kernel_errno(kernel_mount(image), "file") == errno.EUCLEAN
