"""uvfs.testing: a POSIX conformance kit for whatever is mounted at a directory.

``python -m uvfs.testing [--ro] MOUNTPOINT`` runs every check through pytest;
``python -m uvfs.testing --make-tree DIR`` writes the reference tree that read-only
mounts are built from. From a driver's own tests, the same checks run through the
plugin (`uvfs.testing.plugin` says how) with `params` choosing them. Needs pytest.

Sources of the cases: pjdfstest (errno for every syscall and error), go-fuse's posixtest
(open-unlinked files, readdir consistency, append, symlink times) and PyFilesystem2's
FSTestCases (the everyday operations), written anew here.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

# Each module registers its checks on import.
from uvfs.testing import (  # noqa: F401
    _attrs,
    _data,
    _dirs,
    _links,
    _names,
    _reading,
    _rename,
    _statfs,
    _times,
    _xattr,
)
from uvfs.testing._registry import CHECKS, Check
from uvfs.testing._tree import make_tree

__all__ = ["CHECKS", "Check", "make_tree", "params"]


def params(*, readonly: bool = False, xfail: Mapping[str, str] | None = None) -> list[pytest.param]:
    """The checks for a read-write mount, or with `readonly` those that only read.

    Returns them as ``pytest.param``s named after the checks, for ``parametrize("check",
    ...)``. `xfail` maps check names to the reason each is known to fail; they are
    marked ``xfail(strict=True)``, so a check that starts passing says so.
    """
    xfail = dict(xfail or {})
    unknown = set(xfail) - set(CHECKS)
    if unknown:
        raise ValueError(f"no such checks: {', '.join(sorted(unknown))}")
    chosen = [
        c for c in CHECKS.values() if (c.kind != "write" if readonly else c.kind != "readonly")
    ]
    return [
        pytest.param(
            c,
            id=c.name,
            marks=[pytest.mark.xfail(strict=True, reason=xfail[c.name])] if c.name in xfail else [],
        )
        for c in chosen
    ]
