"""The token-endpoint fault matrix: what is retried, what is raised, what is cached, and
that the client stays usable after each (asyncio and trio)."""

from __future__ import annotations

import random
import traceback
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest

from entur_oauth import (
    ConfigurationError,
    EnturClient,
    InvalidCredentialsError,
    MemoryTokenStore,
    RefreshPolicy,
    RetryPolicy,
    TokenRequestError,
)
from entur_oauth._manager import TokenManager
from entur_oauth._token import MAX_BODY_BYTES
from entur_oauth.testing import FakeClock, FakeEntur, ScriptedResponse

from ._faults import FAULTS, Fault, FaultTransport, by_outcome, endless_body
from .conftest import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def transport(entur_fake: FakeEntur) -> FaultTransport:
    """The fake's in-process transport, with faults queued in front of token requests."""
    return FaultTransport(entur_fake.transport())


def _client(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock, **kwargs: Any
) -> EnturClient:
    return entur_fake.client(
        transport=transport, clock=entur_clock, token_store=MemoryTokenStore(), **kwargs
    )


def _manager(client: EnturClient) -> TokenManager:
    manager = client._manager
    assert manager is not None
    return manager


def _ids(faults: list[Fault]) -> list[str]:
    return [f.id for f in faults]


# -- one test per case --------------------------------------------------------------------


