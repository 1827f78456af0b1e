"""Showing the results: the table on stdout, ``results.json`` and ``chart.png``."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._host import BenchError
from ._results import (
    BARE,
    FLOOR_MARGIN,
    UVFS,
    UVFS_ISOLATE,
    UVFS_RAM,
    Measurement,
    Results,
    out_of_reach,
    workload_ops,
)
from ._sizes import MiB

SHORT_ERROR = 20  # an error this short is shown in its cell, a longer one as a footnote
SYSTEM_COLOURS = {UVFS: "#d62728", "kernel": "#7f7f7f", "fuse2fs": "#1f77b4", "zfs-fuse": "#2ca02c",
                  BARE: "#9467bd", "plain": "#8c564b", UVFS_RAM: "#ff9896",
                  UVFS_ISOLATE: "#e377c2"}  # fmt: skip


def workload_label(workload: str, meta: dict[str, Any]) -> str:
    """What a workload does, with this run's sizes."""
    sizes = meta["sizes"]
    file_mib = sizes["file_bytes"] // MiB
    files = f"{sizes['files']:,} files"
    requests = f"{sizes['null_requests']:,}"
    return {
        "seqread": f"seq read {file_mib} MiB",
        "bigread": f"seq read {(sizes['memory_file_bytes'] or sizes['file_bytes']) // MiB} MiB",
        "randread": f"{sizes['random_reads']:,} random 4K preads",
        "find": f"find -type f ({files})",
        "du": f"du -s ({files})",
        "untar": f"tar x ({files})",
        "write": f"write {(sizes['write_bytes'] or sizes['file_bytes']) // MiB} MiB + fsync",
        "cpa": f"cp -a ({files})",
        "createfsync": f"create+fsync ({sizes['fsync_files']:,} files)",
        "rmtree": f"rm -rf ({files})",
        "lookup": f"{sizes['null_files']:,} lookups (stat)",
        "statx": f"{requests} getattrs (statx, sync)",
        "direct4k": f"{requests} 4K reads (O_DIRECT)",
        "import": 'python -c "import requests"',
        "pytest": "pytest (uvfs LRU, range locks)",
    }[workload]


def _per_op(m: Measurement | None, workload: str, meta: dict[str, Any]) -> str:
    """A server's requests per operation, e.g. ``10.2/file``."""
    if m is None or m.requests_median is None:
        return "-"
    count, unit = workload_ops(workload, meta["sizes"])
    return f"{m.requests_median / count:.3g}/{unit}"


def _cpu_per_request(m: Measurement | None) -> float | None:
    """A server's CPU seconds per request answered, None when either is not known."""
    if m is None or m.cpu_median is None or not m.requests_median:
        return None
    return m.cpu_median / m.requests_median


def _cpu_per_op(m: Measurement | None, workload: str, meta: dict[str, Any]) -> float | None:
    """A server's CPU seconds per operation (per file, per MiB ...), None when not known."""
    if m is None or m.cpu_median is None:
        return None
    return m.cpu_median / workload_ops(workload, meta["sizes"])[0]


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.0f}"


def _rss(m: Measurement | None) -> str:
    return "-" if m is None or m.peak_rss_max is None else f"{m.peak_rss_max / MiB:.0f}"


def _seconds(value: float | None, error: str | None, notes: list[str]) -> str:
    if value is not None:
        return f"{value:.3f}"
    if error is None:
        return "-"
    if len(error) <= SHORT_ERROR:
        return f"n/a ({error})"
    if error not in notes:
        notes.append(error)
    return f"n/a[{notes.index(error) + 1}]"


def table(results: Results) -> str:
    """The results as aligned text: one block per suite, footnotes for every failure."""
    out: list[str] = []
    notes: list[str] = []
    for suite in dict.fromkeys(s for s, _, _ in results.rows()):
        systems = results.systems(suite)
        others = [s for s in systems if s != UVFS]
        header = ["workload", "phase", *systems, *(f"uvfs/{s}" for s in others),
                  "uvfs req/op", "uvfs RSS MiB", "target"]  # fmt: skip
        lines = [header]
        for row_suite, workload, phase in results.rows():
            if row_suite != suite:
                continue
            cells = {
                m.system: m
                for m in results.measurements
                if (m.suite, m.workload, m.phase) == (suite, workload, phase)
            }
            line = [workload_label(workload, results.meta), phase]
            for system in systems:
                m = cells.get(system)
                line.append(_seconds(m.seconds, m.error, notes) if m else "-")
            for other in others:
                ratio = results.ratio(suite, workload, phase, other)
                line.append("-" if ratio is None else f"{ratio:.2f}x")
            line += [_per_op(cells.get(UVFS), workload, results.meta), _rss(cells.get(UVFS))]
            line.append("; ".join(v.text for v in results.verdicts(suite, workload, phase)))
            lines.append(line)
        out.append(f"\n{suite} (seconds, median of {results.meta['runs']})")
        out += _aligned(lines)
    out += _broker_cache_lines(results)
    out += _framework_lines(results)
    out += _floor_lines(results)
    out += _standing_lines(results)
    out += _profile_lines(results)
    out += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(out)


