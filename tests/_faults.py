"""Every way a token endpoint (or a proxy in front of it) can fail, and a transport that
plays them: shared by test_retry.py, test_secrets_leak.py and test_concurrency.py.

A fault is arranged either as a :class:`ScriptedResponse` of the fake Entur (it goes
through the real ASGI path) or, for what a server cannot script (connection errors,
timeouts, an endless body, extra JSON fields on a real token), by :class:`FaultTransport`
at the transport level.
"""

from __future__ import annotations

import email.utils
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import httpx2

from entur_oauth.testing import FakeClock, FakeEntur, ScriptedResponse

#: What the client does with a fault: ``retry`` (retried; the request then succeeds),
#: ``fail`` (raised at once as a TokenRequestError, not retried), ``credentials``
#: (InvalidCredentialsError, never retried, cached), ``cached`` (a non-retryable 4xx:
#: raised as a TokenRequestError, not retried, answered from memory for
#: credentials_error_ttl), ``ok`` (a quirk that is accepted).
Outcome = Literal["retry", "fail", "credentials", "cached", "ok"]

#: Token requests are recognised by path, wherever the fake is served.
TOKEN_PATH = FakeEntur.TOKEN_PATH

#: Strings that stand in for a leaked secret or token inside fault bodies.
ECHOED_SECRET = "{secret}"
ECHOED_TOKEN = "SENTINELTOKENx9Qz7"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Handler = Callable[[httpx2.Request, httpx2.AsyncBaseTransport], Awaitable[httpx2.Response]]


