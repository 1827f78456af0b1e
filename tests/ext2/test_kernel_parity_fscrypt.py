"""Bad encryption contexts answer as the kernel answers them without the key (fscrypt's
policy checks; e2fsprogs f_bad_encryption): opening a file whose context is missing is
ENODATA, of no known version EINVAL, valid ENOKEY; an unencrypted file in an encrypted
directory opens EPERM; a directory whose context is missing, of another policy or
absent (not encrypted) fails its lookup EPERM and is left out of the listing (the kernel
lists it and fails its stat).

The kernel encrypts the directory (test_encrypt's key and policy ioctls); debugfs and
pokes then damage one inode each; the kernel's read-only loop mount of the same bytes is
the oracle, and the image is not written.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import subprocess
from pathlib import Path

import pytest

from uvfs import FSError

from .conftest import open_image, resolve
from .images import debugfs
from .test_corrupt import poke
from .test_encrypt import _add_key, _set_policy

pytestmark = pytest.mark.slow

ENCRYPTION_INDEX = 9  # the context's attribute: (9, "c")
FILES = ("nocontext", "version3", "valid", "unencrypted")
DIRS = ("dnocontext", "dpolicy", "dunencrypted", "dvalid")


def make_image(image: Path, mountpoint: Path) -> dict[str, int]:
    """An encrypted /secret holding `FILES` and `DIRS`; their inode numbers."""
    if not Path("/sys/fs/ext4/features/encryption").exists():
        pytest.skip("this kernel's ext4 has no encryption (CONFIG_FS_ENCRYPTION)")
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-O", "encrypt,^metadata_csum", str(image), "8M"],
        check=True,
        capture_output=True,
    )
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        secret = mountpoint / "secret"
        secret.mkdir()
        _set_policy(secret, _add_key(mountpoint, os.urandom(64)), 0)
        for name in FILES:
            (secret / name).write_bytes(name.encode())
        for name in DIRS:
            (secret / name).mkdir()
        return {name: os.lstat(secret / name).st_ino for name in FILES + DIRS}
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def context_entry(image: Path, ino: int) -> tuple[int, int]:
    """The image offsets of inode `ino`'s in-inode context entry and of its value."""
    found = debugfs(image, f"imap <{ino}>").split("located at block ")[1].split(", offset ")
    at = int(found[0]) * 1024 + int(found[1].split()[0], 16)
    with open(image, "rb") as f:
        f.seek(at)
        raw = f.read(256)
    area = 128 + struct.unpack_from("<H", raw, 128)[0] + 4
    entry = area
    while raw[entry : entry + 4] != b"\0\0\0\0":
        name_len, index, value_offs = struct.unpack_from("<BBH", raw, entry)
        if (index, raw[entry + 16 : entry + 16 + name_len]) == (ENCRYPTION_INDEX, b"c"):
            return at + entry, at + area + value_offs
        entry += (16 + name_len + 3) & ~3
    raise AssertionError(f"inode {ino} has no in-inode context")


def damage(image: Path, inos: dict[str, int]) -> None:
    for name in ("nocontext", "dnocontext"):  # the attribute renamed to user.c
        poke(image, context_entry(image, inos[name])[0] + 1, bytes([1]))
    poke(image, context_entry(image, inos["version3"])[1], b"\x03")
    poke(image, context_entry(image, inos["dpolicy"])[1] + 8, b"\xee")  # another key
    for name in ("unencrypted", "dunencrypted"):
        flags = int(debugfs(image, f"stat <{inos[name]}>").split("Flags: ")[1].split()[0], 0)
        debugfs(image, f"sif <{inos[name]}> flags {flags & ~0x800:#x}", "-w")


def kernel_answers(root: Path) -> tuple[dict[int, tuple[int, int]], dict[int, bytes]]:
    """inode -> (lstat errno, open errno) for every name the kernel lists in /secret, and
    inode -> the no-key name it lists."""
    out, names = {}, {}
    for entry in os.scandir(root / "secret"):
        names[entry.inode()] = os.fsencode(entry.name)
        try:
            os.lstat(entry.path)
        except OSError as e:
            out[entry.inode()] = (e.errno, e.errno)
            continue
        try:
            os.close(os.open(entry.path, os.O_RDONLY))
            out[entry.inode()] = (0, 0)
        except OSError as e:
            out[entry.inode()] = (0, e.errno)
    return out, names


async def driver_answers(image: Path) -> tuple[dict[int, tuple[int, int]], set[int]]:
    """inode -> (lookup errno, open errno) for every name the driver lists in /secret,
    and the inodes it lists."""
    img, fs = await open_image(image)
    with img:
        secret = await resolve(fs, "secret")
        entries = await fs.readdir(secret.ino)
        out = {}
        for entry in entries:
            attr = await fs.lookup(secret.ino, entry.name)
            try:
                await fs.open(attr.ino, os.O_RDONLY, None)
                out[attr.ino] = (0, 0)
            except FSError as e:
                out[attr.ino] = (0, e.errno)
    return out, {entry.attr.ino for entry in entries}


async def test_bad_contexts_answer_as_on_the_kernel(tmp_path: Path, kernel_mount) -> None:
    image = tmp_path / "image"
    inos = make_image(image, tmp_path / "build")
    damage(image, inos)
    before = hashlib.sha256(image.read_bytes()).digest()
    ours, listed = await driver_answers(image)
    assert hashlib.sha256(image.read_bytes()).digest() == before
    theirs, names = kernel_answers(kernel_mount(image))
    expected = {
        "nocontext": (0, errno.ENODATA),
        "version3": (0, errno.EINVAL),
        "valid": (0, errno.ENOKEY),
        "unencrypted": (0, errno.EPERM),
        "dnocontext": (errno.EPERM, errno.EPERM),
        "dpolicy": (errno.EPERM, errno.EPERM),
        "dunencrypted": (errno.EPERM, errno.EPERM),
        "dvalid": (0, 0),
    }
    assert theirs == {inos[name]: answer for name, answer in expected.items()}
    # the names whose lookup fails are left out of the driver's listing (FUSE needs
    # their attributes)
    assert ours == {ino: answer for ino, answer in theirs.items() if not answer[0]}
    assert listed == set(ours)
    img, fs = await open_image(image)
    with img:  # and their lookups fail as the kernel's
        secret = await resolve(fs, "secret")
        for ino, (code, _) in theirs.items():
            if code:
                with pytest.raises(FSError) as info:
                    await fs.lookup(secret.ino, names[ino])
                assert info.value.errno == code
