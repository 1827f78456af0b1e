"""Checksums: fletcher2/4 against the upstream loops, sha256/sha512/blake3 word order,
embedded (zio_eck_t) checksums."""

from __future__ import annotations

import hashlib
import random
import struct

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvfs_fs.zfs import _native
from uvfs_fs.zfs import checksum as ck

DATA = random.Random(1).randbytes(8192)
M = (1 << 64) - 1


def _fletcher2_loop(data: bytes, order: str) -> tuple[int, ...]:
    a0 = a1 = b0 = b1 = 0
    words = struct.unpack(f"{order}{len(data) // 8}Q", data)
    for i in range(0, len(words), 2):
        a0 = (a0 + words[i]) & M
        a1 = (a1 + words[i + 1]) & M
        b0 = (b0 + a0) & M
        b1 = (b1 + a1) & M
    return (a0, a1, b0, b1)


def _fletcher4_loop(data: bytes, order: str) -> tuple[int, ...]:
    a = b = c = d = 0
    for w in struct.unpack(f"{order}{len(data) // 4}I", data):
        a = (a + w) & M
        b = (b + a) & M
        c = (c + b) & M
        d = (d + c) & M
    return (a, b, c, d)


@pytest.mark.parametrize("order", ["<", ">"])
def test_fletcher_matches_the_loops(order: str) -> None:
    assert ck.fletcher2(DATA, order) == _fletcher2_loop(DATA, order)
    assert ck.fletcher4(DATA, order) == _fletcher4_loop(DATA, order)
    ones = b"\xff" * (1 << 20)  # sums wrap at 2^64
    assert ck.fletcher4(ones, order) == _fletcher4_loop(ones, order)
    assert ck.compute(ck.ZIO_CHECKSUM_FLETCHER_4, DATA, order) == _fletcher4_loop(DATA, order)
    assert ck.compute(ck.ZIO_CHECKSUM_FLETCHER_2, DATA, order) == _fletcher2_loop(DATA, order)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from("<>"))
def test_c_fletcher_matches_the_reference(data: bytes, order: str) -> None:
    """_native.c gives numpy's words for any length and order (a partial word ignored)."""
    big = order == ">"
    assert _native.fletcher4(data, big) == ck.fletcher4(data, order)
    assert _native.fletcher2(data, big) == ck.fletcher2(data, order)


def test_c_fletcher_wraps_on_big_blocks() -> None:
    ones = b"\xff" * (16 << 20)  # the largest block: every sum wraps many times
    for order in "<>":
        assert _native.fletcher4(ones, order == ">") == ck.fletcher4(ones, order)
        assert _native.fletcher2(ones, order == ">") == ck.fletcher2(ones, order)


def test_digest_word_order() -> None:
    sha = hashlib.sha256(DATA).digest()
    for order in "<>":  # sha256 words are big-endian whatever the data's order
        assert ck.compute(ck.ZIO_CHECKSUM_SHA256, DATA, order) == struct.unpack(">4Q", sha)
    s512 = hashlib.new("sha512_256", DATA).digest()
    assert ck.compute(ck.ZIO_CHECKSUM_SHA512, DATA, "<") == struct.unpack("<4Q", s512)
    assert ck.compute(ck.ZIO_CHECKSUM_SHA512, DATA, ">") == struct.unpack(">4Q", s512)
    salt = bytes(range(32))
    b3 = blake3.blake3(DATA, key=salt).digest()
    assert ck.compute(ck.ZIO_CHECKSUM_BLAKE3, DATA, "<", salt) == struct.unpack("<4Q", b3)
    assert ck.compute(ck.ZIO_CHECKSUM_BLAKE3, DATA, "<") is None  # no salt yet
    assert ck.compute(ck.ZIO_CHECKSUM_BLAKE3, DATA, "<", b"short") is None
    for unverifiable in (ck.ZIO_CHECKSUM_SKEIN, ck.ZIO_CHECKSUM_EDONR, ck.ZIO_CHECKSUM_OFF, 99):
        assert ck.compute(unverifiable, DATA, "<", salt) is None


@pytest.mark.parametrize("order", ["<", ">"])
def test_embedded_checksum(order: str) -> None:
    body = DATA[: 1024 - 40]
    seed = (4096, 0, 0, 0)
    tail = struct.pack(order + "Q", ck.ZEC_MAGIC)
    words = ck.compute(ck.ZIO_CHECKSUM_LABEL, body + tail + struct.pack(order + "4Q", *seed), order)
    block = body + tail + struct.pack(order + "4Q", *words)
    assert ck.eck_byteorder(block) == order
    assert ck.verify_embedded(block, ck.ZIO_CHECKSUM_LABEL, seed)
    assert not ck.verify_embedded(block, ck.ZIO_CHECKSUM_LABEL, (8192, 0, 0, 0))  # moved
    assert not ck.verify_embedded(b"\1" + block[1:], ck.ZIO_CHECKSUM_LABEL, seed)
    assert not ck.verify_embedded(bytes(1024), ck.ZIO_CHECKSUM_LABEL, seed)  # no magic
