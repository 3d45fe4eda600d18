"""FakeEntur: a fake Entur token endpoint and API, as an ASGI app."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import anyio
import httpx2

from .._client import EnturClient
from .._environments import Environment, is_loopback_host
from ._asgi import (
    Answer,
    Receive,
    RecordedRequest,
    RouteHandler,
    Scope,
    ScriptedResponse,
    Send,
    client_left_within,
    fixed,
    read_request,
    respond,
    respond_scripted,
    script,
    serve_lifespan,
)
from ._samples import autocomplete, journey_planner
from ._serve import ServerChoice, serving

if TYPE_CHECKING:
    from .._fakeclock import FakeClock

__all__ = ["FakeEntur"]


class FakeEntur:
    """A fake Entur: ``/oauth/token`` plus an API that answers every other path.

    Args:
        client_id: The client id the token endpoint accepts.
        client_secret: The client secret it accepts; random unless given.
        audience: The audience it accepts (others get 403 ``access_denied``).
        expires_in: Lifetime of issued tokens in seconds (Entur: 86400); ``None`` leaves
            ``expires_in`` out of the token response (the client then reads ``exp``).
        clock: Time for ``exp``, expiry checks and (in-process) scripted delays; share a
            :class:`FakeClock` with the client.
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
            self._routes[("POST", "/journey-planner/v3/graphql")] = journey_planner
            self._routes[("GET", "/geocoder/v1/autocomplete")] = autocomplete

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
        self.token_script.extend([script(response, retry_after)] * times)

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
        self.api_script.extend([script(response, retry_after)] * times)

    def delay_token(self, seconds: float, *, times: int = 1) -> None:
        """Make the next ``times`` token requests answer normally, but ``seconds`` late
        (on the fake's clock in-process; real time when served on a port)."""
        self.token_script.extend([ScriptedResponse(None, delay=seconds)] * times)

    def delay_api(self, seconds: float, *, times: int = 1) -> None:
        """Make the next ``times`` API requests answer normally, but ``seconds`` late
        (on the fake's clock in-process; real time when served on a port)."""
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
        handler = fixed(response) if isinstance(response, ScriptedResponse) else response
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

    def _sleep(self) -> Callable[[float], Awaitable[None]]:
        """What a scripted delay waits with: the fake's clock in-process, so a test with a
        FakeClock needs no real sleeping. Served on a port, the fake runs in another
        thread's event loop, where a FakeClock (whose sleepers belong to the test's
        loop) cannot wake it: real time there."""
        if self.clock is not None and self.url is None:
            return self.clock.sleep
        return anyio.sleep

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
            server: ``"uvicorn"``, ``"builtin"`` (a small HTTP/1.1 server of this package,
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
            await serve_lifespan(receive, send)
        if scope["type"] != "http":
            return
        recorded = await read_request(scope, receive)
        handler: Callable[[FakeEntur, RecordedRequest], Answer]
        if scope["path"] == self.TOKEN_PATH:
            self.token_requests.append(recorded)
            scripted = self.token_script.popleft() if self.token_script else None
            handler = _token_endpoint
        else:
            self.api_requests.append(recorded)
            scripted = self.api_script.popleft() if self.api_script else None
            handler = _api_endpoint
        if scripted is not None:
            # A hang (or a delay) ends early when the client gives up and disconnects, so a
            # server can shut down without waiting for it.
            wait = float("inf") if scripted.hang else scripted.delay
            if wait and await client_left_within(receive, wait, self._sleep()):
                return
            if scripted.status is not None:
                await respond_scripted(send, scripted)
                return
        answer = handler(self, recorded)
        if isinstance(answer, ScriptedResponse):
            await respond_scripted(send, answer)
            return
        status, payload, extra = answer
        await respond(send, status, json.dumps(payload).encode(), "application/json", extra)


def _token_endpoint(fake: FakeEntur, request: RecordedRequest) -> Answer:
    """Answer a token request the way Entur's Auth0 tenant does."""
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
    if fields.get("client_id") != fake.client_id or not secrets.compare_digest(
        str(fields.get("client_secret", "")).encode(), fake.client_secret.encode()
    ):
        return 401, {"error": "access_denied", "error_description": "Unauthorized"}, {}
    if fields.get("audience") != fake.audience:
        return (
            403,
            {
                "error": "access_denied",
                "error_description": f"Service not enabled within domain: {fields.get('audience')}",
            },
            {},
        )
    now = fake._now()
    lifetime = fake.expires_in if fake.expires_in is not None else 86400
    token = _jwt(
        {
            "iss": "https://partner.entur.test/",
            "sub": f"{fake.client_id}@clients",
            "aud": fake.audience,
            "iat": int(now),
            "exp": int(now + lifetime),
            "azp": fake.client_id,
            "scope": "test:read",
            "permissions": ["test:read"],
            "gty": "client-credentials",
            "jti": secrets.token_hex(8),
        }
    )
    fake._issued[token] = now + lifetime
    fake.all_issued_tokens.append(token)
    payload: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "scope": "test:read",
    }
    if fake.expires_in is not None:
        payload["expires_in"] = fake.expires_in
    return 200, payload, {}


def _api_endpoint(fake: FakeEntur, request: RecordedRequest) -> Answer:
    """Answer an API request: the client name, then the token, then a route or the echo."""
    client_name = request.headers.get("et-client-name")
    if not client_name:
        return 400, {"message": "Missing ET-Client-Name header"}, {}
    authenticated = False
    if not request.path.startswith(fake.open_paths):
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        exp = fake._issued.get(token) if scheme.lower() == "bearer" else None
        if exp is None or exp <= fake._now():
            return (
                401,
                {"message": "Missing, invalid or expired token"},
                {"www-authenticate": "Bearer"},
            )
        if request.path.startswith(fake.forbidden_paths):
            return 403, {"message": "Token lacks permission"}, {}
        authenticated = True
    route = fake._routes.get((request.method, request.path)) or fake._routes.get(
        ("*", request.path)
    )
    if route is not None:
        return route(request)
    return (
        200,
        {"path": request.path, "client_name": client_name, "authenticated": authenticated},
        {},
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(secrets.token_bytes(32))}"
