"""Start-up: what a user waits for before entur-oauth does anything (issues #12, #18).

Whole processes, timed from the outside (interpreter start-up included), each pair of
contenders interleaved and repeated, in one run. Two clocks: the wall clock (what the user
waits for) and the processes' CPU time (user + system, from ``wait4``), which on a shared
two-core machine does not count the time a process waits for a core.

* ``entur-oauth token`` (the installed console script) with a fresh token in its cache file,
  against the floor ``python -c "from cryptography.hazmat.primitives.ciphers.aead import
  AESGCM"`` (the cache is sealed with AES-GCM, so no path can be faster): target <= 2.5x
  on the wall clock, the median of 31 paired runs (3 with ``--quick``, a smoke check), as
  hyperfine would measure it. Both floors are reported: the wall-clock ratio (the target)
  and the CPU one.
* ``pytest`` on a one-test project with entur-oauth's plugin loaded, against the same run
  with ``-p no:entur_oauth``: target <= 1.05x (every pytest run in an environment with
  entur-oauth installed pays this).
* ``python -c "import entur_oauth"`` against ``python -c "import httpx2"``: target <= 1.0x.
* ``python -c "from entur_oauth import EnturClient"`` against
  ``python -c "import authlib.integrations.httpx_client"`` (what the client is built on):
  no slower than before #12, when this ratio measured 1.16x (CPU; the median of three
  runs of 11 pairs on main: 1.18x, 1.12x, 1.16x): target <= 1.16x.

The last three compare CPU time (medians of 7 runs, 1 with ``--quick``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import PYTHON, FigureResult, Row, log, median, ms, verdict, x

from entur_oauth.testing import FakeEntur

SCRIPT = str(Path(PYTHON).with_name("entur-oauth"))
FLOOR = "from cryptography.hazmat.primitives.ciphers.aead import AESGCM"
#: EnturClient's import against authlib's client import on main before issue #12.
CLIENT_BEFORE = 1.16


@dataclass(frozen=True, slots=True)
class _Timing:
    """Medians of one pair: CPU and wall seconds of each side, and the paired ratios."""

    cpu: float
    wall: float
    base_cpu: float
    base_wall: float
    ratio: float  # of CPU times
    wall_ratio: float


def _time(command: Sequence[str], env: Mapping[str, str], cwd: str) -> tuple[float, float]:
    """Run ``command`` to its end; its (CPU, wall) seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}")
    return usage.ru_utime + usage.ru_stime, wall


def _pair(
    this: Sequence[str], base: Sequence[str], runs: int, env: Mapping[str, str], cwd: str
) -> _Timing:
    """Time ``this`` and ``base`` in turn, ``runs`` times each; medians."""
    a: list[tuple[float, float]] = []
    b: list[tuple[float, float]] = []
    for round_no in range(runs + 1):
        pair = [(this, a), (base, b)]
        for command, into in pair if round_no % 2 else pair[::-1]:
            timing = _time(command, env, cwd)
            if round_no:  # the first round warms the OS file cache
                into.append(timing)
    return _Timing(
        cpu=median([cpu for cpu, _ in a]),
        wall=median([wall for _, wall in a]),
        base_cpu=median([cpu for cpu, _ in b]),
        base_wall=median([wall for _, wall in b]),
        ratio=median([p[0] / q[0] for p, q in zip(a, b, strict=True)]),
        wall_ratio=median([p[1] / q[1] for p, q in zip(a, b, strict=True)]),
    )


def _row(figure: str, timing: _Timing, target: float | None, *, wall: bool = False) -> Row:
    ratio = timing.wall_ratio if wall else timing.ratio
    return Row(
        figure=figure,
        this=f"{ms(timing.cpu)} CPU, {ms(timing.wall)} wall",
        bare=f"{ms(timing.base_cpu)} CPU, {ms(timing.base_wall)} wall",
        ratio=x(ratio),
        target="reported" if target is None else f"<= {target:.2f}x",
        verdict="-" if target is None else verdict(ratio <= target),
    )


def _token_figure(runs: int, env: dict[str, str], cwd: str) -> list[Row]:
    fake = FakeEntur()
    with fake.serve(server="builtin") as url:
        token_env = {**env, **fake.env(url, client_name="bench-app")}
        token_env["XDG_CACHE_HOME"] = str(Path(cwd) / "cache")
        subprocess.run([SCRIPT, "token"], env=token_env, check=True, capture_output=True)
        timings = _pair([SCRIPT, "token"], [PYTHON, "-c", FLOOR], runs, token_env, cwd)
        interpreter = _pair([PYTHON, "-c", FLOOR], [PYTHON, "-c", "pass"], runs, env, cwd)
    if fake.token_count != 1:
        raise RuntimeError(f"the cached runs fetched tokens ({fake.token_count})")
    what = "start-up: installed `entur-oauth token`, cached token (vs python -c 'import AESGCM')"
    return [
        _row(f"{what}, wall clock", timings, 2.5, wall=True),
        _row(f"{what}, CPU time", timings, None),
        _row(
            "start-up: the floor, python -c 'import AESGCM' (vs python -c pass)",
            interpreter,
            None,
            wall=True,
        ),
    ]


def _pytest_figure(runs: int, env: dict[str, str], cwd: str) -> Row:
    project = Path(cwd) / "project"
    project.mkdir()
    (project / "test_one.py").write_text("def test_one():\n    assert True\n")
    (project / "pytest.ini").write_text("[pytest]\n")
    pytest = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    timings = _pair(pytest, [*pytest, "-p", "no:entur_oauth"], runs, env, str(project))
    return _row(
        "start-up: pytest, one-test project (vs the same with -p no:entur_oauth)", timings, 1.05
    )


def _compile_package() -> None:
    """Write the bytecode of entur_oauth and of cryptography (which the floor imports too), as
    pip installing a wheel does: an editable checkout, or packages installed by uv (which
    does not compile), run with PYTHONDONTWRITEBYTECODE would compile them on every start."""
    import cryptography

    import entur_oauth

    packages = [str(Path(entur_oauth.__file__).parent), str(Path(cryptography.__file__).parent)]
    subprocess.run([PYTHON, "-m", "compileall", "-q", *packages], check=True, capture_output=True)


def run(quick: bool = False) -> FigureResult:
    """Time each start-up against its floor, in fresh processes; medians and ratios."""
    runs = 1 if quick else 7
    token_runs = 3 if quick else 31
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENTUR_", "PYTEST_"))}
    _compile_package()
    rows = []
    with tempfile.TemporaryDirectory() as cwd:
        log(f"startup: {token_runs} interleaved runs for the token pairs, {runs} for 3 more")
        rows.extend(_token_figure(token_runs, env, cwd))
        rows.append(_pytest_figure(runs, env, cwd))
        timings = _pair(
            [PYTHON, "-c", "import entur_oauth"], [PYTHON, "-c", "import httpx2"], runs, env, cwd
        )
        rows.append(_row("start-up: `import entur_oauth` (vs import httpx2)", timings, 1.0))
        timings = _pair(
            [PYTHON, "-c", "from entur_oauth import EnturClient"],
            [PYTHON, "-c", "import authlib.integrations.httpx_client"],
            runs,
            env,
            cwd,
        )
        rows.append(
            _row(
                "start-up: `from entur_oauth import EnturClient` (vs import authlib's "
                f"httpx client; before #12: {CLIENT_BEFORE:.2f}x)",
                timings,
                CLIENT_BEFORE,
            )
        )
    return FigureResult(rows=rows)


if __name__ == "__main__":
    from _common import table

    print(table(run(quick="--quick" in sys.argv).rows))
