"""Simulated soak on the fake clock: 48 hours of traffic from 50 concurrent tasks with
24 h tokens, with the background refresher on; then the same with the token endpoint
failing for the first 10 minutes of every advisory window (asyncio and trio).

Time is simulated: the driver moves the fake clock in 30 s steps (letting the refresher
act at each), and at 410 random moments all 50 tasks make a request at once. The
figures come from the token manager's own counters and from the fake Entur, which
rejects expired tokens with 401 (so an expired token cannot pass unnoticed).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest

from entur_oauth import MemoryTokenStore, RefreshPolicy
from entur_oauth._manager import TokenManager
from entur_oauth.testing import FakeClock, FakeEntur

from ._faults import TOKEN_PATH, ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio

HOURS = 3600.0
DURATION = 48 * HOURS
TOKEN_LIFETIME = 24 * HOURS
TASKS = 50
BURSTS = 410  # 410 x 50 = 20,500 requests
STEP = 30.0  # simulated seconds per driver step
OUTAGE = 600.0  # the token endpoint fails this long from the start of each advisory window


@dataclass
class Soak:
    """What one simulated soak did."""

    requests: int = 0
    succeeded: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    token_requests: int = 0  # every token request sent
    tokens_issued: int = 0  # the successful ones
    failed_token_requests: int = 0
    served_while_failing: int = 0  # API requests answered 200 while renewals were failing
    rounds: int = 0
    waits: int = 0  # requests that waited for a fetch (no usable token at hand)
    valid_waits: int = 0  # ... while a token that had not expired was cached
    api_requests: int = 0  # more than `requests` would mean 401 retries

    def line(self, name: str, backend: str) -> str:
        """The figures as one JSON line, for the report."""
        figures = dict(vars(self), failures=dict(self.failures))
        return f"SOAK {name} [{backend}] {json.dumps(figures)}"


class AdvisoryOutage:
    """ASGI wrapper: token requests fail for the first OUTAGE seconds of each advisory
    window of ``manager``'s current token, with a rotation of transient faults."""

    FAULTS = (
        (503, b"", "text/plain", ()),
        (500, b"<html><body>Internal error</body></html>", "text/html", ()),
        (429, b'{"error":"too_many_requests"}', "application/json", ((b"retry-after", b"5"),)),
        (200, b'{"error":"temporarily_unavailable"}', "application/json", ()),
    )

    def __init__(self, app: ASGIApp, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock
        self.manager: TokenManager | None = None
        self.failed = 0
        #: The advisory window (by its start) in which a token request last failed.
        self._failing_window: float | None = None
        self.served_while_failing = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self.manager
        if scope["type"] == "http" and manager is not None:
            start = manager.advisory_at
            failing = start <= self.clock.monotonic() < start + OUTAGE
            if scope["path"] != TOKEN_PATH:
                if failing and self._failing_window == start:
                    # A renewal of this very token has failed and the endpoint still
                    # fails: an API request answered now was served by the old token.
                    send = self._count_served(send)
                await self.app(scope, receive, send)
                return
            if failing:
                self._failing_window = start
                status, body, content_type, extra = self.FAULTS[self.failed % len(self.FAULTS)]
                self.failed += 1
                headers = [(b"content-type", content_type.encode()), *extra]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _count_served(self, send: Send) -> Send:
        async def counting(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                self.served_while_failing += 1
            await send(message)

        return counting


async def _soak(*, outage: bool, background: bool, tasks: int = TASKS, seed: int = 7) -> Soak:
    clock = FakeClock()
    entur = FakeEntur(clock=clock, expires_in=TOKEN_LIFETIME)
    wrapper = AdvisoryOutage(entur, clock)
    app: ASGIApp = wrapper if outage else entur
    client = entur.client(
        transport=httpx2.ASGITransport(app=app),
        clock=clock,
        refresh=RefreshPolicy(background=background),
        token_store=MemoryTokenStore(),
    )
    manager = client._manager
    assert manager is not None
    # The refresh jitter (where each advisory window starts) comes from the manager's own
    # RNG, seeded from the OS; seeded here, a soak is the same run every time.
    manager._rng.seed(seed)
    rng = random.Random(seed)
    times = [0.0, *sorted(rng.uniform(0, DURATION) for _ in range(BURSTS - 1))]
    done = [0] * BURSTS
    burst_over = [anyio.Event() for _ in range(BURSTS)]
    result = Soak()

    async def user() -> None:
        for index, at in enumerate(times):
            await clock.sleep(at - clock.monotonic())
            result.requests += 1
            try:
                response = await client.get("/soak")
            except Exception as exc:
                result.failures[type(exc).__name__] += 1
            else:
                if response.status_code == 200:
                    result.succeeded += 1
                else:
                    result.failures[f"HTTP {response.status_code}"] += 1
            done[index] += 1
            if done[index] == tasks:
                burst_over[index].set()

    async with client:
        wrapper.manager = manager
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(user)
            for index, at in enumerate(times):
                while clock.monotonic() + STEP < at:
                    clock.advance(STEP)
                    for _ in range(10):  # let the refresher (if woken) get on with it
                        await anyio.lowlevel.checkpoint()
                clock.advance(at - clock.monotonic())
                with anyio.fail_after(60):
                    await burst_over[index].wait()
        result.token_requests = manager.fetches
        result.rounds = manager.rounds
        result.waits = manager.waits
        result.valid_waits = manager.valid_waits
    result.tokens_issued = entur.token_count
    result.failed_token_requests = wrapper.failed
    result.served_while_failing = wrapper.served_while_failing
    result.api_requests = len(entur.api_requests)
    assert clock.monotonic() <= DURATION
    return result


def _max_fetches() -> int:
    # One per token lifetime in the simulated span, plus the first.
    return int(DURATION // TOKEN_LIFETIME) + 1


async def test_soak_48_hours_background_refresher(anyio_backend: str) -> None:
    """48 h, 20,500 requests from 50 concurrent tasks, 24 h tokens, background refresher:
    every request succeeds, at most one fetch per token lifetime plus the first, and no
    request waits on the token endpoint while a valid token exists (the only waits are
    the 50 first requests, when there was no token yet)."""
    soak = await _soak(outage=False, background=True)
    print(soak.line("steady", anyio_backend))
    assert soak.requests == TASKS * BURSTS >= 20_000
    assert soak.succeeded == soak.requests
    assert not soak.failures
    assert soak.tokens_issued == soak.token_requests <= _max_fetches()
    assert soak.valid_waits == 0
    assert soak.waits == TASKS
    assert soak.api_requests == soak.requests  # no 401 and no retry anywhere


async def test_soak_48_hours_with_an_outage_in_every_advisory_window(
    anyio_backend: str,
) -> None:
    """The same 48 h with the token endpoint failing (503, HTML 500, 429 with
    Retry-After, 200 carrying temporarily_unavailable) for the first 10 minutes of each
    advisory window: every request still succeeds, none waits while a valid token
    exists, and the failed renewals are retried with back-off, not on every request."""
    soak = await _soak(outage=True, background=True)
    print(soak.line("outage", anyio_backend))
    assert soak.requests == TASKS * BURSTS >= 20_000
    assert soak.succeeded == soak.requests
    assert not soak.failures
    assert soak.tokens_issued <= _max_fetches()
    assert soak.failed_token_requests > 0  # the outage did happen
    assert soak.served_while_failing > 0  # ... and requests went on being served during it
    # Backed off: two windows of 10 minutes cost a few rounds each, not one per request.
    assert soak.failed_token_requests <= 2 * 8 * 3
    assert soak.valid_waits == 0
    assert soak.api_requests == soak.requests


async def test_soak_without_the_background_refresher_shows_the_waits(
    anyio_backend: str,
) -> None:
    """The control: without the background refresher some request must renew the token
    itself in the advisory window and so waits while a valid token exists; the counter
    the soaks rely on does see that."""
    soak = await _soak(outage=False, background=False, tasks=5)
    print(soak.line("control, no background refresher", anyio_backend))
    assert soak.succeeded == soak.requests
    assert soak.valid_waits >= 1
