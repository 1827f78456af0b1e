"""What a run measured, and the targets it is judged by (plain data, no I/O).

A `Measurement` is one (suite, workload, phase, system) cell: its samples, or the error
that stopped it; a uvfs cell also holds, per sample, the FUSE requests its server answered
and the server's peak RSS. Suites are ``ext2`` (reads), ``write``, ``zfs/<compression>``,
``framework`` (the null tree: uvfs against bare pyfuse3), ``memory`` and ``audit``.
`TARGETS` are issue 10's targets, each judging the rows it matches.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from ._sizes import MiB

UVFS = "uvfs"
BARE = "pyfuse3"  # pyfuse3 alone: the null tree (framework), the in-memory tree (write floor)
UVFS_RAM = "uvfs-mem"  # uvfs with the write floor's in-memory driver
UVFS_ISOLATE = "uvfs-isolate"  # uvfs -o isolate: the same driver in a process of its own


@dataclass(slots=True)
class Measurement:
    """One cell of the table."""

    suite: str
    workload: str
    phase: str  # "cold": caches dropped, fresh mount; "warm": the same again on that mount
    system: str
    samples: list[float] = field(default_factory=list)
    error: str | None = None
    requests: list[int] = field(default_factory=list)  # FUSE requests answered, per sample
    peak_rss: list[int] = field(default_factory=list)  # the server's peak RSS, bytes
    cpu: list[float] = field(default_factory=list)  # the server's CPU seconds, per sample
    unmount: list[float] = field(default_factory=list)  # of each sample, a write's unmount

    @property
    def seconds(self) -> float | None:
        """The median, or None when the measurement failed."""
        return None if self.error or not self.samples else statistics.median(self.samples)

    @property
    def best(self) -> float | None:
        """The fastest sample, or None when the measurement failed."""
        return None if self.error or not self.samples else min(self.samples)

    @property
    def before_unmount(self) -> float | None:
        """The median time of the workload alone, without the unmount its samples include;
        None unless every sample's unmount was timed."""
        if self.seconds is None or len(self.unmount) != len(self.samples):
            return None
        return statistics.median(s - u for s, u in zip(self.samples, self.unmount, strict=True))

    @property
    def requests_median(self) -> float | None:
        """The median number of requests the server answered, None when not counted."""
        return statistics.median(self.requests) if self.requests else None

    @property
    def cpu_median(self) -> float | None:
        """The median of the server's CPU seconds, None when not observed."""
        return statistics.median(self.cpu) if self.cpu else None

    @property
    def peak_rss_max(self) -> int | None:
        """The highest peak RSS over the samples, None when not observed."""
        return max(self.peak_rss) if self.peak_rss else None


