"""XDR nvlist decoding: every pair type, nesting, hostile input, and a real label vs zdb."""

from __future__ import annotations

import contextlib
import struct

import pytest
from conftest import PoolFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from uvfs_fs.zfs import nvlist as nv
from uvfs_fs.zfs.label import VDEV_PHYS_OFFSET, VDEV_PHYS_SIZE
from uvfs_fs.zfs.nvlist import NvlistError, unpack_nvlist


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw + bytes(-len(raw) % 4)


def _pair(name: str, dtype: int, nelem: int, value: bytes) -> bytes:
    body = _s(name) + struct.pack(">ii", dtype, nelem) + value
    nested = dtype in (nv.DATA_TYPE_NVLIST, nv.DATA_TYPE_NVLIST_ARRAY)
    size = 8 + len(body) if not nested else 8 + len(_s(name)) + 8
    return struct.pack(">ii", size, size) + body


def _list(*pairs: bytes) -> bytes:
    return struct.pack(">ii", 0, 1) + b"".join(pairs) + bytes(8)


def _packed(*pairs: bytes) -> bytes:
    return bytes([1, 1, 0, 0]) + _list(*pairs)


def encode_nvlist(config: dict) -> bytes:
    """A packed XDR nvlist of ints (uint64), strs, True (boolean), lists of ints, dicts."""

    def pairs(d: dict) -> bytes:
        out = b""
        for name, v in d.items():
            if v is True:
                out += _pair(name, nv.DATA_TYPE_BOOLEAN, 0, b"")
            elif isinstance(v, int):
                out += _pair(name, nv.DATA_TYPE_UINT64, 1, struct.pack(">Q", v))
            elif isinstance(v, str):
                out += _pair(name, nv.DATA_TYPE_STRING, 1, _s(v))
            elif isinstance(v, dict):
                out += _pair(name, nv.DATA_TYPE_NVLIST, 1, _list(pairs(v)))
            else:
                out += _pair(name, nv.DATA_TYPE_UINT64_ARRAY, len(v),
                             struct.pack(f">{len(v)}Q", *v))  # fmt: skip
        return out

    return _packed(pairs(config))


def test_encoder_round_trip() -> None:
    config = {"a": 1, "b": "x", "c": True, "d": {"e": [1, 2]}}
    assert unpack_nvlist(encode_nvlist(config)) == config


def test_every_type() -> None:
    raw = _packed(
        _pair("flag", nv.DATA_TYPE_BOOLEAN, 0, b""),
        _pair("b", nv.DATA_TYPE_BOOLEAN_VALUE, 1, struct.pack(">i", 1)),
        _pair("u8", nv.DATA_TYPE_UINT8, 1, struct.pack(">I", 200)),
        _pair("i16", nv.DATA_TYPE_INT16, 1, struct.pack(">i", -5)),
        _pair("u32", nv.DATA_TYPE_UINT32, 1, struct.pack(">I", 1 << 31)),
        _pair("i64", nv.DATA_TYPE_INT64, 1, struct.pack(">q", -(1 << 40))),
        _pair("u64", nv.DATA_TYPE_UINT64, 1, struct.pack(">Q", (1 << 64) - 1)),
        _pair("hr", nv.DATA_TYPE_HRTIME, 1, struct.pack(">q", 12345)),
        _pair("str", nv.DATA_TYPE_STRING, 1, _s("tank/home")),
        _pair("bytes", nv.DATA_TYPE_BYTE_ARRAY, 5, b"abcde\0\0\0"),
        _pair("u64s", nv.DATA_TYPE_UINT64_ARRAY, 3, struct.pack(">3Q", 1, 2, 3)),
        _pair("i8s", nv.DATA_TYPE_INT8_ARRAY, 2, struct.pack(">2i", -1, 7)),
        _pair("bools", nv.DATA_TYPE_BOOLEAN_ARRAY, 2, struct.pack(">2i", 0, 1)),
        _pair("strs", nv.DATA_TYPE_STRING_ARRAY, 2, _s("a") + _s("bcdef")),
        _pair("sub", nv.DATA_TYPE_NVLIST, 1,
              _list(_pair("x", nv.DATA_TYPE_UINT64, 1, struct.pack(">Q", 9)))),
        _pair("subs", nv.DATA_TYPE_NVLIST_ARRAY, 2, _list() + _list(
              _pair("y", nv.DATA_TYPE_STRING, 1, _s("z"))))
    )  # fmt: skip
    assert unpack_nvlist(raw) == {
        "flag": True, "b": True, "u8": 200, "i16": -5, "u32": 1 << 31, "i64": -(1 << 40),
        "u64": (1 << 64) - 1, "hr": 12345, "str": "tank/home", "bytes": b"abcde",
        "u64s": [1, 2, 3], "i8s": [-1, 7], "bools": [False, True], "strs": ["a", "bcdef"],
        "sub": {"x": 9}, "subs": [{}, {"y": "z"}],
    }  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        bytes([0, 1, 0, 0]) + _list(),  # native encoding, not XDR
        _packed(_pair("s", nv.DATA_TYPE_STRING, 1, _s("abc")))[:-12],  # truncated
        _packed(_pair("a", nv.DATA_TYPE_UINT64_ARRAY, 1 << 30, b"")),  # count lies
        _packed(_pair("t", 99, 1, bytes(8))),  # unknown type
        _packed(struct.pack(">ii", 4, 4)),  # pair size below its own header
    ],
)
def test_malformed(raw: bytes) -> None:
    with pytest.raises(NvlistError):
        unpack_nvlist(raw)


def test_nesting_is_bounded() -> None:
    inner = _list()
    for _ in range(nv.MAX_DEPTH + 2):
        inner = _list(_pair("n", nv.DATA_TYPE_NVLIST, 1, inner))
    with pytest.raises(NvlistError, match="nested too deeply"):
        unpack_nvlist(bytes([1, 1, 0, 0]) + inner)


def test_real_label_matches_zdb(zfs_pool: PoolFactory) -> None:
    from test_spa import POOLS, populate

    layout, props, ashift = POOLS["raidz1"]
    record = zfs_pool("raidz1", layout, props, populate, ashift=ashift)
    with open(record.vdevs[1], "rb") as f:
        f.seek(VDEV_PHYS_OFFSET)
        config = unpack_nvlist(f.read(VDEV_PHYS_SIZE - 40))
    assert f"pool_guid: {config['pool_guid']}\n" in record.config
    assert f"name: '{config['name']}'\n" in record.config
    assert config["version"] == 23 and config["state"] == 1  # exported
    tree = config["vdev_tree"]
    assert (tree["type"], tree["nparity"], tree["ashift"]) == ("raidz", 1, 9)
    assert [c["path"] for c in tree["children"]] == [str(p) for p in record.vdevs]
    assert config["guid"] == tree["children"][1]["guid"]
    for child in tree["children"]:
        assert f"guid: {child['guid']}\n" in record.config


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 200))
def test_random_bytes_never_escape(tail: bytes, cut: int) -> None:
    real = encode_nvlist({"name": "tank", "vdev_tree": {"children": [1, 2]}, "ok": True})
    for raw in (bytes([1, 1, 0, 0]) + tail, real[:cut] + tail, real[: len(real) - cut]):
        with contextlib.suppress(NvlistError):
            unpack_nvlist(raw)
