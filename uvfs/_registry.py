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
    """What `head` holds, as the driver that recognises it names it (see `DriverType`), or
    None when no driver does."""
    driver = next((d for d in drivers().values() if d.probe(head)), None)
    if driver is None:
        return None
    name: str = getattr(driver, "identify", lambda _head: driver.name)(head)
    return name


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