def workload_ops(workload: str, sizes: dict[str, Any]) -> tuple[int, str]:
    """How many operations a workload does with `sizes` (a `Sizes` as a dict), and their
    unit: what a requests-per-operation figure divides by."""
    files = sizes["files"]
    return {
        "seqread": (sizes["file_bytes"] // MiB, "MiB"),
        "bigread": ((sizes["memory_file_bytes"] or sizes["file_bytes"]) // MiB, "MiB"),
        "randread": (sizes["random_reads"], "read"),
        "find": (files, "file"),
        "du": (files, "file"),
        "untar": (files, "file"),
        "write": ((sizes["write_bytes"] or sizes["file_bytes"]) // MiB, "MiB"),
        "cpa": (files, "file"),
        "createfsync": (sizes["fsync_files"], "file"),
        "rmtree": (files, "file"),
        "lookup": (sizes["null_files"], "lookup"),
        "statx": (sizes["null_requests"], "getattr"),
        "direct4k": (sizes["null_requests"], "read"),
    }.get(workload, (1, "run"))


# A floor is judged on each system's best run, not the median: load on the machine only
# ever adds time, so the fastest run is the nearest to what the system costs. It must then
# miss a limit by more than this factor (a run's noise) to rule the limit out.
FLOOR_MARGIN = 1.05


def out_of_reach(floor: float | None, limit: float) -> bool:
    """Whether a floor system's ratio rules a target's `limit` out: it misses it by more
    than the noise of a run on a shared machine (`FLOOR_MARGIN`)."""
    return floor is not None and floor > limit * FLOOR_MARGIN


MEMORY = "budget+100M"  # the memory targets' baseline: the cache budget plus 100 MiB
MEMORY_ALLOWANCE = 100 * MiB  # what a server may hold beyond its cache budget


@dataclass(frozen=True, slots=True)
class Target:
    """`system` must take at most `limit` times the time of `baseline` on the matching cells.

    With `baseline` `MEMORY` the uvfs server's peak RSS is judged instead, against the
    default cache budget plus `MEMORY_ALLOWANCE`. A `floor` is a system that does less
    than `system` can (bare pyfuse3 on an in-memory tree): when even it takes more than
    `limit` times `baseline`, the target is out of reach for every server built like it.
    """

    text: str  # the target as the issue states it
    suite: str  # a suite name, or its prefix before "/" ("zfs" for every compression)
    workloads: tuple[str, ...] | None  # None: every workload of the suite
    phase: str | None  # None: both phases
    baseline: str
    limit: float
    issue: int | None = 10  # the issue that set it (None: the benchmark's own)
    system: str = UVFS  # the system judged
    floor: str | None = None

    def matches(self, suite: str, workload: str, phase: str) -> bool:
        """Whether this target judges that cell."""
        return (
            self.suite == suite.partition("/")[0]
            and (self.workloads is None or workload in self.workloads)
            and (self.phase is None or phase == self.phase)
        )


def _writes(text: str, workload: str, suite: str = "write") -> Target:
    fs, floor = ("ext4", None) if suite == "write-ext4" else ("ext2", BARE)  # floor: see _floor
    return Target(f"{fs} {text} <= 1.0x fuse2fs (with unmount)", suite, (workload,), "cold",
                  "fuse2fs", 1.0, floor=floor)  # fmt: skip


# fmt: off
TARGETS = (
    *(_writes(text, workload, suite)
      for suite in ("write", "write-ext4")  # ext4 is measured once uvfs writes it
      for text, workload in (("tar x", "untar"), ("write 512 MiB + fsync", "write"),
                             ("cp -a inside the mount", "cpa"), ("rm -rf", "rmtree"),
                             ("create+fsync of 2,000 small files", "createfsync"))),
    Target("cold sequential read <= 1.2x kernel", "ext2", ("seqread",), "cold", "kernel", 1.2),
    Target("cold random 4 KiB reads <= 1.5x kernel", "ext2", ("randread",), "cold", "kernel",
           1.5),
    Target("warm find and du <= 2x kernel", "ext2", ("find", "du"), "warm", "kernel", 2.0),
    Target("cold find and du <= 0.5x fuse2fs", "ext2", ("find", "du"), "cold", "fuse2fs", 0.5),
    Target("ZFS: every workload <= 1.0x zfs-fuse", "zfs", None, None, "zfs-fuse", 1.0),
    Target("framework: getattr/s, uvfs <= 1.3x bare pyfuse3", "framework", ("statx",), None,
           BARE, 1.3),
    Target("framework: lookup/s, uvfs <= 1.3x bare pyfuse3", "framework", ("lookup",), None,
           BARE, 1.3),
    Target("framework: 4 KiB read/s, uvfs <= 1.3x bare pyfuse3", "framework", ("direct4k",),
           None, BARE, 1.3),
    Target("memory: peak RSS <= cache budget + 100 MiB (big read, tar x)", "memory", None,
           None, MEMORY, 1.0),
    Target("audit overlay <= 1.25x the command unaudited", "audit", None, None, "plain", 1.25),
    Target("warm sequential read <= 2x kernel", "ext2", ("seqread",), "warm", "kernel", 2.0,
           issue=None),
    Target("framework on writes: uvfs-mem <= 1.3x bare pyfuse3 (in-memory tree)", "write",
           None, "cold", BARE, 1.3, issue=None, system=UVFS_RAM),
    Target("issue 14: cold reads, uvfs -o isolate <= 1.2x uvfs", "ext2", None, "cold", UVFS,
           1.2, issue=None, system=UVFS_ISOLATE),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one row fares against one target."""

    target: Target
    ratio: float | None  # the judged system / baseline, None when either is missing
    met: bool | None  # None: the baseline failed, so nothing can be said
    floor: float | None = None  # the target's floor system / baseline, best runs

    @property
    def impossible(self) -> bool:
        """Whether even the floor misses the target (`out_of_reach`)."""
        return out_of_reach(self.floor, self.target.limit)

    @property
    def text(self) -> str:
        """``met`` / ``NOT MET`` / ``unknown`` with the limit, for the table."""
        t = self.target
        word = {True: "met", False: "NOT MET", None: "unknown"}[self.met]
        who = "" if t.system == UVFS else f"{t.system} "
        text = f"{who}{word} (<= {t.limit:g}x {t.baseline})"
        if self.impossible:
            text += f", impossible: {t.floor} alone {self.floor:.2f}x"
        return text


@dataclass(frozen=True, slots=True)
class Standing:
    """How one target fares over all the rows it judges."""

    target: Target
    rows: int  # rows judged
    rows_met: int
    worst: float | None  # the highest ratio among them
    worst_row: tuple[str, str, str] | None
    met: bool | None  # None: not measured, or a baseline failed
    floor: float | None = None  # the floor's highest ratio to the baseline (best runs)

    @property
    def impossible(self) -> bool:
        """Whether even the floor misses the target on some row (`out_of_reach`)."""
        return out_of_reach(self.floor, self.target.limit)

    @property
    def text(self) -> str:
        """``met``, ``NOT MET``, ``unknown`` or ``not measured``; an impossible target says
        so, with how far the floor is from it."""
        if not self.rows:
            return "not measured"
        word = {True: "met", False: "NOT MET", None: "unknown"}[self.met]
        if self.impossible:
            word += f", IMPOSSIBLE under {self.target.floor} (it alone is {self.floor:.2f}x)"
        return word


@dataclass(slots=True)
class Results:
    """Everything one run produced."""

    meta: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    broker_cache: dict[str, Any] | None = None
    profiles: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)

    def cell(self, suite: str, workload: str, phase: str, system: str) -> Measurement:
        """The measurement of that cell, created empty on first use."""
        m = self.find(suite, workload, phase, system)
        if m is None:
            m = Measurement(suite, workload, phase, system)
            self.measurements.append(m)
        return m

    def find(self, suite: str, workload: str, phase: str, system: str) -> Measurement | None:
        """The measurement of that cell, None when it was never measured."""
        for m in self.measurements:
            if (m.suite, m.workload, m.phase, m.system) == (suite, workload, phase, system):
                return m
        return None

    def get(self, suite: str, workload: str, phase: str, system: str) -> float | None:
        """The median seconds of that cell, None when it failed or was not measured."""
        m = self.find(suite, workload, phase, system)
        return m.seconds if m else None

    def rows(self) -> list[tuple[str, str, str]]:
        """Every (suite, workload, phase), in the order they were first measured."""
        return list(dict.fromkeys((m.suite, m.workload, m.phase) for m in self.measurements))

    def systems(self, suite: str) -> list[str]:
        """The systems measured in `suite`, uvfs first."""
        found = dict.fromkeys(m.system for m in self.measurements if m.suite == suite)
        return sorted(found, key=lambda s: (s != UVFS, list(found).index(s)))

    def ratio(
        self, suite: str, workload: str, phase: str, baseline: str, system: str = UVFS
    ) -> float | None:
        """`system`'s time over `baseline`'s, None when either is missing."""
        ours = self.get(suite, workload, phase, system)
        theirs = self.get(suite, workload, phase, baseline)
        return None if ours is None or not theirs else ours / theirs

    def best_ratio(
        self, suite: str, workload: str, phase: str, baseline: str, system: str
    ) -> float | None:
        """`system`'s best run over `baseline`'s, None when either is missing."""
        ours, theirs = (self.find(suite, workload, phase, s) for s in (system, baseline))
        if ours is None or theirs is None or ours.best is None or not theirs.best:
            return None
        return ours.best / theirs.best

    def verdicts(self, suite: str, workload: str, phase: str) -> list[Verdict]:
        """The row against every target that judges it."""
        return [
            self.verdict(t, suite, workload, phase)
            for t in TARGETS
            if t.matches(suite, workload, phase)
        ]

    def verdict(self, target: Target, suite: str, workload: str, phase: str) -> Verdict:
        """The row against `target`: a failed measurement of the judged system is a missed
        target; a failed baseline leaves it unknown."""
        if target.baseline == MEMORY:
            cell = self.find(suite, workload, phase, target.system)
            peak = cell.peak_rss_max if cell else None
            if peak is None:
                return Verdict(target, None, False)
            ratio = peak / (self.meta["cache_budget"] + MEMORY_ALLOWANCE)
            return Verdict(target, ratio, ratio <= target.limit)
        floor = None
        if target.floor is not None:
            floor = self.best_ratio(suite, workload, phase, target.baseline, target.floor)
        ratio = self.ratio(suite, workload, phase, target.baseline, target.system)
        if self.get(suite, workload, phase, target.system) is None:
            return Verdict(target, None, False, floor)
        if ratio is None:
            return Verdict(target, None, None, floor)
        return Verdict(target, ratio, ratio <= target.limit, floor)

    def standings(self) -> list[Standing]:
        """Every target, with the rows it judged: met when every one of them is."""
        out = []
        for target in TARGETS:
            judged = [
                (row, self.verdict(target, *row)) for row in self.rows() if target.matches(*row)
            ]
            ratios = [(v.ratio, row) for row, v in judged if v.ratio is not None]
            worst, worst_row = max(ratios) if ratios else (None, None)
            floors = [v.floor for _, v in judged if v.floor is not None]
            met: bool | None = None
            if judged and any(v.met is False for _, v in judged):
                met = False
            elif judged and all(v.met for _, v in judged):
                met = True
            rows_met = sum(bool(v.met) for _, v in judged)
            standing = Standing(target, len(judged), rows_met, worst, worst_row, met,
                                max(floors) if floors else None)  # fmt: skip
            out.append(standing)
        return out
