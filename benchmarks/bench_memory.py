"""Memory: resident set growth between request 1,000 and request 100,000.

Each contender runs in a fresh process (so nothing else's memory is counted) and sends
sequential GETs through the in-process ``CannedTransport``; RSS is read after a full
garbage collection at both marks. The processes run two at a time (memory is not a
timing figure). Target: growth < 1 MiB for this library, on asyncio and trio.

Run as ``python bench_memory.py --worker CONTENDER BACKEND FIRST LAST`` it is one worker
and prints ``rss_first rss_last`` in bytes.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import anyio
from _common import (
    AUTHLIB,
    BARE,
    ENTUR,
    IN_PROCESS_BASE,
    PYTHON,
    CannedTransport,
    FigureResult,
    Row,
    log,
    make_client,
    rss_bytes,
    sequential,
    table,
    verdict,
)

TARGET = 1024 * 1024
URL = IN_PROCESS_BASE + "/journey-planner/v3/graphql"
#: (contender, backend) pairs, each in its own process; this library three times per backend
#: (the worst growth is reported), the baselines once.
RUNS = (
    *((ENTUR, backend) for backend in ("asyncio", "trio") for _ in range(3)),
    *((contender, backend) for contender in (BARE, AUTHLIB) for backend in ("asyncio", "trio")),
)


def worker(contender: str, backend: str, first: int, last: int) -> None:
    """Send ``last`` requests; print RSS after ``first`` and after ``last``."""

    async def main() -> tuple[int, int]:
        transport = CannedTransport()
        async with make_client(
            contender, transport=transport, token=transport.token, base_url=IN_PROCESS_BASE
        ) as client:
            await sequential(client, URL, first)
            gc.collect()
            rss_first = rss_bytes()
            await sequential(client, URL, last - first)
            gc.collect()
            return rss_first, rss_bytes()

    rss_first, rss_last = anyio.run(main, backend=backend)
    print(rss_first, rss_last)


def _measure(contender: str, backend: str, first: int, last: int) -> int:
    out = subprocess.run(
        [PYTHON, __file__, "--worker", contender, backend, str(first), str(last)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split()
    return int(out[1]) - int(out[0])


def _kib(growth: int) -> str:
    return f"{growth / 1024:+,.0f} KiB"


def run(quick: bool = False) -> FigureResult:
    """Measure every (contender, backend) in its own process, two at a time."""
    first, last = (1_000, 20_000) if quick else (1_000, 100_000)
    log(f"memory: RSS growth from request {first:,} to {last:,}, {len(RUNS)} processes")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [(run, pool.submit(_measure, *run, first, last)) for run in RUNS]
        growth: dict[tuple[str, str], list[int]] = {}
        for run_key, future in futures:
            growth.setdefault(run_key, []).append(future.result())
    rows = []
    for backend in ("asyncio", "trio"):
        runs = growth[(ENTUR, backend)]
        ours = max(runs)
        rows.append(
            Row(
                figure=f"memory: RSS growth from request {first:,} to {last:,}, in-process "
                f"transport ({backend}; worst of {len(runs)} processes)",
                this=" / ".join(_kib(value) for value in runs),
                bare=_kib(growth[(BARE, backend)][0]),
                authlib=_kib(growth[(AUTHLIB, backend)][0]),
                target="< 1,024 KiB",
                verdict=verdict(ours < TARGET),
            )
        )
    return FigureResult(rows=rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        contender, backend, first, last = sys.argv[2:6]
        worker(contender, backend, int(first), int(last))
    else:
        print(table(run(quick="--quick" in sys.argv).rows))
