"""Showing the results: the table on stdout, ``results.json`` and ``chart.png``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._host import BenchError
from ._results import UVFS, Results
from ._sizes import MiB

SHORT_ERROR = 20  # an error this short is shown in its cell, a longer one as a footnote
SYSTEM_COLOURS = {UVFS: "#d62728", "kernel": "#7f7f7f", "fuse2fs": "#1f77b4", "zfs-fuse": "#2ca02c"}


def workload_label(workload: str, meta: dict[str, Any]) -> str:
    """What a workload does, with this run's sizes."""
    sizes = meta["sizes"]
    file_mib = sizes["file_bytes"] // MiB
    files = f"{sizes['files']:,} files"
    return {
        "seqread": f"seq read {file_mib} MiB",
        "randread": f"{sizes['random_reads']:,} random 4K preads",
        "find": f"find -type f ({files})",
        "du": f"du -s ({files})",
        "untar": f"tar x ({files})",
        "write": f"write {file_mib} MiB",
        "rmtree": f"rm -rf ({files})",
    }[workload]


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
        header = ["workload", "phase", *systems, *(f"uvfs/{s}" for s in others), "target"]
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
            verdict = results.verdict(suite, workload, phase)
            line.append(verdict.text if verdict else "")
            lines.append(line)
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        out.append(f"\n{suite} (seconds, median of {results.meta['runs']})")
        out += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in lines
        ]
    out += _broker_cache_lines(results)
    out += ["", _target_count(results)]
    out += _profile_lines(results)
    out += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(out)


def _target_count(results: Results) -> str:
    """``targets: 9 met, 21 NOT MET`` over every row with a target and the broker cache."""
    verdicts = [results.verdict(*row) for row in results.rows()]
    met = [v.met for v in verdicts if v is not None]
    if results.broker_cache is not None:
        met.append(bool(results.broker_cache.get("driver_untouched")))
    counts = {"met": met.count(True), "NOT MET": met.count(False), "unknown": met.count(None)}
    return "targets: " + ", ".join(f"{n} {word}" for word, n in counts.items() if n)


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
    rows = []
    for suite, workload, phase in results.rows():
        verdict = results.verdict(suite, workload, phase)
        rows.append(
            {
                "suite": suite,
                "workload": workload,
                "phase": phase,
                "label": workload_label(workload, results.meta),
                "systems": {
                    m.system: {"seconds": m.seconds, "samples": m.samples, "error": m.error}
                    for m in results.measurements
                    if (m.suite, m.workload, m.phase) == (suite, workload, phase)
                },
                "target": asdict(verdict.target) if verdict else None,
                "ratio": verdict.ratio if verdict else None,
                "met": verdict.met if verdict else None,
            }
        )
    return {
        "meta": results.meta,
        "rows": rows,
        "broker_cache": results.broker_cache,
        "profiles": results.profiles,
    }


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
                verdict = results.verdict(suite, workload, phase)
                if system == UVFS and verdict and verdict.ratio is not None:
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
