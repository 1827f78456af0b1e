"""uvfs.testing: a POSIX conformance kit for whatever is mounted at a directory.

``python -m uvfs.testing [--ro] MOUNTPOINT`` runs every check through pytest;
``python -m uvfs.testing --make-tree DIR`` writes the reference tree that read-only
mounts are built from. From a driver's own tests, the same checks run through the
plugin (`uvfs.testing.plugin` says how) with `params` choosing them. Needs pytest.

Sources of the cases: pjdfstest (errno for every syscall and error), go-fuse's posixtest
(open-unlinked files, readdir consistency, append, locks, seekdir) and PyFilesystem2's
FSTestCases (the everyday operations), written anew here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping

import pytest

from uvfs.testing._registry import CHECKS, Check
from uvfs.testing._tree import make_tree

__all__ = ["Check", "checks", "make_tree", "params"]

# The modules holding the checks, one theme each; each registers its checks on import.
_MODULES = ["_names", "_data", "_dirs", "_links", "_rename", "_attrs", "_times", "_xattr",
            "_statfs", "_reading"]  # fmt: skip


def checks() -> dict[str, Check]:
    """Every check, by name.

    The check modules are imported on first use, not with this package, so that under a
    running pytest their plain asserts are rewritten to explain failures.
    """
    names = [f"{__name__}.{module}" for module in _MODULES]
    missing = [name for name in names if name not in sys.modules]
    if missing:
        pytest.register_assert_rewrite(*missing)
        for name in missing:
            importlib.import_module(name)
    return dict(CHECKS)


def params(*, readonly: bool = False, xfail: Mapping[str, str] | None = None) -> list[pytest.param]:
    """The checks for a read-write mount, or with `readonly` those that only read.

    Returns them as ``pytest.param``s named after the checks, for ``parametrize("check",
    ...)``. `xfail` maps check names to the reason each is known to fail; they are
    marked ``xfail(strict=True)``, so a check that starts passing says so.
    """
    every = checks()
    xfail = dict(xfail or {})
    unknown = set(xfail) - set(every)
    if unknown:
        raise ValueError(f"no such checks: {', '.join(sorted(unknown))}")
    skipped_kind = "write" if readonly else "readonly"
    return [
        pytest.param(
            c,
            id=c.name,
            marks=[pytest.mark.xfail(strict=True, reason=xfail[c.name])] if c.name in xfail else [],
        )
        for c in every.values()
        if c.kind != skipped_kind
    ]
