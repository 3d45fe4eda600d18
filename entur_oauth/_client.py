"""EnturClient: authlib's AsyncOAuth2Client made to speak Entur.

authlib builds and sends the client-credentials grant. This module adds what Entur needs
on top, each at the narrowest point authlib offers:

* a registered client-auth method that sends the JSON body Entur documents, with
  ``audience`` on every fetch (authlib drops it on its own re-fetch, authlib#783);
* a ``_fetch_token`` override that reads the token response defensively (size cap, typed
  errors, no secret in any exception; authlib raises ``HTTPStatusError`` whose request body
  holds the secret);
* token lifecycle in :class:`TokenManager` instead of authlib's ``ensure_active_token``,
  which holds a lock on every request and never fetches the first client-credentials
  token (authlib#531);
* a ``send`` override that adds the bearer only to the API's own hosts, without an httpx
  auth flow (cheaper per request), and maps 401/403/408 to Entur's meaning.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

import anyio
import httpx2
from anyio.abc import TaskGroup

from ._authlib import AsyncOAuth2Client
from ._clock import Clock, SystemClock
from ._codec import TokenCodec, store_key
from ._config import read_env, resolve_environment, validate_client_name
from ._environments import Environment, is_loopback_host
from ._errors import (
    ConfigurationError,
    EventLoopError,
    ForbiddenError,
    SessionTimeoutError,
    TokenRequestError,
    UnauthorizedError,
)
from ._loop import current_loop
from ._manager import TokenManager
from ._policy import RefreshPolicy, RetryPolicy
from ._secrets import Secret
from ._stores import TokenStore, default_memory_store
from ._token import MAX_BODY_BYTES, Token, is_retryable_status, parse_token_response

__all__ = ["EnturClient"]

logger = logging.getLogger("entur_oauth")

_AUTH_METHOD = "entur_client_secret_json"
_USE_DEFAULT = httpx2.USE_CLIENT_DEFAULT
# httpx2's own send, called directly: authlib's class adds no send(), and a plain function
# call is cheaper than super() on every request.
_httpx_send = httpx2.AsyncClient.send
_COOKIES_DEPRECATED = (
    "Setting per-request cookies=<...> is being deprecated, because the expected behaviour "
    "on cookie persistence is ambiguous. Set cookies directly on the client instance instead."
)
_RETRIED_DETAIL = "even after one retry with a freshly fetched token"
_NOT_REPLAYABLE_DETAIL = (
    "(not retried: the request body is a stream that cannot be sent twice; the token was "
    "dropped, so the next request gets a new one)"
)
_NO_TOKEN_DETAIL = (
    "(this client has no credentials; partner APIs need ENTUR_CLIENT_ID and ENTUR_CLIENT_SECRET)"
)
_WITHHELD_DETAIL = "(sent without the client's token, as asked)"
_STATUS_MESSAGES = {
    401: (
        UnauthorizedError,
        "Entur answered 401 Unauthorized for {url} {detail}: the token is missing, invalid "
        "or expired for this API. Check that the client belongs to this environment ({env}) "
        "and that the API accepts its audience.",
    ),
    403: (
        ForbiddenError,
        "Entur answered 403 Forbidden for {url}: the token is valid but the client lacks "
        "permission for this endpoint. Ask Entur (or your organisation's "
        "Brukeradministrator) to grant the client access to it.",
    ),
    408: (
        SessionTimeoutError,
        "Entur answered 408 Session timeout for {url} {detail}: the token expired while the "
        "request was processed. Try again; if it persists, check the system clock and the "
        "request's duration.",
    ),
}


def _json_client_auth(audience: str) -> Any:
    """Return the client-auth hook that turns authlib's form body into Entur's JSON body."""

    def encode(
        client: Any, method: str, uri: str, headers: httpx2.Headers, body: bytes
    ) -> tuple[str, httpx2.Headers, bytes]:
        raw = body.decode() if isinstance(body, bytes) else (body or "")
        fields: dict[str, str] = dict(parse_qsl(raw, keep_blank_values=True))
        secret = client.client_secret
        fields["client_id"] = client.client_id
        fields["client_secret"] = secret.reveal() if isinstance(secret, Secret) else secret
        fields.setdefault("audience", audience)
        headers["Content-Type"] = "application/json"
        return uri, headers, json.dumps(fields).encode()

    return encode


class EnturClient(AsyncOAuth2Client):
    """An ``httpx2.AsyncClient`` for Entur's APIs that handles authentication for you.

    With ``client_id`` and ``client_secret`` it fetches an OAuth2 client-credentials token
    on first use, reuses it, and renews it before it expires; without them it is a client
    for Entur's open APIs. Either way every request carries ``ET-Client-Name``.

    Args:
        client_id: The client id from Entur Partner; ``None`` for the open APIs.
        client_secret: The client secret (``str`` or :class:`Secret`); never printed.
        client_name: ``ET-Client-Name``, as ``<company>-<application>``.
        environment: ``"production"``, ``"staging"``, ``"dev"`` or an :class:`Environment`.
        token_store: Where tokens are shared; default: one in-memory store per process.
        refresh: When tokens are renewed (:class:`RefreshPolicy`).
        retry: How the token endpoint is retried (:class:`RetryPolicy`).
        task_group: Run the background refresher in this task group instead of one the
            client opens in ``async with`` (only with ``RefreshPolicy(background=True)``).
        clock: Time source, for tests.
        **httpx_options: Any ``httpx2.AsyncClient`` option (``transport``, ``timeout``,
            ``headers``, ``event_hooks``, ``limits``, ...). ``base_url`` defaults to the
            environment's API base.

    Raises:
        ConfigurationError: A setting is missing or invalid.
    """

    def __init__(
        self,
        client_id: str | None = None,
        client_secret: str | Secret | None = None,
        *,
        client_name: str,
        environment: str | Environment = "production",
        token_store: TokenStore | None = None,
        refresh: RefreshPolicy | None = None,
        retry: RetryPolicy | None = None,
        task_group: TaskGroup | None = None,
        clock: Clock | None = None,
        **httpx_options: Any,
    ) -> None:
        # Validate everything before authlib and httpx build anything, so a bad setting
        # leaves no half-built client behind (authlib's __del__ trips over those).
        env = resolve_environment(environment)
        name = validate_client_name(client_name)
        if client_id is not None and not isinstance(client_id, str):
            raise ConfigurationError(f"client_id must be a str, not {type(client_id).__name__}.")
        if client_secret is not None and not isinstance(client_secret, str | Secret):
            raise ConfigurationError(
                f"client_secret must be a str or a Secret, not {type(client_secret).__name__}."
            )
        if (
            (client_id is None) != (client_secret is None)
            or client_id == ""
            or (client_secret is not None and not client_secret)
        ):
            raise ConfigurationError(
                "Give both client_id and client_secret (a partner-API client) or neither "
                "(an open-API client); one of them is missing or empty."
            )
        secret = Secret(client_secret) if isinstance(client_secret, str) else client_secret
        refresh = refresh or RefreshPolicy()
        retry = retry or RetryPolicy()
        if token_store is not None and not isinstance(token_store, TokenStore):
            raise ConfigurationError(
                f"token_store must implement TokenStore (get, set, delete, lock), "
                f"not {type(token_store).__name__}."
            )
        unknown = set(httpx_options) - _HTTPX_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"Unknown option(s) {sorted(unknown)}: EnturClient takes the Entur options "
                "and the httpx2.AsyncClient options only."
            )
        headers = httpx2.Headers(httpx_options.pop("headers", None))
        headers["ET-Client-Name"] = name
        httpx_options.setdefault("base_url", env.api_base_url)
        # authlib hands httpx2 only the options it lists, and these two are not among them
        # (they would end up, unused, in self.metadata): set through httpx2's setters below.
        params = httpx_options.pop("params", None)
        user_auth = httpx_options.pop("auth", None)

        super().__init__(
            client_id=client_id,
            client_secret=secret,
            token_endpoint_auth_method=_AUTH_METHOD if client_id else None,
            token_endpoint=env.token_url,
            grant_type="client_credentials",
            headers=headers,
            **httpx_options,
        )
        if params is not None:
            self.params = params
        if user_auth is not None:
            self.auth = user_auth
        self.environment = env
        self.client_name = name
        self._clock: Clock = clock or SystemClock()
        self._task_group = task_group
        self._exit_stack: AsyncExitStack | None = None
        self._loop: object = None
        self._token_origins = _origins(env)
        self._manager: TokenManager | None = None
        if client_id is not None and secret is not None:
            self.register_client_auth_method((_AUTH_METHOD, _json_client_auth(env.audience)))
            key = store_key(env.token_url, env.audience, client_id)
            self._manager = TokenManager(
                self._request_token,
                clock=self._clock,
                refresh=refresh,
                retry=retry,
                store=token_store if token_store is not None else default_memory_store(),
                store_key=key,
                codec=TokenCodec(secret, key),
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build a client from ``ENTUR_*`` environment variables.

        Reads ``ENTUR_CLIENT_ID``, ``ENTUR_CLIENT_SECRET``, ``ENTUR_CLIENT_NAME``,
        ``ENTUR_ENVIRONMENT`` (default ``production``) and, for a custom environment,
        ``ENTUR_TOKEN_URL``, ``ENTUR_AUDIENCE``, ``ENTUR_API_BASE_URL``. Keyword arguments
        override what the variables say (pass ``client_id=None, client_secret=None`` for an
        open-API client).

        Raises:
            ConfigurationError: A required variable is missing; the message names it.
        """
        settings = read_env(
            environ if environ is not None else os.environ,
            require_credentials=not {"client_id", "client_secret"} <= set(overrides),
            require_name="client_name" not in overrides,
        )
        kwargs: dict[str, Any] = {
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "client_name": settings.client_name,
            "environment": settings.environment,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- tokens --------------------------------------------------------------------------

    @property
    def token_fetches(self) -> int:
        """Token requests this client has sent, retries included (0 for open-API clients).

        A client that took its token from a shared store counts none: useful to check, or
        to export as a metric, that a fleet really shares one token.
        """
        return self._manager.fetches if self._manager is not None else 0

    async def get_access_token(self) -> str:
        """Return a valid access token, reused or freshly fetched, to hand to another library.

        Raises:
            ConfigurationError: This is an open-API client (no credentials).
            TokenRequestError: No token could be fetched.
        """
        return (await self._current_token()).access_token

    async def _current_token(self) -> Token:
        manager = self._manager
        if manager is None:
            raise ConfigurationError(
                "This client has no client_id/client_secret, so it has no token; create it "
                "with credentials (or ENTUR_CLIENT_ID/ENTUR_CLIENT_SECRET) for partner APIs."
            )
        self._check_loop()
        return await manager.token()

    async def ensure_active_token(self, token: Any = None) -> bool:
        """authlib's hook, answered by the token manager (fetches with ``audience``)."""
        await self._current_token()
        return True

    async def _request_token(self) -> Token:
        """Ask the token endpoint once, through authlib's grant; our ``_fetch_token`` reads it."""
        error: TokenRequestError
        try:
            token: Token = await self.fetch_token(self.environment.token_url)
        except httpx2.TimeoutException as exc:
            error = TokenRequestError(
                f"The token request to {self.environment.token_url} timed out "
                f"({type(exc).__name__}); it is retried automatically. Check network access "
                "to the token endpoint.",
                retryable=True,
            )
        except httpx2.TransportError as exc:
            error = TokenRequestError(
                f"Could not reach the token endpoint {self.environment.token_url} "
                f"({type(exc).__name__}: {exc}); check the network, proxy and DNS.",
                retryable=True,
            )
        except httpx2.HTTPStatusError as exc:
            # Raised by a user's response hook (raise_for_status) on the token response.
            status = exc.response.status_code
            error = TokenRequestError(
                f"The token endpoint {self.environment.token_url} answered HTTP {status} "
                "(raised by a response event hook before entur_oauth read it).",
                status_code=status,
                retryable=is_retryable_status(status),
            )
        except httpx2.HTTPError as exc:
            error = TokenRequestError(
                f"The token request to {self.environment.token_url} failed "
                f"({type(exc).__name__}); check the token URL and any event hooks.",
            )
        else:
            return token
        # Raised outside the except block: ``from None`` only hides the httpx error, whose
        # ``request`` is the token request with the client secret in its body.
        raise error

    async def _fetch_token(
        self,
        url: str,
        body: str = "",
        headers: Any = None,
        auth: Any = _USE_DEFAULT,
        method: str = "POST",
        **kwargs: Any,
    ) -> Token:
        # authlib has prepared the grant (body, headers, client auth); we send it and read
        # the answer ourselves: at most MAX_BODY_BYTES, and into typed errors only.
        manager = self._manager
        assert manager is not None  # only clients with credentials fetch
        request = self.build_request(
            method,
            url,
            data=dict(parse_qsl(body, keep_blank_values=True)),
            headers=headers,
            timeout=manager.retry.timeout,
        )
        if self.params:
            # The client's params are meant for API calls: the token endpoint (another
            # host, our own request) gets its URL exactly as configured.
            request.url = httpx2.URL(url)
        clock = manager.clock
        sent_monotonic, sent_wall = clock.monotonic(), clock.time()
        # httpx2.AsyncClient.send directly: token requests never get a bearer or API mapping.
        # Never follow a redirect: a 307/308 would re-send the body, secret included, to
        # wherever the Location header points.
        response = await httpx2.AsyncClient.send(
            self, request, auth=auth, stream=True, follow_redirects=False
        )
        try:
            content = bytearray()
            truncated = False
            # aclosing: leaving the loop early must close the generator now, not at GC.
            async with aclosing(response.aiter_bytes()) as chunks:
                async for chunk in chunks:
                    content += chunk
                    if len(content) > MAX_BODY_BYTES:
                        truncated = True
                        break
        except httpx2.HTTPError as exc:
            failed: str | None = type(exc).__name__
        else:
            failed = None
        finally:
            await response.aclose()
        if failed is not None:
            # Outside the except block, so the error keeps no context holding the request.
            raise TokenRequestError(
                f"Reading the token response failed ({failed}); it is retried automatically.",
                status_code=response.status_code,
                retryable=True,
            )
        return parse_token_response(
            response.status_code,
            response.headers,
            bytes(content),
            sent_monotonic=sent_monotonic,
            sent_wall=sent_wall,
            # Wrapped: parse_token_response keeps ``redact`` in a local of the frame that
            # raises, and tools that capture locals (Sentry, pytest -l) print those.
            redact=(_Unprintable(self.client_secret.reveal()),)
            if isinstance(self.client_secret, Secret)
            else (),
            truncated=truncated,
            where=f"The token endpoint {url}",
        )

    # -- requests ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: httpx2.URL | str,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        auth: Any = _USE_DEFAULT,
        follow_redirects: Any = _USE_DEFAULT,
        timeout: Any = _USE_DEFAULT,  # noqa: ASYNC109 - httpx2's own request() signature
        extensions: Any = None,
        withhold_token: bool = False,
    ) -> httpx2.Response:
        """Send a request as ``httpx2.AsyncClient.request``; ``withhold_token``: no bearer."""
        # Skip authlib's request(): it demands a token up front and holds a lock per call.
        # httpx2's request() is build_request + send; doing both here rather than calling
        # it saves a coroutine frame and a re-packed **kwargs on every request.
        if cookies is not None:
            # As httpx2's request() warns (filterwarnings=error users rely on it).
            warnings.warn(_COOKIES_DEPRECATED, DeprecationWarning, stacklevel=2)
        request = self.build_request(
            method=method,
            url=url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )
        return await self.send(
            request, auth=None if withhold_token else auth, follow_redirects=follow_redirects
        )

    def stream(  # type: ignore[override]
        self, method: str, url: httpx2.URL | str, *, withhold_token: bool = False, **kwargs: Any
    ) -> AbstractAsyncContextManager[httpx2.Response]:
        """Stream a response (see ``httpx2.AsyncClient.stream``); 401/408 are retried too."""
        if withhold_token:
            kwargs["auth"] = None
        return httpx2.AsyncClient.stream(self, method, url, **kwargs)

    async def send(
        self,
        request: httpx2.Request,
        *,
        stream: bool = False,
        auth: httpx2.Auth | Any = _USE_DEFAULT,
        follow_redirects: bool | Any = _USE_DEFAULT,
    ) -> httpx2.Response:
        """Send ``request``, adding the bearer token when it goes to the API's own hosts."""
        loop = current_loop()
        if loop is not self._loop:
            self._check_loop(loop)
        if not self._in_scope(request.url):
            # Not an Entur API host we know: no token, no Entur status mapping.
            return await _httpx_send(
                self, request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        manager = self._manager
        if manager is None or auth is not _USE_DEFAULT:
            response = await _httpx_send(
                self, request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
            detail = _NO_TOKEN_DETAIL if manager is None else _WITHHELD_DETAIL
            return await self._raise_for_entur_status(request, response, stream, detail)
        token = await manager.token()
        request.headers["Authorization"] = token.authorization
        response = await _httpx_send(
            self,
            request,
            stream=stream,
            auth=self._auth_for(token),
            follow_redirects=follow_redirects,
        )
        # One lookup on the common path; 401, 403 and 408 are all keys of _STATUS_MESSAGES.
        if response.status_code not in _STATUS_MESSAGES:
            return response
        status = response.status_code
        detail = _RETRIED_DETAIL
        if status in {401, 408} and self._in_scope(response.request.url):
            # The token was rejected, or expired mid-flight: it is dropped either way.
            await manager.invalidate(token)
            if _replayable(request.stream):
                await response.aclose()
                logger.debug("API answered %d; retrying once with a new token", status)
                token = await manager.token()
                request.headers["Authorization"] = token.authorization
                response = await _httpx_send(
                    self,
                    request,
                    stream=stream,
                    auth=self._auth_for(token),
                    follow_redirects=follow_redirects,
                )
            else:
                detail = _NOT_REPLAYABLE_DETAIL
        return await self._raise_for_entur_status(request, response, stream, detail)

    def _auth_for(self, token: Token) -> httpx2.Auth | Any:
        """Return the auth for a request to the API that carries ``token``.

        A client-level ``auth=`` still runs on API requests (it may add a signature or a
        header of its own), but the bearer is what Entur checks: it is set again on every
        request the user's flow yields, so a flow that writes Authorization cannot replace
        it (nor make us drop a good token on the 401 that would follow). Without a client
        auth this is httpx2's default, at no cost.
        """
        user_auth = self.auth
        if user_auth is None:
            return _USE_DEFAULT
        return _BearerAfter(user_auth, token.authorization)

    def _in_scope(self, url: httpx2.URL) -> bool:
        """Tell whether ``url`` is on a host that receives the token (the API's own)."""
        # scheme/host/port are plain attribute reads on httpx2's parsed URL; netloc would
        # join and encode a new string on every request.
        return (url.scheme, url.host, url.port) in self._token_origins

    async def _raise_for_entur_status(
        self, request: httpx2.Request, response: httpx2.Response, stream: bool, detail: str
    ) -> httpx2.Response:
        mapped = _STATUS_MESSAGES.get(response.status_code)
        # A status from another host (reached by a redirect) carries no Entur meaning.
        if mapped is None or not self._in_scope(response.request.url):
            return response
        error_class, template = mapped
        if stream:
            # Read the (small) error body so the exception's response is usable; aread
            # closes the stream, and so does aclose if reading fails.
            try:
                await response.aread()
            finally:
                await response.aclose()
        # The exception keeps the requests for the user; the token is taken off each first
        # (a same-origin redirect keeps the header on the request httpx2 built for it).
        for sent in (request, response.request, *(r.request for r in response.history)):
            sent.headers.pop("Authorization", None)
        url = request.url.copy_with(query=None)
        message = template.format(url=url, env=self.environment.name, detail=detail)
        raise error_class(message, request=request, response=response)

    def _check_loop(self, loop: object | None = None, *, closing: bool = False) -> None:
        loop = current_loop() if loop is None else loop
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            advice = (
                "Close it in the event loop that used it (async with EnturClient(...) inside "
                "the function you pass to anyio.run)."
                if closing
                else "Create one client per event loop, e.g. inside the function you pass to "
                "anyio.run."
            )
            raise EventLoopError(
                "This EnturClient was first used in another event loop (or another "
                "anyio.run); a client and its connections belong to one event loop. " + advice
            )

    def _check_closing_loop(self) -> None:
        # Pooled connections can only be closed by the loop that opened them: an asyncio
        # transport needs its (by now usually closed) loop, a trio socket needs trio. Left
        # to httpcore2, that fails deep inside it ("Event loop is closed", "must be called
        # from async context") and half-closes the pool; refuse before touching anything.
        if self._loop is not None:  # never used: nothing pooled, any loop may close it
            self._check_loop(closing=True)

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        manager = self._manager
        if manager is not None:
            self._check_loop()
            self._exit_stack = AsyncExitStack()
            task_group = self._task_group
            if task_group is None:
                task_group = await self._exit_stack.enter_async_context(anyio.create_task_group())
            # Stop the refresher on exit, also when it runs in the user's task group
            # (which would otherwise wait for it forever).
            self._exit_stack.callback(manager.stop)
            await manager.start(task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        try:
            if self._exit_stack is not None:
                stack, self._exit_stack = self._exit_stack, None
                await stack.aclose()
        finally:
            self._check_closing_loop()
            await super().__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        """Close the connections (see ``httpx2.AsyncClient.aclose``).

        Raises:
            EventLoopError: Called from another event loop than the one that used the client.
        """
        self._check_closing_loop()
        await super().aclose()

    def __repr__(self) -> str:
        kind = f"client_id={self.client_id!r}" if self._manager else "open API"
        env, name = self.environment.name, self.client_name
        return f"<EnturClient environment={env!r} {kind} client_name={name!r}>"

    def __del__(self) -> None:
        # authlib's __del__ only breaks a reference cycle and raises on half-built
        # clients ("Exception ignored in ..."); the garbage collector handles the cycle.
        pass


_HTTPX_OPTIONS = frozenset(
    {
        "auth",
        "params",
        "headers",
        "cookies",
        "verify",
        "cert",
        "http1",
        "http2",
        "proxy",
        "mounts",
        "timeout",
        "follow_redirects",
        "limits",
        "max_redirects",
        "event_hooks",
        "base_url",
        "transport",
        "trust_env",
        "default_encoding",
    }
)


class _Unprintable(str):
    """A secret that works as a ``str`` (to find and blank it in a response body) but shows
    as ``'[redacted]'`` in ``repr``, which is what captured frame locals print."""

    __slots__ = ()

    def __repr__(self) -> str:
        # Only repr: str() must stay the value, as the redaction code may call it.
        return "'[redacted]'"


class _BearerAfter(httpx2.Auth):
    """Run the user's auth flow, then put the bearer on each request it yields."""

    def __init__(self, inner: httpx2.Auth, authorization: str) -> None:
        self._inner = inner
        self._authorization = authorization

    def __repr__(self) -> str:
        # Never the token: an auth object can end up in a log or a traceback.
        return f"<_BearerAfter {self._inner!r} Authorization=[redacted]>"

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        # The inner flow's own async_auth_flow, so it still reads request/response bodies
        # when it says it needs them (requires_request_body/requires_response_body).
        flow = self._inner.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                outgoing.headers["Authorization"] = self._authorization
                response = yield outgoing
                try:
                    outgoing = await flow.asend(response)
                except StopAsyncIteration:
                    return
        finally:
            await flow.aclose()


def _replayable(stream: object) -> bool:
    """Tell whether a request body can be sent a second time.

    httpx2's in-memory bodies (``ByteStream``) and multipart bodies (which rewind their
    files) implement both the sync and async stream interfaces; generator bodies do not.
    """
    return isinstance(stream, httpx2.SyncByteStream) and isinstance(stream, httpx2.AsyncByteStream)


def _origins(env: Environment) -> frozenset[tuple[str, str, int | None]]:
    """Return the (scheme, host, port) triples that may receive the bearer token.

    Parsed by httpx2.URL, as request URLs are, so both are normalised alike (lowercase
    host, IDNA, default port as ``None``).
    """
    candidates = [httpx2.URL(env.api_base_url)]
    candidates += [httpx2.URL(f"https://{extra}") for extra in env.extra_token_hosts]
    # http:// only ever on loopback (Environment refuses it elsewhere).
    return frozenset(
        (u.scheme, u.host, u.port)
        for u in candidates
        if u.host and (u.scheme == "https" or is_loopback_host(u.host))
    )
