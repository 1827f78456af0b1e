"""The audit's verdict: what was used against what was declared, as a table and as JSON.

Only non-directories count as used: a directory is shared structure (``/usr/lib`` has a
hundred owners), and a package whose file was looked up, stat'ed, read or executed has
been used. Misses become ``missing`` (deduplicated probes); files nobody owns become
``unowned``; baseline owners are never shown. Only paths inside the watched trees are
reported: the walk down to them is the runner's doing, not the command's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from uvfs_fs.audit.owners import Owners
from uvfs_fs.audit.recorder import Access, Kind, Recorder

EXIT_UNDECLARED = 3  # with --strict, when undeclared owners were found


@dataclass(slots=True)
class OwnerUse:
    """The files of one owner the run touched."""

    files: list[str] = field(default_factory=list)
    accesses: int = 0


@dataclass(frozen=True, slots=True)
class Report:
    """One audit's result; `to_json` has exactly the keys the issue specifies."""

    command: tuple[str, ...]
    exit_status: int
    declared: tuple[str, ...]
    used: dict[str, OwnerUse]  # every non-baseline owner touched, declared or not
    unowned: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def undeclared(self) -> list[str]:
        """Owners used but not declared, sorted."""
        return sorted(o for o in self.used if o not in self.declared)

    @property
    def declared_unused(self) -> list[str]:
        """Owners declared but not used."""
        return [o for o in self.declared if o not in self.used]

    def to_json(self) -> dict[str, object]:
        """The report as plain data."""
        return {
            "command": list(self.command),
            "exit_status": self.exit_status,
            "declared": list(self.declared),
            "undeclared": [
                {"owner": o, "files": self.used[o].files, "accesses": self.used[o].accesses}
                for o in self.undeclared
            ],
            "declared_unused": self.declared_unused,
            "unowned": list(self.unowned),
            "missing": list(self.missing),
        }

    def dumps(self) -> str:
        """`to_json` as indented JSON text."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    def table(self, max_files: int = 5) -> str:
        """A readable summary: one row per owner, undeclared files listed under theirs."""
        rows = [("OWNER", "STATUS", "FILES", "ACCESSES")]
        for owner in self.undeclared:
            use = self.used[owner]
            rows.append((owner, "UNDECLARED", str(len(use.files)), str(use.accesses)))
        for owner in self.declared:
            use = self.used.get(owner)
            if use is None:
                rows.append((owner, "unused", "-", "-"))
            else:
                rows.append((owner, "used", str(len(use.files)), str(use.accesses)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"command: {' '.join(self.command)}  (exit status {self.exit_status})"]
        for row in rows:
            lines.append(
                f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  "
                f"{row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}".rstrip()
            )
            if row[1] == "UNDECLARED":
                files = self.used[row[0]].files
                lines += [f"    {f}" for f in files[:max_files]]
                if len(files) > max_files:
                    lines.append(f"    ... and {len(files) - max_files} more")
        lines.append(
            f"{len(self.undeclared)} undeclared, {len(self.declared_unused)} declared but "
            f"unused, {len(self.unowned)} unowned files, {len(self.missing)} missing paths"
        )
        return "\n".join(lines) + "\n"


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def build_report(
    command: Sequence[str],
    exit_status: int,
    recorder: Recorder,
    owners: Owners,
    declared: Iterable[str],
    watched: Sequence[str],
    startup: Recorder | None = None,
) -> Report:
    """Compare what `recorder` saw under `watched` with `declared`, through `owners`.

    Paths in `startup` (the interpreter's own footprint) are baseline and never reported.
    """
    used: dict[str, OwnerUse] = {}
    unowned = []
    missing = []
    for path, entry in recorder:
        if not _inside(path, watched) or (startup is not None and path in startup):
            continue
        if entry.counts[Access.MISS]:
            missing.append(path)
        accesses = entry.total - entry.counts[Access.MISS]
        if entry.kind is not Kind.FILE or accesses == 0:
            continue
        owner = owners.owner(path)
        if owner is None:
            unowned.append(path)
        elif owner not in owners.baseline:
            use = used.setdefault(owner, OwnerUse())
            use.files.append(path)
            use.accesses += accesses
    for use in used.values():
        use.files.sort()
    return Report(
        command=tuple(command),
        exit_status=exit_status,
        declared=tuple(sorted(set(declared) - owners.baseline)),
        used=dict(sorted(used.items())),
        unowned=tuple(sorted(unowned)),
        missing=tuple(sorted(set(missing))),
    )
