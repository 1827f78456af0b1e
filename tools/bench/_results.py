"""What a run measured, and the targets it is judged by (plain data, no I/O).

A `Measurement` is one (suite, workload, phase, system) cell: its samples, or the error
that stopped it. Suites are ``ext2`` (reads), ``write`` and ``zfs/<compression>``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

UVFS = "uvfs"


@dataclass(slots=True)
class Measurement:
    """One cell of the table."""

    suite: str
    workload: str
    phase: str  # "cold": caches dropped, fresh mount; "warm": the same again on that mount
    system: str
    samples: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        """The median, or None when the measurement failed."""
        return None if self.error or not self.samples else statistics.median(self.samples)


@dataclass(frozen=True, slots=True)
class Target:
    """uvfs must take at most `limit` times the time of `baseline` on the matching cells."""

    suite: str  # a suite name, or its prefix before "/" ("zfs" for every compression)
    workloads: tuple[str, ...] | None  # None: every workload of the suite
    phase: str | None  # None: both phases
    baseline: str
    limit: float

    def matches(self, suite: str, workload: str, phase: str) -> bool:
        """Whether this target judges that cell."""
        return (
            self.suite == suite.partition("/")[0]
            and (self.workloads is None or workload in self.workloads)
            and (self.phase is None or phase == self.phase)
        )


TARGETS = (
    Target("ext2", ("seqread",), "cold", "kernel", 1.3),
    Target("ext2", ("seqread",), "warm", "kernel", 2.0),
    Target("ext2", ("find", "du"), "cold", "fuse2fs", 0.5),
    Target("ext2", ("find", "du"), "warm", "kernel", 3.0),
    Target("zfs", None, None, "zfs-fuse", 1.0),
    Target("write", None, None, "fuse2fs", 1.0),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one row fares against its target."""

    target: Target
    ratio: float | None  # uvfs / baseline, None when either is missing
    met: bool | None  # None: the baseline failed, so nothing can be said

    @property
    def text(self) -> str:
        """``met`` / ``NOT MET`` / ``unknown`` with the limit, for the table."""
        word = {True: "met", False: "NOT MET", None: "unknown"}[self.met]
        return f"{word} (<= {self.target.limit:g}x {self.target.baseline})"


@dataclass(slots=True)
class Results:
    """Everything one run produced."""

    meta: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    broker_cache: dict[str, Any] | None = None
    profiles: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)

    def cell(self, suite: str, workload: str, phase: str, system: str) -> Measurement:
        """The measurement of that cell, created empty on first use."""
        for m in self.measurements:
            if (m.suite, m.workload, m.phase, m.system) == (suite, workload, phase, system):
                return m
        m = Measurement(suite, workload, phase, system)
        self.measurements.append(m)
        return m

    def get(self, suite: str, workload: str, phase: str, system: str) -> float | None:
        """The median seconds of that cell, None when it failed or was not measured."""
        for m in self.measurements:
            if (m.suite, m.workload, m.phase, m.system) == (suite, workload, phase, system):
                return m.seconds
        return None

    def rows(self) -> list[tuple[str, str, str]]:
        """Every (suite, workload, phase), in the order they were first measured."""
        return list(dict.fromkeys((m.suite, m.workload, m.phase) for m in self.measurements))

    def systems(self, suite: str) -> list[str]:
        """The systems measured in `suite`, uvfs first."""
        found = dict.fromkeys(m.system for m in self.measurements if m.suite == suite)
        return sorted(found, key=lambda s: (s != UVFS, list(found).index(s)))

    def ratio(self, suite: str, workload: str, phase: str, baseline: str) -> float | None:
        """uvfs's time over `baseline`'s, None when either is missing."""
        ours = self.get(suite, workload, phase, UVFS)
        theirs = self.get(suite, workload, phase, baseline)
        return None if ours is None or not theirs else ours / theirs

    def verdict(self, suite: str, workload: str, phase: str) -> Verdict | None:
        """The row's target and whether it is met; None for rows without a target.

        A failed uvfs measurement is a missed target; a failed baseline leaves it unknown.
        """
        target = next((t for t in TARGETS if t.matches(suite, workload, phase)), None)
        if target is None:
            return None
        ratio = self.ratio(suite, workload, phase, target.baseline)
        if self.get(suite, workload, phase, UVFS) is None:
            return Verdict(target, None, False)
        if ratio is None:
            return Verdict(target, None, None)
        return Verdict(target, ratio, ratio <= target.limit)
