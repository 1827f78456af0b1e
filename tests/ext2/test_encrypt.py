"""Encrypted directories without the key: uvfs shows what the kernel shows.

Images are made by the kernel itself: a loop mount of an `-O encrypt` volume, a v2 key
added with FS_IOC_ADD_ENCRYPTION_KEY, a policy set on an empty directory with
FS_IOC_SET_ENCRYPTION_POLICY, files, symlinks and directories written into it, then an
unmount, which drops the key. The kernel's read-only mount of that image, with no key, is
the oracle: the same no-key names (short and long forms, with the hashes its readdir
puts in them), sizes, link targets and errors (ENOKEY on open, ENOENT for names that are
no no-key name).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from uvfs import FSError
from uvfs_fs.ext2.encrypt import NoKeyQuery, base64url_decode, nokey_name, symlink_target

FS_IOC_ADD_ENCRYPTION_KEY = 0xC0506617  # _IOWR('f', 23, struct fscrypt_add_key_arg)
FS_IOC_SET_ENCRYPTION_POLICY = 0x800C6613  # _IOR('f', 19, struct fscrypt_policy_v1)
KEY_SPEC_TYPE_IDENTIFIER = 2
MODE_AES_256_XTS, MODE_AES_256_CTS = 1, 4

# Plaintext name lengths around the no-key forms' limits: a ciphertext is padded to 16
# bytes at least, and 149 bytes is where the long (SHA-256) form starts.
NAME_LENGTHS = (1, 15, 16, 17, 100, 140, 145, 148, 149, 150, 152, 160, 200, 255)


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


# --- the format, without a mount ------------------------------------------------------------


def test_short_nokey_name_is_hashes_and_ciphertext() -> None:
    cipher = bytes(range(32))
    assert nokey_name(cipher) == _b64(bytes(8) + cipher)
    assert nokey_name(cipher, 0x12345678, 0x9ABCDEF0) == _b64(
        struct.pack("<II", 0x12345678, 0x9ABCDEF0) + cipher
    )
    assert nokey_name(b".") == b"." and nokey_name(b"..") == b".."


def test_long_nokey_name_keeps_149_bytes_and_a_sha256_of_the_rest() -> None:
    import hashlib

    cipher = bytes(range(200))
    name = nokey_name(cipher, 7, 9)
    assert len(name) == 252
    assert name == _b64(
        struct.pack("<II", 7, 9) + cipher[:149] + hashlib.sha256(cipher[149:]).digest()
    )
    query = NoKeyQuery(name)
    assert query.ciphertext is None and query.major == 7
    assert query.matches(cipher)
    assert not query.matches(cipher[:-1] + b"\0")
    assert not query.matches(cipher[:149])


def test_a_name_under_16_bytes_cannot_be_shown() -> None:
    with pytest.raises(FSError) as e:
        nokey_name(b"short")
    assert e.value.errno == errno.EUCLEAN


@pytest.mark.parametrize(
    "name",
    [b"hello.txt", b"AAAA", b"A" * 253, b"AAAAAAAAAAAAAB", b"AAAAAAAAAAA=", _b64(bytes(158))],
    ids=["plaintext", "too-short", "too-long", "stray-bits", "padding", "between-forms"],
)
def test_names_that_are_no_nokey_name_are_enoent(name: bytes) -> None:
    with pytest.raises(FSError) as e:
        NoKeyQuery(name)
    assert e.value.errno == errno.ENOENT


def test_base64url_decoding_is_the_kernels() -> None:
    assert base64url_decode(b"AQID") == b"\1\2\3"
    assert base64url_decode(b"AQI") == b"\1\2"
    assert base64url_decode(b"AQJ") is None  # leftover bits not zero
    assert base64url_decode(b"-_-_") == b"\xfb\xff\xbf"
    assert base64url_decode(b"+/") is None


def test_symlink_target_reads_its_length_and_ciphertext() -> None:
    cipher = bytes(range(1, 33))
    area = struct.pack("<H", 32) + cipher + bytes(26)
    assert symlink_target(area) == nokey_name(cipher)
    for bad in (struct.pack("<H", 0) + bytes(58), struct.pack("<H", 59) + bytes(58)):
        with pytest.raises(FSError) as e:
            symlink_target(bad)
        assert e.value.errno == errno.EUCLEAN


# --- images the kernel encrypted --------------------------------------------------------------


def _set_policy(directory: Path, identifier: bytes, flags: int) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        policy = struct.pack("<BBBB4x16s", 2, MODE_AES_256_XTS, MODE_AES_256_CTS, flags, identifier)
        fcntl.ioctl(fd, FS_IOC_SET_ENCRYPTION_POLICY, policy)
    finally:
        os.close(fd)


def _add_key(mountpoint: Path, key: bytes) -> bytes:
    """Add `key` to the filesystem's keyring; its identifier."""
    arg = bytearray(struct.pack("<II32sII32x", KEY_SPEC_TYPE_IDENTIFIER, 0, b"", len(key), 0) + key)
    fd = os.open(mountpoint, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, arg)
    finally:
        os.close(fd)
    return bytes(arg[8:24])