class FaultTransport(httpx2.AsyncBaseTransport):
    """Wraps a transport; token requests play queued faults first, then pass through.

    It also counts token requests and remembers every access token that passes by, so a
    leak check knows every token the client ever held.
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner
        self.faults: deque[Handler] = deque()
        self.token_requests = 0
        self.tokens_seen: set[str] = set()
        self.bytes_streamed = 0

    def add(self, handler: Handler, *, times: int = 1) -> None:
        """Play ``handler`` for the next ``times`` token requests."""
        self.faults.extend([handler] * times)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path != TOKEN_PATH:
            return await self.inner.handle_async_request(request)
        self.token_requests += 1
        if self.faults:
            return await self.faults.popleft()(request, self.inner)
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self._remember(response.content)
        return response

    def _remember(self, content: bytes) -> None:
        try:
            token = json.loads(content).get("access_token")
        except (ValueError, AttributeError):
            return
        if isinstance(token, str) and token:
            self.tokens_seen.add(token)

    async def aclose(self) -> None:
        await self.inner.aclose()


def raising(error: type[httpx2.TransportError], message: str) -> Handler:
    """A handler that fails the request as the network layer would: with an httpx error
    that carries the request (and so the token request's body, the secret in it)."""

    async def handle(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
        raise error(message, request=request)

    return handle


def endless_body(transport: FaultTransport, *, status: int = 200) -> Handler:
    """A handler whose body never ends: a client that reads it all never returns."""

    async def chunks() -> AsyncIterator[bytes]:
        chunk = b"<p>" + b"x" * (64 * 1024 - 3)
        while True:
            transport.bytes_streamed += len(chunk)
            yield chunk

    async def handle(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
        return httpx2.Response(status, headers={"content-type": "text/html"}, content=chunks())

    return handle


def broken_body() -> Handler:
    """A handler whose body breaks off with a read error after a few bytes."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"access_token": "abc'
        raise httpx2.ReadError("connection reset by peer")

    async def handle(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=chunks())

    return handle


def with_fields(
    extra: dict[str, object], transport: FaultTransport, *, remove: tuple[str, ...] = ()
) -> Handler:
    """A handler that adds ``extra`` to (and drops ``remove`` from) the fake's real token
    response."""

    async def handle(request: httpx2.Request, inner: httpx2.AsyncBaseTransport) -> httpx2.Response:
        response = await inner.handle_async_request(request)
        payload = json.loads(await response.aread())
        payload.update(extra)
        for name in remove:
            payload.pop(name, None)
        transport._remember(json.dumps(payload).encode())
        return httpx2.Response(response.status_code, json=payload)

    return handle


@dataclass(frozen=True)
class Fault:
    """One case of the fault matrix.

    Args:
        id: The test id.
        outcome: What the client must do with it.
        scripted: Build the fake's scripted answer (given the clock and the secret), or
        handler: build a transport-level handler (given the transport).
    """

    id: str
    outcome: Outcome
    scripted: Callable[[FakeClock, str], ScriptedResponse] | None = None
    handler: Callable[[FaultTransport], Handler] | None = None

    def install(
        self, fake: FakeEntur, transport: FaultTransport, clock: FakeClock, *, times: int = 1
    ) -> None:
        """Make the next ``times`` token requests meet this fault."""
        if self.scripted is not None:
            fake.fail_token(self.scripted(clock, fake.client_secret), times=times)
        else:
            assert self.handler is not None
            transport.add(self.handler(transport), times=times)


def _status(status: int) -> Callable[[FakeClock, str], ScriptedResponse]:
    return lambda clock, secret: ScriptedResponse(status)


def _json(status: int, payload: object) -> Callable[[FakeClock, str], ScriptedResponse]:
    def build(clock: FakeClock, secret: str) -> ScriptedResponse:
        # Servers echo what they were sent; the secret and a token-like string go in
        # wherever a field can hold them, so a leak check would see them come out.
        text = json.dumps(payload).replace(ECHOED_SECRET, secret)
        return ScriptedResponse(status, json=json.loads(text))

    return build


def _body(
    status: int, body: str, content_type: str
) -> Callable[[FakeClock, str], ScriptedResponse]:
    def build(clock: FakeClock, secret: str) -> ScriptedResponse:
        return ScriptedResponse(
            status,
            body=body.replace(ECHOED_SECRET, secret).encode(),
            headers={"content-type": content_type},
        )

    return build


def _retry_after_date(seconds: int) -> Callable[[FakeClock, str], ScriptedResponse]:
    def build(clock: FakeClock, secret: str) -> ScriptedResponse:
        date = email.utils.formatdate(clock.time() + seconds, usegmt=True)
        return ScriptedResponse(
            429, json={"error": "too_many_requests"}, headers={"retry-after": date}
        )

    return build


def _ratelimit_reset(seconds: int) -> Callable[[FakeClock, str], ScriptedResponse]:
    def build(clock: FakeClock, secret: str) -> ScriptedResponse:
        reset = str(int(clock.time()) + seconds)
        return ScriptedResponse(
            429, headers={"x-ratelimit-reset": reset, "x-ratelimit-remaining": "0"}
        )

    return build


_PROXY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1>"
    "<p>request body: client_secret={secret}</p></body></html>"
)
_WAF_PAGE = "<html><body>Access denied by policy. Reference #18.2f1c</body></html>"
_TOKEN_200 = {"token_type": "Bearer", "expires_in": 86400}

FAULTS: list[Fault] = [
    # Retried: status codes, network errors, OAuth errors that say "try again".
    Fault("http-408", "retry", scripted=_status(408)),
    Fault(
        "http-429-retry-after-seconds",
        "retry",
        scripted=lambda clock, secret: ScriptedResponse(429, headers={"retry-after": "7"}),
    ),
    Fault("http-429-retry-after-date", "retry", scripted=_retry_after_date(12)),
    Fault("http-429-x-ratelimit-reset", "retry", scripted=_ratelimit_reset(9)),
    Fault("http-500", "retry", scripted=_status(500)),
    Fault("http-502", "retry", scripted=_status(502)),
    Fault("http-503", "retry", scripted=_status(503)),
    Fault("http-504", "retry", scripted=_status(504)),
    Fault(
        "connection-refused",
        "retry",
        handler=lambda t: raising(httpx2.ConnectError, "[Errno 111] Connection refused"),
    ),
    Fault(
        "connect-timeout", "retry", handler=lambda t: raising(httpx2.ConnectTimeout, "timed out")
    ),
    Fault("read-timeout", "retry", handler=lambda t: raising(httpx2.ReadTimeout, "timed out")),
    Fault("body-broken-off", "retry", handler=lambda t: broken_body()),
    Fault(
        "oauth-server_error",
        "retry",
        scripted=_json(400, {"error": "server_error", "error_description": "Try later"}),
    ),
    Fault(
        "oauth-temporarily_unavailable",
        "retry",
        scripted=_json(400, {"error": "temporarily_unavailable"}),
    ),
    Fault(
        "http-200-with-retryable-error",
        "retry",
        scripted=_json(200, {"error": "temporarily_unavailable", "access_token": ECHOED_TOKEN}),
    ),
    Fault("html-502-proxy-page", "retry", scripted=_body(502, _PROXY_PAGE, "text/html")),
    Fault("html-200-captive-portal", "retry", scripted=_body(200, _WAF_PAGE, "text/html")),
    Fault("plain-503", "retry", scripted=_body(503, "upstream connect error", "text/plain")),
    Fault("json-array-200", "retry", scripted=_json(200, [ECHOED_SECRET, "not a token"])),
    Fault(
        "json-500-echoing-a-token",
        "retry",
        scripted=_json(500, {"access_token": ECHOED_TOKEN, "echo": ECHOED_SECRET}),
    ),
    # Raised at once: retrying would not help (the 4xx ones are also remembered).
    Fault(
        "http-200-with-error",
        "fail",
        scripted=_json(200, {"error": "invalid_request", "error_description": ECHOED_SECRET}),
    ),
    Fault("html-403-waf-page", "cached", scripted=_body(403, _WAF_PAGE, "text/html")),
    Fault("plain-404", "cached", scripted=_body(404, "Not Found", "text/plain")),
    Fault("body-over-1-mib", "fail", handler=endless_body),
    Fault("access-token-missing", "fail", scripted=_json(200, _TOKEN_200)),
    Fault("access-token-empty", "fail", scripted=_json(200, {**_TOKEN_200, "access_token": ""})),
    Fault(
        "access-token-not-a-string",
        "fail",
        scripted=_json(200, {**_TOKEN_200, "access_token": 12345}),
    ),
    Fault(
        "access-token-a-list",
        "fail",
        scripted=_json(200, {**_TOKEN_200, "access_token": [ECHOED_TOKEN]}),
    ),
    Fault(
        "access-token-crlf",
        "fail",
        scripted=_json(200, {**_TOKEN_200, "access_token": ECHOED_TOKEN + "\r\nX-Injected: 1"}),
    ),
    Fault(
        "access-token-with-space",
        "fail",
        scripted=_json(200, {**_TOKEN_200, "access_token": ECHOED_TOKEN + " x"}),
    ),
    Fault(
        "token-type-mac",
        "fail",
        scripted=_json(200, {**_TOKEN_200, "access_token": ECHOED_TOKEN, "token_type": "mac"}),
    ),
    Fault(
        "oauth-invalid_request",
        "cached",
        scripted=_json(400, {"error": "invalid_request", "error_description": "Bad audience"}),
    ),
    # The client is rejected: never retried, remembered for a while.
    Fault("credentials-401-empty", "credentials", scripted=_body(401, "", "")),
    Fault(
        "credentials-401-plain",
        "credentials",
        scripted=_body(401, "Unauthorized " + ECHOED_SECRET, "text/plain"),
    ),
    Fault("credentials-401-html", "credentials", scripted=_body(401, _WAF_PAGE, "text/html")),
    Fault(
        "credentials-401-access_denied",
        "credentials",
        scripted=_json(401, {"error": "access_denied", "error_description": "Unauthorized"}),
    ),
    Fault(
        "credentials-401-invalid_client",
        "credentials",
        scripted=_json(401, {"error": "invalid_client", "error_description": ECHOED_SECRET}),
    ),
    Fault(
        "credentials-403-audience",
        "credentials",
        scripted=_json(
            403,
            {
                "error": "access_denied",
                "error_description": "Service not enabled within domain: https://x",
            },
        ),
    ),
    # Quirks a good token may come with: accepted.
    Fault(
        "unknown-fields-ignored",
        "ok",
        handler=lambda t: with_fields(
            {"refresh_token": None, "id_token": 7, "x-custom": {"a": [1, 2]}, "scope": 5}, t
        ),
    ),
    Fault(
        "token-type-lower-case", "ok", handler=lambda t: with_fields({"token_type": "bearer"}, t)
    ),
    Fault("token-type-missing", "ok", handler=lambda t: with_fields({}, t, remove=("token_type",))),
]

FAULT_IDS = [f.id for f in FAULTS]


def by_outcome(*outcomes: Outcome) -> list[Fault]:
    """The faults with one of ``outcomes``."""
    return [f for f in FAULTS if f.outcome in outcomes]


class TokenGate:
    """An ASGI wrapper whose token requests wait while the gate is closed.

    It lets a test hold a fetch in flight (to cancel it, or to see who waits meanwhile).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.arrived = 0
        self._open: anyio.Event | None = None

    def close(self) -> None:
        """Hold the next token requests until :meth:`open`."""
        self._open = anyio.Event()

    def open(self) -> None:
        """Let the held token requests (and all later ones) through."""
        event, self._open = self._open, None
        if event is not None:
            event.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == TOKEN_PATH:
            self.arrived += 1
            event = self._open
            if event is not None:
                await event.wait()
        await self.app(scope, receive, send)


async def eventually(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    """Let other tasks run until ``condition()`` holds (real time bounded by ``within``)."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - counters have no event to wait on
            await anyio.sleep(0.001)
