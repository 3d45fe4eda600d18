"""Refresh policy: the advisory and mandatory windows, jitter, failed renewals, the
background refresher, and how expiry is computed (asyncio and trio, on a fake clock)."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from entur_oauth import (
    EnturClient,
    FileTokenStore,
    InvalidCredentialsError,
    MemoryTokenStore,
    RefreshPolicy,
    RetryPolicy,
    TokenRequestError,
    TokenStore,
    UnauthorizedError,
)
from entur_oauth._codec import TokenCodec
from entur_oauth._manager import TokenManager
from entur_oauth._secrets import Secret
from entur_oauth._token import MAX_LIFETIME, Token
from entur_oauth.testing import FakeClock, FakeEntur, ScriptedResponse

from ._faults import FaultTransport, TokenGate, eventually, with_fields

pytestmark = pytest.mark.anyio

DAY = 86400.0
ONE_TRY = RetryPolicy(attempts=1)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says."""
    return FakeClock()


@pytest.fixture
def entur(clock: FakeClock) -> FakeEntur:
    """The fake Entur issuing 24 h tokens on the test's clock."""
    return FakeEntur(clock=clock)


def _manager(client: EnturClient) -> TokenManager:
    manager = client._manager
    assert manager is not None
    return manager


@asynccontextmanager
async def _client(
    entur: FakeEntur,
    clock: FakeClock,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[EnturClient, TokenManager]]:
    client = entur.client(
        transport=transport or entur.transport(),
        clock=clock,
        token_store=MemoryTokenStore(),
        **kwargs,
    )
    async with client:
        yield client, _manager(client)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "entur_oauth" and r.levelno >= logging.WARNING]


# -- the windows ------------------------------------------------------------------------


def test_default_windows_for_entur_tokens() -> None:
    """A 24 h token: advisory window the last 2.4 h (up to 25% earlier with jitter),
    mandatory window the last 60 s."""
    no_jitter = RefreshPolicy(jitter=0)
    assert no_jitter.windows(DAY, random.Random(0)) == (8640, 60)
    rng = random.Random(0)
    for _ in range(200):
        advisory, mandatory = RefreshPolicy().windows(DAY, rng)
        assert 8640 <= advisory <= 8640 * 1.25
        assert mandatory == 60


@pytest.mark.parametrize(
    ("lifetime", "advisory_range", "mandatory"),
    [
        (3600, (360, 450), 60),  # 10% of the life, +25% jitter
        (1800, (300, 375), 60),  # ... but at least 5 minutes
        (600, (300, 375), 60),  # ... but never more than half the life (+ jitter)
        (100, (50, 62.5), 25),  # mandatory at most a quarter of the life
        (10, (5, 6.25), 2.5),  # the shortest life a token is given
    ],
)
def test_windows_scale_with_the_lifetime(
    lifetime: float, advisory_range: tuple[float, float], mandatory: float
) -> None:
    """Short-lived tokens get windows that fit inside their life, advisory before
    mandatory, so a token is never renewed only after it expired."""
    rng = random.Random(0)
    for _ in range(100):
        advisory, got_mandatory = RefreshPolicy().windows(lifetime, rng)
        assert advisory_range[0] <= advisory <= advisory_range[1]
        assert got_mandatory == mandatory
        assert got_mandatory <= advisory < lifetime


def test_jitter_spreads_a_fleet_over_the_window() -> None:
    """200 clients that got their tokens at the same second start renewing at 200
    different moments spread over the jitter range (about 36 minutes for 24 h tokens)."""
    starts = [RefreshPolicy().windows(DAY, random.Random(seed))[0] for seed in range(200)]
    assert len(set(starts)) == 200
    assert max(starts) - min(starts) > 0.8 * 2160


async def test_no_renewal_before_the_advisory_window(entur: FakeEntur, clock: FakeClock) -> None:
    """Up to the advisory point the cached token is used with no token request at all."""
    async with _client(entur, clock) as (client, manager):
        await client.get("/x")
        clock.advance(manager.advisory_at - clock.monotonic() - 1)
        for _ in range(20):
            assert (await client.get("/x")).status_code == 200
    assert entur.token_count == 1


async def test_advisory_window_one_task_renews_while_the_others_go_on(
    clock: FakeClock,
) -> None:
    """In the advisory window the first request renews; while that renewal hangs, 30
    other requests complete at once with the still-valid token; then the new token
    takes over. Exactly one extra token request."""
    entur = FakeEntur(clock=clock)
    gate = TokenGate(entur)
    async with _client(entur, clock, transport=httpx2.ASGITransport(app=gate)) as (
        client,
        manager,
    ):
        await client.get("/x")
        old = manager.current
        assert old is not None
        clock.advance(manager.advisory_at - clock.monotonic() + 1)
        gate.close()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, "/x")  # the renewer, held at the gate
            await eventually(lambda: gate.arrived == 2)
            with anyio.fail_after(5):
                for _ in range(30):
                    assert (await client.get("/x")).status_code == 200
            assert manager.current is old
            gate.open()
        assert manager.current is not old
        assert entur.token_count == 2
        # The renewer waited; nobody else did.
        assert (manager.waits, manager.valid_waits) == (2, 1)
    old_auth = f"Bearer {old.access_token}"
    # The first request and the 30 others; the renewer's own request used the new token.
    assert sum(r.headers["authorization"] == old_auth for r in entur.api_requests) == 31


