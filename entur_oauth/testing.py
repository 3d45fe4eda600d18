"""Test kit: a fake Entur for your own tests, in-process or on a loopback port, and a fake clock.

Test your Entur code (retries, error handling, token reuse) without credentials, network
or sleeps. The pytest fixtures below are registered automatically when entur-oauth is
installed (a ``pytest11`` plugin); everything also works without pytest.

:class:`FakeEntur` is an ASGI app that plays Entur:

* ``POST /oauth/token`` validates the JSON body the way Entur's Auth0 tenant does (wrong
  id or secret: 401 ``access_denied``; other audience: 403) and issues JWT-shaped tokens
  with ``exp``, valid for ``expires_in`` seconds of its clock.
* Every other path is the API: it wants ``ET-Client-Name`` (else 400) and a valid bearer
  token (else 401), except under ``open_paths`` (``/geocoder``, ``/journey-planner``); paths
  under ``forbidden_paths`` (``/forbidden``) answer 403. It answers with an echo,
  ``{"path", "client_name", "authenticated"}``; :meth:`FakeEntur.route` sets your own
  answers, and ``FakeEntur(samples=True)`` gives Journey Planner's GraphQL endpoint and the
  geocoder's autocomplete small answers shaped like Entur's.

What a test can do with it:

* count and inspect: ``fake.token_count``; ``fake.token_requests`` and ``fake.api_requests``
  hold every request as a :class:`RecordedRequest` (method, path, query, headers, body);
  ``fake.all_issued_tokens`` lists every token handed out (for leak checks);
* script failures: ``fake.fail_token(503, times=3)``, ``fake.fail_api(429, retry_after=2)``,
  or ``fake.fail_api(ScriptedResponse(...))`` for any status, headers, body, ``delay`` or
  ``hang``; a client built with a wrong secret sees Entur's own rejection;
* slow answers: ``fake.delay_api(1.5)`` / ``fake.delay_token(1.5)`` answer normally, late;
* expiry: ``fake.revoke_all()`` makes issued tokens invalid (the API answers 401);
  ``FakeEntur(expires_in=60)`` issues short-lived tokens; ``FakeEntur(clock=clock)`` with a
  :class:`FakeClock` shared with the client expires them on ``clock.advance(86400)``
  instead of a sleep;
* answers: ``fake.route(path, json=...)`` (or a function of the request) for your own;
* connect: ``fake.client()`` is an :class:`EnturClient` wired in-process (no sockets);
  ``with fake.serve() as url:`` runs the fake on a real loopback port (uvicorn, or a small
  built-in server when uvicorn is not installed); ``fake.env(url)`` gives the ``ENTUR_*``
  variables for ``EnturClient.from_env()`` or a subprocess.

pytest fixtures (function scope):

* ``entur_clock``: a :class:`FakeClock` with ``autojump=True`` (retry back-offs pass at once).
* ``entur_fake``: a :class:`FakeEntur` on that clock.
* ``entur_client``: an :class:`EnturClient` wired to ``entur_fake`` in-process.
* ``entur_fake_url``: ``entur_fake`` served on a loopback port; its base URL.
* ``entur_env``: the ``ENTUR_*`` variables set to point at ``entur_fake_url``, so code that
  calls ``EnturClient.from_env()`` talks to the fake.

Example::

    async def test_retries_once_on_401(entur_fake, entur_client):
        async with entur_client:
            await entur_client.get("/x")
            entur_fake.revoke_all()
            assert (await entur_client.get("/x")).status_code == 200
        assert entur_fake.token_count == 2

Each fake has a random client secret by default. Tokens in the process-wide token store are
sealed with the secret, so a client of one fake never picks up a token another fake issued
(a stale token would cost a 401 and skew ``token_count``), and a leak check can search
output for the secret.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import secrets
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import anyio
import anyio.abc
import anyio.from_thread
import httpx2
from anyio.streams.buffered import BufferedByteReceiveStream

from ._client import EnturClient
from ._environments import Environment, is_loopback_host
from ._fakeclock import FakeClock

__all__ = ["FakeClock", "FakeEntur", "RecordedRequest", "ScriptedResponse"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Which HTTP server :meth:`FakeEntur.serve` uses: uvicorn when installed, else the built-in one.
ServerChoice = Literal["auto", "uvicorn", "builtin"]


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    """A response the fake gives instead of its normal answer.

    Args:
        status: HTTP status; ``None`` gives the normal answer (after ``delay``).
        json: A JSON body (``None`` for none, unless ``body`` is given).
        body: Raw body bytes (overrides ``json``).
        headers: Extra response headers, e.g. ``{"retry-after": "3"}``.
        delay: Seconds to wait before answering (real time; use with a client timeout).
        hang: Never answer; the request ends when the client gives up and disconnects.
    """

    status: int | None = 500
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def params(self) -> dict[str, str]:
        """The query parameters (the last value of a repeated one)."""
        return dict(parse_qsl(self.query, keep_blank_values=True))


#: A route's answer: fixed, or computed from the request.
RouteHandler = Callable[[RecordedRequest], ScriptedResponse]
#: What the fake's own handlers return: (status, JSON payload, headers) or a script.
_Answer = tuple[int, Any, dict[str, str]] | ScriptedResponse


class FakeEntur:
    """A fake Entur: ``/oauth/token`` plus an API that answers every other path.

    Args:
        client_id: The client id the token endpoint accepts.
        client_secret: The client secret it accepts; random unless given.
        audience: The audience it accepts (others get 403 ``access_denied``).
        expires_in: Lifetime of issued tokens in seconds (Entur: 86400); ``None`` leaves
            ``expires_in`` out of the token response (the client then reads ``exp``).
        clock: Time for ``exp`` and expiry checks; share a :class:`FakeClock` with the client.
        open_paths: Path prefixes the API serves without a token (like Entur's open APIs).
        forbidden_paths: Path prefixes that answer 403 to a valid token.
        samples: Answer Journey Planner's GraphQL endpoint (``POST
            /journey-planner/v3/graphql``: one trip, Oslo S to Bergen) and the geocoder's
            autocomplete (``GET /geocoder/v1/autocomplete?text=``: three stations) with
            small answers shaped like Entur's, instead of the echo.
    """

    TOKEN_PATH = "/oauth/token"

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str | None = None,
        audience: str = "https://api.entur.test",
        expires_in: float | None = 86400,
        clock: FakeClock | None = None,
        open_paths: tuple[str, ...] = ("/geocoder", "/journey-planner"),
        forbidden_paths: tuple[str, ...] = ("/forbidden",),
        samples: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = (
            client_secret if client_secret is not None else "fake-" + secrets.token_urlsafe(18)
        )
        self.audience = audience
        self.expires_in = expires_in
        self.clock = clock
        self.open_paths = open_paths
        self.forbidden_paths = forbidden_paths
        self.token_requests: list[RecordedRequest] = []
        self.api_requests: list[RecordedRequest] = []
        self.token_script: deque[ScriptedResponse] = deque()
        self.api_script: deque[ScriptedResponse] = deque()
        #: Every token this fake issued, revoked and expired ones included (for leak checks).
        self.all_issued_tokens: list[str] = []
        #: The base URL while :meth:`serve` runs, else ``None``.
        self.url: str | None = None
        self._issued: dict[str, float] = {}  # token -> exp (wall seconds)
        self._routes: dict[tuple[str, str], RouteHandler] = {}
        if samples:
            self._routes[("POST", "/journey-planner/v3/graphql")] = _journey_planner
            self._routes[("GET", "/geocoder/v1/autocomplete")] = _autocomplete

    # -- scripting -----------------------------------------------------------------------

    def fail_token(
        self,
        response: ScriptedResponse | int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Make the next ``times`` token requests answer ``response`` (a status or a script).

        ``retry_after`` adds a ``Retry-After`` header (seconds), as a rate limit sends.
        """
        self.token_script.extend([_script(response, retry_after)] * times)

    def fail_api(
        self,
        response: ScriptedResponse | int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Make the next ``times`` API requests answer ``response`` (a status or a script).

        ``retry_after`` adds a ``Retry-After`` header (seconds), as a rate limit sends.
        """
        self.api_script.extend([_script(response, retry_after)] * times)

    def delay_token(self, seconds: float, *, times: int = 1) -> None:
        """Make the next ``times`` token requests answer normally, but ``seconds`` late."""
        self.token_script.extend([ScriptedResponse(None, delay=seconds)] * times)

    def delay_api(self, seconds: float, *, times: int = 1) -> None:
        """Make the next ``times`` API requests answer normally, but ``seconds`` late."""
        self.api_script.extend([ScriptedResponse(None, delay=seconds)] * times)

    def route(
        self,
        path: str,
        response: ScriptedResponse | RouteHandler | None = None,
        *,
        method: str | None = None,
        status: int = 200,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer API calls to ``path`` (exact, query ignored) with your own response.

        The API's checks still come first (``ET-Client-Name``; a valid token outside
        ``open_paths``; 403 under ``forbidden_paths``).

        Args:
            path: The request path, e.g. ``"/sales/v1/offers"``.
            response: A :class:`ScriptedResponse`, or a function from the
                :class:`RecordedRequest` to one; if omitted, ``status``/``json``/``headers``.
            method: Only for this method (default: any).
            status: The status, when ``response`` is omitted.
            json: The JSON body, when ``response`` is omitted.
            headers: Extra headers, when ``response`` is omitted.
        """
        if response is None:
            response = ScriptedResponse(status, json=json, headers=dict(headers or {}))
        handler = _fixed(response) if isinstance(response, ScriptedResponse) else response
        self._routes[((method or "*").upper(), path)] = handler

    def revoke_all(self) -> None:
        """Make every token issued so far invalid (the API then answers 401)."""
        self._issued.clear()

    def reset(self) -> None:
        """Forget recorded requests and pending scripts; issued tokens stay valid."""
        self.token_requests.clear()
        self.api_requests.clear()
        self.token_script.clear()
        self.api_script.clear()

    @property
    def token_count(self) -> int:
        """How many token requests arrived (failed ones included)."""
        return len(self.token_requests)

    @property
    def issued_tokens(self) -> list[str]:
        """The tokens issued and still accepted."""
        return list(self._issued)

    def _now(self) -> float:
        return self.clock.time() if self.clock is not None else time.time()

    # -- wiring --------------------------------------------------------------------------

    def environment(self, base_url: str | None = None) -> Environment:
        """Return an :class:`Environment` for this fake.

        Args:
            base_url: Where the fake is served (e.g. ``http://127.0.0.1:8123``); ``None``
                for in-process use through :meth:`transport`.
        """
        if base_url is None:
            return Environment(
                name="fake",
                token_url="https://partner.entur.test/oauth/token",
                audience=self.audience,
                api_base_url="https://api.entur.test",
            )
        base_url = base_url.rstrip("/")
        return Environment(
            name="fake",
            token_url=base_url + self.TOKEN_PATH,
            audience=self.audience,
            api_base_url=base_url,
        )

    def env(
        self,
        base_url: str | None = None,
        *,
        client_name: str = "test-app",
        credentials: bool = True,
    ) -> dict[str, str]:
        """Return the ``ENTUR_*`` variables that point ``EnturClient.from_env()`` here.

        Args:
            base_url: Where the fake is served; default: the running :meth:`serve` URL.
            client_name: ``ENTUR_CLIENT_NAME``.
            credentials: ``False`` leaves out the client id and secret (open-API clients).

        Raises:
            RuntimeError: No ``base_url`` given and the fake is not being served.
        """
        base_url = base_url or self.url
        if base_url is None:
            raise RuntimeError(
                "FakeEntur.env() needs a URL: serve the fake first ('with fake.serve() as "
                "url:') or pass base_url."
            )
        env = self.environment(base_url)
        variables = {
            "ENTUR_CLIENT_NAME": client_name,
            "ENTUR_ENVIRONMENT": env.name,
            "ENTUR_TOKEN_URL": env.token_url,
            "ENTUR_AUDIENCE": env.audience,
            "ENTUR_API_BASE_URL": env.api_base_url,
        }
        if credentials:
            variables["ENTUR_CLIENT_ID"] = self.client_id
            variables["ENTUR_CLIENT_SECRET"] = self.client_secret
        return variables

    def transport(self) -> httpx2.AsyncBaseTransport:
        """Return an in-process transport that serves this fake (no sockets)."""
        return httpx2.ASGITransport(app=self)

    def client(self, *, credentials: bool = True, **kwargs: Any) -> EnturClient:
        """Return an :class:`EnturClient` wired to this fake in-process.

        Args:
            credentials: ``False`` for an open-API client.
            **kwargs: More :class:`EnturClient` arguments (``refresh``, ``clock``, a wrong
                ``client_secret`` to see the credentials rejected, ...).
        """
        kwargs.setdefault("client_name", "test-app")
        kwargs.setdefault("environment", self.environment())
        kwargs.setdefault("transport", self.transport())
        if credentials:
            kwargs.setdefault("client_id", self.client_id)
            kwargs.setdefault("client_secret", self.client_secret)
        return EnturClient(**kwargs)

    @contextmanager
    def serve(
        self, *, port: int = 0, host: str = "127.0.0.1", server: ServerChoice = "auto"
    ) -> Iterator[str]:
        """Serve the fake on a loopback port from a background thread; yield its base URL.

        Args:
            port: The port; ``0`` picks a free one.
            host: A loopback address (the fake has no business on a network).
            server: ``"uvicorn"``, ``"builtin"`` (a small HTTP/1.1 server in this module,
                no dependency) or ``"auto"`` (uvicorn when it is installed).

        Raises:
            ValueError: ``host`` is not a loopback address.
            ModuleNotFoundError: ``server="uvicorn"`` and uvicorn is not installed.
            OSError: The port is taken.
        """
        if not is_loopback_host(host):
            raise ValueError(
                f"FakeEntur.serve() listens on loopback addresses only, not {host!r}; "
                "EnturClient refuses plain http:// anywhere else."
            )
        with serving(self, host=host, port=port, server=server) as bound:
            shown = f"[{host}]" if ":" in host else host
            self.url = f"http://{shown}:{bound}"
            try:
                yield self.url
            finally:
                self.url = None

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        recorded = RecordedRequest(scope["method"], scope["path"], headers, body, query)
        handler: Callable[[RecordedRequest], _Answer]
        if scope["path"] == self.TOKEN_PATH:
            self.token_requests.append(recorded)
            script = self.token_script.popleft() if self.token_script else None
            handler = self._token
        else:
            self.api_requests.append(recorded)
            script = self.api_script.popleft() if self.api_script else None
            handler = self._api
        if script is not None:
            # A hang (or a delay) ends early when the client gives up and disconnects, so a
            # server can shut down without waiting for it.
            wait = float("inf") if script.hang else script.delay
            if wait and await _client_left_within(receive, wait):
                return
            if script.status is not None:
                await _respond_scripted(send, script)
                return
        answer = handler(recorded)
        if isinstance(answer, ScriptedResponse):
            await _respond_scripted(send, answer)
            return
        status, payload, extra = answer
        await _respond(send, status, json.dumps(payload).encode(), "application/json", extra)

    def _token(self, request: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        if request.method != "POST":
            return 405, {"error": "invalid_request"}, {}
        content_type = request.headers.get("content-type", "")
        try:
            if content_type.startswith("application/json"):
                fields = json.loads(request.body)
            else:
                fields = dict(parse_qsl(request.body.decode()))
        except ValueError:
            return 400, {"error": "invalid_request", "error_description": "Malformed body"}, {}
        if not isinstance(fields, dict):
            return 400, {"error": "invalid_request", "error_description": "Malformed body"}, {}
        if fields.get("grant_type") != "client_credentials":
            return (
                403,
                {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"},
                {},
            )
        if fields.get("client_id") != self.client_id or not secrets.compare_digest(
            str(fields.get("client_secret", "")).encode(), self.client_secret.encode()
        ):
            return 401, {"error": "access_denied", "error_description": "Unauthorized"}, {}
        if fields.get("audience") != self.audience:
            return (
                403,
                {
                    "error": "access_denied",
                    "error_description": "Service not enabled within domain: "
                    f"{fields.get('audience')}",
                },
                {},
            )
        now = self._now()
        lifetime = self.expires_in if self.expires_in is not None else 86400
        token = _jwt(
            {
                "iss": "https://partner.entur.test/",
                "sub": f"{self.client_id}@clients",
                "aud": self.audience,
                "iat": int(now),
                "exp": int(now + lifetime),
                "azp": self.client_id,
                "scope": "test:read",
                "permissions": ["test:read"],
                "gty": "client-credentials",
                "jti": secrets.token_hex(8),
            }
        )
        self._issued[token] = now + lifetime
        self.all_issued_tokens.append(token)
        payload: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "scope": "test:read",
        }
        if self.expires_in is not None:
            payload["expires_in"] = self.expires_in
        return 200, payload, {}

    def _api(self, request: RecordedRequest) -> tuple[int, Any, dict[str, str]] | ScriptedResponse:
        client_name = request.headers.get("et-client-name")
        if not client_name:
            return 400, {"message": "Missing ET-Client-Name header"}, {}
        authenticated = False
        if not request.path.startswith(self.open_paths):
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            exp = self._issued.get(token) if scheme.lower() == "bearer" else None
            if exp is None or exp <= self._now():
                return (
                    401,
                    {"message": "Missing, invalid or expired token"},
                    {"www-authenticate": "Bearer"},
                )
            if request.path.startswith(self.forbidden_paths):
                return 403, {"message": "Token lacks permission"}, {}
            authenticated = True
        route = self._routes.get((request.method, request.path)) or self._routes.get(
            ("*", request.path)
        )
        if route is not None:
            return route(request)
        return (
            200,
            {"path": request.path, "client_name": client_name, "authenticated": authenticated},
            {},
        )


async def _client_left_within(receive: Receive, seconds: float) -> bool:
    """Wait ``seconds`` (or forever); return ``True`` at once if the client disconnects."""
    left = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()
    return left


def _fixed(response: ScriptedResponse) -> RouteHandler:
    def handler(request: RecordedRequest) -> ScriptedResponse:
        return response

    return handler


def _script(response: ScriptedResponse | int, retry_after: float | None) -> ScriptedResponse:
    scripted = response if isinstance(response, ScriptedResponse) else ScriptedResponse(response)
    if retry_after is not None:
        value = f"{retry_after:g}"
        scripted = dataclasses.replace(scripted, headers={**scripted.headers, "retry-after": value})
    return scripted


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(secrets.token_bytes(32))}"


async def _respond_scripted(send: Send, script: ScriptedResponse) -> None:
    if script.body is not None:
        body, content_type = script.body, script.headers.get("content-type", "text/html")
    elif script.json is not None:
        body, content_type = json.dumps(script.json).encode(), "application/json"
    else:
        body, content_type = b"", "text/plain"
    await _respond(send, script.status or 200, body, content_type, script.headers)


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, extra: Mapping[str, str]
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [
        (k.lower().encode(), v.encode()) for k, v in extra.items() if k.lower() != "content-type"
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- canned open-API answers -------------------------------------------------------------

_STOPS = (
    ("NSR:StopPlace:59872", "Oslo S", "Oslo", 10.753276, 59.910925),
    ("NSR:StopPlace:548", "Bergen stasjon", "Bergen", 5.332494, 60.390466),
    ("NSR:StopPlace:41742", "Trondheim S", "Trondheim", 10.399123, 63.436279),
)


def _autocomplete(request: RecordedRequest) -> ScriptedResponse:
    """Answer ``/geocoder/v1/autocomplete`` like Entur's geocoder (GeoJSON), from three stops."""
    text = request.params.get("text", "").strip().lower()
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {
                "id": stop_id,
                "gid": f"openstopplace:venue:{stop_id}",
                "layer": "venue",
                "source": "openstopplace",
                "name": name,
                "label": f"{name}, {locality}",
                "locality": locality,
                "category": ["railStation"],
            },
        }
        for stop_id, name, locality, lon, lat in _STOPS
        if text and text in name.lower()
    ]
    return ScriptedResponse(
        200,
        json={
            "geocoding": {"query": {"text": text}},
            "type": "FeatureCollection",
            "features": features,
        },
    )


