"""Test kit: a fake Entur (token endpoint and API) and a fake clock.

``FakeEntur`` is an ASGI app. Use it in-process through :meth:`FakeEntur.client` (no
sockets) or serve it on a loopback port (``entur-oauth fake-server``, or any ASGI server).
It validates token requests the way Auth0 does, issues JWT-shaped tokens with ``exp``,
checks bearer tokens and ``ET-Client-Name`` on API calls, counts everything, and can be
scripted to fail, so you can test your own error handling without credentials or sleeps.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx2

from ._client import EnturClient
from ._environments import Environment
from ._fakeclock import FakeClock

__all__ = ["FakeClock", "FakeEntur", "RecordedRequest", "ScriptedResponse"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    """A response the fake gives instead of its normal answer.

    Args:
        status: HTTP status.
        json: A JSON body (``None`` for none, unless ``body`` is given).
        body: Raw body bytes (overrides ``json``).
        headers: Extra response headers, e.g. ``{"retry-after": "3"}``.
        delay: Seconds to wait before answering (real time; use with a client timeout).
        hang: Never answer (until the client gives up).
    """

    status: int = 500
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

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class FakeEntur:
    """A fake Entur: ``/oauth/token`` plus an API that answers every other path.

    Args:
        client_id: The client id the token endpoint accepts.
        client_secret: The client secret it accepts.
        audience: The audience it accepts (others get 403 ``access_denied``).
        expires_in: Lifetime of issued tokens in seconds (Entur: 86400).
        clock: Time for ``exp`` and expiry checks; share a :class:`FakeClock` with the client.
        open_paths: Path prefixes the API serves without a token (like Entur's open APIs).
        forbidden_paths: Path prefixes that answer 403 to a valid token.
    """

    TOKEN_PATH = "/oauth/token"

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        audience: str = "https://api.entur.test",
        expires_in: float | None = 86400,
        clock: FakeClock | None = None,
        open_paths: tuple[str, ...] = ("/geocoder", "/journey-planner"),
        forbidden_paths: tuple[str, ...] = ("/forbidden",),
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.audience = audience
        self.expires_in = expires_in
        self.clock = clock
        self.open_paths = open_paths
        self.forbidden_paths = forbidden_paths
        self.token_requests: list[RecordedRequest] = []
        self.api_requests: list[RecordedRequest] = []
        self.token_script: deque[ScriptedResponse] = deque()
        self.api_script: deque[ScriptedResponse] = deque()
        self._issued: dict[str, float] = {}  # token -> exp (wall seconds)

    # -- scripting -----------------------------------------------------------------------

    def fail_token(self, response: ScriptedResponse | int = 500, *, times: int = 1) -> None:
        """Make the next ``times`` token requests answer ``response`` (a status or a script)."""
        scripted = (
            response if isinstance(response, ScriptedResponse) else ScriptedResponse(response)
        )
        self.token_script.extend([scripted] * times)

    def fail_api(self, response: ScriptedResponse | int = 500, *, times: int = 1) -> None:
        """Make the next ``times`` API requests answer ``response`` (a status or a script)."""
        scripted = (
            response if isinstance(response, ScriptedResponse) else ScriptedResponse(response)
        )
        self.api_script.extend([scripted] * times)

    def revoke_all(self) -> None:
        """Make every token issued so far invalid (the API then answers 401)."""
        self._issued.clear()

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

    def transport(self) -> httpx2.AsyncBaseTransport:
        """Return an in-process transport that serves this fake (no sockets)."""
        return httpx2.ASGITransport(app=self)

    def client(self, *, credentials: bool = True, **kwargs: Any) -> EnturClient:
        """Return an :class:`EnturClient` wired to this fake in-process.

        Args:
            credentials: ``False`` for an open-API client.
            **kwargs: More :class:`EnturClient` arguments (``refresh``, ``clock``, ...).
        """
        kwargs.setdefault("client_name", "test-app")
        kwargs.setdefault("environment", self.environment())
        kwargs.setdefault("transport", self.transport())
        if credentials:
            kwargs.setdefault("client_id", self.client_id)
            kwargs.setdefault("client_secret", self.client_secret)
        return EnturClient(**kwargs)

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
        recorded = RecordedRequest(scope["method"], scope["path"], headers, body)
        if scope["path"] == self.TOKEN_PATH:
            self.token_requests.append(recorded)
            script = self.token_script.popleft() if self.token_script else None
            handler = self._token
        else:
            self.api_requests.append(recorded)
            script = self.api_script.popleft() if self.api_script else None
            handler = self._api
        if script is not None:
            await self._scripted(script, send)
            return
        status, payload, extra = handler(recorded)
        await _respond(send, status, json.dumps(payload).encode(), "application/json", extra)

    async def _scripted(self, script: ScriptedResponse, send: Send) -> None:
        if script.hang:
            await anyio.sleep_forever()
        if script.delay:
            await anyio.sleep(script.delay)
        if script.body is not None:
            body, content_type = script.body, script.headers.get("content-type", "text/html")
        elif script.json is not None:
            body, content_type = json.dumps(script.json).encode(), "application/json"
        else:
            body, content_type = b"", "text/plain"
        await _respond(send, script.status, body, content_type, script.headers)

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
            str(fields.get("client_secret", "")), self.client_secret
        ):
            return 401, {"error": "access_denied", "error_description": "Unauthorized"}, {}
        if fields.get("audience") != self.audience:
            return (
                403,
                {
                    "error": "access_denied",
                    "error_description": f"Service not enabled within domain: {fields.get('audience')}",
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
                "scope": "test:read",
                "permissions": ["test:read"],
                "jti": secrets.token_hex(8),
            }
        )
        self._issued[token] = now + lifetime
        payload: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "scope": "test:read",
        }
        if self.expires_in is not None:
            payload["expires_in"] = self.expires_in
        return 200, payload, {}

    def _api(self, request: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        client_name = request.headers.get("et-client-name")
        if not client_name:
            return 400, {"message": "Missing ET-Client-Name header"}, {}
        echo = {"path": request.path, "client_name": client_name}
        if request.path.startswith(self.open_paths):
            return 200, {**echo, "authenticated": False}, {}
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
        return 200, {**echo, "authenticated": True}, {}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(secrets.token_bytes(32))}"


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, extra: dict[str, str]
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
