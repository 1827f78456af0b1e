"""LZJB decompression (module/zfs/lzjb.c), the original ZFS compressor, in pure Python.

The stream is groups of one copy-map byte and eight items, taken least significant bit
first: a clear bit is one literal byte, a set bit a two-byte match, ``mlen:6 offset:10``
big-endian, copying ``mlen + 3`` bytes from ``offset`` bytes back in the output (offsets may
be shorter than the length: the copy then repeats its own output). Output stops at the
logical size wherever it falls, as upstream.

Speed: a byte loop in CPython is slow, so the loop works in items, not bytes: a match is one
slice copy (a repeating match one multiplied slice), and a copy map of zero (eight
literals, common in incompressible stretches) is one slice. Unlike the C original, every
source read is bounds-checked and a zero or too-far offset is an error, never garbage.
"""

from __future__ import annotations


class LzjbError(ValueError):
    """The stream is corrupt: it runs out, or a match reaches before the output."""


def lzjb_decompress(src: bytes, lsize: int) -> bytes:
    """Decompress `src` to exactly `lsize` bytes.

    Raises:
        LzjbError: the stream is truncated or refers outside the output.
    """
    out = bytearray()
    o = 0
    s = 0
    n = len(src)
    while o < lsize:
        if s >= n:
            raise LzjbError("lzjb stream ends early")
        copymap = src[s]
        s += 1
        if copymap == 0 and s + 8 <= n and lsize - o >= 8:
            out += src[s : s + 8]
            s += 8
            o += 8
            continue
        for bit in (1, 2, 4, 8, 16, 32, 64, 128):
            if o >= lsize:
                break
            if copymap & bit:
                if s + 2 > n:
                    raise LzjbError("lzjb stream ends inside a match")
                hi = src[s]
                offset = ((hi << 8) | src[s + 1]) & 0x3FF
                s += 2
                start = o - offset
                if offset == 0 or start < 0:
                    raise LzjbError(f"lzjb match offset {offset} at output byte {o}")
                mlen = min((hi >> 2) + 3, lsize - o)
                if offset >= mlen:
                    out += out[start : start + mlen]
                else:
                    out += (out[start:] * (mlen // offset + 1))[:mlen]
                o += mlen
            else:
                if s >= n:
                    raise LzjbError("lzjb stream ends early")
                out.append(src[s])
                s += 1
                o += 1
    return bytes(out)
