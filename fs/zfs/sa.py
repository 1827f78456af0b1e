"""System attributes (SA): the self-describing attribute buffers of ZPL v5+ files (sa_impl.h).

A filesystem's master node names an SA_ATTRS ZAP holding two ZAPs:

* REGISTRY: attribute name -> u64 `ATTR_NUM:0..15 | ATTR_BSWAP:16..23 | ATTR_LENGTH:24..39`
  (length 0 = variable);
* LAYOUTS: layout number (decimal string) -> u16 array of attribute numbers, in buffer order.

A bonus buffer (or spill block) of type DMU_OT_SA starts with `sa_hdr_phys_t`:

    0 sa_magic u32 (SA_MAGIC; byte-swapped means the other byte order)
    4 sa_layout_info u16 (layout number:0..9, header size in 8-byte units:10..15)
    6 sa_lengths[] u16, one per variable-length attribute of the layout

The attributes follow at `P2ROUNDUP(6 + 2 * variable count, 8)`, each in layout order and
padded to 8 bytes. Attributes a registry leaves out fall back to the legacy ZPL numbering
(zfs_sa.c's table), which is what older pools wrote. A file may split its attributes
between the bonus buffer and a spill block (one more SA buffer with its own header).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from uvfs import FSError

from .dmu import ObjectSet
from .zap import Zap

SA_MAGIC = 0x2F505A
SA_HDR_LENGTHS_OFFSET = 6
MAX_LAYOUT_ATTRS = 1024

# zfs_sa.c's zfs_attr_table: (name, length) by legacy attribute number
LEGACY_ATTRS: tuple[tuple[str, int], ...] = (
    ("ZPL_ATIME", 16),
    ("ZPL_MTIME", 16),
    ("ZPL_CTIME", 16),
    ("ZPL_CRTIME", 16),
    ("ZPL_GEN", 8),
    ("ZPL_MODE", 8),
    ("ZPL_SIZE", 8),
    ("ZPL_PARENT", 8),
    ("ZPL_LINKS", 8),
    ("ZPL_XATTR", 8),
    ("ZPL_RDEV", 8),
    ("ZPL_FLAGS", 8),
    ("ZPL_UID", 8),
    ("ZPL_GID", 8),
    ("ZPL_PAD", 32),
    ("ZPL_ZNODE_ACL", 88),
)


@dataclass(frozen=True, slots=True)
class SaAttr:
    """One registered attribute."""

    num: int
    name: str
    length: int  # 0: variable, its length is in the buffer header


@dataclass(frozen=True, slots=True)
class SaRegistry:
    """A filesystem's attribute table and layouts."""

    attrs: dict[int, SaAttr]
    layouts: dict[int, tuple[int, ...]]


def registry_entry(name: str, value: int) -> SaAttr:
    """Decode one REGISTRY ZAP value."""
    return SaAttr(value & 0xFFFF, name, (value >> 24) & 0xFFFF)


def make_registry(registered: dict[str, int], layouts: dict[int, tuple[int, ...]]) -> SaRegistry:
    """The registry from REGISTRY ZAP values over the legacy table."""
    attrs = {i: SaAttr(i, name, length) for i, (name, length) in enumerate(LEGACY_ATTRS)}
    for name, value in registered.items():
        a = registry_entry(name, value)
        attrs[a.num] = a
    return SaRegistry(attrs, layouts)


def sa_byteorder(buf: bytes) -> str:
    """The byte order of an SA buffer, from its magic; EIO when it is not one."""
    if len(buf) >= 8:
        if int.from_bytes(buf[:4], "little") == SA_MAGIC:
            return "<"
        if int.from_bytes(buf[:4], "big") == SA_MAGIC:
            return ">"
    raise FSError(errno.EIO, "sa: bad magic")


def parse_sa(buf: bytes, registry: SaRegistry) -> tuple[dict[str, bytes], str]:
    """The attributes of one SA buffer, by name (raw bytes), and the buffer's byte order."""
    bo = sa_byteorder(buf)
    order = "little" if bo == "<" else "big"
    info = int.from_bytes(buf[4:6], order)
    layout = registry.layouts.get(info & 0x3FF)
    if layout is None:
        raise FSError(errno.EIO, f"sa: unknown layout {info & 0x3FF}")
    try:
        attrs = [registry.attrs[n] for n in layout]
    except KeyError as e:
        raise FSError(errno.EIO, f"sa: layout names unregistered attribute {e}") from None
    nvar = sum(1 for a in attrs if a.length == 0)
    off = (SA_HDR_LENGTHS_OFFSET + 2 * nvar + 7) & ~7
    if off > len(buf):
        raise FSError(errno.EIO, "sa: header runs past the buffer")
    out: dict[str, bytes] = {}
    var = 0
    for a in attrs:
        length = a.length
        if length == 0:
            at = SA_HDR_LENGTHS_OFFSET + 2 * var
            length = int.from_bytes(buf[at : at + 2], order)
            var += 1
        if off + length > len(buf):
            raise FSError(errno.EIO, f"sa: attribute {a.name} runs past the buffer")
        out[a.name] = bytes(buf[off : off + length])
        off = (off + length + 7) & ~7
    return out, bo


async def load_registry(objset: ObjectSet, sa_attrs_obj: int) -> SaRegistry:
    """Read the REGISTRY and LAYOUTS ZAPs under a master node's SA_ATTRS object."""
    top = await Zap.open(objset, sa_attrs_obj)
    registered: dict[str, int] = {}
    layouts: dict[int, tuple[int, ...]] = {}
    for e in await top.entries():
        if e.name == b"REGISTRY":
            for r in await (await Zap.open(objset, e.int())).entries():
                registered[r.name.decode(errors="replace")] = r.int()
        elif e.name == b"LAYOUTS":
            for lay in await (await Zap.open(objset, e.int())).entries():
                if lay.intlen != 2 or len(lay.value) > 2 * MAX_LAYOUT_ATTRS:
                    raise FSError(errno.EIO, "sa: layout is not a u16 array")
                try:
                    layouts[int(lay.name)] = lay.ints()
                except ValueError:
                    raise FSError(errno.EIO, f"sa: layout name {lay.name!r}") from None
    return make_registry(registered, layouts)