def _journey_planner(request: RecordedRequest) -> ScriptedResponse:
    """Answer Journey Planner's GraphQL endpoint with one trip pattern of one rail leg."""
    try:
        document = request.json()
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("query"), str):
        return ScriptedResponse(400, json={"errors": [{"message": "Expected a GraphQL query"}]})
    leg = {
        "mode": "rail",
        "distance": 462000.0,
        "line": {"publicCode": "F4", "name": "Oslo S - Bergen"},
        "fromPlace": {"name": "Oslo S"},
        "toPlace": {"name": "Bergen stasjon"},
        "expectedStartTime": "2030-01-02T08:25:00+01:00",
        "expectedEndTime": "2030-01-02T15:20:00+01:00",
    }
    pattern = {
        "expectedStartTime": leg["expectedStartTime"],
        "expectedEndTime": leg["expectedEndTime"],
        "duration": 24900,
        "legs": [leg],
    }
    return ScriptedResponse(200, json={"data": {"trip": {"tripPatterns": [pattern]}}})


# -- serving on a loopback port ----------------------------------------------------------


def pick_server(server: str) -> Literal["uvicorn", "builtin"]:
    """Resolve ``"auto"`` to ``"uvicorn"`` when it is installed, else ``"builtin"``.

    Raises:
        ModuleNotFoundError: ``"uvicorn"`` was asked for and is not installed.
        ValueError: An unknown choice.
    """
    has_uvicorn = importlib.util.find_spec("uvicorn") is not None
    if server == "auto":
        return "uvicorn" if has_uvicorn else "builtin"
    if server == "uvicorn":
        if not has_uvicorn:
            raise ModuleNotFoundError(
                "uvicorn is not installed: run 'pip install uvicorn', or use the built-in "
                "server (server='builtin', or --server builtin on the command line).",
                name="uvicorn",
            )
        return "uvicorn"
    if server == "builtin":
        return "builtin"
    raise ValueError(f"server must be 'auto', 'uvicorn' or 'builtin', not {server!r}.")


