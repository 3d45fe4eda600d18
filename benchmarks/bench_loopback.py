"""Per-request cost over a real socket: uvicorn on 127.0.0.1 in a separate process.

The server's token endpoint is the fake Entur's; API calls get a canned answer, so the
server costs as little as it can and the client's share is as large as it can be. Each
contender sends batches of sequential GETs over its keep-alive connection, interleaved
and repeated, on asyncio and on trio. Target: <= 1.02x bare httpx2.
"""

from __future__ import annotations

import sys
from functools import partial

import anyio
import httpx2
from _common import (
    API_PATH,
    AUTHLIB,
    BACKENDS,
    BARE,
    CONTENDERS,
    CONTROL,
    ENTUR,
    FigureResult,
    Row,
    fetch_token,
    interleave,
    log,
    make_client,
    median,
    paired_ratios,
    pooled,
    pooled_ratios,
    sequential,
    serve,
    table,
    us,
    verdict,
    x,
)

#: The baseline: bare httpx2 and its identical A/A control, averaged per round.
BASELINES = (BARE, CONTROL)
TARGET = 1.01


async def _measure(base_url: str, token: str, *, rounds: int, batch: int) -> dict[str, list[float]]:
    clients = {
        # One transport per client: each has its own connection pool, as in real use.
        name: make_client(
            name, transport=httpx2.AsyncHTTPTransport(), token=token, base_url=base_url
        )
        for name in (*CONTENDERS, CONTROL)
    }
    url = base_url + API_PATH
    try:
        return await interleave(
            {name: partial(sequential, client, url, batch) for name, client in clients.items()},
            rounds=rounds,
            warmup=2,
        )
    finally:
        for client in clients.values():
            await client.aclose()


def run(quick: bool = False) -> FigureResult:
    """Measure on both backends against one server process."""
    # Short batches, many rounds: drift on a shared machine cancels best between neighbours.
    rounds, batch = (15, 40) if quick else (80, 50)
    result = FigureResult(rows=[])
    with serve() as server:
        token = fetch_token(server.url)
        for backend in BACKENDS:
            log(f"loopback: {backend}, {rounds} rounds x {batch} requests x 4 clients")
            samples = anyio.run(
                lambda: _measure(server.url, token, rounds=rounds, batch=batch), backend=backend
            )
            ratio = median(pooled_ratios(samples, ENTUR, BASELINES))
            control = median(paired_ratios(samples, CONTROL, BARE))
            authlib_ratio = median(pooled_ratios(samples, AUTHLIB, BASELINES))
            result.rows.append(
                Row(
                    figure=f"per request, cached token, loopback uvicorn ({backend})",
                    this=us(median(samples[ENTUR])),
                    bare=f"{us(median(pooled(samples, BASELINES)))} (A/A control {x(control)})",
                    authlib=f"{us(median(samples[AUTHLIB]))} ({x(authlib_ratio)})",
                    ratio=x(ratio),
                    target=f"<= {TARGET:.2f}x",
                    verdict=verdict(ratio <= TARGET),
                )
            )
    return result


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv).rows))
