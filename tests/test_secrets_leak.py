"""No secret leaks: the whole fault matrix, API faults, a failing renewal and the background
refresher run with a sentinel client secret while DEBUG logging is on for ``entur_oauth``,
``httpx2``, ``httpcore2`` and ``authlib``; neither the secret nor any token the client
ever held may appear in a log record, in any exception (message, repr, attributes, the
``__cause__``/``__context__`` chain, the formatted traceback) or in a repr of our objects.

It runs in-process and over a real loopback socket (where httpcore2 logs its traces).
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import httpx2
import pytest

from entur_oauth import (
    APIError,
    ConfigurationError,
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
from entur_oauth.testing import FakeClock, FakeEntur, ScriptedResponse

from ._faults import (
    ECHOED_TOKEN,
    FAULTS,
    TOKEN_PATH,
    Fault,
    FaultTransport,
    Handler,
    eventually,
)
from .conftest import LoopbackServer, free_port

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


@pytest.mark.parametrize("where", ["in-process", pytest.param("loopback", marks=pytest.mark.slow)])
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
            clock.advance(31)  # past credentials_error_ttl: each rejection is retried once
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


@pytest.mark.parametrize("where", ["in-process", pytest.param("loopback", marks=pytest.mark.slow)])
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


# -- frame locals and pickles (issue 11 item 1) -----------------------------------------


def _value_texts(value: object) -> Iterator[str]:
    """What an error reporter shows of a local: its repr, and for an httpx message the
    headers and body it holds (a reporter that serialises objects deeply would see them)."""
    yield repr(value)
    if isinstance(value, str | bytes | bytearray):
        yield value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
    if isinstance(value, httpx2.Request | httpx2.Response):
        yield repr(value.headers.raw)
        with suppress(httpx2.RequestNotRead, httpx2.ResponseNotRead):
            yield value.content.decode("utf-8", "replace")


def _walk(tb: TracebackType | None) -> Iterator[TracebackType]:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def _deep_texts(exc: BaseException) -> Iterator[str]:
    """Every text reachable from ``exc``: the local variables of every frame of its
    traceback (as ``capture_locals=True`` formats them, and walked one by one), its pickle,
    and the same for every exception of its chain."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        error = stack.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield from _exception_texts(error)
        # As capture_locals=True formats them, but of no test function's frame, wherever
        # it is (an error raised by a context manager around a call starts in its frame).
        frames = [
            (tb.tb_frame, tb.tb_lineno)
            for tb in _walk(error.__traceback__)
            if not tb.tb_frame.f_code.co_name.startswith("test_")
        ]
        yield "".join(traceback.StackSummary.extract(iter(frames), capture_locals=True).format())
        yield "".join(traceback.format_exception_only(error))
        tb = error.__traceback__
        while tb is not None:
            # The test's own frame holds the sentinels it searches for.
            if not tb.tb_frame.f_code.co_name.startswith("test_"):
                for value in tb.tb_frame.f_locals.values():
                    yield from _value_texts(value)
            tb = tb.tb_next
        yield pickle.dumps(error).decode("latin-1")
        stack += [error.__cause__, error.__context__]


def _clean(errors: list[BaseException], sentinels: set[str]) -> list[tuple[str, str]]:
    return [
        (type(error).__name__, sentinel[:12])
        for error in errors
        for text in _deep_texts(error)
        for sentinel in sentinels
        if sentinel in text
    ]


def _echo(status: int, content_type: str, template: str) -> Fault:
    """A token endpoint answering with the request body (the secret in it) echoed back."""

    def build(clock: FakeClock, secret: str) -> ScriptedResponse:
        body = template.replace("{secret}", secret).encode()
        return ScriptedResponse(status, body=body, headers={"content-type": content_type})

    return Fault(f"echo-{status}-{content_type.split('/')[1]}", "fail", scripted=build)


_ECHOES = [
    _echo(
        400,
        "application/json",
        '{"error": "invalid_request", "request": {"grant_type": "client_credentials", '
        '"client_id": "fake-client-id", "client_secret": "{secret}"}}',
    ),
    _echo(400, "text/plain", "bad request: client_secret={secret}&audience=x"),
    _echo(
        200,
        "application/x-www-form-urlencoded",
        "access_token=SENTINELTOKENx9Qz7&token_type=bearer&client_secret={secret}",
    ),
]
_FAILING = [f for f in FAULTS if f.outcome != "ok"] + _ECHOES