def _aligned(rows: list[list[str]]) -> list[str]:
    """`rows` (the first a header) as lines of left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


FLOOR_SYSTEMS = ("fuse2fs", BARE, UVFS_RAM, UVFS)


def _floor_lines(results: Results) -> list[str]:
    """The write floor: bare pyfuse3 against fuse2fs (can any pyfuse3 server meet the
    target?), uvfs-mem against bare pyfuse3 (the framework's own cost), uvfs on ext2
    against uvfs-mem (the ext2 driver's own cost); then, per server, the time before and
    of the unmount, requests per operation and CPU time per request and per operation."""
    rows = [(w, p) for s, w, p in results.rows() if s == "write"]
    if not rows or BARE not in results.systems("write"):
        return []
    meta = results.meta
    ratios = [["workload", f"{BARE}/fuse2fs best", "median", f"{BARE} CPU/fuse2fs", "CPU/op",
               f"{UVFS_RAM}/{BARE}", "before unmount", "CPU/request", f"{UVFS}/{UVFS_RAM}",
               "before unmount"]]  # fmt: skip
    costs = [["workload", "system", "seconds", "before unmount", "unmount", "requests",
              "CPU us/request", "CPU us/op"]]  # fmt: skip
    for workload, phase in rows:
        label = workload_label(workload, meta)
        cells = {s: results.find("write", workload, phase, s) for s in FLOOR_SYSTEMS}
        floor = results.best_ratio("write", workload, phase, "fuse2fs", BARE)
        verdict = "-" if floor is None else f"{floor:.2f}x" + " IMPOSSIBLE" * out_of_reach(floor, 1)
        before = {s: m.before_unmount if m else None for s, m in cells.items()}
        cpu = {s: _cpu_per_request(m) for s, m in cells.items()}
        seconds = {s: m.seconds if m else None for s, m in cells.items()}
        pairs = [(seconds[UVFS_RAM], seconds[BARE]), (before[UVFS_RAM], before[BARE]),
                 (cpu[UVFS_RAM], cpu[BARE]), (seconds[UVFS], seconds[UVFS_RAM]),
                 (before[UVFS], before[UVFS_RAM])]  # fmt: skip
        bare_cpu = cells[BARE].cpu_median if cells[BARE] else None
        fuse2fs_cpu = cells["fuse2fs"].cpu_median if cells["fuse2fs"] else None
        pairs[:0] = [
            (seconds[BARE], seconds["fuse2fs"]),
            (bare_cpu, seconds["fuse2fs"]),
            (bare_cpu, fuse2fs_cpu),
        ]
        ratios.append([label, verdict, *(_ratio(a, b) for a, b in pairs)])
        for system, m in cells.items():
            unmount = statistics.median(m.unmount) if m and m.unmount else None
            costs.append([label if system == FLOOR_SYSTEMS[0] else "", system,
                          _fixed(seconds[system]), _fixed(before[system]),
                          _fixed(unmount), _per_op(m, workload, meta), _us(cpu[system]),
                          _us(_cpu_per_op(m, workload, meta))])  # fmt: skip
    return [
        f"\nwrite floor: the workloads on an in-memory tree, served by pyfuse3 alone ({BARE}) "
        f"and by uvfs ({UVFS_RAM})",
        f"  {BARE}/fuse2fs best: each one's fastest run (load only adds time), the medians' "
        f"beside; > {FLOOR_MARGIN:g}: a target of <= 1.0x fuse2fs is IMPOSSIBLE under pyfuse3",
        f"  {BARE} CPU/fuse2fs: its CPU time (one thread, before unmount) over fuse2fs's whole "
        "time; > 1 proves it whatever the load",
        "  CPU/op: the servers' CPU time per operation, pyfuse3's over fuse2fs's",
        *_aligned(ratios),
        "\nper server: seconds (median, with the unmount), requests per operation, CPU time "
        "(user + system, the workload before unmount); fuse2fs counts no requests",
        *_aligned(costs),
    ]


def _ratio(ours: float | None, theirs: float | None) -> str:
    return "-" if ours is None or not theirs else f"{ours / theirs:.2f}x"


def _fixed(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}"


def _framework_lines(results: Results) -> list[str]:
    """Requests per second of uvfs and bare pyfuse3 on the null tree."""
    rows = [(w, p) for s, w, p in results.rows() if s == "framework"]
    if not rows:
        return []
    lines = ["\nframework: requests per second on the null tree"]
    for workload, phase in rows:
        count, unit = workload_ops(workload, results.meta["sizes"])
        rates = []
        for system in (UVFS, BARE):
            seconds = results.get("framework", workload, phase, system)
            rates.append("n/a" if not seconds else f"{count / seconds:,.0f}/s")
        lines.append(f"  {unit:<8} uvfs {rates[0]:>9}   bare pyfuse3 {rates[1]:>9}")
    return lines


def _standing_lines(results: Results) -> list[str]:
    """Every target with its worst ratio, then ``issue 10: N of M targets met``."""
    standings = results.standings()
    width = max(len(s.target.text) for s in standings)
    lines = ["\ntargets (worst ratio over the rows each judges)"]
    for s in standings:
        ratio = "-" if s.worst is None else f"{s.worst:.2f}x"
        detail = ""
        if s.rows > 1:
            detail = f"  ({s.rows_met} of {s.rows} rows met"
            detail += f"; worst {' '.join(s.worst_row)})" if s.worst_row and not s.met else ")"
        mark = "" if s.target.issue else "  [not an issue-10 target]"
        skipped = results.meta.get("skipped", {}).get(s.target.suite)
        if not s.rows and skipped:
            detail = f" ({skipped})"
        lines.append(f"  {s.target.text:<{width}}  {ratio:>7}  {s.text}{detail}{mark}")
    judged = [s for s in standings if s.target.issue and s.rows]
    unmeasured = sum(1 for s in standings if s.target.issue and not s.rows)
    met = sum(1 for s in judged if s.met)
    impossible = sum(1 for s in judged if not s.met and s.impossible)
    tail = f", {impossible} of those missed IMPOSSIBLE under pyfuse3" if impossible else ""
    tail += f" ({unmeasured} more not measured in this run)" if unmeasured else ""
    lines += ["", f"issue 10: {met} of {len(judged)} targets met{tail}"]
    return lines


def _broker_cache_lines(results: Results) -> list[str]:
    record = results.broker_cache
    if record is None:
        return []
    head = f"\nbroker cache: second cold read of {workload_label('seqread', results.meta)}"
    if "error" in record:
        return [head, f"  n/a: {record['error']}", "  target NOT MET (driver calls == 0)"]
    delta = record["delta"]
    verdict = "met" if record["driver_untouched"] else "NOT MET"
    return [
        head + f" (cache_size={record['cache_size']})",
        f"  first read {record['first_read_seconds']:.3f} s, "
        f"second read (kernel page cache dropped) {record['second_read_seconds']:.3f} s",
        "  uvfs stats, second read: "
        + ", ".join(f"{k} +{delta[k]}" for k in ("cache.misses", "cache.bytes_from_driver",
                                                  "cache.hits", "cache.bytes_from_cache")),
        f"  target {verdict} (driver calls == 0)",
    ]  # fmt: skip


def _profile_lines(results: Results) -> list[str]:
    lines = []
    for name, summary in results.profiles.items():
        lines.append(f"\nuvfs server profile, {name} cold (share of py-spy samples)")
        for kind in ("layers", "self"):
            shown = ", ".join(f"{f} {share:.0%}" for f, share in summary[kind])
            lines.append(f"  {kind}: {shown}")
    return lines


def to_json(results: Results) -> dict[str, object]:
    """The results as plain data: every sample, medians, ratios and verdicts."""
    meta = results.meta
    rows = []
    for suite, workload, phase in results.rows():
        cells = [
            m
            for m in results.measurements
            if (m.suite, m.workload, m.phase) == (suite, workload, phase)
        ]
        rows.append(
            {
                "suite": suite,
                "workload": workload,
                "phase": phase,
                "label": workload_label(workload, meta),
                "op": workload_ops(workload, meta["sizes"])[1],
                "systems": {m.system: _cell_json(m, meta) for m in cells},
                "verdicts": [
                    {"target": asdict(v.target), "ratio": v.ratio, "met": v.met, "floor": v.floor}
                    for v in results.verdicts(suite, workload, phase)
                ],
            }
        )
    return {
        "meta": meta,
        "rows": rows,
        "targets": [
            {
                "text": st.target.text,
                "issue": st.target.issue,
                "system": st.target.system,
                "limit": st.target.limit,
                "baseline": st.target.baseline,
                "rows": st.rows,
                "rows_met": st.rows_met,
                "worst_ratio": st.worst,
                "worst_row": st.worst_row,
                "floor": st.target.floor,
                "floor_worst_ratio": st.floor,
                "impossible": st.impossible,
                "standing": st.text,
            }
            for st in results.standings()
        ],
        "broker_cache": results.broker_cache,
        "profiles": results.profiles,
    }


def _cell_json(m: Measurement, meta: dict[str, Any]) -> dict[str, object]:
    """One cell: its samples, and what its server did (requests, CPU, peak RSS) if seen."""
    record: dict[str, object] = {"seconds": m.seconds, "samples": m.samples, "error": m.error}
    if m.unmount:
        record.update(unmount=m.unmount, before_unmount=m.before_unmount)
    if m.cpu:
        record.update(peak_rss=m.peak_rss, cpu=m.cpu,
                      cpu_per_op=_cpu_per_op(m, m.workload, meta))  # fmt: skip
    if m.requests:
        count = workload_ops(m.workload, meta["sizes"])[0]
        record.update(requests=m.requests, requests_per_op=m.requests_median / count,
                      cpu_per_request=_cpu_per_request(m))  # fmt: skip
    return record


def write_json(results: Results, path: Path) -> None:
    """Write `to_json` to `path`."""
    path.write_text(json.dumps(to_json(results), indent=2) + "\n")


def write_chart(results: Results, path: Path) -> None:
    """Bars of seconds on a log scale, one panel per suite, grouped by workload and phase.

    Above each uvfs bar with a target: its ratio to the target's baseline, green when met.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise BenchError("matplotlib is missing: pip install -e '.[bench]'") from None
    suites = list(dict.fromkeys(suite for suite, _, _ in results.rows()))
    columns = 2 if len(suites) > 1 else 1
    rows_of_panels = -(-len(suites) // columns)
    fig, axes = plt.subplots(
        rows_of_panels, columns, figsize=(8 * columns, 4.2 * rows_of_panels), squeeze=False
    )
    for ax in axes.flat[len(suites) :]:
        ax.set_visible(False)
    for ax, suite in zip(axes.flat, suites, strict=False):
        rows = [(w, p) for s, w, p in results.rows() if s == suite]
        systems = results.systems(suite)
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            offset = (i - (len(systems) - 1) / 2) * width
            for x, (workload, phase) in enumerate(rows):
                value = results.get(suite, workload, phase, system)
                if value is None:
                    ax.text(x + offset, 0.02, "n/a", rotation=90, ha="center", va="bottom",
                            transform=ax.get_xaxis_transform(), fontsize=8)  # fmt: skip
                    continue
                ax.bar(x + offset, value, width, color=SYSTEM_COLOURS[system])
                for verdict in results.verdicts(suite, workload, phase):
                    if verdict.target.system != system or verdict.ratio is None:
                        continue
                    colour = "green" if verdict.met else "red"
                    ax.annotate(f"{verdict.ratio:.3g}x", (x + offset, value), ha="center",
                                va="bottom", fontsize=7, color=colour)  # fmt: skip
        ax.set_xticks(range(len(rows)), [f"{w}\n{p}" for w, p in rows], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("seconds (log)")
        ax.set_title(f"{suite}: lower is better", loc="left")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.margins(y=0.15)
    # One legend for all panels, drawn from patches: a system whose every cell failed shows.
    systems = dict.fromkeys(s for suite in suites for s in results.systems(suite))
    handles = [Patch(color=SYSTEM_COLOURS[s], label=s) for s in systems]
    fig.legend(handles=handles, loc="upper right", ncols=len(handles), fontsize=9)
    fig.suptitle(
        f"uvfs benchmark ({results.meta['size']}, median of {results.meta['runs']}); "
        "uvfs / target baseline above the uvfs bars",
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