def _fill(secret: Path) -> None:
    """What the encrypted directory holds: names of every length class, file sizes,
    fast and slow symlinks, nested and indexed directories."""
    for n in NAME_LENGTHS:
        (secret / ("n" * n)).write_bytes(b"x" * n)
    (secret / "empty").write_bytes(b"")
    (secret / "big").write_bytes(os.urandom(70_000))
    os.symlink("target", secret / "fast")
    os.symlink("far/" * 80, secret / "slow")
    os.symlink("t" * 40, secret / "forty")
    (secret / "sub").mkdir()
    (secret / "sub" / "inner").write_bytes(b"inner")
    (secret / "one_block").mkdir()
    for i in range(5):
        (secret / "one_block" / f"f{i}").write_bytes(b"")
    many = secret / "many"
    many.mkdir()
    for i in range(400):
        (many / f"entry-{i:04d}-{'z' * (i % 90)}").write_bytes(b"")
    os.mkfifo(secret / "fifo")
    (secret / "plain_later").mkdir()


def make_encrypted_image(
    image: Path, mountpoint: Path, *, block_size: int, hash_alg: str, flags: int, unsigned: bool
) -> None:
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-O", "encrypt", "-b", str(block_size), str(image),
         "32M"],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["tune2fs", "-E", f"hash_alg={hash_alg}", str(image)], check=True, capture_output=True
    )
    if unsigned:  # s_flags: unsigned instead of signed char hashes
        subprocess.run(
            ["debugfs", "-w", "-R", "ssv flags 2", str(image)], check=True, capture_output=True
        )
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        identifier = _add_key(mountpoint, os.urandom(64))
        (mountpoint / "clear.txt").write_bytes(b"not encrypted\n")
        secret = mountpoint / "secret"
        secret.mkdir()
        _set_policy(secret, identifier, flags)
        _fill(secret)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def _errno_of(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def _view(root: Path) -> dict[str, tuple]:
    """Every node under `root` as stat, readlink and open(2) show it."""
    out: dict[str, tuple] = {}
    stack = [root]
    while stack:
        directory = stack.pop()
        for entry in os.scandir(directory):
            path = Path(entry.path)
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            link = os.readlink(path) if entry.is_symlink() else None
            opened = _errno_of(lambda p: os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK)), path)
            out[rel] = (
                st.st_ino,
                st.st_mode,
                st.st_size,
                st.st_nlink,
                st.st_mtime_ns,
                link,
                opened,
            )
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)
    return out


def _other_spellings(name: str) -> list[str]:
    """Names the kernel resolves to the same entry: a short no-key name with other hashes
    (only the ciphertext counts), and the name itself."""
    raw = base64url_decode(name.encode())
    if raw is None or len(raw) == 189:
        return [name]
    return [name, _b64(bytes(8) + raw[8:]).decode(), _b64(b"\xff" * 8 + raw[8:]).decode()]


@pytest.mark.parametrize(
    ("block_size", "hash_alg", "flags", "unsigned"),
    [(1024, "half_md4", 0, False), (4096, "tea", 3, False), (1024, "legacy", 2, True)],
    ids=["1k-half_md4-pad4", "4k-tea-pad32", "1k-legacy-unsigned-pad16"],
)
def test_encrypted_tree_reads_as_the_kernel_shows_it_without_the_key(
    tmp_path: Path, mount, kernel_mount, block_size: int, hash_alg: str, flags: int, unsigned: bool
) -> None:
    need("mke2fs", "tune2fs", "debugfs")
    if os.geteuid() != 0:
        pytest.skip("the kernel makes the encrypted image: loop mounts and its ioctls need root")
    if not Path("/sys/fs/ext4/features/encryption").exists():
        pytest.skip("this kernel's ext4 has no encryption (CONFIG_FS_ENCRYPTION)")
    image = tmp_path / "encrypted.img"
    make_encrypted_image(
        image,
        tmp_path / "build",
        block_size=block_size,
        hash_alg=hash_alg,
        flags=flags,
        unsigned=unsigned,
    )
    kernel = kernel_mount(image)
    ours = mount(image)

    expected = _view(kernel)
    assert _view(ours) == expected
    # Names of every length were shown in both forms, and files cannot be opened.
    secret_names = [
        Path(rel).name for rel in expected if rel.startswith("secret/") and rel.count("/") == 1
    ]
    lengths = {len(n) for n in secret_names}
    assert 252 in lengths and min(lengths) < 252
    assert expected["clear.txt"][-1] == 0
    assert {
        v[-1]
        for rel, v in expected.items()
        if rel.startswith("secret/") and v[1] & 0o170000 == 0o100000
    } == {errno.ENOKEY}

    # Lookups: other spellings of each name, and names that are no no-key name.
    for rel in expected:
        if not rel.startswith("secret/"):
            continue
        parent, name = os.path.split(rel)
        for spelling in _other_spellings(name):
            assert _errno_of(os.lstat, ours / parent / spelling) == _errno_of(
                os.lstat, kernel / parent / spelling
            )
            if _errno_of(os.lstat, kernel / parent / spelling) == 0:
                assert (
                    os.lstat(ours / parent / spelling).st_ino
                    == os.lstat(kernel / parent / spelling).st_ino
                )
    for bogus in ("n", "hello.txt", "AAAA", "A" * 252, "A" * 253, "-_-_-_-_-_-_-_-_-_-_-_-_"):
        assert _errno_of(os.lstat, ours / "secret" / bogus) == _errno_of(
            os.lstat, kernel / "secret" / bogus
        )
    assert os.listxattr(ours / "secret", follow_symlinks=False) == os.listxattr(
        kernel / "secret", follow_symlinks=False
    )
    assert (ours / "clear.txt").read_bytes() == b"not encrypted\n"
