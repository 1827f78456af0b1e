"""Casefolded names (the casefold feature): the kernel's utf8-12.1 "nfdicf" folding, sans-I/O.

A directory flagged EXT4_CASEFOLD_FL on a volume with the casefold feature matches names
without regard to case: the kernel (fs/unicode) folds both names to NFD of their full case
folding (CaseFolding.txt C + F) with every Default_Ignorable_Code_Point removed, and
compares the bytes; the htree hash of such a directory is taken over the folded name.
Invalid UTF-8 does not fold: such a name only matches itself, byte for byte, and is hashed
as it is. s_encoding names the tables (1: utf8 of Unicode 12.1, the only one there is);
s_encoding_flags' strict bit makes the kernel refuse to look up invalid names (EINVAL).

Python's `unicodedata` stands in for the kernel's utf8data tables. It is of a later
Unicode (14.0 on Python 3.11), and the kernel passes characters newer than 12.1 through
untouched (no folding, no decomposition, combining class 0), so the code points that
Unicode 13.0 and 14.0 added *and* Python would fold, decompose or reorder are listed in
`_NEWER` and kept as they are. The ignorables are 12.1's (`_IGNORABLE`: U+180F, made one
in 14.0, is not). `_NEWER` is complete for Unicode 14.0 (`TABLES_UNICODE`); a Python of
a later Unicode would fold the characters that Unicode added, which the kernel does not,
so test_casefold.py fails there until they are listed too.

The kernel folds one character at a time and then puts each run of combining marks in
canonical order, reading the bytes with its own cursor (utf8byte), whose ways are kept:
a run ends at an ignorable as at a starter; a continuation byte where a character should
start is invalid first in the name but otherwise copied through, once for each pass the
cursor makes over the run of marks it sits in. All of this was checked against
e2fsprogs' copy of the kernel's tables: every code point alone, and 200,000 random
strings (combining marks, ignorables, newer characters, Hangul, invalid bytes) fold to
the same bytes; tests/ext2/test_casefold.py checks folded hashes against debugfs.
"""

from __future__ import annotations

import errno
import unicodedata
from bisect import bisect_right
from functools import lru_cache

from uvfs import FSError, Refusal

EXT4_ENC_UTF8_12_1 = 1  # s_encoding
EXT4_ENC_STRICT_MODE_FL = 0x0001  # s_encoding_flags
EXT4_CASEFOLD_FL = 0x40000000  # i_flags: the directory's names are casefolded
TABLES_UNICODE = "14.0.0"  # the unicodedata version `_NEWER` was made for

# Default_Ignorable_Code_Point in Unicode 12.1 (DerivedCoreProperties.txt), as ranges.
_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)  # fmt: skip

# Assigned after Unicode 12.1 with a case folding, a decomposition or a combining class
# in Unicode 14.0: the kernel leaves them as they are.
_NEWER = (
    (0x0898, 0x089F), (0x08CA, 0x08D2), (0x0C3C, 0x0C3C), (0x1715, 0x1715),
    (0x1ABF, 0x1ACE), (0x1DFA, 0x1DFA), (0x2C2F, 0x2C2F), (0xA7C0, 0xA7C0),
    (0xA7C7, 0xA7C7), (0xA7C9, 0xA7C9), (0xA7D0, 0xA7D0), (0xA7D6, 0xA7D6),
    (0xA7D8, 0xA7D8), (0xA7F5, 0xA7F5), (0xA82C, 0xA82C), (0x10570, 0x1057A),
    (0x1057C, 0x1058A), (0x1058C, 0x10592), (0x10594, 0x10595), (0x10EAB, 0x10EAC),
    (0x10F82, 0x10F85), (0x11070, 0x11070), (0x11938, 0x11938), (0x1193D, 0x1193E),
    (0x11943, 0x11943), (0x16FF0, 0x16FF1), (0x1E2AE, 0x1E2AE),
)  # fmt: skip


def _starts(ranges: tuple[tuple[int, int], ...]) -> tuple[list[int], list[int]]:
    return [lo for lo, _ in ranges], [hi for _, hi in ranges]


_IGN_LO, _IGN_HI = _starts(_IGNORABLE)
_NEW_LO, _NEW_HI = _starts(_NEWER)


def _within(c: int, starts: list[int], ends: list[int]) -> bool:
    i = bisect_right(starts, c) - 1
    return i >= 0 and c <= ends[i]


