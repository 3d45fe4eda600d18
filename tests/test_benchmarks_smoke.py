"""Smoke test of the benchmark runner: it runs and prints its table (no timing is judged)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

#: Every test runs the benchmark runner as a subprocess.
pytestmark = pytest.mark.slow

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"

#: The runner's environment, without coverage's subprocess patch: what the benchmarks run
#: the other tests cover, and under coverage's tracing each run takes several times longer.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS_")}


def test_quick_run_prints_and_writes_the_table(tmp_path: Path) -> None:
    """``run.py --quick --only per_request`` prints the results table, one row per event
    loop with a ratio and a verdict, and writes the same table to RESULTS.md."""
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--only", "per_request", "--out", str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == (
        "| figure | this library | bare httpx2 | raw authlib | ratio | target | pass/fail |"
    )
    rows = [line.split(" | ") for line in lines[2:]]
    assert [row[0].removeprefix("| ") for row in rows] == [
        "per request, cached token, in-process transport, client CPU (asyncio)",
        "per request, cached token, in-process transport, client CPU (trio)",
    ]
    for row in rows:
        assert re.fullmatch(r"\d+\.\d{3}x", row[4]), row
        assert row[6].removesuffix(" |") in {"pass", "**FAIL**"}, row
    assert proc.stdout.strip() in (tmp_path / "RESULTS.md").read_text()


def test_unknown_figure_is_refused(tmp_path: Path) -> None:
    """A misspelt ``--only`` figure stops the runner with a usage error naming the choices."""
    proc = subprocess.run(
        [sys.executable, str(RUN), "--only", "per_requests", "--out", str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "per_requests" in proc.stderr
    assert "per_request," in proc.stderr
    assert not (tmp_path / "RESULTS.md").exists()


def test_quick_startup_figure_has_a_row_per_target(tmp_path: Path) -> None:
    """``--only startup --quick`` measures the four start-up figures of issue #12, each with
    a ratio against its floor, a target and a verdict, and reports the token figure against
    both floors: wall clock (the target) and CPU time (timings are not judged here)."""
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--only", "startup", "--out", str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(" | ") for line in proc.stdout.strip().splitlines()[2:]]
    assert len(rows) == 6, proc.stdout
    targets = ["<= 2.50x", "reported", "reported", "<= 1.05x", "<= 1.00x", "<= 1.16x"]
    assert [row[5] for row in rows] == targets
    for row in rows:
        assert re.fullmatch(r"\d+\.\d{3}x", row[4]), row
        expected = {"-"} if row[5] == "reported" else {"pass", "**FAIL**"}
        assert row[6].removesuffix(" |") in expected, row
    assert "installed `entur-oauth token`" in rows[0][0]
    assert "wall clock" in rows[0][0]
    assert "CPU time" in rows[1][0]
    assert "python -c pass" in rows[2][0]
    assert "no:entur_oauth" in rows[3][0]
