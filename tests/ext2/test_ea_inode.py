"""Extended attribute values in their own inodes (ext4 ea_inode), set by the kernel, read as
the kernel reads them; an entry pointing anywhere but at a fitting EA inode is EIO for that
attribute alone."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from uvfs import FSError, ImageFile, MountOptions
from uvfs_fs.ext2.writable import DRIVER as WRITABLE_DRIVER
from uvfs_fs.ext2.writable import ReadOnlyVolume, WritableExt2

from .conftest import debugfs_field, debugfs_stat, open_image, resolve
from .images import debugfs
from .test_corrupt import inode_offset, poke
from .test_mount_vs_kernel import view

EXT4_EA_INODE_FL = 0x00200000
BS = 1024
BIG = bytes(range(256)) * 11 + b"tail"  # 2820 bytes: more than a 1 KiB block holds
# file -> attributes the kernel sets on it
XATTRS: dict[str, dict[str, bytes]] = {
    "big": {"user.big": BIG, "user.small": b"s", "user.huge": bytes(range(256)) * 200},
    "twin": {"user.big": BIG},  # the same value: the kernel shares its EA inode
    "large": {"user.large": b"m" * 60000},  # near XATTR_SIZE_MAX (the kernel says ENOSPC above
    # about 60 KB on 1 KiB blocks)
    "dir": {"user.dirbig": b"d" * 5000, "trusted.t": b"t" * 4000},
    "victim": {"user.v": BIG[::-1], "user.s": b"small"},  # the damaged one
}


def make_ea_image(image: Path, csum: bool) -> None:
    """mke2fs -O ea_inode, then the kernel sets `XATTRS` on a loop mount."""
    if os.geteuid() != 0:
        pytest.skip("the kernel sets the attributes: loop mounts need root")
    features = "ea_inode" + ("" if csum else ",^metadata_csum")
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BS), "-O", features, str(image), "16M"],
        check=True,
        capture_output=True,
    )
    mountpoint = image.with_name(image.name + ".mnt")
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        (mountpoint / "dir").mkdir()
        for rel, attrs in XATTRS.items():
            if rel != "dir":
                (mountpoint / rel).write_bytes(rel.encode())
            for name, value in attrs.items():
                os.setxattr(mountpoint / rel, name, value)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.fixture(scope="module")
def ea_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("ea_inode") / "image"
    make_ea_image(image, csum=False)
    return image


async def test_values_read_from_ea_inodes(ea_image: Path) -> None:
    img, fs = await open_image(ea_image)
    with img:
        for rel, attrs in XATTRS.items():
            ino = (await resolve(fs, rel)).ino
            assert sorted(await fs.listxattr(ino)) == sorted(n.encode() for n in attrs)
            for name, value in attrs.items():
                assert await fs.getxattr(ino, name.encode()) == value
    # The cases hold what they claim: large values live in EA inodes, small ones do not.
    text = debugfs_stat(ea_image, "big")
    assert "user.big (2820)" in text and 'user.small (1) = "s"' in text


def _entry_offset(image: Path, rel: str, suffix: bytes) -> int:
    """The byte offset in `image` of the in-inode attribute entry named `suffix`."""
    at = inode_offset(image, rel, BS)
    with open(image, "rb") as f:
        f.seek(at)
        raw = f.read(256)
    offset = 128 + struct.unpack_from("<H", raw, 128)[0] + 4  # after i_extra_isize, the magic
    while raw[offset : offset + 4] != b"\0\0\0\0":
        name_len = raw[offset]
        if raw[offset + 16 : offset + 16 + name_len] == suffix:
            return at + offset
        offset += (16 + name_len + 3) & ~3
    raise AssertionError(f"no attribute {suffix!r} in /{rel}'s inode")


def _ino(image: Path, rel: str) -> int:
    return int(debugfs_stat(image, rel).split()[1])


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        # ext4_xattr_inode_iget and ext4_xattr_inode_get answer EFSCORRUPTED (EUCLEAN)
        ("inum", "self", errno.EUCLEAN),  # the value's inode is the owner itself
        ("inum", "twin", errno.EUCLEAN),  # a regular file, not an EA inode
        ("size", 70000, errno.EIO),  # past XATTR_SIZE_MAX: refused before anything is read
        ("size", 2819, errno.EUCLEAN),  # not the EA inode's size
    ],
)
async def test_bad_ea_inode_entries_fail_alone(
    ea_image: Path, tmp_path: Path, field: str, value: object, code: int
) -> None:
    image = Path(shutil.copy(ea_image, tmp_path / "image"))
    entry = _entry_offset(image, "victim", b"v")
    if field == "inum":
        inum = {"self": _ino(image, "victim"), "twin": _ino(image, "twin")}.get(value, value)
        poke(image, entry + 4, struct.pack("<I", inum))
    else:
        poke(image, entry + 8, struct.pack("<I", value))
    img, fs = await open_image(image)
    with img:
        ino = (await resolve(fs, "victim")).ino
        with pytest.raises(FSError) as info:
            await fs.getxattr(ino, b"user.v")
        assert info.value.errno == code
        # The rest of the inode, and of the volume, reads on.
        assert sorted(await fs.listxattr(ino)) == [b"user.s", b"user.v"]
        assert await fs.getxattr(ino, b"user.s") == b"small"
        assert await fs.read(ino, 0, 0, 100) == b"victim"
        assert await fs.getxattr((await resolve(fs, "twin")).ino, b"user.big") == BIG


@pytest.mark.parametrize("inum", [2, 0x0FFFFFFF])  # the root directory, past the inode count
async def test_in_inode_entry_naming_a_bad_inode_fails_the_inode(
    ea_image: Path, tmp_path: Path, inum: int
) -> None:
    """An in-inode entry naming the root or no inode at all is checked when the kernel
    reads the inode (check_xattrs: "invalid ea_ino"): EUCLEAN for the inode itself."""
    image = Path(shutil.copy(ea_image, tmp_path / "image"))
    poke(image, _entry_offset(image, "victim", b"v") + 4, struct.pack("<I", inum))
    img, fs = await open_image(image)
    with img:
        with pytest.raises(FSError) as info:
            await resolve(fs, "victim")
        assert info.value.errno == errno.EUCLEAN
        assert await fs.getxattr((await resolve(fs, "twin")).ino, b"user.big") == BIG


async def test_ea_inode_without_its_flag_is_euclean(ea_image: Path, tmp_path: Path) -> None:
    image = Path(shutil.copy(ea_image, tmp_path / "image"))
    entry = _entry_offset(image, "victim", b"v")
    with open(image, "rb") as f:
        f.seek(entry + 4)
        (ea_ino,) = struct.unpack("<I", f.read(4))
    flags = debugfs_field(debugfs(image, f"stat <{ea_ino}>"), "Flags:")
    assert flags & EXT4_EA_INODE_FL
    debugfs(image, f"sif <{ea_ino}> flags {flags & ~EXT4_EA_INODE_FL:#x}", "-w")
    img, fs = await open_image(image)
    with img:
        with pytest.raises(FSError) as info:
            await fs.getxattr((await resolve(fs, "victim")).ino, b"user.v")
        assert info.value.errno == errno.EUCLEAN  # as ext4_xattr_inode_iget answers


async def test_writing_refused_read_only_instead(ea_image: Path, tmp_path: Path) -> None:
    image = Path(shutil.copy(ea_image, tmp_path / "image"))
    with ImageFile(str(image), writable=True) as file:
        with pytest.raises(ReadOnlyVolume, match="ea_inode"):
            await WritableExt2.load(file, MountOptions(writable=True))
        fs = await WRITABLE_DRIVER.open([file], MountOptions(writable=True))
        assert not getattr(fs, "_writable", False)
        assert await fs.getxattr((await resolve(fs, "big")).ino, b"user.big") == BIG


@pytest.mark.slow
@pytest.mark.parametrize("csum", [True, False], ids=["metadata_csum", "no-csum"])
def test_uvfs_view_equals_the_kernels(tmp_path: Path, mount, kernel_mount, csum: bool) -> None:
    image = tmp_path / "image"
    make_ea_image(image, csum)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    theirs = view(kernel_mount(image, "ext4"))
    ours = view(mount(image, options="ro"))
    assert ours.keys() == theirs.keys()
    assert {path: (ours[path], theirs[path]) for path in ours if ours[path] != theirs[path]} == {}
    assert ours["big"][-1]["user.huge"] == bytes(range(256)) * 200
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
