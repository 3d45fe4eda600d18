"""Refresh under load: request latency while the token is renewed, against steady state.

The fake Entur runs in-process with a token endpoint that takes ``TOKEN_DELAY`` of real
time, and shares a ``FakeClock`` with the client, so the token's life passes in an
instant. Each round: ``WORKERS`` tasks send ``REQUESTS`` requests in steady state (p99
recorded); then the clock jumps into the advisory window (2 min before expiry: inside the
advisory window, outside the mandatory one) and the same load runs while the token is
renewed (p99 recorded). With ``RefreshPolicy()`` one request leads the renewal; with
``RefreshPolicy(background=True)`` a background task does. Target: window p99 <= 1.1x
steady p99 (median over rounds of the paired ratios).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import partial

import anyio
import httpx2
from _common import (
    API_BODY,
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    ENTUR,
    TOKEN_PATH,
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

from entur_oauth import EnturClient, MemoryTokenStore, RefreshPolicy
from entur_oauth.testing import FakeClock, FakeEntur

TARGET = 1.10
TOKEN_LIFETIME = 3600
TOKEN_DELAY = 0.05
#: Every API request waits this long on the "network", as real I/O does: the event loop
#: then interleaves the workers and the renewal the way it would with real sockets.
API_DELAY = 0.001
WORKERS = 8
_JSON = [(b"content-type", b"application/json")]
PATH = "/partner/v1/departures"
BASE = "https://api.entur.test"


class _Network(httpx2.AsyncBaseTransport):
    """A network that takes real time: ``TOKEN_DELAY`` to the fake Entur's token endpoint,
    ``API_DELAY`` to an API that answers from memory (so client CPU dominates the load).
    """

    def __init__(self, fake: FakeEntur) -> None:
        self._token_endpoint = httpx2.ASGITransport(app=fake)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer after the network delay."""
        if request.url.path == TOKEN_PATH:
            await anyio.sleep(TOKEN_DELAY)
            return await self._token_endpoint.handle_async_request(request)
        await anyio.sleep(API_DELAY)
        return httpx2.Response(200, headers=_JSON, content=API_BODY)


async def _load(client: httpx2.AsyncClient, requests: int) -> list[float]:
    """``WORKERS`` tasks share ``requests`` sequential GETs; return every latency."""
    latencies: list[float] = []
    per_worker = requests // WORKERS

    async def worker() -> None:
        get = client.get
        for _ in range(per_worker):
            start = time.perf_counter()
            response = await get(BASE + PATH)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")

    async with anyio.create_task_group() as tg:
        for _ in range(WORKERS):
            tg.start_soon(worker)
    return latencies


async def _measure(*, background: bool, rounds: int, requests: int) -> _Outcome:
    clock = FakeClock()
    fake = FakeEntur(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        audience=AUDIENCE,
        expires_in=TOKEN_LIFETIME,
        clock=clock,
    )
    client = make_client(
        ENTUR,
        transport=_Network(fake),
        token="",
        base_url=BASE,
        clock=clock,
        refresh=RefreshPolicy(background=background),
        token_store=MemoryTokenStore(),
    )
    assert isinstance(client, EnturClient)
    steady: list[list[float]] = []
    window: list[list[float]] = []
    refreshes = waited = 0
    async with client:
        await client.get_access_token()
        await _load(client, requests)  # warm-up
        manager = client._manager  # the benchmark reads the manager's counters
        assert manager is not None
        for _ in range(rounds):
            steady.append(await _load(client, requests))
            token = manager.current
            assert token is not None
            before, waits = fake.token_count, manager.waits
            # 2 minutes before expiry: in the advisory window, not yet in the mandatory one.
            clock.advance(token.expires_at - clock.monotonic() - 120)
            window.append(await _load(client, requests))
            refreshes += fake.token_count - before
            waited += manager.waits - waits
            if manager.current is token:
                raise RuntimeError("the token was not renewed during the window")
    return _Outcome(steady, window, refreshes, waited)


@dataclass(frozen=True)
class _Outcome:
    steady: list[list[float]]  # latencies, one list per round
    window: list[list[float]]
    refreshes: int
    waited: int  # requests that waited for a token (the manager's count)

    def p99(self, phase: list[list[float]]) -> float:
        return median([percentile(latencies, 99) for latencies in phase])

    def ratio(self) -> float:
        return median(
            [
                percentile(w, 99) / percentile(s, 99)
                for w, s in zip(self.window, self.steady, strict=True)
            ]
        )


def run(quick: bool = False) -> FigureResult:
    """Measure with and without background refresh, on both backends."""
    rounds, requests = (3, 1000) if quick else (7, 1600)
    rows: list[Row] = []
    for backend in ("asyncio", "trio"):
        for background in (False, True):
            mode = f"background={background}"
            log(f"refresh: {backend}, {mode}, {rounds} rounds x 2 x {requests} requests")
            out = anyio.run(
                partial(_measure, background=background, rounds=rounds, requests=requests),
                backend=backend,
            )
            ratio = out.ratio()
            slowest = max(max(latencies) for latencies in out.window)
            rows.append(
                Row(
                    figure=f"refresh under load: p99 in the refresh window vs steady p99 "
                    f"({WORKERS} workers, {API_DELAY * 1e3:.0f} ms API, "
                    f"{TOKEN_DELAY * 1e3:.0f} ms token endpoint; {backend}, {mode})",
                    this=f"window {ms(out.p99(out.window))}, steady {ms(out.p99(out.steady))}; "
                    f"{out.refreshes} renewals in {rounds} windows, {out.waited} requests "
                    f"waited, slowest {ms(slowest)}",
                    ratio=x(ratio),
                    target=f"<= {TARGET:.1f}x",
                    verdict=verdict(ratio <= TARGET),
                )
            )
    return FigureResult(rows=rows)


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv).rows))
