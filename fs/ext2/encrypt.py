"""Encrypted directories and symlinks read without the key (fscrypt), sans-I/O.

A node flagged EXT4_ENCRYPT_FL on a volume with the encrypt feature holds ciphertext:
its file contents, its names (if a directory) and its target (if a symlink). Without the
key, the kernel (fs/crypto/fname.c, hooks.c) shows what can be shown:

- **No-key names.** A name of a directory is shown as the unpadded base64url of a
  `fscrypt_nokey_name`: the name's two htree hashes (little-endian words), then its
  ciphertext, whole if it is at most 149 bytes; a longer one keeps its first 149 bytes
  and the SHA-256 of the rest (189 bytes in all, 252 characters). The hashes are those of
  the ciphertext under the directory's hash when the kernel lists it through the htree
  code (an indexed directory, or one of exactly one block: `readdir_hashes`), else zero.
  "." and ".." are shown as they are; a ciphertext under 16 bytes cannot be shown
  (EUCLEAN, and the kernel's readdir fails).
- **Lookups** decode the name (ENOENT when it is no no-key name): a short one names its
  ciphertext exactly, a long one matches a stored name longer than 149 bytes with the same
  first 149 bytes and the same SHA-256 of the rest. In an indexed directory a short
  name is hashed from its ciphertext, a long one is routed by the hash it carries.
- **Contents** cannot be read: opening a regular file is ENOKEY.
- **Symlinks**: the target is stored as a little-endian 16-bit length and the ciphertext
  (`fscrypt_symlink_data`), in i_block for a fast symlink and the first block otherwise;
  it reads as the ciphertext's no-key name with zero hashes, and the symlink's st_size is
  that name's length. A length of 0 or past the area is EUCLEAN.

Casefolded encrypted directories (SipHash, hashes kept in the records) are not done.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import struct

from uvfs import FSError

EXT4_ENCRYPT_FL = 0x00000800  # i_flags
NOKEY_NAME_BYTES = 149  # fscrypt_nokey_name.bytes: ciphertext kept whole up to this
NOKEY_NAME_MAX = 8 + NOKEY_NAME_BYTES + 32  # hashes, bytes, SHA-256 of the rest
NOKEY_NAME_MAX_ENCODED = 252  # base64url of NOKEY_NAME_MAX bytes
FNAME_MIN_MSG_LEN = 16  # no ciphertext name is shorter (FSCRYPT_FNAME_MIN_MSG_LEN)
_HASHES = struct.Struct("<II")  # dirhash[0] (major), dirhash[1] (minor)
_SYMLINK_LEN = struct.Struct("<H")  # fscrypt_symlink_data.len
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}


def base64url_decode(text: bytes) -> bytes | None:
    """`text` decoded as the kernel decodes no-key names: unpadded base64url whose
    leftover bits are zero; None when it is not that."""
    acc = bits = 0
    out = bytearray()
    for c in text:
        value = _VALUE.get(c)
        if value is None:
            return None
        acc = (acc << 6 | value) & 0xFFFF
        bits += 6
        if bits >= 8:
            bits -= 8
            out.append(acc >> bits & 0xFF)
    if acc & ((1 << bits) - 1):
        return None
    return bytes(out)


def nokey_name(ciphertext: bytes, major: int = 0, minor: int = 0) -> bytes:
    """How a name stored as `ciphertext` is shown without the key.

    Raises:
        FSError: EUCLEAN for a ciphertext shorter than any encrypted name.
    """
    if ciphertext in (b".", b".."):
        return ciphertext
    if len(ciphertext) < FNAME_MIN_MSG_LEN:
        raise FSError(errno.EUCLEAN, f"encrypted name of {len(ciphertext)} bytes")
    head = _HASHES.pack(major, minor)
    if len(ciphertext) <= NOKEY_NAME_BYTES:
        raw = head + ciphertext
    else:
        rest = hashlib.sha256(ciphertext[NOKEY_NAME_BYTES:]).digest()
        raw = head + ciphertext[:NOKEY_NAME_BYTES] + rest
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


class NoKeyQuery:
    """A lookup by no-key name: what it matches, and the hash it is routed by.

    Args:
        name: the name looked up.

    Raises:
        FSError: ENOENT when `name` is no no-key name (no stored name can match it).
    """

    __slots__ = ("ciphertext", "digest", "major", "prefix")

    def __init__(self, name: bytes) -> None:
        self.major = 0
        self.prefix = self.digest = b""
        if name in (b".", b".."):
            self.ciphertext: bytes | None = name
            return
        raw = base64url_decode(name) if len(name) <= NOKEY_NAME_MAX_ENCODED else None
        if raw is None or not (
            8 + 1 <= len(raw) <= 8 + NOKEY_NAME_BYTES or len(raw) == NOKEY_NAME_MAX
        ):
            raise FSError(errno.ENOENT)
        self.major = _HASHES.unpack_from(raw)[0]
        if len(raw) == NOKEY_NAME_MAX:
            self.ciphertext = None
            self.prefix, self.digest = raw[8 : 8 + NOKEY_NAME_BYTES], raw[8 + NOKEY_NAME_BYTES :]
        else:
            self.ciphertext = raw[8:]

    def matches(self, stored: bytes) -> bool:
        """Whether the stored (ciphertext) name `stored` is the one looked up."""
        if self.ciphertext is not None:
            return stored == self.ciphertext
        return (
            len(stored) > NOKEY_NAME_BYTES
            and stored[:NOKEY_NAME_BYTES] == self.prefix
            and hashlib.sha256(stored[NOKEY_NAME_BYTES:]).digest() == self.digest
        )


def symlink_target(area: bytes) -> bytes:
    """The target an encrypted symlink reads as without the key, from `area`: its
    i_block (fast) or its first block.

    Raises:
        FSError: EUCLEAN for a length of 0 or past the area, or a name too short.
    """
    if len(area) < _SYMLINK_LEN.size + 1:
        raise FSError(errno.EUCLEAN, "encrypted symlink area too small")
    (size,) = _SYMLINK_LEN.unpack_from(area)
    if not 0 < size <= len(area) - _SYMLINK_LEN.size:
        raise FSError(errno.EUCLEAN, f"encrypted symlink of {size} bytes")
    return nokey_name(area[_SYMLINK_LEN.size : _SYMLINK_LEN.size + size])
