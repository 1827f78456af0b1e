"""What a run touched: per path, how often each kind of access happened.

The recorder sees the filesystem as FUSE shows it, which is less than the syscalls made:

* a *lookup* is one path component resolved by the kernel (stat, open, exec, a directory
  walk ...); a *miss* is a lookup that found nothing, a probe for an absent file;
* *getattr*, *readdir* and *readlink* are what their names say;
* *open* carries the open(2) flags, so reads and writes are told apart. An exec opens the
  file with the kernel-internal ``__FMODE_EXEC`` flag, which FUSE passes on: that is how an
  exec is told apart from a read. ``ld.so`` maps shared libraries after a plain read-only
  open, so loading a library counts as a read, not as an exec;
* *hidden* is a lookup of a name that exists but was hidden by ``--enforce``.

Accesses served from the kernel's caches never reach the driver. The audit lets the
kernel cache nothing but attributes: every lookup, hit or miss, is recorded, and
*getattr* counts only the times the kernel asked (fstat of an open file is answered
from the cache). Counts are requests, not syscalls; which paths were touched is exact.
"""

from __future__ import annotations

import enum
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

FMODE_EXEC = 0o40  # __FMODE_EXEC from the kernel's <linux/fcntl.h>: open_exec() sets it


class Access(enum.Enum):
    """One kind of access to a path."""

    LOOKUP = "lookup"
    MISS = "miss"
    HIDDEN = "hidden"
    GETATTR = "getattr"
    READDIR = "readdir"
    READLINK = "readlink"
    OPEN_READ = "open_read"
    OPEN_WRITE = "open_write"
    EXEC = "exec"


def classify_open(flags: int) -> Access:
    """The access an open(2) with `flags` (as FUSE passes them) amounts to."""
    if flags & FMODE_EXEC:
        return Access.EXEC
    if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
        return Access.OPEN_WRITE
    return Access.OPEN_READ


class Kind(enum.Enum):
    """What a path named when it was last seen; misses have no kind."""

    DIRECTORY = "dir"
    FILE = "file"  # anything that is not a directory: regular, symlink, device ...
    ABSENT = "absent"


@dataclass(slots=True)
class PathRecord:
    """Everything recorded about one path."""

    kind: Kind
    counts: Counter[Access] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """How many accesses of any kind."""
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    """A snapshot of `Recorder` totals."""

    paths: int
    accesses: int


class Recorder:
    """Accesses per path, in the order paths were first seen."""

    def __init__(self) -> None:
        self._paths: dict[str, PathRecord] = {}

    def record(self, path: str, access: Access, kind: Kind) -> None:
        """Count one `access` to `path`, which is currently a `kind` of node."""
        entry = self._paths.get(path)
        if entry is None:
            entry = self._paths[path] = PathRecord(kind)
        elif kind is not Kind.ABSENT:
            entry.kind = kind  # a path missed earlier may exist now (a writable run)
        entry.counts[access] += 1

    def __iter__(self) -> Iterator[tuple[str, PathRecord]]:
        return iter(self._paths.items())

    def __getitem__(self, path: str) -> PathRecord:
        return self._paths[path]

    def __contains__(self, path: object) -> bool:
        return path in self._paths

    def statistics(self) -> RecorderStatistics:
        """How many paths and accesses were recorded."""
        return RecorderStatistics(
            len(self._paths), sum(entry.total for entry in self._paths.values())
        )

    def to_json(self) -> dict[str, dict[str, object]]:
        """Plain data for passing the record from one process to another."""
        return {
            path: {"kind": e.kind.value, "counts": {a.value: n for a, n in e.counts.items()}}
            for path, e in self._paths.items()
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, object]]) -> Recorder:
        """The recorder `to_json` described."""
        recorder = cls()
        for path, entry in data.items():
            counts = entry["counts"]
            assert isinstance(counts, Mapping)
            recorder._paths[path] = PathRecord(
                Kind(entry["kind"]), Counter({Access(a): int(n) for a, n in counts.items()})
            )
        return recorder
