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
- **Contents** cannot be read: opening a regular file is ENOKEY, once its context
  (attribute 9 "c") reads and holds a policy this kernel supports (`context_policy`,
  `policy_supported`): else ENODATA, ERANGE or EINVAL, as fscrypt_require_key answers.
- **Consistency** (fscrypt_has_permitted_context): an encrypted directory's child
  directory or symlink must be encrypted under the same policy (its lookup is EPERM
  otherwise), and so must a regular file it holds (its open is EPERM).
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


# --- encryption contexts and policies (fs/crypto/policy.c) ---------------------------------

EXT4_XATTR_INDEX_ENCRYPTION = 9  # the context is the attribute (9, b"c")
FSCRYPT_CONTEXT_MAX = 40  # a longer value does not fit the kernel's buffer: ERANGE
_CONTEXT_SIZES = {1: 28, 2: 40}  # version -> context size
_POLICY_SIZES = {1: 12, 2: 24}  # version -> the policy's part of the context
# (contents, filenames) encryption modes each policy version allows
_MODES_V1 = {(1, 4), (5, 6), (9, 9)}  # AES-256-XTS/CTS, AES-128-CBC/CTS, Adiantum
_MODES_V2 = _MODES_V1 | {(1, 10), (7, 8)}  # AES-256-XTS/HCTR2, SM4-XTS/CTS
_PAD_MASK, _DIRECT_KEY, _IV_INO_LBLK_64, _IV_INO_LBLK_32 = 0x03, 0x04, 0x08, 0x10
_ADIANTUM = 9  # the only mode whose IV holds the nonce: DIRECT_KEY needs it


def context_policy(context: bytes) -> bytes | None:
    """The policy an encryption context holds (version, modes, flags, key descriptor or
    identifier), compared byte for byte between a directory and its child; None when the
    context is of no known version and size (fscrypt_policy_from_context: EINVAL)."""
    version = context[0] if context else 0
    if _CONTEXT_SIZES.get(version) != len(context):
        return None
    return context[: _POLICY_SIZES[version]]


def policy_supported(policy: bytes, *, casefolded: bool, stable_inodes: bool, blkbits: int) -> bool:
    """fscrypt_supported_policy: the modes, flags and data unit size this kernel accepts
    (a context it cannot use makes opening the file EINVAL)."""
    version, contents, filenames, flags = policy[:4]
    direct_key_ok = contents == filenames == _ADIANTUM
    if version == 1:
        return (
            (contents, filenames) in _MODES_V1
            and not flags & ~(_PAD_MASK | _DIRECT_KEY)
            and (direct_key_ok or not flags & _DIRECT_KEY)
            and not casefolded  # v1 cannot derive the dirhash key
        )
    log2_data_unit, reserved = policy[4], policy[5:8]
    special = flags & (_DIRECT_KEY | _IV_INO_LBLK_64 | _IV_INO_LBLK_32)
    return (
        (contents, filenames) in _MODES_V2
        and not flags & ~(_PAD_MASK | _DIRECT_KEY | _IV_INO_LBLK_64 | _IV_INO_LBLK_32)
        and special & (special - 1) == 0  # at most one of them
        and (direct_key_ok or not flags & _DIRECT_KEY)
        and (stable_inodes or not flags & (_IV_INO_LBLK_64 | _IV_INO_LBLK_32))
        and (
            not log2_data_unit
            or (9 <= log2_data_unit <= blkbits
                and (log2_data_unit == blkbits or not flags & _IV_INO_LBLK_32))
        )
        and reserved == b"\0\0\0"
    )  # fmt: skip