@pytest.mark.parametrize("fault", by_outcome("retry"), ids=_ids(by_outcome("retry")))
async def test_retryable_fault_is_retried_and_the_request_succeeds(
    fault: Fault, entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """One transient fault costs one more token request; the API request still succeeds."""
    fault.install(entur_fake, transport, entur_clock)
    async with _client(entur_fake, transport, entur_clock) as client:
        response = await client.get("/x")
        assert response.status_code == 200
        manager = _manager(client)
        assert (transport.token_requests, manager.fetches, manager.rounds) == (2, 2, 1)
        assert (await client.get("/x")).status_code == 200
    assert transport.token_requests == 2


@pytest.mark.parametrize("fault", by_outcome("retry"), ids=_ids(by_outcome("retry")))
async def test_retryable_fault_gives_up_after_the_attempts(
    fault: Fault, entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """A fault that persists ends, after RetryPolicy.attempts requests, in a retryable
    TokenRequestError; the next call fetches afresh and succeeds (once any Retry-After
    has passed: until then calls are answered from memory)."""
    fault.install(entur_fake, transport, entur_clock, times=3)
    async with _client(entur_fake, transport, entur_clock) as client:
        with pytest.raises(TokenRequestError) as caught:
            await client.get("/x")
        assert type(caught.value) is TokenRequestError
        assert caught.value.retryable
        assert transport.token_requests == 3
        if caught.value.retry_after:  # a date-based one may have passed by the last try
            with pytest.raises(TokenRequestError):
                await client.get("/x")
            assert transport.token_requests == 3
            entur_clock.advance(caught.value.retry_after)
        assert (await client.get("/x")).status_code == 200
    assert transport.token_requests == 4


@pytest.mark.parametrize("fault", by_outcome("fail"), ids=_ids(by_outcome("fail")))
async def test_fault_that_retrying_cannot_fix_is_raised_at_once(
    fault: Fault, entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """A malformed or refused answer is one request and a typed, non-retryable error
    (never a JSONDecodeError or KeyError); the client is usable right after."""
    fault.install(entur_fake, transport, entur_clock)
    async with _client(entur_fake, transport, entur_clock) as client:
        with pytest.raises(TokenRequestError) as caught:
            await client.get("/x")
        assert type(caught.value) is TokenRequestError
        assert not caught.value.retryable
        assert transport.token_requests == 1
        assert entur_clock.monotonic() == 0  # no back-off was slept
        assert (await client.get("/x")).status_code == 200
    assert transport.token_requests == 2


@pytest.mark.parametrize("fault", by_outcome("credentials"), ids=_ids(by_outcome("credentials")))
async def test_credentials_error_is_never_retried_and_is_cached_briefly(
    fault: Fault, entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """A rejected client is one request; for credentials_error_ttl the same error comes
    from memory (a misconfigured fleet does not hammer Auth0); after it, a new request."""
    fault.install(entur_fake, transport, entur_clock)
    retry = RetryPolicy(credentials_error_ttl=30)
    async with _client(entur_fake, transport, entur_clock, retry=retry) as client:
        errors = []
        for _ in range(5):
            with pytest.raises(InvalidCredentialsError) as caught:
                await client.get("/x")
            errors.append(caught.value)
            entur_clock.advance(5)
        assert transport.token_requests == 1
        assert len({str(e) for e in errors}) == 1
        assert "ENTUR_CLIENT_SECRET" in str(errors[0])
        # Each caller gets its own copy: one shared object's traceback would grow per raise.
        depths = {len(traceback.extract_tb(e.__traceback__)) for e in errors[1:]}
        assert len(depths) == 1
        entur_clock.advance(6)  # 31 s after the rejection
        assert (await client.get("/x")).status_code == 200
    assert transport.token_requests == 2


@pytest.mark.parametrize("fault", by_outcome("cached"), ids=_ids(by_outcome("cached")))
async def test_other_4xx_is_not_retried_and_is_cached_briefly(
    fault: Fault, entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """A 403 page, a 404 (wrong token URL) or an OAuth 400 does not heal by asking again:
    20 calls within credentials_error_ttl make one token request; after it, a new one."""
    fault.install(entur_fake, transport, entur_clock)
    async with _client(
        entur_fake, transport, entur_clock, retry=RetryPolicy(credentials_error_ttl=30)
    ) as c:
        for _ in range(20):
            with pytest.raises(TokenRequestError) as caught:
                await c.get("/x")
            assert type(caught.value) is TokenRequestError
            assert not caught.value.retryable
            entur_clock.advance(1)
        assert transport.token_requests == 1
        entur_clock.advance(11)  # 31 s after the failure
        assert (await c.get("/x")).status_code == 200
    assert transport.token_requests == 2


class _Latency(httpx2.AsyncBaseTransport):
    """Token requests take ``seconds`` of simulated time, as real ones take real time."""

    def __init__(
        self, inner: httpx2.AsyncBaseTransport, entur_clock: FakeClock, seconds: float
    ) -> None:
        self.inner = inner
        self.clock = entur_clock
        self.seconds = seconds

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == FakeEntur.TOKEN_PATH:
            self.clock.advance(self.seconds)
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize(
    "response",
    [
        ScriptedResponse(429, headers={"retry-after": "60"}),
        ScriptedResponse(503, headers={"retry-after": "86400"}),
    ],
    ids=["429-retry-after-60", "503-retry-after-a-day"],
)
async def test_retry_after_is_honoured_across_calls(
    response: ScriptedResponse, entur_fake: FakeEntur, entur_clock: FakeClock
) -> None:
    """A fetch that gives up on a Retry-After longer than its budget is remembered until
    then (capped at 30 s, the larger of backoff_max and total): many calls make one token
    request per period, never one each; after the period a call fetches and succeeds.

    Token requests take simulated time here: with zero-time requests a capped Retry-After
    fits the budget exactly and the fetch would simply wait and retry."""
    transport = FaultTransport(_Latency(entur_fake.transport(), entur_clock, 0.2))
    entur_fake.fail_token(response, times=2)
    async with _client(entur_fake, transport, entur_clock) as client:
        for period in (1, 2):
            for _ in range(20):  # 20 calls over 28.5 s
                with pytest.raises(TokenRequestError) as caught:
                    await client.get("/x")
                assert caught.value.status_code == response.status
                entur_clock.advance(1.5)
            assert transport.token_requests == period
            entur_clock.advance(0.5)  # past the 30 s after the failed request
        assert (await client.get("/x")).status_code == 200
    assert transport.token_requests == 3


@pytest.mark.parametrize("fault", by_outcome("ok"), ids=_ids(by_outcome("ok")))
async def test_token_response_quirk_is_accepted(
    fault: Fault, entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """Unknown fields are ignored and token_type is matched without case (or defaulted)."""
    fault.install(entur_fake, transport, entur_clock)
    async with _client(entur_fake, transport, entur_clock) as client:
        assert (await client.get("/x")).status_code == 200
        token = _manager(client).current
        assert token is not None
        assert token.lifetime == pytest.approx(86400, abs=1)
    assert transport.token_requests == 1


async def test_raise_for_status_hook_on_token_request_gives_our_error(
    entur_fake: FakeEntur, entur_clock: FakeClock
) -> None:
    """A user's raise_for_status response hook turns a token-endpoint 503 into our retried
    TokenRequestError, never a raw HTTPStatusError whose request body holds the secret."""

    async def raise_for_status(response: httpx2.Response) -> None:
        await response.aread()
        response.raise_for_status()

    entur_fake.fail_token(503, times=10)
    async with entur_fake.client(
        clock=entur_clock, event_hooks={"response": [raise_for_status]}
    ) as client:
        with pytest.raises(TokenRequestError) as info:
            await client.get_access_token()
        assert client.token_fetches == 3  # retried as a 503 should be
    error = info.value
    assert error.status_code == 503
    assert not isinstance(error, httpx2.HTTPError)
    assert error.__context__ is None
    assert error.__cause__ is None
    assert entur_fake.client_secret not in str(error)


# -- how long the client waits ------------------------------------------------------------


async def _elapsed_for(
    fault_id: str, entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> float:
    fault = next(f for f in FAULTS if f.id == fault_id)
    fault.install(entur_fake, transport, entur_clock)
    async with _client(entur_fake, transport, entur_clock) as client:
        start = entur_clock.monotonic()
        assert (await client.get("/x")).status_code == 200
        return entur_clock.monotonic() - start


async def test_retry_after_in_seconds_is_honoured(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """429 with Retry-After: 7 waits 7 s (not the sub-second backoff) before the retry."""
    elapsed = await _elapsed_for("http-429-retry-after-seconds", entur_fake, transport, entur_clock)
    assert elapsed == pytest.approx(7)


async def test_retry_after_as_http_date_is_honoured(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """Retry-After as an HTTP date 12 s ahead waits until then."""
    elapsed = await _elapsed_for("http-429-retry-after-date", entur_fake, transport, entur_clock)
    assert 11 <= elapsed <= 12


async def test_auth0_x_ratelimit_reset_is_honoured(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """Auth0's x-ratelimit-reset (epoch seconds, 9 s ahead) is waited for."""
    elapsed = await _elapsed_for("http-429-x-ratelimit-reset", entur_fake, transport, entur_clock)
    assert 8 <= elapsed <= 9


async def test_huge_retry_after_is_capped(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """Retry-After: 86400 does not stall the client for a day: the wait is capped by the
    retry budget (RetryPolicy.total, 30 s). Requests take no simulated time here, so the
    capped wait fits the budget exactly; with latency the fetch gives up instead and the
    error is remembered (test_retry_after_is_honoured_across_calls)."""
    entur_fake.fail_token(ScriptedResponse(503, headers={"retry-after": "86400"}))
    async with _client(entur_fake, transport, entur_clock) as client:
        assert (await client.get("/x")).status_code == 200
    assert entur_clock.monotonic() == pytest.approx(30)


async def test_retry_that_would_pass_the_budget_is_not_made(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """With Retry-After: 20 twice, the second wait would end past the 30 s budget, so the
    fetch gives up after two requests instead of three."""
    entur_fake.fail_token(ScriptedResponse(429, headers={"retry-after": "20"}), times=2)
    async with _client(entur_fake, transport, entur_clock) as client:
        with pytest.raises(TokenRequestError) as caught:
            await client.get("/x")
        assert caught.value.status_code == 429
        assert caught.value.retry_after == 20
    assert transport.token_requests == 2
    assert entur_clock.monotonic() == pytest.approx(20)


async def test_backoff_is_short_full_jitter_without_retry_after(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """Two 503s cost at most 0.5 s + 1 s of backoff (capped exponential, full jitter)."""
    entur_fake.fail_token(503, times=2)
    async with _client(entur_fake, transport, entur_clock) as client:
        assert (await client.get("/x")).status_code == 200
    assert 0 <= entur_clock.monotonic() <= 1.5
    assert transport.token_requests == 3


async def test_attempts_are_configurable(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """RetryPolicy(attempts=5) rides out four failures; attempts=1 never retries."""
    entur_fake.fail_token(503, times=4)
    async with _client(entur_fake, transport, entur_clock, retry=RetryPolicy(attempts=5)) as client:
        assert (await client.get("/x")).status_code == 200
    assert transport.token_requests == 5
    entur_fake.fail_token(503)
    once = FaultTransport(entur_fake.transport())
    async with _client(entur_fake, once, entur_clock, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(TokenRequestError):
            await client.get_access_token()
    assert once.token_requests == 1


async def test_body_over_one_mebibyte_is_not_read_to_the_end(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """An endless body is cut off after 1 MiB: the client reads about that much, raises a
    TokenRequestError, and would otherwise never return."""
    transport.add(endless_body(transport))
    async with _client(entur_fake, transport, entur_clock) as client:
        with anyio.fail_after(10), pytest.raises(TokenRequestError, match="over 1048576 bytes"):
            await client.get_access_token()
        assert MAX_BODY_BYTES < transport.bytes_streamed <= MAX_BODY_BYTES + 64 * 1024
        assert await client.get_access_token()


async def test_crlf_token_never_reaches_a_header(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """A token with CR/LF (header injection) is refused before any API request is made."""
    fault = next(f for f in FAULTS if f.id == "access-token-crlf")
    fault.install(entur_fake, transport, entur_clock)
    async with _client(entur_fake, transport, entur_clock) as client:
        with pytest.raises(TokenRequestError):
            await client.get("/x")
        assert entur_fake.api_requests == []
        assert (await client.get("/x")).status_code == 200
    assert all("\n" not in r.headers.get("authorization", "") for r in entur_fake.api_requests)
    assert all("x-injected" not in r.headers for r in entur_fake.api_requests)


async def test_token_request_never_follows_a_redirect(
    entur_fake: FakeEntur, transport: FaultTransport, entur_clock: FakeClock
) -> None:
    """A 307 from the token endpoint is an error, never followed, even on a client built
    with follow_redirects=True: following it would re-send the secret to another host."""
    seen: list[httpx2.Request] = []

    async def redirect(
        request: httpx2.Request, inner: httpx2.AsyncBaseTransport
    ) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(307, headers={"location": "https://evil.example/oauth/token"})

    transport.add(redirect)
    async with _client(entur_fake, transport, entur_clock, follow_redirects=True) as client:
        with pytest.raises(TokenRequestError, match="HTTP 307"):
            await client.get_access_token()
        assert [r.url.host for r in seen] == ["partner.entur.test"]
        assert transport.token_requests == 1
        assert (await client.get("/x")).status_code == 200


async def test_connection_refused_on_a_real_socket(entur_clock: FakeClock) -> None:
    """Nothing listening on the token port: three attempts, then a retryable
    TokenRequestError naming the endpoint; no httpx exception escapes."""
    fake = FakeEntur(clock=entur_clock)
    env = fake.environment(f"http://127.0.0.1:{free_port()}")
    async with EnturClient(
        fake.client_id,
        fake.client_secret,
        client_name="test-app",
        environment=env,
        clock=entur_clock,
    ) as client:
        with anyio.fail_after(10), pytest.raises(TokenRequestError) as caught:
            await client.get("/x")
        assert caught.value.retryable
        assert "Could not reach the token endpoint" in str(caught.value)
        assert _manager(client).fetches == 3


# -- the policies themselves --------------------------------------------------------------


def test_retry_delay_is_full_jitter_capped_and_honours_retry_after() -> None:
    """delay(n) is uniform in [0, min(base * 2**(n-1), max)]; Retry-After raises it to the
    server's wish, bounded by the budget; huge attempt numbers do not overflow."""
    policy = RetryPolicy(backoff_base=0.5, backoff_max=10, total=30)
    rng = random.Random(1)
    first = [policy.delay(1, None, rng) for _ in range(500)]
    assert 0 <= min(first) < 0.05
    assert 0.45 < max(first) <= 0.5
    late = [policy.delay(10, None, rng) for _ in range(500)]
    assert max(late) <= 10
    assert max(late) > 9
    assert policy.delay(1, 7.0, rng) == 7.0
    assert policy.delay(1, 5000.0, rng) == 30.0
    assert 0 <= policy.delay(5000, None, rng) <= 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"total": float("inf")},
        {"backoff_base": -1},
        {"credentials_error_ttl": float("nan")},
    ],
)
def test_retry_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    """Zero attempts, NaN or infinite delays and negative times are refused up front."""
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"advisory_fraction": 1.0},
        {"jitter": 2.0},
        {"mandatory": -1},
        {"advisory_min": float("nan")},
        {"failure_backoff_min": 60, "failure_backoff_max": 30},
        {"failure_backoff_max": float("inf")},
    ],
)
def test_refresh_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    """Windows outside the token's life, NaN and infinite times are refused up front."""
    with pytest.raises(ConfigurationError):
        RefreshPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_defaults_are_the_documented_ones() -> None:
    """The defaults the README documents: 3 attempts in 30 s, 10 s per request, credentials
    errors remembered 30 s; advisory 10% (>= 5 min) +25% jitter, mandatory 60 s, failed
    renewals backed off 30 s doubling to 10 min, no background refresher."""
    assert RetryPolicy() == RetryPolicy(
        attempts=3,
        backoff_base=0.5,
        backoff_max=10.0,
        total=30.0,
        credentials_error_ttl=30.0,
        timeout=10.0,
    )
    assert RefreshPolicy() == RefreshPolicy(
        advisory_fraction=0.1,
        advisory_min=300.0,
        mandatory=60.0,
        jitter=0.25,
        failure_backoff_min=30.0,
        failure_backoff_max=600.0,
        background=False,
    )


# -- policy fields are type-checked when the policy is built (#11 item 2) ----------------


@pytest.mark.parametrize(
    ("policy", "field", "value"),
    [
        (RefreshPolicy, "advisory_fraction", "0.1"),
        (RefreshPolicy, "mandatory", None),
        (RefreshPolicy, "jitter", True),
        (RefreshPolicy, "advisory_min", 10**400),
        (RefreshPolicy, "failure_backoff_min", 10**400),
        (RefreshPolicy, "failure_backoff_max", 1e300),
        (RefreshPolicy, "background", "no"),
        (RefreshPolicy, "background", 1),
        (RefreshPolicy, "background", None),
        (RetryPolicy, "timeout", "10"),
        (RetryPolicy, "timeout", None),
        (RetryPolicy, "timeout", 1e300),
        (RetryPolicy, "total", "x"),
        (RetryPolicy, "backoff_base", 10**400),
        (RetryPolicy, "backoff_max", 2e9),
        (RetryPolicy, "credentials_error_ttl", 10**400),
        (RetryPolicy, "attempts", 3.0),
        (RetryPolicy, "attempts", True),
        (RetryPolicy, "attempts", 10**100),
        (RetryPolicy, "attempts", "3"),
    ],
)
def test_policy_fields_of_the_wrong_type_or_size_name_the_field(
    policy: type[RefreshPolicy | RetryPolicy], field: str, value: object
) -> None:
    """A string, None, a bool for a number, a truthy string for a flag, or a number too
    large for the clock arithmetic raises ConfigurationError naming the field when the
    policy is built: never TypeError/OverflowError, never accepted to fail (or, for a flag,
    to count as True) at the first token fetch."""
    with pytest.raises(ConfigurationError, match=field) as info:
        policy(**{field: value})
    assert len(str(info.value)) < 200  # a 400-digit number is not echoed


def test_policy_numbers_are_kept_as_floats_and_the_limit_is_allowed() -> None:
    """Whole numbers of seconds are accepted (as floats), up to the 10**9 s limit."""
    retry = RetryPolicy(timeout=5, total=10**9, credentials_error_ttl=0)
    assert (retry.timeout, retry.total) == (5.0, 1e9)
    assert isinstance(retry.timeout, float)
    assert RefreshPolicy(background=True, failure_backoff_max=10**9).background is True


# -- the clock (issue 17 item 4) --------------------------------------------------------------


def test_the_clock_a_bad_clock_error_names_is_public() -> None:
    """A bad ``clock=`` says "see entur_oauth.Clock", and that name resolves to the protocol
    the real and the fake clock both follow."""
    import entur_oauth
    from entur_oauth._clock import SystemClock

    with pytest.raises(ConfigurationError, match=r"see entur_oauth\.Clock") as caught:
        EnturClient("id", "secret", client_name="acme-app", clock=object())  # type: ignore[arg-type]
    assert "entur_oauth.Clock" in str(caught.value)
    clock_type = entur_oauth.Clock
    for clock in (SystemClock(), FakeClock()):
        assert all(callable(getattr(clock, name)) for name in ("monotonic", "time", "sleep"))
    assert {"monotonic", "time", "sleep"} <= set(vars(clock_type))


async def test_fake_clock_fail_after_cuts_when_the_clock_moves() -> None:
    """FakeClock.fail_after raises TimeoutError once the clock has moved past it (no real
    waiting: a minute of real time is the backstop), and not before."""
    clock = FakeClock()
    finished: list[str] = []

    async def waits_forever() -> None:
        with pytest.raises(TimeoutError), clock.fail_after(60):
            await anyio.sleep_forever()
        finished.append("cut")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waits_forever)
            await anyio.sleep(0.01)
            clock.advance(59.9)
            await anyio.sleep(0.01)
            assert finished == []
            clock.advance(0.1)
    assert finished == ["cut"]
    with clock.fail_after(1):  # finishes in time: no error
        await anyio.lowlevel.checkpoint()


class _ThreeMethodClock:
    """A user's clock with only the protocol's three methods (no fail_after)."""

    def __init__(self) -> None:
        self.moved = 0.0

    def monotonic(self) -> float:
        return self.moved

    def time(self) -> float:
        return 1_700_000_000.0 + self.moved

    async def sleep(self, seconds: float) -> None:
        self.moved += seconds
        await anyio.lowlevel.checkpoint()


async def test_a_clock_without_fail_after_cuts_a_silent_endpoint_on_real_time(
    entur_fake: FakeEntur,
) -> None:
    """A clock nobody moves and that has no ``fail_after``: a silent in-process token
    endpoint is still cut off (on real time, ~1 s here), never left hanging."""
    entur_fake.fail_token(ScriptedResponse(hang=True))
    client = entur_fake.client(
        clock=_ThreeMethodClock(),
        token_store=MemoryTokenStore(),
        retry=RetryPolicy(timeout=0.01, attempts=1),
    )
    with anyio.fail_after(10):
        async with client:
            with pytest.raises(TokenRequestError, match="did not answer"):
                await client.get("/x")