# A unit of the folded sequence: (combining class, bytes). Starters have class 0; these
# two mark what is not a character of the output.
_STRAY = -1  # a continuation byte where a character should start: copied as it is
_BOUNDARY = -2  # an ignorable: folds to nothing, yet ends a run of combining marks


@lru_cache(maxsize=8192)
def _fold_char(ch: str) -> tuple[tuple[int, bytes], ...]:
    """The units one character folds to: NFD of its full case folding (utf8nfdicf)."""
    c = ord(ch)
    if _within(c, _IGN_LO, _IGN_HI):
        return ((_BOUNDARY, b""),)
    if _within(c, _NEW_LO, _NEW_HI):
        return ((0, ch.encode()),)
    folded = unicodedata.normalize("NFD", unicodedata.normalize("NFD", ch).casefold())
    return tuple((unicodedata.combining(x), x.encode()) for x in folded)


def _units(name: bytes) -> list[tuple[int, bytes]] | None:
    """`name` cut as the kernel's cursor reads it, each character folded; None when it
    is not UTF-8 the kernel reads (a bad or cut sequence, or a continuation byte first).
    A stray continuation byte after a character is kept: the kernel passes it through."""
    units: list[tuple[int, bytes]] = []
    i, size = 0, len(name)
    while i < size:
        lead = name[i]
        if lead & 0xC0 == 0x80:
            if i == 0:
                return None
            units.append((_STRAY, name[i : i + 1]))
            i += 1
            continue
        width = 1 + (lead >= 0xC0) + (lead >= 0xE0) + (lead >= 0xF0)
        try:
            ch = name[i : i + width].decode("utf-8")
        except UnicodeDecodeError:
            return None
        units += _fold_char(ch)
        i += width
    return units


def _ordered(units: list[tuple[int, bytes]]) -> bytes:
    """The units' bytes, each run of combining marks in canonical order.

    As the kernel's utf8byte does it: a run (up to the next starter, ignorable or the
    end) is read once to find its classes, then once per class, ascending, emitting that
    class's marks; a stray byte inside the run is emitted on every one of these passes.
    """
    out = bytearray()
    i, n = 0, len(units)
    while i < n:
        ccc, data = units[i]
        if ccc <= 0:
            out += data  # a starter, a stray byte, or nothing for an ignorable
            i += 1
            continue
        j = i
        while j < n and (units[j][0] > 0 or units[j][0] == _STRAY):
            j += 1
        run = units[i:j]
        for emitted in [_STRAY, *sorted({c for c, _ in run if c > 0})]:
            for c, data in run:
                if c in (emitted, _STRAY):
                    out += data
        i = j
    return bytes(out)


def casefold(name: bytes) -> bytes | None:
    """`name` folded as the kernel's utf8_casefold folds it; None when it cannot be."""
    if name.isascii():
        return name.lower()  # folding ASCII is lower-casing A-Z, and nothing combines
    units = _units(name)
    return None if units is None else _ordered(units)


class Folding:
    """A casefolding volume's encoding: how its casefolded directories match names.

    Args:
        encoding: s_encoding; flags: s_encoding_flags.

    Raises:
        Refusal: an encoding the kernel does not know (it refuses such a volume).
    """

    __slots__ = ("strict",)

    def __init__(self, encoding: int, flags: int) -> None:
        if encoding != EXT4_ENC_UTF8_12_1:
            raise Refusal(f"ext4 casefold: unknown filename encoding {encoding}")
        self.strict = bool(flags & EXT4_ENC_STRICT_MODE_FL)

    def key(self, name: bytes) -> bytes | None:
        """What a lookup of `name` compares: its fold, or None when it has none.

        Raises:
            FSError: EINVAL for invalid UTF-8 on a strict volume, as the kernel's
                d_hash refuses it.
        """
        folded = casefold(name)
        if folded is None and self.strict:
            raise FSError(errno.EINVAL, f"{name!r} is not valid UTF-8 (strict casefold)")
        return folded

    @staticmethod
    def hash_name(name: bytes) -> bytes:
        """The bytes a casefolded directory's htree hashes `name` by (ext4fs_dirhash)."""
        folded = casefold(name)
        return name if folded is None else folded

    @staticmethod
    def matches(name: bytes, key: bytes | None, stored: bytes) -> bool:
        """Whether `stored` answers a lookup of `name` (whose fold is `key`): the same
        bytes, or the same fold (generic_ci_match); a stored name without a fold only
        matches itself."""
        if stored == name:
            return True
        return key is not None and casefold(stored) == key
