"""No secret leaks: the whole fault matrix, API faults, a failing renewal and the background
refresher run with a sentinel client secret while DEBUG logging is on for ``entur_oauth``,
``httpx2``, ``httpcore2`` and ``authlib``; neither the secret nor any token the client
ever held may appear in a log record, in any exception (message, repr, attributes, the
``__cause__``/``__context__`` chain, the formatted traceback) or in a repr of our objects.

It runs in-process and over a real loopback socket (where httpcore2 logs its traces).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import httpx2
import pytest

from entur_oauth import (
    APIError,
    EnturClient,
    EnturError,
    ForbiddenError,
    InvalidCredentialsError,
    MemoryTokenStore,
    RefreshPolicy,
    RetryPolicy,
    Secret,
    SessionTimeoutError,
    TokenRequestError,
    UnauthorizedError,
)
from entur_oauth.testing import FakeClock, FakeEntur

from ._faults import ECHOED_TOKEN, FAULTS, FaultTransport, eventually
from .conftest import LoopbackServer

pytestmark = pytest.mark.anyio

SENTINEL_SECRET = "SENTINEL-client-secret-4f9c2a71"
LOGGERS = ("entur_oauth", "httpx2", "httpcore2", "authlib")


def _exception_texts(exc: BaseException) -> Iterator[str]:
    """Every text an error reporter could take from ``exc``: message, repr, formatted
    traceback, attribute reprs (an httpx request's body too), through the whole
    ``__cause__``/``__context__`` chain, suppressed context included."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        error = stack.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield str(error)
        yield repr(error)
        yield "".join(traceback.format_exception(error))
        attributes = dict(vars(error))
        for name in ("request", "response"):
            with suppress(AttributeError, RuntimeError):  # httpx raises when none was set
                attributes[name] = getattr(error, name)
        for value in attributes.values():
            yield repr(value)
            if isinstance(value, httpx2.Request | httpx2.Response):
                yield repr(value.headers.raw)
                with suppress(httpx2.RequestNotRead, httpx2.ResponseNotRead):
                    yield value.content.decode("utf-8", "replace")
        stack += [error.__cause__, error.__context__]
        if isinstance(error, BaseExceptionGroup):
            stack += list(error.exceptions)


class Leaks:
    """Collects what must be searched, then searches it for every sentinel."""

    def __init__(self, transport: FaultTransport) -> None:
        self.transport = transport
        self.texts: list[tuple[str, str]] = []  # (where, text)
        self.errors: list[BaseException] = []

    @contextmanager
    def expect(self, *kinds: type[BaseException]) -> Iterator[None]:
        """Run a step that may raise one of ``kinds``; keep the error for the search."""
        try:
            yield
        except kinds as exc:
            self.errors.append(exc)

    def sentinels(self, fake: FakeEntur) -> set[str]:
        tokens = set(self.transport.tokens_seen) | set(fake.issued_tokens)
        tokens |= set(getattr(fake, "all_issued_tokens", ()))
        assert tokens, "no token was ever issued: the search would prove nothing"
        return {SENTINEL_SECRET, ECHOED_TOKEN, *tokens}

    def check(self, fake: FakeEntur, records: list[logging.LogRecord]) -> None:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        texts = list(self.texts)
        for record in records:
            texts.append((f"log {record.name}", formatter.format(record)))
            texts.append((f"log args {record.name}", repr(record.args)))
        for error in self.errors:
            texts += [(f"exception {type(error).__name__}", t) for t in _exception_texts(error)]
        sentinels = self.sentinels(fake)
        leaks = [
            (where, sentinel[:12])
            for where, text in texts
            for sentinel in sentinels
            if sentinel in text
        ]
        assert not leaks, f"sentinels found in: {leaks[:10]}"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """DEBUG on for our logger and those of httpx2, httpcore2 and authlib."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@asynccontextmanager
async def _setup(
    where: str, clock: FakeClock, **kwargs: Any
) -> AsyncIterator[tuple[FakeEntur, EnturClient, FaultTransport]]:
    fake = FakeEntur(client_secret=SENTINEL_SECRET, clock=clock)
    if where == "in-process":
        transport = FaultTransport(fake.transport())
        async with fake.client(
            transport=transport, clock=clock, token_store=MemoryTokenStore(), **kwargs
        ) as client:
            yield fake, client, transport
        return
    with LoopbackServer(fake) as server:
        transport = FaultTransport(httpx2.AsyncHTTPTransport())
        async with EnturClient(
            fake.client_id,
            Secret(SENTINEL_SECRET),
            client_name="test-app",
            environment=fake.environment(server.url),
            transport=transport,
            clock=clock,
            token_store=MemoryTokenStore(),
            **kwargs,
        ) as client:
            yield fake, client, transport


def _reprs(client: EnturClient, clock: FakeClock) -> list[tuple[str, str]]:
    manager = client._manager
    assert manager is not None
    objects: dict[str, object] = {
        "client": client,
        "client vars": vars(client),
        "manager": manager,
        "manager vars": vars(manager),
        "token": manager.current,
        "refresh": manager.refresh,
        "retry": manager.retry,
        "secret": client.client_secret,
        "environment": client.environment,
        "clock": clock,
    }
    texts = [(f"repr {name}", repr(value)) for name, value in objects.items()]
    texts += [(f"str {name}", str(value)) for name, value in objects.items()]
    return texts


@pytest.mark.parametrize("where", ["in-process", "loopback"])
async def test_fault_matrix_leaks_no_secret_or_token(
    where: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Every token-endpoint fault (retried, given up, refused, rejected credentials,
    quirks) and every API fault, with DEBUG logging everywhere: no sentinel anywhere."""
    clock = FakeClock(autojump=True)
    async with _setup(where, clock) as (fake, client, transport):
        leaks = Leaks(transport)
        for fault in FAULTS:
            times = 3 if fault.outcome == "retry" else 1
            fault.install(fake, transport, clock, times=times)
            with leaks.expect(EnturError):
                await client.get("/x")
            # Past the remembered-error cache (credentials, 4xx, Retry-After cooldown).
            clock.advance(61)
            # The client is usable after each one; and each leaves a token to look for.
            with leaks.expect(EnturError):
                assert (await client.get("/x")).status_code == 200
            clock.advance(31)  # past credentials_error_ttl, which the 401-storm guard keeps
            await client._manager.invalidate(client._manager.current)  # type: ignore[union-attr, arg-type]
        # API faults: 401 retried with a new token, 401 twice, 403, 408 twice.
        fake.revoke_all()
        assert (await client.get("/x")).status_code == 200
        for status, times in ((401, 2), (403, 1), (408, 2)):
            fake.fail_api(status, times=times)
            with leaks.expect(APIError):
                await client.get("/x")
        leaks.texts += _reprs(client, clock)
    raised = [type(e) for e in leaks.errors]
    assert TokenRequestError in raised
    assert InvalidCredentialsError in raised
    assert {UnauthorizedError, ForbiddenError, SessionTimeoutError} <= set(raised)
    assert any(
        r.name.startswith("entur_oauth") and r.levelno == logging.DEBUG for r in debug_logs.records
    )
    if where == "loopback":
        assert any(r.name.startswith("httpcore2") for r in debug_logs.records)
    leaks.check(fake, debug_logs.records)


@pytest.mark.parametrize("where", ["in-process", "loopback"])
async def test_failed_renewals_and_the_refresher_leak_nothing(
    where: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    """The advisory-window warning, the back-off decisions and the background refresher's
    renewals (with a server echoing the secret in its errors) leak nothing."""
    clock = FakeClock()
    policy = RefreshPolicy(background=True)
    async with _setup(where, clock, refresh=policy, retry=RetryPolicy(attempts=1)) as (
        fake,
        client,
        transport,
    ):
        leaks = Leaks(transport)
        manager = client._manager
        assert manager is not None
        await client.get("/x")
        old = manager.current
        echo = next(f for f in FAULTS if f.id == "http-200-with-error")
        echo.install(fake, transport, clock, times=2)
        clock.advance(manager.advisory_at - clock.monotonic() + 1)
        await eventually(lambda: transport.token_requests == 2)
        await eventually(lambda: manager._flight is None and clock.next_deadline() is not None)
        clock.advance(800)
        await eventually(lambda: transport.token_requests == 3)
        await eventually(lambda: manager._flight is None and clock.next_deadline() is not None)
        clock.advance(1500)
        await eventually(lambda: manager.current is not old)
        assert (await client.get("/x")).status_code == 200
        leaks.texts += _reprs(client, clock)
    assert any(r.levelno == logging.WARNING for r in debug_logs.records)
    leaks.check(fake, debug_logs.records)


async def test_the_leak_check_itself_finds_a_leak(debug_logs: pytest.LogCaptureFixture) -> None:
    """The search is real: a token logged by mistake, or the secret in an exception's
    context, is found."""
    clock = FakeClock(autojump=True)
    async with _setup("in-process", clock) as (fake, client, transport):
        token = await client.get_access_token()
        logging.getLogger("entur_oauth").debug("oops %s", token)
        leaks = Leaks(transport)
        with pytest.raises(AssertionError, match="sentinels found"):
            leaks.check(fake, debug_logs.records)
        debug_logs.clear()

        def fail() -> None:
            try:
                int(SENTINEL_SECRET)  # a ValueError whose message quotes the secret
            except ValueError:
                raise TokenRequestError("innocent") from None

        with leaks.expect(TokenRequestError):
            fail()
        with pytest.raises(AssertionError, match="sentinels found"):
            leaks.check(fake, debug_logs.records)


async def test_network_error_keeps_no_token_request_in_its_context(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """``raise ... from None`` only hides the httpx exception (whose request is the token
    request, the secret in its body); the error the caller gets does not keep it at all."""
    clock = FakeClock(autojump=True)
    async with _setup("in-process", clock, retry=RetryPolicy(attempts=1)) as (
        fake,
        client,
        transport,
    ):
        refused = next(f for f in FAULTS if f.id == "connection-refused")
        refused.install(fake, transport, clock)
        with pytest.raises(TokenRequestError) as caught:
            await client.get("/x")
        assert caught.value.__context__ is None
        assert not any(SENTINEL_SECRET in t for t in _exception_texts(caught.value))
        assert (await client.get("/x")).status_code == 200
