"""Finding drivers: the ``uvfs.drivers`` entry-point group, and probing images for their type."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points

from uvfs._api import PROBE_SIZE, DriverType, Refusal
from uvfs._window import BlockDevice

GROUP = "uvfs.drivers"


def drivers() -> Mapping[str, DriverType]:
    """Every installed driver type, by name. Ours are found exactly as a third party's."""
    found: dict[str, DriverType] = {}
    for ep in entry_points(group=GROUP):
        driver = ep.load()
        found[driver.name] = driver
    return dict(sorted(found.items()))


def driver_named(name: str) -> DriverType:
    """The driver called `name`, or a `Refusal` listing the known ones.

    A name of the form ``module:attribute`` loads a driver that is not installed yet
    (one under development), e.g. ``-t hello_driver:DRIVER``.
    """
    if ":" in name:
        module, _, attribute = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as e:
            raise Refusal(f"cannot load driver '{name}': {e}") from None
    known = drivers()
    if name not in known:
        raise Refusal(f"unknown filesystem type '{name}' (known: {', '.join(known)})")
    return known[name]


def probe_head(image: BlockDevice) -> bytes:
    """The bytes a driver's probe sees: the first `PROBE_SIZE` of `image`."""
    return image.read_sync(0, min(PROBE_SIZE, image.size)) if image.size else b""


def identify(head: bytes) -> str | None:
    """What `head` holds, named as blkid names it (ext2, ext3, ext4, zfs member, or another
    driver's name), or None when no driver recognises it."""
    driver = next((d for d in drivers().values() if d.probe(head)), None)
    if driver is None:
        return None
    if driver.name == "zfs":
        return "zfs member"  # one vdev of a pool, not a mountable filesystem by itself
    if driver.name == "ext2":
        return _ext_generation(head)
    return driver.name


# Superblock feature words (byte offsets in the image) and the flags blkid calls ext2's;
# anything else incompatible or read-only-compatible makes an ext4, a journal an ext3.
_S_FEATURE_COMPAT, _S_FEATURE_INCOMPAT, _S_FEATURE_RO_COMPAT = 1024 + 0x5C, 1024 + 0x60, 1024 + 0x64
_COMPAT_HAS_JOURNAL = 0x4
_EXT2_INCOMPAT = 0x2 | 0x10  # filetype, meta_bg
_EXT3_INCOMPAT = _EXT2_INCOMPAT | 0x4  # + needs recovery
_EXT2_RO_COMPAT = 0x1 | 0x2 | 0x4  # sparse_super, large_file, btree_dir


def _ext_generation(head: bytes) -> str:
    def word(offset: int) -> int:
        return int.from_bytes(head[offset : offset + 4], "little")

    incompat, ro_compat = word(_S_FEATURE_INCOMPAT), word(_S_FEATURE_RO_COMPAT)
    journal = word(_S_FEATURE_COMPAT) & _COMPAT_HAS_JOURNAL
    if incompat & ~_EXT3_INCOMPAT or ro_compat & ~_EXT2_RO_COMPAT:
        return "ext4"
    return "ext3" if journal else "ext2"


def detect(image: BlockDevice) -> DriverType:
    """The driver whose probe recognises `image`, or a `Refusal` saying none does."""
    head = probe_head(image)
    known = drivers()
    for driver in known.values():
        if driver.probe(head):
            return driver
    raise Refusal(
        f"{image.path}: no known filesystem found (known types: {', '.join(known)}; use -t TYPE)"
    )