@contextmanager
def serving(app: ASGIApp, *, host: str, port: int, server: ServerChoice) -> Iterator[int]:
    """Serve any ASGI ``app`` on ``host:port`` from a background thread; yield the port."""
    runner = _uvicorn_thread if pick_server(server) == "uvicorn" else _builtin_thread
    with runner(app, host, port) as bound:
        yield bound


@contextmanager
def _uvicorn_thread(app: ASGIApp, host: str, port: int) -> Iterator[int]:
    import uvicorn

    # Bind first, so port 0 works and the port is known before the thread starts.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            # A scripted hang whose client never disconnects must not block shutdown.
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="entur-fake-uvicorn", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError("The fake Entur server (uvicorn) did not start.")
            time.sleep(0.005)
        try:
            yield int(sock.getsockname()[1])
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    finally:
        sock.close()


@contextmanager
def _builtin_thread(app: ASGIApp, host: str, port: int) -> Iterator[int]:
    # The server gets an event loop of its own in a thread, so it serves the same whether
    # the caller runs asyncio, trio or no loop at all.
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        future, bound = portal.start_task(partial(serve_builtin, app, host, port))
        try:
            yield bound
        finally:
            future.cancel()


async def serve_builtin(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP/1.1 on ``host:port`` until cancelled (the built-in server).

    Enough HTTP for the fake and for clients such as httpx, curl and browsers: keep-alive,
    ``Content-Length`` and chunked request bodies, ``Expect: 100-continue``. Responses are
    buffered and sent with ``Content-Length``. Reports the bound port through
    ``task_status``.
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
        task_status.started(int(bound))
        await listener.serve(partial(_http_connection, app))


_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024


class _BadRequest(Exception):
    """The client sent something this server cannot parse."""


async def _http_connection(
    app: ASGIApp,
    stream: anyio.abc.SocketStream,
) -> None:
    reader = BufferedByteReceiveStream(stream)
    local = stream.extra(anyio.abc.SocketAttribute.local_address)  # noqa: S610 - not Django
    remote = stream.extra(anyio.abc.SocketAttribute.remote_address)  # noqa: S610
    async with stream:
        while True:
            try:
                head = await reader.receive_until(b"\r\n\r\n", _MAX_HEAD)
                method, target, version, headers = _parse_head(head)
                body = await _read_body(reader, stream, headers)
            except _BadRequest as exc:
                await _send_simple(stream, 400, str(exc))
                return
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                return
            except anyio.DelimiterNotFound:
                await _send_simple(stream, 431, "Request head too large")
                return
            connection = _header(headers, "connection").lower()
            keep_alive = "close" not in connection and (
                version == "HTTP/1.1" or "keep-alive" in connection
            )
            path, _, query = target.partition("?")
            scope: Scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": version.removeprefix("HTTP/"),
                "method": method,
                "scheme": "http",
                "path": unquote(path),
                "raw_path": path.encode("latin-1"),
                "query_string": query.encode("latin-1"),
                "root_path": "",
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                "client": (str(remote[0]), int(remote[1])) if isinstance(remote, tuple) else None,
                "server": (str(local[0]), int(local[1])) if isinstance(local, tuple) else None,
            }
            status, response_headers, payload = await _call_app(app, scope, body, reader)
            try:
                await stream.send(_format_response(status, response_headers, payload, keep_alive))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            if not keep_alive:
                return


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1]:
        raise _BadRequest("Malformed request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest("Malformed header line")
        headers.append((name.lower(), value.strip()))
    return parts[0], parts[1], parts[2], headers


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k == name), "")


