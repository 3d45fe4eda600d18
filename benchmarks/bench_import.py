"""Import time: ``from entur_oauth import EnturClient`` against authlib's httpx client.

Each import is timed inside a fresh interpreter (interpreter start-up excluded), the three
contenders interleaved and repeated; medians. ``import httpx2`` stands for bare httpx2.
``import entur_oauth`` alone imports nothing heavy (its names load on first use, see
``bench_startup.py``), so the client is what is timed: it imports authlib's client itself,
so the ratio is always above 1; the figure shows what entur_oauth adds on top. Reported
only; ``startup`` holds the whole-process figures with targets.
"""

from __future__ import annotations

import subprocess
import sys

from _common import (
    AUTHLIB,
    BARE,
    ENTUR,
    PYTHON,
    FigureResult,
    Row,
    log,
    median,
    ms,
    table,
    x,
)

MODULES = {
    ENTUR: "from entur_oauth import EnturClient",
    BARE: "import httpx2",
    AUTHLIB: "import authlib.integrations.httpx_client",
}
_PROGRAM = "import time; t = time.perf_counter(); {0}; print(time.perf_counter() - t)"


def _time_import(module: str) -> float:
    out = subprocess.run(
        [PYTHON, "-c", _PROGRAM.format(module)], capture_output=True, check=True, text=True
    )
    return float(out.stdout)


def run(quick: bool = False) -> FigureResult:
    """Time each import in fresh processes, interleaved; report medians."""
    rounds = 5 if quick else 15
    log(f"import: {rounds} rounds x {len(MODULES)} fresh interpreters")
    names = list(MODULES)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(rounds + 1):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = _time_import(MODULES[name])
            if round_no:  # the first round fills the OS file cache
                samples[name].append(seconds)
    ratios = [a / b for a, b in zip(samples[ENTUR], samples[AUTHLIB], strict=True)]
    row = Row(
        figure="import time of EnturClient, fresh interpreter "
        "(vs import authlib.integrations.httpx_client)",
        this=ms(median(samples[ENTUR])),
        bare=ms(median(samples[BARE])),
        authlib=ms(median(samples[AUTHLIB])),
        ratio=x(median(ratios)),
        target="report",
        verdict="-",
    )
    return FigureResult(rows=[row])


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv).rows))
