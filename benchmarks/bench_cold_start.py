"""Cold start: 1,000 concurrent first requests on a new client.

The fake Entur runs in-process (its token endpoint answers at once, so the figure shows
the client's coordination cost, not network time). All 1,000 requests are released
together; each one's latency runs from that moment to its response. Compared with the
same burst on a client whose token was fetched beforehand, and with bare httpx2 holding a
static token. Raw authlib is given the same burst without a token. Target: 1 token
request per cold burst; the latencies are reported.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import anyio
import httpx2
from _common import (
    AUDIENCE,
    AUTHLIB,
    BACKENDS,
    BARE,
    CLIENT_ID,
    CLIENT_SECRET,
    ENTUR,
    FigureResult,
    Row,
    log,
    make_client,
    median,
    ms,
    percentile,
    table,
    verdict,
    x,
)

from entur_oauth import MemoryTokenStore
from entur_oauth.testing import FakeEntur

CONCURRENCY = 1000
# Not one of the fake's open paths: every request must carry a valid token.
PATH = "/partner/v1/departures"
BASE = "https://api.entur.test"


async def _burst(client: httpx2.AsyncClient, n: int) -> list[float]:
    """Release ``n`` concurrent GETs at once; return each one's latency in seconds."""
    latencies: list[float] = []
    go = anyio.Event()
    start = 0.0

    async def one() -> None:
        await go.wait()
        response = await client.get(BASE + PATH)
        latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        start = time.perf_counter()
        go.set()
    return latencies


async def _static_token(fake: FakeEntur) -> str:
    async with httpx2.AsyncClient(transport=fake.transport()) as client:
        response = await client.post(
            "https://partner.entur.test/oauth/token",
            json={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "audience": AUDIENCE,
            },
        )
        token: str = response.json()["access_token"]
        return token


async def _authlib_burst(fake: FakeEntur, n: int) -> str:
    """What raw authlib does with the same burst and no token: count the outcomes."""
    client = make_client(AUTHLIB, transport=fake.transport(), token="", base_url=BASE)
    client.token = None  # type: ignore[attr-defined]  # authlib's own attribute
    before = fake.token_count
    outcomes: dict[str, int] = {}

    async def one() -> None:
        try:
            response = await client.get(BASE + PATH)
            key = f"HTTP {response.status_code}"
        except Exception as exc:  # counting what happens is the point
            key = type(exc).__name__
        outcomes[key] = outcomes.get(key, 0) + 1

    async with client, anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    summary = ", ".join(f"{k} x{v:,}" for k, v in sorted(outcomes.items()))
    return f"{summary}; {fake.token_count - before} token requests"


async def _measure(reps: int, n: int) -> dict[str, object]:
    fake = FakeEntur(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, audience=AUDIENCE)
    static = await _static_token(fake)
    p50: dict[str, list[float]] = {"cold": [], "warm": [], "bare": []}
    p99: dict[str, list[float]] = {"cold": [], "warm": [], "bare": []}
    token_counts: list[int] = []

    async def cold() -> list[float]:
        # A store of its own: the process-wide default may hold a token from before.
        client = make_client(
            ENTUR,
            transport=fake.transport(),
            token="",
            base_url=BASE,
            token_store=MemoryTokenStore(),
        )
        async with client:
            before = fake.token_count
            latencies = await _burst(client, n)
            token_counts.append(fake.token_count - before)
        return latencies

    async def warm() -> list[float]:
        client = make_client(
            ENTUR,
            transport=fake.transport(),
            token="",
            base_url=BASE,
            token_store=MemoryTokenStore(),
        )
        async with client:
            await client.get_access_token()  # type: ignore[attr-defined]
            return await _burst(client, n)

    async def bare() -> list[float]:
        async with make_client(BARE, transport=fake.transport(), token=static, base_url=BASE) as c:
            return await _burst(c, n)

    runs: dict[str, Callable[[], object]] = {"cold": cold, "warm": warm, "bare": bare}
    names = list(runs)
    for rep in range(reps + 1):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            latencies: list[float] = await runs[name]()  # type: ignore[misc]
            if rep:  # the first rep warms caches and is dropped
                p50[name].append(percentile(latencies, 50))
                p99[name].append(percentile(latencies, 99))
    return {
        "p50": {k: median(v) for k, v in p50.items()},
        "p99": {k: median(v) for k, v in p99.items()},
        "token_counts": token_counts,
        "authlib": await _authlib_burst(fake, n),
    }


def run(quick: bool = False) -> FigureResult:
    """Measure on both backends."""
    reps = 3 if quick else 7
    rows: list[Row] = []
    for backend in BACKENDS:
        log(f"cold_start: {backend}, {reps} reps x {CONCURRENCY} concurrent requests")
        out = anyio.run(lambda: _measure(reps, CONCURRENCY), backend=backend)
        p50: dict[str, float] = out["p50"]  # type: ignore[assignment]
        p99: dict[str, float] = out["p99"]  # type: ignore[assignment]
        counts: list[int] = out["token_counts"]  # type: ignore[assignment]
        rows.append(
            Row(
                figure=f"cold start: token requests for {CONCURRENCY:,} concurrent first "
                f"requests ({backend}, {len(counts)} bursts)",
                this=" / ".join(str(c) for c in counts),
                authlib=str(out["authlib"]),
                ratio="-",
                target="1 per burst",
                verdict=verdict(all(c == 1 for c in counts)),
            )
        )
        rows.append(
            Row(
                figure=f"cold start latency p50 / p99, {CONCURRENCY:,} concurrent, vs the same "
                f"burst with a pre-fetched token ({backend})",
                this=f"cold {ms(p50['cold'])} / {ms(p99['cold'])}; "
                f"pre-fetched {ms(p50['warm'])} / {ms(p99['warm'])}",
                bare=f"{ms(p50['bare'])} / {ms(p99['bare'])} (static token)",
                authlib="fails, see above",
                ratio=f"p50 {x(p50['cold'] / p50['warm'])}, p99 {x(p99['cold'] / p99['warm'])}",
                target="report",
                verdict="-",
            )
        )
    return FigureResult(rows=rows)


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv).rows))
