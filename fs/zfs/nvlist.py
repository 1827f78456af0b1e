"""XDR-encoded name-value lists (module/nvpair/nvpair.c), as in vdev labels and MOS objects.

A packed nvlist starts with a 4-byte header (encoding 1 = XDR, host endianness, two reserved
bytes), then the list: nvl_version and nvl_nvflag (XDR ints), then pairs. Each pair opens
with its encoded and decoded sizes (both zero ends the list), then the name (XDR string:
big-endian length, bytes, zero padding to 4), data type, element count and the values. XDR
widens every integer below 32 bits to 4 bytes; 64-bit values are 8 big-endian bytes; a byte
array is opaque data padded to 4; nested lists (NVLIST, NVLIST_ARRAY) follow inline, each
with its own version, flag and end marker. Lists decode to dicts; arrays to lists.

Hostile input cannot loop or allocate unboundedly: every count is checked against the
bytes left before anything is built, and nesting is limited to `MAX_DEPTH`.
"""

from __future__ import annotations

import struct

NV_ENCODE_XDR = 1
MAX_DEPTH = 32  # labels nest 4 deep (root, top-level, child, grandchild); leave room

# data_type_t
DATA_TYPE_BOOLEAN = 1
DATA_TYPE_BYTE = 2
DATA_TYPE_INT16 = 3
DATA_TYPE_UINT16 = 4
DATA_TYPE_INT32 = 5
DATA_TYPE_UINT32 = 6
DATA_TYPE_INT64 = 7
DATA_TYPE_UINT64 = 8
DATA_TYPE_STRING = 9
DATA_TYPE_BYTE_ARRAY = 10
DATA_TYPE_INT16_ARRAY = 11
DATA_TYPE_UINT16_ARRAY = 12
DATA_TYPE_INT32_ARRAY = 13
DATA_TYPE_UINT32_ARRAY = 14
DATA_TYPE_INT64_ARRAY = 15
DATA_TYPE_UINT64_ARRAY = 16
DATA_TYPE_STRING_ARRAY = 17
DATA_TYPE_HRTIME = 18
DATA_TYPE_NVLIST = 19
DATA_TYPE_NVLIST_ARRAY = 20
DATA_TYPE_BOOLEAN_VALUE = 21
DATA_TYPE_INT8 = 22
DATA_TYPE_UINT8 = 23
DATA_TYPE_BOOLEAN_ARRAY = 24
DATA_TYPE_INT8_ARRAY = 25
DATA_TYPE_UINT8_ARRAY = 26

# scalar and array types that are plain XDR numbers: (struct code, bytes on the wire)
_NUMBERS: dict[int, tuple[str, int]] = {
    DATA_TYPE_BYTE: ("I", 4),
    DATA_TYPE_INT8: ("i", 4),
    DATA_TYPE_UINT8: ("I", 4),
    DATA_TYPE_INT16: ("i", 4),
    DATA_TYPE_UINT16: ("I", 4),
    DATA_TYPE_INT32: ("i", 4),
    DATA_TYPE_UINT32: ("I", 4),
    DATA_TYPE_INT64: ("q", 8),
    DATA_TYPE_UINT64: ("Q", 8),
    DATA_TYPE_HRTIME: ("q", 8),
    DATA_TYPE_BOOLEAN_VALUE: ("i", 4),
}
_ARRAYS: dict[int, int] = {
    DATA_TYPE_INT8_ARRAY: DATA_TYPE_INT8,
    DATA_TYPE_UINT8_ARRAY: DATA_TYPE_UINT8,
    DATA_TYPE_INT16_ARRAY: DATA_TYPE_INT16,
    DATA_TYPE_UINT16_ARRAY: DATA_TYPE_UINT16,
    DATA_TYPE_INT32_ARRAY: DATA_TYPE_INT32,
    DATA_TYPE_UINT32_ARRAY: DATA_TYPE_UINT32,
    DATA_TYPE_INT64_ARRAY: DATA_TYPE_INT64,
    DATA_TYPE_UINT64_ARRAY: DATA_TYPE_UINT64,
    DATA_TYPE_BOOLEAN_ARRAY: DATA_TYPE_BOOLEAN_VALUE,
}

