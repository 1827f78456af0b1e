"""Through a real `uvfs mount -o ro`, every ext2/3/4 image shows exactly what the kernel's own
driver shows on a loop mount of the same image: type, mode, owner, size, link count, times,
inode number, content, link target, device number and extended attributes. The image's bytes
do not change."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import need
from tests.ext2.images import make_image, make_tree

pytestmark = pytest.mark.slow

# (fstype, block size, revision, filetype)
CASES = [
    ("ext2", 1024, 1, True),
    ("ext2", 2048, 1, False),
    ("ext2", 4096, 0, False),
    ("ext2", 4096, 1, True),
    ("ext3", 1024, 1, True),
    ("ext3", 4096, 1, True),
    ("ext4", 4096, 1, True),
]
WHOLE_FILE_LIMIT = 64 << 20  # larger files are compared at sampled ranges
SAMPLE = 64 << 10


def _content_digest(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_LIMIT:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        else:
            # The start, the end, every 4 GiB boundary, and a spread in between.
            offsets = {0, max(0, size - SAMPLE), *range(0, size, size // 37 + 1)}
            offsets |= {max(0, n * (1 << 32) - SAMPLE // 2) for n in range(1, (size >> 32) + 1)}
            offsets |= {(4 << 30) + 12345 - 100}
            for offset in sorted(offsets):
                digest.update(os.pread(f.fileno(), SAMPLE, offset))
    return digest.hexdigest()


def _xattrs(path: Path) -> dict[str, bytes]:
    names = os.listxattr(path, follow_symlinks=False)
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in sorted(names)}


def view(root: Path) -> dict[str, tuple]:
    """Everything stat, readlink, listxattr and read show of each node under `root`."""
    result: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath, name)
            rel = os.path.normpath(path.relative_to(root))
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            extra: object = None
            if kind == stat.S_IFREG:
                extra = _content_digest(path, st.st_size)
            elif kind == stat.S_IFLNK:
                extra = os.readlink(path)
            result[rel] = (
                st.st_mode,
                st.st_ino if rel != "." else "root",
                st.st_nlink,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_rdev,
                st.st_atime_ns,
                st.st_mtime_ns,
                st.st_ctime_ns,
                extra,
                _xattrs(path) if kind != stat.S_IFLNK else {},
            )
    return result


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """The test tree, with and without the 5 GiB sparse file (revision 0 cannot hold it)."""
    if os.geteuid() != 0:
        pytest.skip("the test tree has devices and foreign owners: needs root")
    need("mke2fs")
    base = tmp_path_factory.mktemp("trees")
    made = {}
    for huge in (True, False):
        made[huge] = base / f"huge={huge}"
        make_tree(made[huge], huge=huge)
    return made


@pytest.mark.parametrize(("fstype", "block_size", "revision", "filetype"), CASES)
def test_uvfs_view_equals_the_kernels(
    trees, tmp_path: Path, mount, kernel_mount, fstype, block_size, revision, filetype
) -> None:
    image = tmp_path / "image"
    make_image(
        trees[revision == 1],
        image,
        fstype=fstype,
        block_size=block_size,
        revision=revision,
        filetype=filetype,
        size_mb=96,
    )
    before = hashlib.sha256(image.read_bytes()).hexdigest()

    theirs = view(kernel_mount(image, fstype))
    ours = view(mount(image, options="ro"))

    assert ours.keys() == theirs.keys()
    different = {path: (ours[path], theirs[path]) for path in ours if ours[path] != theirs[path]}
    assert different == {}
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
