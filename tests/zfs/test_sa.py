"""SA buffers: header, layouts, variable-length attributes, byte order from the magic."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvfs import FSError
from uvfs_fs.zfs.sa import SA_MAGIC, make_registry, parse_sa, registry_entry

# The registry values ZFS on Linux writes (name -> num | bswap << 16 | length << 24).
REGISTERED = {
    "ZPL_MODE": 5 | 0 << 16 | 8 << 24,
    "ZPL_SIZE": 6 | 8 << 24,
    "ZPL_SYMLINK": 17 | 0 << 24,
    "ZPL_DXATTR": 20 | 0 << 24,
    "ZPL_UID": 12 | 8 << 24,
}


def sa_buffer(bo: str, layout: int, fixed: list[bytes], var: list[bytes]) -> bytes:
    """A bonus buffer holding `fixed` then `var` attributes (the layout's order)."""
    nvar = len(var)
    hdrsize = (6 + 2 * nvar + 7) & ~7
    out = bytearray(struct.pack(f"{bo}IH", SA_MAGIC, layout | (hdrsize // 8) << 10))
    out += struct.pack(f"{bo}{nvar}H", *(len(v) for v in var))
    out = out.ljust(hdrsize, b"\0")
    for value in fixed + var:
        out += value
        out = out.ljust((len(out) + 7) & ~7, b"\0")
    return bytes(out)


def test_registry_entry() -> None:
    a = registry_entry("ZPL_SIZE", 6 | 3 << 16 | 8 << 24)
    assert (a.num, a.name, a.length) == (6, "ZPL_SIZE", 8)


@pytest.mark.parametrize("bo", ["<", ">"])
def test_fixed_and_variable(bo: str) -> None:
    reg = make_registry(REGISTERED, {2: (5, 6, 12, 17, 20)})
    u64 = struct.Struct(f"{bo}Q").pack
    buf = sa_buffer(bo, 2, [u64(0o120777), u64(11), u64(1000)], [b"/a/target1", b"xattrs!"])
    attrs, got_bo = parse_sa(buf, reg)
    assert got_bo == bo
    assert attrs == {
        "ZPL_MODE": u64(0o120777),
        "ZPL_SIZE": u64(11),
        "ZPL_UID": u64(1000),
        "ZPL_SYMLINK": b"/a/target1",
        "ZPL_DXATTR": b"xattrs!",
    }


def test_legacy_numbers_without_registry() -> None:
    reg = make_registry({}, {1: (0, 5, 6)})
    buf = sa_buffer("<", 1, [struct.pack("<2Q", 10, 20), struct.pack("<Q", 0o644), bytes(8)], [])
    attrs, _ = parse_sa(buf, reg)
    assert attrs["ZPL_ATIME"] == struct.pack("<2Q", 10, 20)
    assert set(attrs) == {"ZPL_ATIME", "ZPL_MODE", "ZPL_SIZE"}


@pytest.mark.parametrize(
    ("buf", "layouts"),
    [
        (b"\0" * 16, {1: (5,)}),  # no magic
        (sa_buffer("<", 9, [bytes(8)], []), {1: (5,)}),  # unknown layout
        (sa_buffer("<", 1, [bytes(8)], [])[:12], {1: (5,)}),  # truncated attribute
        (sa_buffer("<", 1, [bytes(8)], []), {1: (5, 99)}),  # unregistered attribute
    ],
)
def test_bad_buffers_are_eio(buf: bytes, layouts: dict[int, tuple[int, ...]]) -> None:
    with pytest.raises(FSError) as e:
        parse_sa(buf, make_registry(REGISTERED, layouts))
    assert e.value.errno == errno.EIO


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400))
def test_hostile_buffers_parse_or_eio(raw: bytes) -> None:
    reg = make_registry(REGISTERED, {0: (5, 6, 17), 2: (5, 6, 12, 17, 20)})
    try:
        attrs, _ = parse_sa(struct.pack("<I", SA_MAGIC) + raw, reg)
    except FSError as e:
        assert e.errno == errno.EIO
    else:
        assert set(attrs) <= {"ZPL_MODE", "ZPL_SIZE", "ZPL_UID", "ZPL_SYMLINK", "ZPL_DXATTR"}
