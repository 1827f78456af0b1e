"""The check registry: each check is a small function guarding one POSIX behaviour.

A check takes one directory and asserts exactly. Its kind says which directory it gets:

- ``write``: a fresh, empty scratch directory inside the mount, removed afterwards;
- ``read``: the reference tree (``uvfs.testing.make_tree``), which it only reads: the
  root of a read-only mount built from the tree, or a copy the kit writes into a
  read-write mount;
- ``readonly``: the reference tree on a read-only mount only (EROFS and the like).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["write", "read", "readonly"]
CheckFn = Callable[[Path], None]


@dataclass(frozen=True)
class Check:
    """One conformance check: `fn(directory)` asserts the behaviour its docstring names."""

    name: str
    kind: Kind
    fn: CheckFn

    @property
    def doc(self) -> str:
        """The behaviour the check guards (the first line of its docstring)."""
        return (self.fn.__doc__ or "").strip().splitlines()[0]


CHECKS: dict[str, Check] = {}


def check(kind: Kind) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as a check named after it (``check_`` dropped)."""

    def register(fn: CheckFn) -> CheckFn:
        name = fn.__name__.removeprefix("check_")
        assert fn.__doc__, f"check {name} must say what it guards"
        assert name not in CHECKS, f"two checks named {name}"
        CHECKS[name] = Check(name, kind, fn)
        return fn

    return register
