"""Finding drivers: the ``uvfs.drivers`` entry-point group, and probing images for their type."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points

from uvfs._api import PROBE_SIZE, DriverType, Refusal
from uvfs._image import ImageFile

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


def detect(image: ImageFile) -> DriverType:
    """The driver whose probe recognises `image`, or a `Refusal` saying none does."""
    head = image.read_sync(0, min(PROBE_SIZE, image.size)) if image.size else b""
    known = drivers()
    for driver in known.values():
        if driver.probe(head):
            return driver
    raise Refusal(
        f"{image.path}: no known filesystem found (known types: {', '.join(known)}; use -t TYPE)"
    )