async def test_failed_advisory_renewal_warns_once_backs_off_and_keeps_the_token(
    entur: FakeEntur, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal that fails in the advisory window: one warning, the old token keeps
    serving, the next try waits >= 30 s (not every call), later failures are DEBUG only,
    and once the endpoint recovers the token is renewed."""
    caplog.set_level(logging.DEBUG, logger="entur_oauth")
    async with _client(entur, clock, retry=ONE_TRY) as (client, manager):
        await client.get("/x")
        old = manager.current
        clock.advance(manager.advisory_at - clock.monotonic() + 1)
        entur.fail_token(503, times=1000)
        for _ in range(10):
            assert (await client.get("/x")).status_code == 200
        assert entur.token_count == 2
        assert manager.current is old
        assert len(_warnings(caplog)) == 1
        assert "keeps serving" in _warnings(caplog)[0].getMessage()
        clock.advance(29)
        assert (await client.get("/x")).status_code == 200
        assert entur.token_count == 2  # still backing off
        clock.advance(8)  # 37 s: past 30 s * up to 1.2
        assert (await client.get("/x")).status_code == 200
        assert entur.token_count == 3
        clock.advance(59)
        await client.get("/x")
        assert entur.token_count == 3  # the second back-off is >= 60 s
        clock.advance(15)
        await client.get("/x")
        assert entur.token_count == 4
        assert len(_warnings(caplog)) == 1
        entur.token_script.clear()
        clock.advance(145)  # the third back-off is at most 144 s
        await client.get("/x")
        assert entur.token_count == 5
        assert manager.current is not old


async def test_failed_renewal_honours_retry_after_for_the_next_try(
    entur: FakeEntur, clock: FakeClock
) -> None:
    """A 429 with Retry-After: 300 in the advisory window is not tried again for 300 s,
    although the failure back-off alone would allow it after 30 s."""
    async with _client(entur, clock, retry=ONE_TRY) as (client, manager):
        await client.get("/x")
        clock.advance(manager.advisory_at - clock.monotonic() + 1)
        entur.fail_token(ScriptedResponse(429, headers={"retry-after": "300"}), times=10)
        await client.get("/x")
        clock.advance(299)
        await client.get("/x")
        assert entur.token_count == 2
        clock.advance(2)
        await client.get("/x")
        assert entur.token_count == 3


async def test_failure_backoff_never_reaches_past_the_mandatory_point(
    entur: FakeEntur, clock: FakeClock
) -> None:
    """However long the back-off, one more try is made when the mandatory window opens."""
    policy = RefreshPolicy(failure_backoff_min=50_000, failure_backoff_max=50_000)
    async with _client(entur, clock, retry=ONE_TRY, refresh=policy) as (client, manager):
        await client.get("/x")
        clock.advance(manager.advisory_at - clock.monotonic() + 1)
        entur.fail_token(503)
        await client.get("/x")
        assert manager._next_try_at == manager.mandatory_at


async def test_mandatory_window_waits_for_the_new_token(entur: FakeEntur, clock: FakeClock) -> None:
    """In the last 60 s a request does not use the old token: it waits for the new one."""
    async with _client(entur, clock) as (client, manager):
        await client.get("/x")
        old = manager.current
        assert old is not None
        clock.advance(manager.mandatory_at - clock.monotonic() + 1)
        assert (await client.get("/x")).status_code == 200
        assert manager.current is not old
        assert entur.api_requests[-1].headers["authorization"] != f"Bearer {old.access_token}"
        assert entur.token_count == 2


async def test_mandatory_window_raises_when_the_renewal_fails(
    entur: FakeEntur, clock: FakeClock
) -> None:
    """Past the mandatory point a failed renewal is raised (the old token is about to
    expire); when the endpoint is back the next request renews."""
    async with _client(entur, clock, retry=ONE_TRY) as (client, manager):
        await client.get("/x")
        clock.advance(manager.mandatory_at - clock.monotonic() + 1)
        entur.fail_token(503)
        with pytest.raises(TokenRequestError):
            await client.get("/x")
        assert (await client.get("/x")).status_code == 200
        assert entur.token_count == 3


async def test_expired_token_is_never_sent(entur: FakeEntur, clock: FakeClock) -> None:
    """A day later the old token is gone: the request fetches, the API sees a valid one."""
    async with _client(entur, clock) as (client, _):
        await client.get("/x")
        clock.advance(DAY + 1)
        assert (await client.get("/x")).status_code == 200
    assert entur.token_count == 2


# -- the background refresher ------------------------------------------------------------


async def test_background_refresher_renews_before_any_request_needs_it(
    entur: FakeEntur, clock: FakeClock
) -> None:
    """With background=True the advisory window is met by the refresher: the token is
    renewed with no request involved, and the next requests never wait."""
    async with _client(entur, clock, refresh=RefreshPolicy(background=True)) as (
        client,
        manager,
    ):
        assert entur.token_count == 0  # opening the client fetches nothing
        await client.get("/x")
        old = manager.current
        clock.advance(manager.advisory_at - clock.monotonic() + 1)
        await eventually(lambda: manager.current is not old)
        assert entur.token_count == 2
        waits = manager.waits
        for _ in range(10):
            await client.get("/x")
        assert manager.waits == waits
        assert manager.valid_waits == 0


async def test_background_refresher_survives_failures_and_warns_once(
    entur: FakeEntur, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The refresher meets a failing endpoint: one warning, back-off, requests keep the
    old token without waiting, and it renews once the endpoint is back."""
    caplog.set_level(logging.DEBUG, logger="entur_oauth")
    policy = RefreshPolicy(background=True)
    async with _client(entur, clock, refresh=policy, retry=ONE_TRY) as (client, manager):
        await client.get("/x")
        old = manager.current
        entur.fail_token(503, times=3)
        clock.advance(manager.advisory_at - clock.monotonic() + 1)
        await eventually(lambda: entur.token_count == 2)
        for expected in (3, 4, 5):
            # Once the refresher naps again, move past its back-off (at most 720 s).
            await eventually(lambda: manager._flight is None and clock.next_deadline() is not None)
            clock.advance(720)
            await eventually(lambda: entur.token_count == expected)  # noqa: B023
            assert (await client.get("/x")).status_code == 200
        await eventually(lambda: manager.current is not old)
        assert entur.token_count == 5
        assert len(_warnings(caplog)) == 1
        assert manager.valid_waits == 0


async def test_background_refresher_wakes_for_a_shorter_lived_replacement(
    entur: FakeEntur, clock: FakeClock
) -> None:
    """When a 401 replaces the token with one that lives 10 minutes, the refresher (which
    planned to wake in ~21 h) wakes and renews that one in time: no request waits."""
    async with _client(entur, clock, refresh=RefreshPolicy(background=True)) as (
        client,
        manager,
    ):
        await client.get("/x")
        entur.expires_in = 600
        entur.revoke_all()
        assert (await client.get("/x")).status_code == 200  # 401, then a 10-minute token
        short = manager.current
        assert short is not None
        assert short.lifetime == 600
        clock.advance(manager.advisory_at - clock.monotonic() + 1)
        await eventually(lambda: manager.current is not short)
        assert entur.token_count == 3
        assert manager.valid_waits == 0


async def test_background_refresher_in_the_users_task_group(
    entur: FakeEntur, clock: FakeClock
) -> None:
    """task_group= runs the refresher in the user's own task group (structured
    concurrency) and it renews as usual."""
    async with anyio.create_task_group() as tg:
        client = entur.client(clock=clock, refresh=RefreshPolicy(background=True), task_group=tg)
        async with client:
            manager = _manager(client)
            assert manager.background_running
            await client.get("/x")
            old = manager.current
            clock.advance(manager.advisory_at - clock.monotonic() + 1)
            await eventually(lambda: manager.current is not old)
        tg.cancel_scope.cancel()
    assert entur.token_count == 2


async def test_closing_the_client_stops_its_refresher_in_the_users_task_group(
    entur: FakeEntur, clock: FakeClock
) -> None:
    """Leaving ``async with client`` stops the refresher, so the user's task group can end
    instead of waiting for it forever."""
    async with anyio.create_task_group() as tg:
        client = entur.client(clock=clock, refresh=RefreshPolicy(background=True), task_group=tg)
        async with client:
            await client.get("/x")
        manager = _manager(client)
        with anyio.move_on_after(2):
            while manager.background_running:  # noqa: ASYNC110 - a flag, no event
                await anyio.sleep(0.001)
        stopped = not manager.background_running
        tg.cancel_scope.cancel()  # end the test rather than hang when it is not stopped
    assert stopped


async def test_stop_ends_the_refresher(clock: FakeClock) -> None:
    """TokenManager.stop() ends the refresher that start() began, however it sleeps."""

    async def fetch() -> Token:
        raise AssertionError("not called")

    manager = TokenManager(
        fetch, clock=clock, refresh=RefreshPolicy(background=True), retry=RetryPolicy()
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await manager.start(tg)
            assert manager.background_running
            manager.stop()
    assert not manager.background_running


async def test_background_without_async_with_warns_once_what_to_do(
    entur: FakeEntur, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """background=True (even with task_group=) on a client never entered with ``async
    with``: no refresher runs. The first fetch says so in one WARNING naming the fix;
    later fetches do not repeat it."""
    caplog.set_level(logging.DEBUG, logger="entur_oauth")
    async with anyio.create_task_group() as tg:
        client = entur.client(clock=clock, refresh=RefreshPolicy(background=True), task_group=tg)
        try:
            manager = _manager(client)
            assert (await client.get("/x")).status_code == 200
            assert not manager.background_running
            clock.advance(manager.advisory_at - clock.monotonic() + 1)
            assert (await client.get("/x")).status_code == 200  # renewed by the request
            assert entur.token_count == 2
        finally:
            await client.aclose()
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "no background refresher runs" in warnings[0].getMessage()
    assert "async with client" in warnings[0].getMessage()


async def test_background_with_async_with_does_not_warn(
    entur: FakeEntur, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``async with client`` the refresher runs before the first fetch: no warning."""
    caplog.set_level(logging.DEBUG, logger="entur_oauth")
    async with _client(entur, clock, refresh=RefreshPolicy(background=True)) as (client, _):
        assert (await client.get("/x")).status_code == 200
    assert _warnings(caplog) == []


# -- the decisions are logged at DEBUG --------------------------------------------------


def _debug(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "entur_oauth" and r.levelno == logging.DEBUG and text in r.getMessage()
    ]


async def test_each_decision_is_logged_at_debug_with_fingerprints_never_tokens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fetch, retry (with its delay), entering the advisory window, back-off after a failed
    renewal, invalidation after an API 401 and a credentials-cache hit each leave a DEBUG
    record on "entur_oauth"; those about a token name its fingerprint, none its text."""
    caplog.set_level(logging.DEBUG, logger="entur_oauth")
    clock = FakeClock(autojump=True)
    entur = FakeEntur(clock=clock)
    transport = FaultTransport(entur.transport())
    retry = RetryPolicy(attempts=2)
    async with _client(entur, clock, transport=transport, retry=retry) as (client, manager):
        # A fetch, and a retry after one 503.
        entur.fail_token(503)
        await client.get("/x")
        first = manager.current
        assert first is not None
        assert _debug(caplog, "fetching a token (attempt 1 of 2)")
        assert _debug(caplog, "fetching a token (attempt 2 of 2)")
        (retried,) = _debug(caplog, "retry 2 in ")
        assert re.search(r"retry 2 in \d+\.\d\d s", retried)
        assert _debug(caplog, f"fetched token {first.fingerprint}")
        # The advisory window: a renewal that fails, then its back-off.
        clock.advance(manager.advisory_at - clock.monotonic() + 1)
        entur.fail_token(503, times=2)
        await client.get("/x")
        assert manager.current is first
        assert _debug(caplog, f"token {first.fingerprint} is in its refresh window")
        (backoff,) = _debug(caplog, f"renewal of token {first.fingerprint} failed 1 time")
        assert re.search(r"backing off \d+\.\d s", backoff)
        clock.advance(40)  # past the first back-off (30 s * up to 1.2)
        await client.get("/x")
        second = manager.current
        assert second is not None
        assert second is not first
        assert _debug(caplog, f"fetched token {second.fingerprint}")
        # The API rejects the token: it is dropped; the retry's fetch meets a rejected
        # client, and the next call is answered from the credentials-error cache.
        entur.revoke_all()
        entur.fail_token(
            ScriptedResponse(401, json={"error": "invalid_client", "error_description": "no"})
        )
        with pytest.raises(InvalidCredentialsError):
            await client.get("/x")
        assert _debug(caplog, f"token {second.fingerprint} rejected by the API")
        requests = transport.token_requests
        with pytest.raises(InvalidCredentialsError):
            await client.get("/x")
        assert transport.token_requests == requests
        assert _debug(caplog, "not asking again")
    assert len(transport.tokens_seen) == 2
    for record in caplog.records:
        for token in transport.tokens_seen:
            assert token not in record.getMessage()


# -- expiry --------------------------------------------------------------------------------


async def test_expiry_counts_from_just_before_the_request(
    entur: FakeEntur, clock: FakeClock
) -> None:
    """A token request that takes 100 s gives a token expiring 24 h after it was *sent*:
    the network time counts against the token, never in its favour."""

    class Slow(FaultTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            if request.url.path == entur.TOKEN_PATH:
                clock.advance(100)
            return await super().handle_async_request(request)

    async with _client(entur, clock, transport=Slow(entur.transport())) as (client, manager):
        await client.get_access_token()
        token = manager.current
        assert token is not None
        assert token.expires_at == pytest.approx(DAY)


@pytest.mark.parametrize(("expires_in", "lifetime"), [(999_999, DAY), (3600, 3600)])
async def test_expiry_is_the_earlier_of_expires_in_and_exp(
    entur: FakeEntur, clock: FakeClock, expires_in: float, lifetime: float
) -> None:
    """expires_in longer than the JWT's exp: exp wins; shorter: expires_in wins."""
    transport = FaultTransport(entur.transport())
    transport.add(with_fields({"expires_in": expires_in}, transport))
    async with _client(entur, clock, transport=transport) as (client, manager):
        await client.get_access_token()
        assert manager.current is not None
        assert manager.current.lifetime == pytest.approx(lifetime, abs=1)


@pytest.mark.parametrize("jump", [-2 * DAY, -3600, 3600, 2 * DAY])
async def test_wall_clock_jumps_change_nothing(
    entur: FakeEntur, clock: FakeClock, jump: float
) -> None:
    """Expiry runs on the monotonic clock: NTP or a user moving the wall clock a day
    either way neither expires the token early nor keeps it past its time."""
    async with _client(entur, clock) as (client, manager):
        first = await client.get_access_token()
        clock.jump_wall_clock(jump)
        clock.advance(3600)
        assert await client.get_access_token() == first
        assert entur.token_count == 1
        clock.advance(manager.mandatory_at - clock.monotonic() + 1)
        assert await client.get_access_token() != first
        assert entur.token_count == 2


def _opaque_endpoint(expires_in: object, missing: bool) -> tuple[httpx2.MockTransport, list[int]]:
    issued = [0]

    def handle(request: httpx2.Request) -> httpx2.Response:
        if request.url.path != FakeEntur.TOKEN_PATH:
            return httpx2.Response(200, json={"ok": True})
        issued[0] += 1
        body: dict[str, object] = {"access_token": f"opaque{issued[0]}", "token_type": "Bearer"}
        if not missing:
            body["expires_in"] = expires_in
        return httpx2.Response(200, json=body)

    return httpx2.MockTransport(handle), issued


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (0, 10),
        (-3600, 10),
        ("soon", 300),
        ("7200", 7200),
        (2.5, 10),
        (1e12, MAX_LIFETIME),
        ("NaN", 300),
        (None, 300),
        ("missing", 300),
    ],
)
async def test_absurd_expires_in_never_crashes_or_caches_forever(
    clock: FakeClock, expires_in: object, lifetime: float
) -> None:
    """0, negative, strings, floats, huge and missing expires_in (opaque tokens, no JWT
    exp to fall back on): 50 concurrent requests share one fetch, and the token is
    renewed within its clamped lifetime (10 s to 7 days; 300 s when unknown)."""
    transport, issued = _opaque_endpoint(expires_in, missing=expires_in == "missing")
    fake = FakeEntur(clock=clock)
    async with _client(fake, clock, transport=transport) as (client, manager):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(client.get, "/x")
        assert issued[0] == 1
        token = manager.current
        assert token is not None
        assert token.lifetime == pytest.approx(lifetime)
        clock.advance(lifetime)
        await client.get("/x")
        assert issued[0] == 2


# -- a rejected token ----------------------------------------------------------------------


async def test_invalidate_drops_only_the_token_still_cached(clock: FakeClock) -> None:
    """A 401 for a token another task already replaced does not discard the new one."""
    tokens = iter(["first", "second", "third"])

    async def fetch() -> Token:
        now = clock.monotonic()
        return Token(
            access_token=next(tokens), expires_at=now + DAY, expires_at_wall=DAY, lifetime=DAY
        )

    manager = TokenManager(fetch, clock=clock, refresh=RefreshPolicy(), retry=RetryPolicy())
    first = await manager.token()
    await manager.invalidate(first)
    second = await manager.token()
    assert second.access_token == "second"
    await manager.invalidate(first)  # late 401 for the old token
    assert manager.current is second
    assert (await manager.token()) is second


async def test_concurrent_401s_share_one_new_token(entur: FakeEntur, clock: FakeClock) -> None:
    """All tokens revoked under 40 concurrent requests: each is retried once, and the 40
    retries share a single new token."""
    async with _client(entur, clock) as (client, _):
        await client.get("/x")
        entur.revoke_all()
        statuses: list[int] = []

        async def call() -> None:
            statuses.append((await client.get("/x")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(call)
    assert statuses == [200] * 40
    assert entur.token_count == 2


class _YieldingStore(MemoryTokenStore):
    """A memory store whose reads and deletes yield, as file and Redis stores do."""

    async def get(self, key: str) -> bytes | None:
        await anyio.sleep(0.01)
        return await super().get(key)

    async def delete(self, key: str, *, expected: bytes | None = None) -> None:
        await anyio.sleep(0.01)
        await super().delete(key, expected=expected)


@pytest.mark.parametrize("kind", ["yielding", "file"])
async def test_two_racing_401s_never_reinstall_the_rejected_token(
    entur_fake: FakeEntur, entur_clock: FakeClock, tmp_path: Path, kind: str
) -> None:
    """Two requests rejected at once: neither takes the rejected token back from the store."""
    store: TokenStore = (
        _YieldingStore() if kind == "yielding" else FileTokenStore(tmp_path / "tokens.json")
    )
    async with entur_fake.client(clock=entur_clock, token_store=store) as client:
        first = await client.get_access_token()
        entur_fake.revoke_all()
        entur_fake.delay_api(0.02, times=2)  # both requests in flight with the revoked token
        statuses: list[int] = []

        async def call() -> None:
            statuses.append((await client.get("/x")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(call)
        assert statuses == [200, 200]
        assert await client.get_access_token() != first
    assert entur_fake.token_count == 2


# -- the 401-storm guard (issue 11 item 4) -----------------------------------------------


def _counting_fetch(clock: FakeClock, fetched_at: list[float]) -> Any:
    """A token endpoint that issues a new 24 h token per request and records when."""

    async def fetch() -> Token:
        now = clock.monotonic()
        fetched_at.append(now)
        return Token(
            access_token=f"token-{len(fetched_at)}",
            expires_at=now + DAY,
            expires_at_wall=clock.time() + DAY,
            lifetime=DAY,
        )

    return fetch


async def _call_rejected_api(manager: TokenManager) -> bool:
    """One API call the API answers 401, as the client makes it; True if it was retried."""
    token = await manager.token()
    if not await manager.invalidate(token):
        return False
    await manager.token()  # the retry with a new token, rejected too: no second retry
    return True


def _most_in_any_window(times: list[float], width: float) -> int:
    return max(sum(1 for t in times if start <= t < start + width) for start in times)


async def test_always_401_api_costs_at_most_two_token_requests_per_ttl(clock: FakeClock) -> None:
    """1,000 calls spread over 5 minutes against an API that rejects every token: at most
    2 token requests in any 30 s (credentials_error_ttl), instead of one per call. Calls
    within the ttl of the rejected replacement are not retried at all."""
    fetched_at: list[float] = []
    manager = TokenManager(
        _counting_fetch(clock, fetched_at),
        clock=clock,
        refresh=RefreshPolicy(),
        retry=RetryPolicy(credentials_error_ttl=30),
    )
    retried = 0
    for _ in range(1000):
        retried += await _call_rejected_api(manager)
        clock.advance(0.3)
    assert _most_in_any_window(fetched_at, 30.0) <= 2
    assert len(fetched_at) <= 2 + 300 / 30
    assert retried == len(fetched_at) - 1  # each retry cost one request, nothing else did


async def test_concurrent_calls_to_an_always_401_api_share_the_guard(clock: FakeClock) -> None:
    """1,000 concurrent calls against an API that rejects every token: 2 token requests
    (the first token and one replacement); a later burst within the ttl makes none, one
    after it makes one more."""
    fetched_at: list[float] = []
    manager = TokenManager(
        _counting_fetch(clock, fetched_at),
        clock=clock,
        refresh=RefreshPolicy(),
        retry=RetryPolicy(credentials_error_ttl=30),
    )

    async def burst() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(_call_rejected_api, manager)

    await burst()
    assert len(fetched_at) == 2
    clock.advance(29)
    await burst()
    assert len(fetched_at) == 2
    clock.advance(1)
    await burst()
    assert fetched_at == [0.0, 0.0, 30.0]


async def test_single_revocation_costs_exactly_one_refetch(clock: FakeClock) -> None:
    """A token revoked once is replaced by exactly one request, and the replacement then
    serves every call; the guard holds only a replacement that is rejected again."""
    fetched_at: list[float] = []
    manager = TokenManager(
        _counting_fetch(clock, fetched_at),
        clock=clock,
        refresh=RefreshPolicy(),
        retry=RetryPolicy(credentials_error_ttl=30),
    )
    first = await manager.token()
    clock.advance(5)
    assert await manager.invalidate(first)
    second = await manager.token()
    for _ in range(100):
        assert await manager.token() is second
    assert len(fetched_at) == 2
    # Revoked again long after it arrived (an operator rotated the client twice): one
    # more request, as for the first revocation.
    clock.advance(31)
    assert await manager.invalidate(second)
    assert (await manager.token()).access_token == "token-3"
    assert len(fetched_at) == 3


async def test_guard_keeps_only_a_rejected_replacement(clock: FakeClock) -> None:
    """Tokens that did not replace a rejected one (the first, a renewal in the advisory
    window, a seeded one) are dropped on their first 401 however young they are."""
    fetched_at: list[float] = []
    manager = TokenManager(
        _counting_fetch(clock, fetched_at),
        clock=clock,
        refresh=RefreshPolicy(jitter=0),
        retry=RetryPolicy(credentials_error_ttl=30),
    )
    replacement = await manager.token()
    assert await manager.invalidate(replacement)
    replacement = await manager.token()
    assert not await manager.invalidate(replacement)  # rejected again at once: kept
    clock.advance(manager.advisory_at - clock.monotonic())
    renewed = await manager.token()  # renewed in the advisory window: a fresh start
    assert renewed is not replacement
    assert await manager.invalidate(renewed)
    seeded = Token(access_token="seeded", expires_at=DAY, expires_at_wall=DAY, lifetime=DAY)
    manager.seed(seeded)
    assert await manager.invalidate(seeded)


async def test_always_401_api_through_the_client_costs_two_token_requests(
    entur_fake: FakeEntur, entur_clock: FakeClock
) -> None:
    """End to end: 1,000 calls through EnturClient to an endpoint that answers 401 with
    any token raise UnauthorizedError and make 2 token requests per 30 s; only the first
    call is retried (1,001 API requests), the others fail without asking for a token."""
    entur_fake.route("/denied", status=401)
    async with entur_fake.client(
        clock=entur_clock, retry=RetryPolicy(credentials_error_ttl=30)
    ) as client:
        for _ in range(1000):
            with pytest.raises(UnauthorizedError):
                await client.get("/denied")
        assert entur_fake.token_count == 2
        assert len(entur_fake.api_requests) == 1001
        entur_clock.advance(30)
        for _ in range(1000):
            with pytest.raises(UnauthorizedError):
                await client.get("/denied")
        assert entur_fake.token_count == 3
        assert len(entur_fake.api_requests) == 2002


async def test_revocation_through_the_client_costs_one_refetch(
    entur_fake: FakeEntur, entur_clock: FakeClock
) -> None:
    """End to end: every token revoked once; the next call succeeds after one re-fetch,
    and so do the 100 after it."""
    async with entur_fake.client(clock=entur_clock) as client:
        assert (await client.get("/x")).status_code == 200
        entur_fake.revoke_all()
        for _ in range(101):
            assert (await client.get("/x")).status_code == 200
    assert entur_fake.token_count == 2


# -- the manager interface ---------------------------------------------------------------


def _manager_on(clock: FakeClock, fetched_at: list[float], **kwargs: Any) -> TokenManager:
    return TokenManager(
        _counting_fetch(clock, fetched_at),
        clock=clock,
        refresh=RefreshPolicy(),
        retry=RetryPolicy(),
        **kwargs,
    )


async def test_renew_forces_a_new_token_that_every_later_call_gets(clock: FakeClock) -> None:
    """renew() fetches even while the token is valid, counts the request, saves the new
    token to the store (another client sharing it takes that one), and token() returns it."""
    store = MemoryTokenStore()
    codec = TokenCodec(Secret("s3cret"), "key")
    fetched_at: list[float] = []
    manager = _manager_on(clock, fetched_at, store=store, store_key="key", codec=codec)
    first = await manager.token()
    renewed = await manager.renew()
    assert renewed is not first
    assert (await manager.token()) is renewed
    assert manager.fetches == 2
    other = _manager_on(clock, [], store=store, store_key="key", codec=codec)
    assert (await other.token()).access_token == renewed.access_token
    assert other.fetches == 0


async def test_renew_does_not_join_a_fetch_that_started_before_it(clock: FakeClock) -> None:
    """A renew() called while a fetch is in flight waits for it, then fetches again: the
    token it returns was asked for after the call."""
    release = anyio.Event()
    fetched_at: list[float] = []
    counting = _counting_fetch(clock, fetched_at)

    async def slow_first() -> Token:
        if not fetched_at:
            await release.wait()
        token: Token = await counting()
        return token

    manager = TokenManager(slow_first, clock=clock, refresh=RefreshPolicy(), retry=RetryPolicy())
    got: list[Token] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(manager.token)
        await eventually(lambda: manager._flight is not None)

        async def renew() -> None:
            got.append(await manager.renew())

        tg.start_soon(renew)
        await anyio.sleep(0.01)
        release.set()
    assert [t.access_token for t in got] == ["token-2"]
    assert manager.current is got[0]


async def test_seed_installs_a_token_without_any_request(clock: FakeClock) -> None:
    """seed() (EnturClient(token=...)) makes token() answer with it, with no request and
    no on_token call."""
    announced: list[Token] = []

    async def on_token(token: Token) -> None:
        announced.append(token)

    fetched_at: list[float] = []
    manager = _manager_on(clock, fetched_at, on_token=on_token)
    seeded = Token(access_token="seeded", expires_at=DAY, expires_at_wall=DAY, lifetime=DAY)
    manager.seed(seeded)
    assert (await manager.token()) is seeded
    assert (fetched_at, announced) == ([], [])


@pytest.mark.parametrize("in_task_group", [False, True])
async def test_on_token_is_awaited_with_each_new_token_before_waiters_go_on(
    clock: FakeClock, in_task_group: bool
) -> None:
    """on_token is awaited once per new token (fetched, or taken from the store) by the
    task that installed it, before any waiting task gets the token; also when the fetch
    runs in the task group given to start() (inside ``async with client``)."""
    store = MemoryTokenStore()
    codec = TokenCodec(Secret("s3cret"), "key")
    returned: list[Token] = []
    seen_before_return: list[int] = []
    announced: list[str] = []

    async def on_token(token: Token) -> None:
        await anyio.sleep(0.01)  # waiters would run now if they had been released
        seen_before_return.append(len(returned))
        announced.append(token.access_token)

    manager = _manager_on(clock, [], store=store, store_key="key", codec=codec, on_token=on_token)

    async def call() -> None:
        returned.append(await manager.token())

    async with anyio.create_task_group() as tg:
        if in_task_group:
            await manager.start(tg)
        async with anyio.create_task_group() as callers:
            for _ in range(20):
                callers.start_soon(call)
        manager.stop()
    assert announced == ["token-1"]
    assert seen_before_return == [0]
    assert len(returned) == 20
    loaded: list[str] = []

    async def on_loaded(token: Token) -> None:
        loaded.append(token.access_token)

    other = _manager_on(clock, [], store=store, store_key="key", codec=codec, on_token=on_loaded)
    await other.token()
    assert loaded == ["token-1"]


async def test_failing_on_token_is_logged_and_the_token_still_used(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An on_token hook that raises does not fail the fetch: one WARNING naming only the
    exception type (its message could quote the token), and the token is used."""

    async def on_token(token: Token) -> None:
        raise RuntimeError(f"could not save {token.access_token}")

    manager = _manager_on(clock, [], on_token=on_token)
    assert (await manager.token()).access_token == "token-1"
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "RuntimeError" in warnings[0].getMessage()
    assert "token-1" not in caplog.text


# -- the fake clock the tests stand on ---------------------------------------------------


async def test_fake_clock_wakes_sleepers_in_time_and_forgets_cancelled_ones() -> None:
    """advance() wakes exactly the sleepers whose time has come; next_deadline() names the
    earliest; a cancelled sleep leaves nothing behind; jump_wall_clock moves time() only."""
    clock = FakeClock(start=1000.0)
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(seconds)

    async with anyio.create_task_group() as tg:
        for seconds in (30.0, 10.0, 20.0):
            tg.start_soon(sleeper, seconds)
        scope = anyio.CancelScope()

        async def cancelled() -> None:
            with scope:
                await clock.sleep(5.0)

        tg.start_soon(cancelled)
        await eventually(lambda: clock.next_deadline() == 5.0)
        scope.cancel()
        await eventually(lambda: clock.next_deadline() == 10.0)
        clock.advance(15)
        await eventually(lambda: woke == [10.0])
        assert clock.next_deadline() == 20.0
        clock.advance(100)
    assert sorted(woke) == [10.0, 20.0, 30.0]
    assert clock.next_deadline() is None
    clock.jump_wall_clock(-500)
    assert (clock.monotonic(), clock.time()) == (115.0, 615.0)


# == the 401-storm guard across clients sharing a store (issue 11 item 4, review F6) =======
# A replacement token carries its mark (Token.replaced_at) sealed into the shared store, so
# the bound of the section above holds for every client that takes the token from there.


def _record_token_requests(fake: FakeEntur, clock: FakeClock, fetched_at: list[float]) -> None:
    """Add the clock's time to ``fetched_at`` for each token request since the last call."""
    fetched_at += [clock.monotonic()] * (fake.token_count - len(fetched_at))


async def test_new_client_per_call_on_the_default_store_costs_two_token_requests_per_ttl(
    clock: FakeClock,
) -> None:
    """A careless user makes a new client for each of 1,000 calls over 90 s (same
    credentials, so the process-wide default store) to an endpoint that answers 401 to any
    token: each call raises UnauthorizedError, and at most 2 token requests fall in any
    30 s (4 in all), not one per call: each new client keeps the rejected replacement it
    finds in the store."""
    fake = FakeEntur(clock=clock)
    fake.route("/denied", status=401)
    retry = RetryPolicy(credentials_error_ttl=30)
    fetched_at: list[float] = []
    for _ in range(1000):
        async with fake.client(clock=clock, retry=retry) as client:
            with pytest.raises(UnauthorizedError):
                await client.get("/denied")
        _record_token_requests(fake, clock, fetched_at)
        clock.advance(0.09)
    assert _most_in_any_window(fetched_at, 30.0) == 2
    assert len(fetched_at) == 4, fetched_at  # at 0 s (the first and its replacement), 30, 60


async def test_single_revocation_with_a_new_client_per_call_costs_one_refetch(
    clock: FakeClock,
) -> None:
    """A new client per call on the default store: every token revoked once costs exactly
    one re-fetch, and the clients after it use the replacement (kept by the store and
    working, so the guard never gets in the way)."""
    fake = FakeEntur(clock=clock)
    for i in range(40):
        if i == 10:
            fake.revoke_all()
        async with fake.client(clock=clock) as client:
            assert (await client.get("/x")).status_code == 200
        clock.advance(1)
    assert fake.token_count == 2


def _shared_managers(
    clock: FakeClock, fetched_at: list[float], store: TokenStore, count: int
) -> list[TokenManager]:
    """``count`` managers of one client id on ``store`` (as that many processes)."""
    codec = TokenCodec(Secret("s3cret"), "key")
    return [
        TokenManager(
            _counting_fetch(clock, fetched_at),
            clock=clock,
            refresh=RefreshPolicy(),
            retry=RetryPolicy(credentials_error_ttl=30),
            store=store,
            store_key="key",
            codec=codec,
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_a_rejected_replacement_is_kept_by_every_client_and_never_deleted(
    clock: FakeClock, tmp_path: Path, kind: str
) -> None:
    """Step by step, two clients on one store: the replacement one fetched is kept by the
    other too (no request), the other's stale 401 does not delete it from the store, and
    once credentials_error_ttl has passed exactly one of them replaces it for both."""
    store: TokenStore = (
        MemoryTokenStore() if kind == "memory" else FileTokenStore(tmp_path / "tokens.json")
    )
    fetched_at: list[float] = []
    one, two = _shared_managers(clock, fetched_at, store, 2)
    first = await one.token()
    assert (await two.token()).fingerprint == first.fingerprint  # from the store
    assert await one.invalidate(first)
    replacement = await one.token()
    assert replacement.replaced_at == 0.0
    assert not await one.invalidate(replacement)  # rejected too: kept
    clock.advance(10)
    assert two.current is not None
    assert await two.invalidate(two.current)  # its copy of the first token: dropped
    assert (await two.token()).fingerprint == replacement.fingerprint  # not deleted: taken
    assert not await two.invalidate(two.current)  # kept, as in the client that fetched it
    assert len(fetched_at) == 2
    clock.advance(20)  # credentials_error_ttl after the replacement arrived
    assert await two.invalidate(two.current)
    third = await two.token()
    assert third.replaced_at == 30.0
    assert await one.invalidate(replacement)  # a stale 401 once more: the store keeps third
    assert (await one.token()).fingerprint == third.fingerprint
    assert not await one.invalidate(one.current)
    assert fetched_at == [0.0, 0.0, 30.0]


async def test_a_new_client_keeps_a_stored_replacement_only_within_the_ttl(
    clock: FakeClock,
) -> None:
    """A client that starts while the store holds a rejected replacement keeps it on a
    401 until credentials_error_ttl after the replacement arrived, and not after."""
    store = MemoryTokenStore()
    fetched_at: list[float] = []
    (one,) = _shared_managers(clock, fetched_at, store, 1)
    assert await one.invalidate(await one.token())
    replacement = await one.token()
    clock.advance(29)
    (late,) = _shared_managers(clock, fetched_at, store, 1)
    assert await late.token() == replacement
    assert not await late.invalidate(late.current)  # 29 s after it arrived: kept
    clock.advance(1)
    (later,) = _shared_managers(clock, fetched_at, store, 1)
    assert await later.token() == replacement
    assert await later.invalidate(later.current)  # 30 s: a new replacement
    assert (await later.token()).replaced_at == 30.0
    assert len(fetched_at) == 3


def _seal_previous_format(codec: TokenCodec, key: str, fields: dict[str, Any]) -> bytes:
    """A store value as the format before the replacement mark wrote it."""
    nonce = bytes(12)
    return b"eo1" + nonce + codec._aead.encrypt(nonce, json.dumps(fields).encode(), key.encode())


def test_codec_carries_the_replacement_mark_and_reads_values_without_it(
    clock: FakeClock,
) -> None:
    """The mark survives the store as wall time (read back on another process's clocks);
    values written before it existed, and tokens that replaced nothing, read as no
    replacement; a mark never lies in the future, however the wall clock moved."""
    codec = TokenCodec(Secret("s3cret"), "key")
    clock.advance(100)
    marked = Token(
        access_token="abc",
        expires_at=clock.monotonic() + DAY,
        expires_at_wall=clock.time() + DAY,
        lifetime=DAY,
        replaced_at=90.0,
    )
    sealed = codec.encode(marked)
    # Another process: its monotonic clock started elsewhere, the wall clock is the same.
    read = codec.decode(sealed, now_monotonic=5000.0, now_wall=clock.time())
    assert read is not None
    assert read.replaced_at == pytest.approx(4990.0)
    assert (read.access_token, read.expires_at_wall) == ("abc", marked.expires_at_wall)
    # The wall clock went back an hour: the mark is not moved into the future.
    back = codec.decode(sealed, now_monotonic=5000.0, now_wall=clock.time() - 3600)
    assert back is not None
    assert back.replaced_at == 5000.0
    plain = codec.decode(
        codec.encode(
            Token("abc", expires_at=DAY, expires_at_wall=clock.time() + DAY, lifetime=DAY)
        ),
        now_monotonic=0.0,
        now_wall=clock.time(),
    )
    assert plain is not None
    assert plain.replaced_at is None
    previous = _seal_previous_format(
        codec,
        "key",
        {
            "access_token": "abc",
            "expires_at_wall": clock.time() + DAY,
            "lifetime": DAY,
            "scope": None,
        },
    )
    old = codec.decode(previous, now_monotonic=0.0, now_wall=clock.time())
    assert old is not None
    assert (old.access_token, old.replaced_at) == ("abc", None)