@pytest.mark.parametrize("where", ["in-process", pytest.param("loopback", marks=pytest.mark.slow)])
@pytest.mark.parametrize("fault", _FAILING, ids=[f.id for f in _FAILING])
async def test_token_errors_hold_no_secret_in_frames_or_pickles(where: str, fault: Fault) -> None:
    """Every failing token-endpoint scenario (an echoed body, a mac token, CR/LF in the
    token, a JSON array, a form body, 401, 5xx, over 1 MiB, timeouts, connection refused):
    the error the leading task gets and the copies its waiters get hold the secret nowhere,
    not in a local of any frame of their tracebacks, nor in their pickles, nor in a chain."""
    clock = FakeClock(autojump=True)
    async with _setup(where, clock, retry=RetryPolicy(attempts=1)) as (fake, client, transport):
        fault.install(fake, transport, clock, times=1)
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await client.get("/x")
            except TokenRequestError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(3):  # one leads the fetch, two wait on it
                tg.start_soon(call)
        assert len(errors) == 3
        sentinels = {SENTINEL_SECRET, ECHOED_TOKEN, *transport.tokens_seen}
        assert not _clean(errors, sentinels)
        for error in errors:
            assert error.__cause__ is None
            assert error.__context__ is None
            assert pickle.loads(pickle.dumps(error)).args == error.args


def test_the_frame_search_finds_a_secret_in_a_local() -> None:
    """The frame-local search is real: a raw body left in a local of a raising frame, or
    an httpx request holding the secret in its body, is found."""

    def parse(body: bytes) -> None:
        raise TokenRequestError("clean message")

    def send(request: httpx2.Request) -> None:
        raise TokenRequestError("clean too")

    errors: list[BaseException] = []
    try:
        parse(f"client_secret={SENTINEL_SECRET}".encode())
    except TokenRequestError as exc:
        errors.append(exc)
    try:
        send(httpx2.Request("POST", "https://x", json={"s": SENTINEL_SECRET}))
    except TokenRequestError as exc:
        errors.append(exc)
    assert len(errors) == 2
    for error in errors:
        assert _clean([error], {SENTINEL_SECRET})