async def _read_body(
    reader: BufferedByteReceiveStream,
    stream: anyio.abc.SocketStream,
    headers: list[tuple[str, str]],
) -> bytes:
    chunked = "chunked" in _header(headers, "transfer-encoding").lower()
    length_text = _header(headers, "content-length")
    if not chunked and not length_text:
        return b""
    if _header(headers, "expect").lower() == "100-continue":
        await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    if not chunked:
        if not length_text.isdigit() or int(length_text) > _MAX_BODY:
            raise _BadRequest("Bad Content-Length")
        return await reader.receive_exactly(int(length_text)) if int(length_text) else b""
    body = bytearray()
    while True:
        size_line = (await reader.receive_until(b"\r\n", 1024)).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _BadRequest("Bad chunk size") from None
        if size == 0:
            while await reader.receive_until(b"\r\n", _MAX_HEAD):
                pass  # trailers, ignored
            return bytes(body)
        if len(body) + size > _MAX_BODY:
            raise _BadRequest("Body too large")
        body += await reader.receive_exactly(size)
        await reader.receive_exactly(2)


async def _call_app(
    app: ASGIApp, scope: Scope, body: bytes, reader: BufferedByteReceiveStream
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    payload = bytearray()
    started = finished = False
    delivered = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        # The app waits for the client to go away (a scripted hang): tell it when it does.
        try:
            while await reader.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, headers, started, finished
        if message["type"] == "http.response.start":
            status, headers, started = int(message["status"]), list(message["headers"]), True
        elif message["type"] == "http.response.body":
            payload.extend(message.get("body", b""))
            finished = not message.get("more_body", False)

    try:
        await app(scope, receive, send)
    except Exception:  # an app error is a 500 for this client, not a crash of the server
        return 500, [], b"Internal Server Error"
    if not (started and finished):
        return 500, [], b"Internal Server Error"
    return status, headers, bytes(payload)


def _format_response(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool
) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}".encode("latin-1")]
    lines += [
        name + b": " + value
        for name, value in headers
        if name.lower() not in (b"content-length", b"connection", b"transfer-encoding")
    ]
    lines.append(b"content-length: " + str(len(body)).encode())
    lines.append(b"connection: " + (b"keep-alive" if keep_alive else b"close"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _send_simple(stream: anyio.abc.SocketStream, status: int, text: str) -> None:
    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(_format_response(status, [], text.encode(), keep_alive=False))