NvValue = bool | int | str | bytes | list | dict


class NvlistError(ValueError):
    """The bytes are not a well-formed XDR nvlist."""


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = memoryview(buf)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise NvlistError(f"nvlist truncated at byte {self.pos}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def numbers(self, code: str, width: int, count: int) -> tuple[int, ...]:
        raw = self.take(width * count)
        return struct.unpack(f">{count}{code}", raw)

    def string(self) -> str:
        (n,) = self.numbers("I", 4, 1)
        raw = bytes(self.take(n))
        self.take(-n % 4)
        return raw.decode("utf-8", "surrogateescape")


def _decode_list(r: _Reader, depth: int) -> dict[str, NvValue]:
    if depth > MAX_DEPTH:
        raise NvlistError("nvlist nested too deeply")
    r.numbers("i", 4, 2)  # nvl_version, nvl_nvflag
    out: dict[str, NvValue] = {}
    while True:
        encoded, decoded = r.numbers("i", 4, 2)
        if encoded == 0 and decoded == 0:
            return out
        end = r.pos - 8 + encoded
        if encoded < 8 or end > len(r.buf):
            raise NvlistError(f"nvpair size {encoded} out of range")
        name = r.string()
        dtype, nelem = r.numbers("i", 4, 2)
        out[name] = _decode_value(r, dtype, nelem, depth)
        if dtype not in (DATA_TYPE_NVLIST, DATA_TYPE_NVLIST_ARRAY):
            # The encoded size of a nested list's pair excludes the list itself.
            if r.pos > end:
                raise NvlistError(f"nvpair {name!r} overruns its encoded size")
            r.pos = end


def _decode_value(r: _Reader, dtype: int, nelem: int, depth: int) -> NvValue:
    # Every element takes at least 4 bytes, so a count beyond that is a lie, caught before
    # any list is built.
    if nelem < 0 or nelem * 4 > len(r.buf) - r.pos:
        raise NvlistError(f"nvpair element count {nelem} out of range")
    if dtype == DATA_TYPE_BOOLEAN:
        return True
    if dtype in _NUMBERS:
        code, width = _NUMBERS[dtype]
        value = r.numbers(code, width, 1)[0]
        return bool(value) if dtype == DATA_TYPE_BOOLEAN_VALUE else value
    if dtype in _ARRAYS:
        code, width = _NUMBERS[_ARRAYS[dtype]]
        values = r.numbers(code, width, nelem)
        return [bool(v) for v in values] if dtype == DATA_TYPE_BOOLEAN_ARRAY else list(values)
    if dtype == DATA_TYPE_STRING:
        return r.string()
    if dtype == DATA_TYPE_STRING_ARRAY:
        return [r.string() for _ in range(nelem)]
    if dtype == DATA_TYPE_BYTE_ARRAY:
        raw = bytes(r.take(nelem))
        r.take(-nelem % 4)
        return raw
    if dtype == DATA_TYPE_NVLIST:
        return _decode_list(r, depth + 1)
    if dtype == DATA_TYPE_NVLIST_ARRAY:
        return [_decode_list(r, depth + 1) for _ in range(nelem)]
    raise NvlistError(f"unknown nvpair data type {dtype}")


def unpack_nvlist(buf: bytes) -> dict[str, NvValue]:
    """Decode a packed XDR nvlist (4-byte header, then the list) into a dict.

    Raises:
        NvlistError: not XDR, truncated, or malformed.
    """
    if len(buf) < 4:
        raise NvlistError("nvlist shorter than its header")
    if buf[0] != NV_ENCODE_XDR:
        raise NvlistError(f"nvlist encoding {buf[0]} is not XDR")
    r = _Reader(buf)
    r.take(4)
    return _decode_list(r, 0)