def _failing_api(error: type[httpx2.TransportError]) -> Handler:
    async def handle(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
        raise error("the API is unreachable", request=request)

    return handle


class _APIFaults(FaultTransport):
    """Token requests pass; API requests meet ``api_fault`` while it is set."""

    api_fault: Handler | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path != TOKEN_PATH and self.api_fault is not None:
            return await self.api_fault(request, self.inner)
        return await super().handle_async_request(request)


@pytest.mark.parametrize(
    "error", [httpx2.ConnectError, httpx2.ReadTimeout, httpx2.RemoteProtocolError]
)
async def test_api_transport_errors_keep_their_type_without_the_bearer(
    error: type[httpx2.TransportError],
) -> None:
    """An API call that fails in the transport raises httpx2's own error type (so
    ``except httpx2.ConnectError`` works), re-created: its ``.request`` carries no
    Authorization, it has no chain, no traceback frame holds the token, nor its pickle."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    transport = _APIFaults(fake.transport())
    async with fake.client(transport=transport, token_store=MemoryTokenStore()) as client:
        await client.get("/x")
        transport.api_fault = _failing_api(error)
        with pytest.raises(error) as caught:
            await client.get("/x", params={"q": "1"})
        for stream in (False, True):
            with pytest.raises(error):
                await client.send(client.build_request("GET", "/y"), stream=stream)
    exc = caught.value
    assert "the API is unreachable" in str(exc)
    assert "authorization" not in exc.request.headers
    assert exc.request.url.path == "/x"
    assert exc.__cause__ is None
    assert exc.__context__ is None
    assert not _clean([exc], {SENTINEL_SECRET, *fake.all_issued_tokens})


@pytest.mark.slow
async def test_api_connection_refused_over_a_socket_holds_no_token() -> None:
    """Over real sockets: the token comes from a loopback fake, the API port refuses the
    connection; the httpx2.ConnectError raised holds the token nowhere."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    with LoopbackServer(fake) as server:
        closed = f"http://127.0.0.1:{free_port()}"
        env = fake.environment(server.url)
        env = dataclasses.replace(env, api_base_url=closed)
        async with EnturClient(
            fake.client_id,
            SENTINEL_SECRET,
            client_name="test-app",
            environment=env,
            token_store=MemoryTokenStore(),
        ) as client:
            with pytest.raises(httpx2.ConnectError) as caught:
                await client.get("/x")
    assert fake.all_issued_tokens
    assert "authorization" not in caught.value.request.headers
    assert not _clean([caught.value], {SENTINEL_SECRET, *fake.all_issued_tokens})


async def test_a_streamed_body_that_breaks_off_raises_without_the_bearer() -> None:
    """A streamed API response whose body breaks off while the caller reads it: the
    httpx2.ReadError carries the request without Authorization."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)

    async def broken(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"partial"
            raise httpx2.ReadError("connection reset by peer")

        return httpx2.Response(200, content=chunks(), request=request)

    transport = _APIFaults(fake.transport())
    async with fake.client(transport=transport, token_store=MemoryTokenStore()) as client:
        await client.get("/x")
        transport.api_fault = broken
        with pytest.raises(httpx2.ReadError) as caught:
            async with client.stream("GET", "/x") as response:
                await response.aread()
    assert "authorization" not in caught.value.request.headers
    assert not any(
        token in text for text in _exception_texts(caught.value) for token in fake.all_issued_tokens
    )


async def test_a_retry_after_401_that_fails_in_the_network_holds_no_token() -> None:
    """The API rejects the token (401), and the retry with a new token fails to connect:
    the httpx2.ConnectError raised carries neither token, in its request, chain, frames
    or pickle."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    transport = _APIFaults(fake.transport())
    async with fake.client(transport=transport, token_store=MemoryTokenStore()) as client:
        await client.get("/x")
        fake.revoke_all()
        calls = 0

        async def reject_then_fail(
            request: httpx2.Request, inner: httpx2.AsyncBaseTransport
        ) -> httpx2.Response:
            nonlocal calls
            calls += 1
            if calls == 1:
                return await inner.handle_async_request(request)  # 401: the token is revoked
            raise httpx2.ConnectError("the API went away", request=request)

        transport.api_fault = reject_then_fail
        with pytest.raises(httpx2.ConnectError) as caught:
            await client.get("/x")
    assert calls == 2
    assert fake.token_count == 2
    assert caught.value.__context__ is None
    assert "authorization" not in caught.value.request.headers
    assert not _clean([caught.value], {SENTINEL_SECRET, *fake.all_issued_tokens})


# -- review G: construction errors, answered requests, echoes, broken-off bodies -----------

_SEED = {"access_token": "SENTINEL-seed-token-7c1e", "expires_in": 3600}


_ENV = FakeEntur().environment("http://127.0.0.1:9")
_SECRET_VARIABLES = {"ENTUR_CLIENT_ID": "cid", "ENTUR_CLIENT_SECRET": SENTINEL_SECRET}
#: One bad setting each, with the secret and a token among the arguments. Lambdas: a
#: helper's own locals would hold them, as the caller's frame does.
_BAD_SETTINGS: dict[str, Callable[[], object]] = {
    "client_name": lambda: EnturClient(
        "cid", SENTINEL_SECRET, client_name="bad name", environment=_ENV, token=_SEED
    ),
    "client_id": lambda: EnturClient(
        None, SENTINEL_SECRET, client_name="test-app", environment=_ENV, token=_SEED
    ),
    "environment": lambda: EnturClient(
        "cid", SENTINEL_SECRET, client_name="test-app", environment="nowhere", token=_SEED
    ),
    "option": lambda: EnturClient(
        "cid", SENTINEL_SECRET, client_name="test-app", environment=_ENV, token=_SEED, bogus=1
    ),
    "token": lambda: EnturClient(
        "cid",
        SENTINEL_SECRET,
        client_name="test-app",
        environment=_ENV,
        token={**_SEED, "token_type": "mac"},
    ),
    "retry": lambda: EnturClient(
        "cid",
        SENTINEL_SECRET,
        client_name="test-app",
        environment=_ENV,
        token=_SEED,
        retry=3,  # type: ignore[arg-type]
    ),
    "from_env": lambda: EnturClient.from_env({**_SECRET_VARIABLES, "ENTUR_ENVIRONMENT": "nowhere"}),
    "from_env_name": lambda: EnturClient.from_env(
        _SECRET_VARIABLES, client_name="bad name", client_secret=SENTINEL_SECRET
    ),
    "token_setter": lambda: setattr(
        EnturClient("cid", SENTINEL_SECRET, client_name="test-app", environment=_ENV),
        "token",
        {**_SEED, "token_type": "mac"},
    ),
}


@pytest.mark.parametrize("case", list(_BAD_SETTINGS))
async def test_construction_errors_hold_no_secret_in_their_frames(case: str) -> None:
    """A ConfigurationError from the constructor, ``from_env`` or the ``token`` setter
    holds neither the client secret nor ``token=`` in any frame local (as a reporter's
    ``capture_locals=True`` shows them, which must not crash on the half-built client),
    nor in its chain or pickle."""
    with pytest.raises(ConfigurationError) as caught:
        _BAD_SETTINGS[case]()
    error = caught.value
    assert not _clean([error], {SENTINEL_SECRET, _SEED["access_token"]})
    text = "".join(traceback.TracebackException.from_exception(error, capture_locals=True).format())
    assert SENTINEL_SECRET not in text


async def test_raise_for_status_on_an_api_answer_shows_no_bearer() -> None:
    """``response.raise_for_status()`` on an API answer (streamed or not) raises an
    HTTPStatusError whose request, pickle and frames hold no token: the client takes the
    bearer off the request as soon as the answer is in."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    transport = _APIFaults(fake.transport())

    async def boom(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
        return httpx2.Response(500, text="down", request=request)

    errors: list[BaseException] = []
    async with fake.client(transport=transport, token_store=MemoryTokenStore()) as client:
        transport.api_fault = boom
        response = await client.get("/x")
        assert "authorization" not in response.request.headers
        with pytest.raises(httpx2.HTTPStatusError) as caught:
            response.raise_for_status()
        errors.append(caught.value)
        async with client.stream("GET", "/x") as streamed:
            await streamed.aread()
            with pytest.raises(httpx2.HTTPStatusError) as caught:
                streamed.raise_for_status()
        errors.append(caught.value)
    assert fake.all_issued_tokens
    assert not _clean(errors, {SENTINEL_SECRET, *fake.all_issued_tokens})


def _echoing(status: int) -> Handler:
    """An API that quotes the Authorization it got in a header, its body and its reason."""

    async def handle(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
        sent = request.headers["authorization"]
        return httpx2.Response(
            status,
            headers={"x-debug-auth": sent, "content-type": "text/plain"},
            content=f"you sent {sent}".encode(),
            extensions={"reason_phrase": f"No {sent}".encode()},
            request=request,
        )

    return handle


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [401, 403, 408])
async def test_an_api_echoing_the_token_in_its_rejection_leaks_nothing(
    status: int, stream: bool
) -> None:
    """An API answering 401/403/408 with the bearer it was sent echoed in a header, the
    body and the reason phrase: the APIError's response shows ``[redacted]`` there, and
    neither it, its pickle nor its frames hold any token."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    transport = _APIFaults(fake.transport())
    async with fake.client(transport=transport, token_store=MemoryTokenStore()) as client:
        transport.api_fault = _echoing(status)

        async def call() -> None:
            if stream:
                async with client.stream("GET", "/x"):
                    pass
            else:
                await client.get("/x")

        with pytest.raises(APIError) as caught:
            await call()
    response = caught.value.response
    assert response.status_code == status
    assert response.headers["x-debug-auth"] == "Bearer [redacted]"
    assert response.text == "you sent Bearer [redacted]"
    assert response.reason_phrase == "No Bearer [redacted]"
    assert fake.all_issued_tokens
    assert not _clean([caught.value], {SENTINEL_SECRET, *fake.all_issued_tokens})


async def test_an_api_transport_error_quoting_the_bearer_is_redacted() -> None:
    """A transport whose error message quotes the Authorization header it was given: the
    error raised says ``[redacted]`` in its place, as token-endpoint errors do."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    transport = _APIFaults(fake.transport())

    async def quoting(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
        raise httpx2.ConnectError(f"boom {request.headers['authorization']}", request=request)

    async with fake.client(transport=transport, token_store=MemoryTokenStore()) as client:
        transport.api_fault = quoting
        with pytest.raises(httpx2.ConnectError) as caught:
            await client.get("/x")
    assert str(caught.value) == "boom Bearer [redacted]"
    assert not _clean([caught.value], {SENTINEL_SECRET, *fake.all_issued_tokens})


@pytest.mark.slow
async def test_a_body_breaking_off_over_a_socket_has_no_chain_to_httpcore() -> None:
    """Over real sockets, an API body that breaks off mid-read (the server closes after 7 of
    1,000 bytes): the httpx2.RemoteProtocolError has no chain (httpcore's frames hold the
    request as sent, bearer included) and no frame local or pickle holds the token."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(connection: anyio.abc.SocketStream) -> None:
        async with connection:
            await connection.receive()
            await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")

    with LoopbackServer(fake) as server:
        env = dataclasses.replace(
            fake.environment(server.url), api_base_url=f"http://127.0.0.1:{port}"
        )
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            async with EnturClient(
                fake.client_id,
                SENTINEL_SECRET,
                client_name="test-app",
                environment=env,
                token_store=MemoryTokenStore(),
            ) as client:
                with pytest.raises(httpx2.RemoteProtocolError) as caught:
                    async with client.stream("GET", "/x") as response:
                        await response.aread()
            tg.cancel_scope.cancel()
    error = caught.value
    assert error.__cause__ is None
    assert error.__context__ is None
    assert "authorization" not in error.request.headers
    assert fake.all_issued_tokens
    assert not _clean([error], {SENTINEL_SECRET, *fake.all_issued_tokens})


async def _hang(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
    await anyio.sleep(30)
    raise AssertionError("not cancelled")


@pytest.mark.parametrize("entered", [True, False], ids=["async-with", "no-async-with"])
@pytest.mark.parametrize("where", ["token request", "API request", "API retry after a 401"])
async def test_a_timeout_around_a_call_holds_no_secret_in_its_frames(
    where: str, entered: bool
) -> None:
    """A call cancelled mid-request (``anyio.fail_after`` around it, as a web framework's
    request timeout does): the TimeoutError's context is the cancellation, whose traceback
    reaches the frames that were sending. None of them may show the client secret (the
    token request's body) or a bearer (an API request's header), whether the client's
    token fetches run in its own task group (``async with``) or in the caller's task."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    transport = _APIFaults(fake.transport())
    client = fake.client(transport=transport, token_store=MemoryTokenStore())
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(client) if entered else stack.push_async_callback(
            client.aclose
        )
        if where == "token request":
            transport.add(_hang)
        else:
            await client.get("/x")
            if where == "API retry after a 401":
                fake.revoke_all()
                transport.add(_hang)  # the new token's request hangs: cancelled mid-retry
            else:
                transport.api_fault = _hang
        with pytest.raises(TimeoutError) as caught:
            with anyio.fail_after(0.2):
                await client.get("/x")
    error = caught.value
    sentinels = {SENTINEL_SECRET, *fake.all_issued_tokens, *transport.tokens_seen}
    assert not _clean([error], sentinels)


@pytest.mark.slow
async def test_a_timeout_over_a_socket_that_never_answers_holds_no_bearer() -> None:
    """The same over a real socket: the API accepts the request and never answers, so the
    cancellation comes from inside httpcore2, whose frames hold their own copy of the
    request as sent, bearer included."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(connection: anyio.abc.SocketStream) -> None:
        async with connection:
            await connection.receive()
            await anyio.sleep(30)

    with LoopbackServer(fake) as server:
        env = dataclasses.replace(
            fake.environment(server.url), api_base_url=f"http://127.0.0.1:{port}"
        )
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            async with EnturClient(
                fake.client_id,
                SENTINEL_SECRET,
                client_name="test-app",
                environment=env,
                token_store=MemoryTokenStore(),
            ) as client:
                await client.get_access_token()
                with pytest.raises(TimeoutError) as caught:
                    with anyio.fail_after(0.5):
                        await client.get("/x")
            tg.cancel_scope.cancel()
    assert fake.all_issued_tokens
    assert not _clean([caught.value], {SENTINEL_SECRET, *fake.all_issued_tokens})
