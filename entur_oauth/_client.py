"""EnturClient: authlib's AsyncOAuth2Client made to speak Entur.

authlib performs the client-credentials grant: its public ``fetch_token`` builds the
request, authenticates the client, sends it through this client, runs the
``access_token_response`` compliance hooks and calls ``parse_response_token``. This
module plugs in at authlib's public extension points only:

* a registered client-auth method that sends the JSON body Entur documents, with
  ``audience`` on every fetch (authlib drops it on its own re-fetch, authlib#783);
* ``parse_response_token``, which reads the token response defensively (typed errors, no
  secret in any of them) into an ``OAuth2Token``;
* ``send``, which reads at most 1 MiB of the token response and never follows a redirect
  there (see ``_grant.py``, the token path's one error boundary), and adds the bearer only
  to the API's own hosts itself, mapping 401/403/408 to Entur's meaning (its retry needs no
  httpx auth flow; the one it hands httpx2 only passes the request on, cheaper per request
  than httpx2's default);
* ``token``, ``fetch_token``, ``ensure_active_token`` and ``update_token``, answered by the
  :class:`TokenManager` (one fetch shared by all tasks, renewal windows, retries, shared
  stores) instead of authlib's lock per request, which never fetches the first
  client-credentials token (authlib#531).
"""

from __future__ import annotations

import inspect
import json
import logging
import operator
import os
import ssl
import sys
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, suppress
from types import TracebackType
from typing import Any, NoReturn, Self, cast
from urllib.parse import parse_qsl

import anyio
import httpx2
from anyio.abc import TaskGroup

from ._authlib import AsyncOAuth2Client, OAuth2Token
from ._clock import Clock, SystemClock
from ._codec import TokenCodec, store_key
from ._environments import Environment, check_url, is_loopback_host
from ._errors import (
    ConfigurationError,
    EventLoopError,
    ForbiddenError,
    SessionTimeoutError,
    UnauthorizedError,
    UnsupportedOperationError,
)
from ._grant import Grant, oauth2_token, parse_response, seed_token, send_token_request
from ._loop import current_loop
from ._manager import TokenManager
from ._policy import RefreshPolicy, RetryPolicy, check_seconds
from ._secrets import Secret
from ._settings import read_env, resolve_environment, validate_client_name
from ._stores import TokenStore, default_memory_store
from ._token import Token

__all__ = ["EnturClient"]

logger = logging.getLogger("entur_oauth")

