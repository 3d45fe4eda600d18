"""Run the benchmarks, print one markdown table, write RESULTS.md and the chart.

Usage::

    python benchmarks/run.py                 # everything (a few minutes on 2 cores)
    python benchmarks/run.py --quick         # shorter runs, same figures
    python benchmarks/run.py --only per_request,import --out /tmp/bench

The table goes to stdout, progress to stderr. The exit status is 0 unless ``--strict`` is
given and a target was missed or a figure failed to run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from _common import BACKENDS, CONTENDERS, HERE, FigureResult, Row, log, table

#: Figure name -> module; the order of the table.
FIGURES = {
    "per_request": "bench_per_request",
    "telemetry": "bench_telemetry",
    "loopback": "bench_loopback",
    "cold_start": "bench_cold_start",
    "refresh": "bench_refresh",
    "fleet": "bench_fleet",
    "memory": "bench_memory",
    "import": "bench_import",
    "startup": "bench_startup",
    "redaction": "bench_redaction",
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke check)")
    parser.add_argument(
        "--only",
        default=",".join(FIGURES),
        help=f"comma-separated figures to run (default: all of {', '.join(FIGURES)})",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="where RESULTS.md and per_request.png go"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    return args


def _run_figure(name: str, quick: bool) -> FigureResult:
    """Run one figure; a figure that breaks becomes an error row, the others still run."""
    try:
        module = importlib.import_module(FIGURES[name])
        result: FigureResult = module.run(quick=quick)
    except Exception as exc:  # report it in the table and go on
        log(f"{name}: failed: {type(exc).__name__}: {exc}")
        return FigureResult(
            rows=[Row(figure=name, this=f"error: {type(exc).__name__}: {exc}", verdict="ERROR")]
        )
    return result


def _chart(samples: Mapping[tuple[str, str], list[float]], path: Path) -> bool:
    """Draw per-request cost, three clients x two backends; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from _common import median, pooled, pooled_ratios
    from bench_per_request import BASELINES, TARGET

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    width = 0.26
    colors = {"entur_oauth": "#1f6feb", "bare httpx2": "#8b949e", "raw authlib": "#d1242f"}
    for i, contender in enumerate(CONTENDERS):
        xs, heights, low, high = [], [], [], []
        for j, backend in enumerate(BACKENDS):
            values = sorted(v * 1e6 for v in samples[(backend, contender)])
            mid = median(values)
            xs.append(j + (i - 1) * width)
            heights.append(mid)
            low.append(mid - values[len(values) // 4])
            high.append(values[-1 - len(values) // 4] - mid)
        bars = ax.bar(xs, heights, width, label=contender, color=colors[contender])
        ax.errorbar(xs, heights, yerr=[low, high], fmt="none", ecolor="black", capsize=3, lw=1)
        for bar, backend in zip(bars, BACKENDS, strict=True):
            pairs = {c: samples[(backend, c)] for c in (contender, *BASELINES)}
            ratio = median(pooled_ratios(pairs, contender, BASELINES))  # as in the table
            ax.annotate(
                f"{bar.get_height():.0f} us\n{ratio:.2f}x",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                fontsize=8,
                # Over the dashed target line, which may cross the label.
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none"},
                zorder=4,
            )
    for j, backend in enumerate(BACKENDS):
        baseline = pooled({c: samples[(backend, c)] for c in BASELINES}, BASELINES)
        limit = median(baseline) * 1e6 * TARGET
        ax.hlines(
            limit, j - 1.5 * width, j + 1.5 * width, colors="#1f6feb", linestyles="dashed", zorder=3
        )
    ax.plot([], [], color="#1f6feb", ls="dashed", label=f"target: {TARGET:.2f}x bare httpx2")
    ax.set_xticks(range(len(BACKENDS)), BACKENDS)
    ax.set_ylabel("client CPU, microseconds per request\n(median, IQR)")
    ax.set_title("Per-request cost with a cached token, in-process transport (lower is better)")
    ax.title.set_fontsize(10)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _results_md(rows: Sequence[Row], args: argparse.Namespace, seconds: float) -> str:
    from importlib.metadata import version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except Exception:  # a missing distribution only blanks its version
            return "?"

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    if len(args.only) != len(FIGURES):
        command += " --only " + ",".join(args.only)
    return (
        "# Benchmark results\n\n"
        f"`{command}` on {when}, {seconds:.0f} s: Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"entur-oauth {v('entur-oauth')}, httpx2 {v('httpx2')}, Authlib {v('authlib')}, "
        f"anyio {v('anyio')}, trio {v('trio')}.\n\n"
        "Each ratio is against a baseline measured in the same run, contenders interleaved "
        "and repeated, medians reported; see benchmarks/README.md for what each figure "
        "measures and how.\n\n" + table(rows) + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen figures; return the exit status."""
    args = _parse(argv)
    started = time.perf_counter()
    rows: list[Row] = []
    samples: dict[tuple[str, str], list[float]] = {}
    for name in args.only:
        result = _run_figure(name, args.quick)
        rows.extend(result.rows)
        samples.update(result.samples)
    elapsed = time.perf_counter() - started
    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "RESULTS.md").write_text(_results_md(rows, args, elapsed))
    if samples:
        chart = args.out / "per_request.png"
        if _chart(samples, chart):
            log(f"wrote {chart}")
        else:
            log("chart skipped: matplotlib is not installed (it is in the bench session)")
    log(f"wrote {args.out / 'RESULTS.md'} ({elapsed:.0f} s)")
    missed = [row for row in rows if row.verdict in {"**FAIL**", "ERROR"}]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