_AUTH_METHOD = "entur_client_secret_json"
_USE_DEFAULT = httpx2.USE_CLIENT_DEFAULT
# EnturClient.send runs on every API request, and issue 10 holds it to 1.05x the cost of a
# bare httpx2 request, so it does three things the plain way would make slow:
# - The event loop check reads the run's async-generator hooks first, as asyncio's
#   running-loop accessor makes a getpid() system call. Every asyncio loop run and every
#   trio run installs its own hooks (PEP 525), a new object per run: the hook seen at the
#   last exact check means the same run; another hook, or none, gets the exact check.
# - (scheme, host, port) come from httpx2.URL's parse, a private NamedTuple (scheme,
#   userinfo, host, port, ...), in one C call (_ORIGIN) instead of three property calls.
#   A test pins it equal to _origin_of's public properties.
# - The bearer goes into httpx2.Headers' private list of (name, lowercase name, value)
#   entries as the entry the token encoded once, and is popped after the response:
#   httpx2's setitem and pop encode, scan in Python and work out the headers' encoding
#   (1-3 us each, as much as the rest of our work). A caller's own Authorization goes
#   the public way.
# Without those attributes (another httpx2), each falls back to the public way.
_ORIGIN = operator.itemgetter(0, 2, 3)
_ENTRY_KEY = operator.itemgetter(1)
_asyncgen_hooks = sys.get_asyncgen_hooks
# httpx2's own send, called directly: authlib's class adds no send(), and a plain function
# call is cheaper than super() on every request.
_httpx_send = httpx2.AsyncClient.send
_HTTPX_AUTH = cast(property, httpx2.AsyncClient.auth)  # the class attribute: a property
_COOKIES_DEPRECATED = (
    "Setting per-request cookies=<...> is being deprecated, because the expected behaviour "
    "on cookie persistence is ambiguous. Set cookies directly on the client instance instead."
)
_RETRIED_DETAIL = "even after one retry with a freshly fetched token"
_NOT_REPLAYABLE_DETAIL = (
    "(not retried: the request body is a stream that cannot be sent twice; the token was "
    "dropped, so the next request gets a new one)"
)
_STORM_DETAIL = (
    "(not retried: this token replaced a rejected one moments ago, so a new one would be "
    "refused too; no token was requested, to spare the client's token quota)"
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
#: authlib's AsyncOAuth2Client methods that have no meaning for Entur's client-credentials
#: clients, and what to use instead (each raises UnsupportedOperationError).
_REFUSED = {
    "refresh_token": "Entur issues no refresh tokens to client-credentials clients; the "
    "client renews its token itself, and `await client.fetch_token()` forces a new one",
    "create_authorization_url": "Entur's partner clients use the client-credentials grant, "
    "which has no authorization step; the client fetches its token itself",
    "token_from_fragment": "Entur's partner clients use the client-credentials grant, which "
    "has no redirect with a token in it; the client fetches its token itself",
    "revoke_token": "Entur's token endpoint offers no revocation; tokens expire on their own "
    "(a new one: `await client.fetch_token()`)",
    "introspect_token": "Entur offers no introspection endpoint; `client.token` shows the "
    "token and its expiry",
    "register_client_auth_method": "the client authenticates with the JSON body Entur "
    "documents, registered at construction",
}
#: The compliance hooks that run: the token response is the one authlib step we keep.
_HOOKS = frozenset({"access_token_response"})


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


def _refused(name: str) -> Callable[..., NoReturn]:
    """Return a stand-in for authlib's ``name`` that raises UnsupportedOperationError."""
    advice = _REFUSED[name]

    def refused(self: object, *args: object, **kwargs: object) -> NoReturn:
        raise UnsupportedOperationError(f"EnturClient.{name}() is not available: {advice}.")

    refused.__name__ = refused.__qualname__ = name
    refused.__doc__ = f"Not available on an Entur client: {advice}."
    return refused


class _TokenSurface(AsyncOAuth2Client):
    """authlib's token surface for a client-credentials client, answered by the token manager,
    and the client's lifecycle (one event loop; the manager's tasks run in ``async with``)."""

    environment: Environment
    _token_origins: frozenset[tuple[str, str, int | None]]
    _manager: TokenManager | None
    _clock: Clock
    _loop: object
    _loop_run: object
    _user_auth: httpx2.Auth | None = None  # until __init__ has read httpx2's
    _task_group: TaskGroup | None
    _exit_stack: AsyncExitStack | None

    # -- httpx2's auth -------------------------------------------------------------------

    @property
    def auth(self) -> httpx2.Auth | None:
        """The httpx2 auth requests run, as in httpx2; API requests get the bearer too."""
        return self._user_auth

    @auth.setter
    def auth(self, auth: Any) -> None:
        # httpx2's own setter builds and checks it; a copy kept here spares every API
        # request a call into httpx2's property.
        _HTTPX_AUTH.__set__(self, auth)
        self._user_auth = _HTTPX_AUTH.__get__(self)

    # -- tokens --------------------------------------------------------------------------

    @property
    def token_fetches(self) -> int:
        """Token requests this client has sent, retries included (0 for open-API clients).

        A client that took its token from a shared store counts none: useful to check, or
        to export as a metric, that a fleet really shares one token.
        """
        return self._manager.fetches if self._manager is not None else 0

    @property
    def token(self) -> Any:
        """The current token as authlib's ``OAuth2Token``; ``None`` before the first.

        Setting it (authlib's dict) makes the client use that token from now on, without
        a token request, as authlib does; ``None`` or an expired token changes nothing.
        """
        return self.token_auth.token

    @token.setter
    def token(self, value: Any) -> None:
        seeded = _seeded(value, self._clock)
        del value  # not in the locals of the frame raising a ConfigurationError
        if isinstance(seeded, ConfigurationError):
            raise seeded
        manager = self._manager
        if manager is None:
            return  # an open-API client sends no token: it has none to show
        # What requests use from now on: an expired or None token is not installed.
        current = manager.seed(seeded)
        self.token_auth.set_token(oauth2_token(current) if current is not None else None)

    async def get_access_token(self) -> str:
        """Return a valid access token, reused or freshly fetched, to hand to another library.

        Raises:
            ConfigurationError: This is an open-API client (no credentials).
            TokenRequestError: No token could be fetched.
        """
        return (await self._current_token()).access_token

    async def _current_token(self) -> Token:
        return await self._token_manager().token()

    async def fetch_token(
        self, url: str | None = None, body: str = "", **kwargs: Any
    ) -> OAuth2Token:
        """Fetch a new token now (authlib's method, through the shared token manager).

        Every task of this client uses the new token from then on, and a shared store
        receives it. ``url`` may only be the environment's token URL.

        Returns:
            The new token as authlib's ``OAuth2Token``.

        Raises:
            UnsupportedOperationError: Another URL, a body or grant options were given.
            TokenRequestError: No token could be fetched.
        """
        if body or kwargs or url not in {None, self.environment.token_url}:
            raise UnsupportedOperationError(
                "EnturClient.fetch_token() takes no arguments: it runs the client-credentials "
                f"grant against {self.environment.token_url} with the client's own audience."
            )
        return oauth2_token(await self._token_manager().renew())

    async def ensure_active_token(self, token: Any = None) -> bool:
        """authlib's hook: make sure a valid token is at hand (no request while one is)."""
        await self._token_manager().token()
        return True

    def parse_response_token(self, resp: httpx2.Response) -> OAuth2Token:
        """Read a token response (authlib calls this): typed errors, no secret in them.

        Raises:
            TokenRequestError: The response holds no usable bearer token.
        """
        return parse_response(
            resp,
            secret=self.client_secret,
            clock=self._clock,
            where=f"The token endpoint {self.environment.token_url}",
        )

    def register_compliance_hook(self, hook_type: str, hook: Callable[..., Any]) -> None:
        """Register authlib's ``access_token_response`` hook; it runs on every token response.

        Raises:
            UnsupportedOperationError: Any other hook type (none of them ever runs here).
        """
        if hook_type not in _HOOKS:
            raise UnsupportedOperationError(
                f"The {hook_type!r} compliance hook never runs on an Entur client (it has no "
                "refresh, revocation or introspection, and sets the bearer itself): only "
                "'access_token_response' does. For API requests use httpx2's event_hooks."
            )
        super().register_compliance_hook(hook_type, hook)

    def client_auth(self, auth_method: Any) -> Any:
        """authlib's client authentication, for the JSON body Entur documents only.

        Raises:
            UnsupportedOperationError: Any other method (``client_secret_basic``, ...): the
                secret is kept in a :class:`Secret`, so it would build wrong credentials.
        """
        if auth_method != _AUTH_METHOD:
            raise UnsupportedOperationError(
                f"EnturClient.client_auth({auth_method!r}) is not available: the client "
                f"authenticates with the JSON body Entur documents ({_AUTH_METHOD!r}); "
                "`await client.fetch_token()` gets a token."
            )
        return super().client_auth(auth_method)

    refresh_token = _refused("refresh_token")
    create_authorization_url = _refused("create_authorization_url")
    token_from_fragment = _refused("token_from_fragment")
    revoke_token = _refused("revoke_token")
    introspect_token = _refused("introspect_token")
    register_client_auth_method = _refused("register_client_auth_method")

    def __repr__(self) -> str:
        # getattr: a traceback's capture_locals shows a client whose __init__ failed.
        kind = f"client_id={self.client_id!r}" if getattr(self, "_manager", None) else "open API"
        env = getattr(getattr(self, "environment", None), "name", None)
        name = getattr(self, "client_name", None)
        return f"<EnturClient environment={env!r} {kind} client_name={name!r}>"

    def _in_scope(self, url: httpx2.URL) -> bool:
        """Tell whether ``url`` is on a host that receives the token (the API's own)."""
        return _origin_of(url) in self._token_origins

    def _token_manager(self) -> TokenManager:
        manager = self._manager
        if manager is None:
            raise ConfigurationError(
                "This client has no client_id/client_secret, so it has no token; create it "
                "with credentials (or ENTUR_CLIENT_ID/ENTUR_CLIENT_SECRET) for partner APIs."
            )
        self._check_loop()
        return manager

    async def _on_token(self, token: Token) -> None:
        """The manager installed a new token: show it as ``client.token``, tell update_token."""
        previous = self.token
        new = oauth2_token(token)
        self.token_auth.set_token(new)  # not the setter: the manager has it already
        hook = self.update_token
        if hook is None:
            return
        old = previous.get("access_token") if previous else None
        try:
            # Exactly as authlib's own ensure_active_token calls it for this grant.
            result = hook(new, access_token=old)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # a persistence hook must not stop requests
            # Only the type: the hook's own message may quote the token it was handed.
            logger.warning(
                "update_token raised %s; the new token is used all the same", type(exc).__name__
            )

    def _check_loop(self, *, closing: bool = False) -> None:
        loop = current_loop()
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
        kwargs = _env_kwargs(environ if environ is not None else os.environ, overrides)
        # Raised with neither the variables nor the overrides (the plain secret, maybe)
        # in this frame's locals.
        del environ, overrides
        if isinstance(kwargs, ConfigurationError):
            raise kwargs
        return cls(**kwargs)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        manager = self._manager
        if manager is not None:
            try:
                self._check_loop()
                self._exit_stack = await _start(manager, self._task_group)
            except BaseException:
                # Cancelled or failed on entry: the task group is closed already; close
                # the connections too, as __aexit__ will not run.
                with anyio.CancelScope(shield=True):
                    await super().__aexit__(None, None, None)
                raise
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

    def __del__(self) -> None:
        # authlib's __del__ only breaks a reference cycle and raises on half-built
        # clients ("Exception ignored in ..."); the garbage collector handles the cycle.
        pass


class EnturClient(_TokenSurface):
    """An ``httpx2.AsyncClient`` for Entur's APIs that handles authentication for you.

    With ``client_id`` and ``client_secret`` it fetches an OAuth2 client-credentials token
    on first use, reuses it, and renews it before it expires; without them it is a client
    for Entur's open APIs. Either way every request carries ``ET-Client-Name``.

    Of authlib's ``AsyncOAuth2Client`` these work: ``token`` (the current token as an
    ``OAuth2Token``), ``await fetch_token()`` (a new token now, used from then on),
    ``ensure_active_token()``, ``update_token=`` (awaited with each new token),
    ``register_compliance_hook("access_token_response", hook)``, ``parse_response_token``
    and ``client_auth`` (for the client's own JSON method). ``refresh_token``,
    ``create_authorization_url``, ``token_from_fragment``, ``revoke_token``,
    ``introspect_token`` and ``register_client_auth_method`` raise
    ``UnsupportedOperationError``, saying what to use.

    Args:
        client_id: The client id from Entur Partner; ``None`` for the open APIs.
        client_secret: The client secret (``str`` or :class:`Secret`); never printed.
        client_name: ``ET-Client-Name``, as ``<company>-<application>``.
        environment: ``"production"``, ``"staging"``, ``"dev"`` or an :class:`Environment`.
        token_store: Where tokens are shared; default: one in-memory store per process.
        refresh: When tokens are renewed (:class:`RefreshPolicy`).
        retry: How the token endpoint is retried (:class:`RetryPolicy`).
        task_group: Where ``async with client`` runs shared token fetches and the
            background refresher, instead of a task group of its own.
        clock: Time source, for tests.
        token: A token to start with (authlib's ``{"access_token": ..., "expires_at": ...}``).
        update_token: authlib's hook, awaited as ``update_token(token,
            access_token=<the previous access token or None>)`` with each new token.
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
        token: Mapping[str, Any] | None = None,
        update_token: Callable[..., Awaitable[None] | None] | None = None,
        **httpx_options: Any,
    ) -> None:
        # Validate everything before authlib and httpx build anything, so a bad setting
        # leaves no half-built client behind (authlib's __del__ trips over those). The
        # plain secret and token= are dropped first: an error's traceback frames (a
        # logger's capture_locals, a crash reporter) would show them.
        secret = Secret(client_secret) if isinstance(client_secret, str) else client_secret
        del client_secret
        checked = _checked_settings(
            client_id,
            secret,
            token,
            client_name=client_name,
            environment=environment,
            store=token_store,
            refresh=refresh,
            retry=retry,
            clock=clock,
            options=httpx_options,
            update_token=update_token,
        )
        del token
        if isinstance(checked, ConfigurationError):
            raise checked
        env, name, clock, seed = checked
        retry = retry or RetryPolicy()
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
            # An expired token= is ignored: client.token shows what requests will use.
            token=oauth2_token(seed) if seed is not None else None,
            update_token=update_token,
            headers=headers,
            **httpx_options,
        )
        if params is not None:
            self.params = params
        # Whatever httpx2 and authlib set up (no auth: they are given none).
        self._user_auth = _HTTPX_AUTH.__get__(self)
        if user_auth is not None:
            self.auth = user_auth
        self.environment = env
        self.client_name = name
        self._clock = clock
        self._task_group = task_group
        self._exit_stack: AsyncExitStack | None = None
        self._loop: object = None
        self._loop_run: object = None
        self._token_origins = _origins(env)
        self._token_url = url = httpx2.URL(env.token_url)
        self._token_key = (url.scheme, url.host, url.port, url.path)
        self._manager: TokenManager | None = None
        if client_id is not None and secret is not None:
            method = (_AUTH_METHOD, _json_client_auth(env.audience))
            AsyncOAuth2Client.register_client_auth_method(self, method)
            self._manager = _manager_for(
                self, client_id, secret=secret, store=token_store, refresh=refresh, retry=retry
            )
            if seed is not None:
                self._manager.seed(seed)

    # -- requests ------------------------------------------------------------------------

    def request(
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
        timeout: Any = _USE_DEFAULT,
        extensions: Any = None,
        withhold_token: bool = False,
    ) -> Coroutine[Any, Any, httpx2.Response]:
        """Send a request as ``httpx2.AsyncClient.request`` does; ``withhold_token``: no bearer."""
        # Not authlib's request() (a token up front, a lock per call): build_request, then
        # send's coroutine handed back, not awaited here: one frame fewer per request.
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
        return self.send(
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
        # Every API request's path: see the notes above _ORIGIN.
        hook = _asyncgen_hooks().firstiter
        if hook is not self._loop_run or hook is None:
            self._check_loop()
            self._loop_run = hook  # kept alive here, so no other run can reuse its id
        url = request.url
        try:
            origin = _ORIGIN(url._uri_reference)
        except AttributeError:
            origin = _origin_of(url)
        manager = self._manager
        if manager is None or auth is not _USE_DEFAULT or origin not in self._token_origins:
            return await self._send_untokened(request, stream, auth, follow_redirects)
        token = await manager.token()
        entries: list[Any] | None = getattr(request.headers, "_list", None)
        if entries is not None and b"authorization" not in map(_ENTRY_KEY, entries):
            entries.append(token.header)  # not in a local: frames' locals are recorded
        else:
            entries = None
            request.headers["Authorization"] = token.authorization
        user_auth = self._user_auth
        try:
            response = await _httpx_send(
                self,
                request,
                stream=stream,
                auth=_AS_IS if user_auth is None else _BearerAfter(user_auth, token),
                follow_redirects=follow_redirects,
            )
        except httpx2.HTTPError as exc:
            error = _without_bearer(exc, request)
        except BaseException as exc:
            del token
            _cut(exc, request)
            raise
        else:
            if response.status_code in _STATUS_MESSAGES:  # 401, 403, 408: one lookup
                return await self._rejected(request, response, token, stream, follow_redirects)
            # Neither raise_for_status() nor a stream's read error may show the bearer.
            if entries and entries[-1] is token.header:
                entries.pop()  # the entry appended above, still last
            else:
                request.headers.pop("Authorization", None)
            if response.history or response.request is not request or stream:
                _strip_bearer(request, response, stream)
            return response
        del token  # not left in a local of the frame the error is raised from
        raise error

    async def _send_untokened(
        self, request: httpx2.Request, stream: bool, auth: Any, follow_redirects: Any
    ) -> httpx2.Response:
        """Send a request that gets no bearer: the token request, another host, or asked so."""
        url = request.url
        if (
            request.method == "POST"
            and (url.scheme, url.host, url.port, url.path) == self._token_key
        ):
            # authlib's grant: the configured URL exactly (client params are for API calls).
            request.url = self._token_url
            return await send_token_request(self, request, auth, self._clock)
        response = await _httpx_send(
            self, request, stream=stream, auth=auth, follow_redirects=follow_redirects
        )
        if not self._in_scope(url):
            # Not an Entur API host we know: no token, no Entur status mapping.
            return response
        detail = _NO_TOKEN_DETAIL if self._manager is None else _WITHHELD_DETAIL
        return await _raise_for_entur_status(self, request, response, stream, detail)

    async def _rejected(
        self,
        request: httpx2.Request,
        response: httpx2.Response,
        token: Token,
        stream: bool,
        follow_redirects: Any,
    ) -> httpx2.Response:
        """Handle a 401, 403 or 408 from the API: retry 401/408 once with a new token."""
        try:
            return await _answer_rejection(
                self, request, response, token, stream=stream, follow_redirects=follow_redirects
            )
        except BaseException as exc:
            del token
            _cut(exc, request)
            raise


async def _answer_rejection(
    client: EnturClient,
    request: httpx2.Request,
    response: httpx2.Response,
    token: Token,
    *,
    stream: bool,
    follow_redirects: Any,
) -> httpx2.Response:
    """Retry a 401/408 once with a new token; raise the APIError the final status means."""
    status = response.status_code
    detail = _RETRIED_DETAIL
    manager = client._manager
    if manager is not None and status in {401, 408} and client._in_scope(response.request.url):
        # The token was rejected, or expired mid-flight: it is dropped either way,
        # unless it replaced a rejected token moments ago (the 401-storm guard).
        if not await manager.invalidate(token):
            detail = _STORM_DETAIL
        elif _replayable(request.stream):
            # This answer stays in a local of send's frame: no echo of the token in it.
            _without_echo(response, _bearer_of(request))
            await response.aclose()
            logger.debug("API answered %d; retrying once with a new token", status)
            retried = await _send_again(client, request, stream, follow_redirects)
            if isinstance(retried, httpx2.HTTPError):
                del token
                raise retried  # outside any except block: no chain to the original
            response = retried
        else:
            detail = _NOT_REPLAYABLE_DETAIL
    del token
    bearer = _bearer_of(request)
    _strip_bearer(request, response, stream)
    return await _raise_for_entur_status(client, request, response, stream, detail, bearer=bearer)


async def _send_again(
    client: EnturClient, request: httpx2.Request, stream: bool, follow_redirects: Any
) -> httpx2.Response | httpx2.HTTPError:
    """Send ``request`` again with a new token; return the response or the error."""
    token = await client._token_manager().token()
    request.headers["Authorization"] = token.authorization  # rare: the public way
    auth = _AS_IS if client.auth is None else _BearerAfter(client.auth, token)
    del token
    try:
        return await _httpx_send(
            client, request, stream=stream, auth=auth, follow_redirects=follow_redirects
        )
    except httpx2.HTTPError as exc:
        return _without_bearer(exc, request)


async def _raise_for_entur_status(
    client: EnturClient,
    request: httpx2.Request,
    response: httpx2.Response,
    stream: bool,
    detail: str,
    *,
    bearer: Secret | None = None,
) -> httpx2.Response:
    """Return ``response``, or raise the APIError an Entur API's 401/403/408 means.

    ``bearer``: the ``Authorization`` the request carried, blanked in the error's response
    (an API may echo it).
    """
    mapped = _STATUS_MESSAGES.get(response.status_code)
    # A status from another host (reached by a redirect) carries no Entur meaning.
    if mapped is None or not client._in_scope(response.request.url):
        return response
    error_class, template = mapped
    if stream:
        # Read the (small) error body so the exception's response is usable; aread
        # closes the stream, and so does aclose if reading fails.
        try:
            await response.aread()
        finally:
            await response.aclose()
    _strip_bearer(request, response, False)
    _without_echo(response, bearer)
    url = request.url.copy_with(query=None)
    message = template.format(url=url, env=client.environment.name, detail=detail)
    raise error_class(message, request=request, response=response)


def _bearer_of(request: httpx2.Request) -> Secret | None:
    """Return the token ``request`` carries, wrapped so no frame local shows it."""
    header = request.headers.get("Authorization")
    return Secret(header.removeprefix("Bearer ")) if header else None


def _without_echo(response: httpx2.Response, bearer: Secret | None) -> None:
    """Blank the ``bearer`` token in ``response``'s headers, body and reason phrase when the
    API echoed it there (a debug endpoint, a proxy's error page). In place: the frames the
    error passes through hold this very response."""
    if bearer is None:
        return
    token = bearer.reveal()
    needle = token.encode()
    try:
        raw = response.content
    except httpx2.ResponseNotRead:  # a stream, closed unread before the retry
        raw = b""
    headers = response.headers.multi_items()
    reason = response.extensions.get("reason_phrase", b"")
    if isinstance(reason, bytes) and needle in reason:
        response.extensions["reason_phrase"] = reason.replace(needle, b"[redacted]")
    if any(token in value for _, value in headers):
        response.headers = httpx2.Headers(
            [(name, value.replace(token, "[redacted]")) for name, value in headers]
        )
    if needle in raw:
        # httpx2 offers no public way to replace a read body; its decoded copy is this.
        response._content = raw.replace(needle, b"[redacted]")


class _BodyStream(httpx2.AsyncByteStream):
    """An API response body that re-raises a read error without the bearer: httpx2's error
    chains to httpcore's, whose frames hold the request as sent, token included."""

    def __init__(self, inner: httpx2.AsyncByteStream, request: httpx2.Request) -> None:
        self._inner = inner
        self._request = request

    @property
    def elapsed(self) -> Any:
        """httpx2's ``response.elapsed`` reads it from the stream."""
        return getattr(self._inner, "elapsed", None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._inner.__aiter__()
        try:
            while True:
                error: httpx2.HTTPError | None = None
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except httpx2.HTTPError as exc:
                    error = _without_bearer(exc, self._request)
                if error is not None:
                    raise error  # outside the except block: no chain to httpcore's frames
                yield chunk
        finally:
            # Also when the reader stops early: the inner generator is closed now, not
            # whenever the garbage collector finds it.
            await _close_quietly(chunks)

    async def aclose(self) -> None:
        error: httpx2.HTTPError | None = None
        try:
            await self._inner.aclose()
        except httpx2.HTTPError as exc:
            error = _without_bearer(exc, self._request)
        if error is not None:
            raise error


async def _close_quietly(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with suppress(Exception):
            await aclose()


async def _start(manager: TokenManager, task_group: TaskGroup | None) -> AsyncExitStack:
    """Start ``manager``'s tasks; return the stack that stops them (and closes the client's
    own task group). If starting fails or is cancelled, all of it is undone first: a task
    group left open would corrupt the caller's cancel scopes."""
    async with AsyncExitStack() as stack:
        if task_group is None:
            task_group = await stack.enter_async_context(anyio.create_task_group())
        # Stop the manager's tasks on exit, also when they run in the user's task group
        # (which would otherwise wait for the refresher forever).
        stack.callback(manager.stop)
        await manager.start(task_group)
        return stack.pop_all()


def _manager_for(
    client: EnturClient,
    client_id: str,
    *,
    secret: Secret,
    store: TokenStore | None,
    refresh: RefreshPolicy | None,
    retry: RetryPolicy,
) -> TokenManager:
    """Return the token manager of a partner client: it fetches through the client's grant."""
    env, clock = client.environment, client._clock
    key = store_key(env.token_url, env.audience, client_id)
    return TokenManager(
        Grant(client, url=env.token_url, audience=env.audience, clock=clock, timeout=retry.timeout),
        clock=clock,
        refresh=refresh or RefreshPolicy(),
        retry=retry,
        store=store if store is not None else default_memory_store(),
        store_key=key,
        codec=TokenCodec(secret, key),
        on_token=client._on_token,
    )


def _checked_settings(
    client_id: object,
    secret: object,
    token: Any,
    *,
    client_name: object,
    environment: Any,
    store: object,
    refresh: object,
    retry: object,
    clock: Any,
    options: Mapping[str, Any],
    update_token: object = None,
) -> tuple[Environment, str, Clock, Token | None] | ConfigurationError:
    """Check the constructor's settings; return them resolved, or the error to raise.

    The error is returned, not raised, and stripped of its traceback and chain: their
    frames hold ``token=`` (the caller deletes it, then raises).
    """
    try:
        env = resolve_environment(environment)
        name = validate_client_name(client_name)
        _check_settings(client_id, secret, store, options)
        _check_policies(refresh, retry, clock)
        _check_httpx_options(options, update_token)
        if "base_url" in options:
            check_url(options["base_url"], "base_url", env.name)
        clock = clock or SystemClock()
        seed = seed_token(token, clock) if token is not None and secret is not None else None
    except ConfigurationError as exc:
        return _cleaned(exc)
    return env, name, clock, seed


def _env_kwargs(
    environ: Mapping[str, str], overrides: dict[str, Any]
) -> dict[str, Any] | ConfigurationError:
    """Return the constructor's arguments ``ENTUR_*`` variables and ``overrides`` give,
    the secret as a :class:`Secret`; or the (cleaned) error to raise."""
    try:
        settings = read_env(
            environ,
            require_credentials=not {"client_id", "client_secret"} <= set(overrides),
            require_name="client_name" not in overrides,
        )
    except ConfigurationError as exc:
        return _cleaned(exc)
    kwargs: dict[str, Any] = {
        "client_id": settings.client_id,
        "client_secret": settings.client_secret,
        "client_name": settings.client_name,
        "environment": settings.environment,
    }
    kwargs.update(overrides)
    if isinstance(kwargs["client_secret"], str):  # not plain in the caller's locals
        kwargs["client_secret"] = Secret(kwargs["client_secret"])
    return kwargs


def _seeded(value: object, clock: Clock) -> Token | ConfigurationError | None:
    """Parse a token set on ``client.token``: the Token, the (cleaned) error, or ``None``."""
    try:
        # seed_token refuses a non-mapping with a ConfigurationError.
        return seed_token(cast("Mapping[str, Any]", value), clock) if value is not None else None
    except ConfigurationError as exc:
        return _cleaned(exc)


def _cleaned(error: ConfigurationError) -> ConfigurationError:
    """Drop ``error``'s traceback and chain (frames that held a secret); its message says
    all there is to say."""
    error.__cause__ = error.__context__ = None
    error.__suppress_context__ = True
    return error.with_traceback(None)


def _check_settings(
    client_id: object, secret: object, token_store: object, options: Mapping[str, Any]
) -> None:
    """Check the credentials, the store and the httpx2 options."""
    if client_id is not None and not isinstance(client_id, str):
        raise ConfigurationError(f"client_id must be a str, not {type(client_id).__name__}.")
    if secret is not None and not isinstance(secret, Secret):
        raise ConfigurationError(
            f"client_secret must be a str or a Secret, not {type(secret).__name__}."
        )
    if (client_id is None) != (secret is None) or client_id == "" or secret == Secret(""):
        raise ConfigurationError(
            "Give both client_id and client_secret (a partner-API client) or neither "
            "(an open-API client); one of them is missing or empty."
        )
    if token_store is not None and not isinstance(token_store, TokenStore):
        raise ConfigurationError(
            f"token_store must implement TokenStore (get, set, delete, lock), "
            f"not {type(token_store).__name__}."
        )
    unknown = set(options) - _HTTPX_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"Unknown option(s) {sorted(unknown)}: EnturClient takes the Entur options "
            "and the httpx2.AsyncClient options only."
        )


def _is_seconds(value: object) -> bool:
    """A timeout in seconds: the policies' check (real, finite, at most MAX_SECONDS), >= 0."""
    try:
        return check_seconds("timeout", value) >= 0
    except ConfigurationError:
        return False


def _is_timeout(value: object) -> bool:
    if value is None or isinstance(value, httpx2.Timeout) or _is_seconds(value):
        return True
    return isinstance(value, tuple) and all(v is None or _is_seconds(v) for v in value)


def _builds(kind: Callable[[Any], object]) -> Callable[[object], bool]:
    """A check that ``kind(value)`` accepts ``value`` (httpx2's own parsing, no guessing)."""

    def check(value: object) -> bool:
        try:
            kind(value)
        except Exception:  # any refusal means the setting is unusable
            return False
        return True

    return check


#: The httpx2.AsyncClient options checked here, with what each must be: httpx2 itself
#: would fail on most of these only at the first request, or with a bare TypeError.
_HTTPX_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "timeout": (_is_timeout, "None, a number of seconds, a tuple of them or httpx2.Timeout"),
    "follow_redirects": (lambda v: isinstance(v, bool), "True or False"),
    "http1": (lambda v: isinstance(v, bool), "True or False"),
    "http2": (lambda v: isinstance(v, bool), "True or False"),
    "trust_env": (lambda v: isinstance(v, bool), "True or False"),
    "max_redirects": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "a whole number of redirects, 0 or more",
    ),
    "transport": (
        lambda v: v is None or isinstance(v, httpx2.AsyncBaseTransport),
        "an httpx2.AsyncBaseTransport",
    ),
    "limits": (lambda v: isinstance(v, httpx2.Limits), "an httpx2.Limits"),
    "headers": (_builds(httpx2.Headers), "a mapping or a list of (name, value) pairs"),
    "params": (_builds(httpx2.QueryParams), "a mapping, a list of pairs or a query string"),
    "cookies": (_builds(httpx2.Cookies), "a mapping or an httpx2.Cookies"),
    "event_hooks": (
        lambda v: (
            v is None
            or (
                isinstance(v, Mapping)
                and set(v) <= {"request", "response"}
                and all(isinstance(h, list | tuple) and all(map(callable, h)) for h in v.values())
            )
        ),
        'a mapping like {"request": [hook], "response": [hook]} of lists of callables',
    ),
    "verify": (
        lambda v: isinstance(v, bool | str | ssl.SSLContext),
        "True, False, a CA bundle path or an ssl.SSLContext",
    ),
}


def _check_httpx_options(options: Mapping[str, Any], update_token: object) -> None:
    """Refuse an httpx2 option or ``update_token`` of the wrong kind now, naming it."""
    if update_token is not None and not callable(update_token):
        raise ConfigurationError(
            f"update_token must be a callable (authlib's hook, called as "
            f"update_token(token, access_token=...)), not {type(update_token).__name__}."
        )
    for name, value in options.items():
        check = _HTTPX_CHECKS.get(name)
        if check is not None and not check[0](value):
            raise ConfigurationError(
                f"{name} must be {check[1]}, not {type(value).__name__}: see the "
                "httpx2.AsyncClient option of that name."
            )


def _check_policies(refresh: object, retry: object, clock: object) -> None:
    """Refuse a ``refresh``, ``retry`` or ``clock`` of the wrong type now, not at first use."""
    for setting, value, kind in (
        ("refresh", refresh, RefreshPolicy),
        ("retry", retry, RetryPolicy),
    ):
        if value is not None and not isinstance(value, kind):
            raise ConfigurationError(
                f"{setting} must be a {kind.__name__} (or None), not {type(value).__name__}; "
                f"for example {setting}={kind.__name__}()."
            )
    if clock is not None and not all(
        callable(getattr(clock, method, None)) for method in ("monotonic", "time", "sleep")
    ):
        raise ConfigurationError(
            f"clock must have monotonic(), time() and async sleep() (see entur_oauth.Clock), "
            f"not {type(clock).__name__}."
        )


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


class _AsIs(httpx2.Auth):
    """Send the request as it is: the bearer is on it already.

    Given to httpx2's send on the token path instead of its default, which checks every URL
    for a user:password (whose Basic header would replace the bearer) and runs a flow of two
    generators: one generator costs less, per request.
    """

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        yield request


_AS_IS = _AsIs()


class _BearerAfter(httpx2.Auth):
    """Run the user's auth flow, then put the bearer on each request it yields."""

    def __init__(self, inner: httpx2.Auth, token: Token) -> None:
        self._inner = inner
        self._authorization = token.authorization

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


def _origin_of(url: httpx2.URL) -> tuple[str, str, int | None]:
    """Return ``url``'s (scheme, host, port): lowercase, the host IDNA-encoded, a default
    port as ``None``, as httpx2 normalises every URL it parses."""
    return (url.scheme, url.raw_host.decode("ascii"), url.port)


def _origins(env: Environment) -> frozenset[tuple[str, str, int | None]]:
    """Return the (scheme, host, port) triples that may receive the bearer token.

    Parsed by httpx2.URL, as request URLs are, so both are normalised alike.
    """
    candidates = [httpx2.URL(env.api_base_url)]
    candidates += [httpx2.URL(f"https://{extra}") for extra in env.extra_token_hosts]
    # http:// only ever on loopback (Environment refuses it elsewhere).
    return frozenset(
        _origin_of(u)
        for u in candidates
        if u.host and (u.scheme == "https" or is_loopback_host(u.host))
    )


def _cut(exc: BaseException, request: httpx2.Request) -> None:
    """Make ``exc``, raised while ``request`` was out (or being retried), fit to leave send.

    The request loses its ``Authorization``, which clears it in every frame that holds it.
    A cancellation (a timeout around the call) or an interrupt also loses its frames from
    here down: httpcore's hold their own copy of the request as sent. Other errors keep
    their traceback (an event hook's error should point at the hook).
    """
    request.headers.pop("Authorization", None)
    if not isinstance(exc, Exception):
        exc.with_traceback(None)


def _without_bearer(exc: httpx2.HTTPError, request: httpx2.Request) -> httpx2.HTTPError:
    """Return a new ``exc`` of the same type whose requests carry no ``Authorization``.

    The original is dropped with its traceback and chain: httpcore's frames and httpx2's
    ``request`` hold the bearer, and a pickle of the error would carry it.
    """
    try:
        sent = exc.request
    except RuntimeError:  # httpx2 raises this when no request was attached
        sent = request
    bearer = request.headers.get("Authorization") or sent.headers.get("Authorization")
    for each in (request, sent):
        each.headers.pop("Authorization", None)
    message = str(exc)
    if bearer:  # a transport may quote the header it was given
        message = message.replace(bearer.removeprefix("Bearer "), "[redacted]")
    del bearer
    if isinstance(exc, httpx2.HTTPStatusError):  # from a user's response event hook
        return type(exc)(message, request=sent, response=exc.response)
    if isinstance(exc, httpx2.RequestError):
        return type(exc)(message, request=sent)
    return httpx2.TransportError(message, request=sent)


def _strip_bearer(request: httpx2.Request, response: httpx2.Response, stream: bool) -> None:
    """Take the token off every request a response or an error about it carries (a
    same-origin redirect keeps the header on the request httpx2 built for it); a streamed
    body's read errors are re-raised without the bearer httpcore's frames hold."""
    # send pops its own entry itself; this runs after a redirect, for a stream and on the
    # 401/403/408 path, where the header send appended (or _send_again set) is still last.
    # Dropping that entry spares httpx2's pop, which decodes every header first (3 us).
    entries = getattr(request.headers, "_list", None)
    if entries and entries[-1][1] == b"authorization":
        entries.pop()
    else:  # replaced a user's own header in place, or httpx2 changed: the public way
        request.headers.pop("Authorization", None)
    if response.history or response.request is not request:
        for sent in (response.request, *(r.request for r in response.history)):
            sent.headers.pop("Authorization", None)
    body = response.stream
    if stream and isinstance(body, httpx2.AsyncByteStream):
        response.stream = _BodyStream(body, request)
