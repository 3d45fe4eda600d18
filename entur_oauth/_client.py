"""EnturClient: an ``httpx2.AsyncClient`` (through authlib's ``AsyncOAuth2Client``) for
Entur's APIs: its constructor and its request path.

What it is made of lives beside it: the bearer, retried once on 401/408, is an
``httpx2.Auth`` flow (``_bearer.py``); authlib's methods, kept or refused, are in
``_authlib_surface.py``; every construction check is in ``_settings.py``; the token
request is ``_grant.py``'s, the token's lifetime ``_manager.py``'s.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

import anyio
import httpx2
from anyio.abc import TaskGroup

from . import _authlib_surface as surface
from . import _telemetry as telemetry
from ._api_errors import APIError
from ._authlib import AsyncOAuth2Client
from ._bearer import BodyStream, EnturBearer, origins_of, request_auth
from ._clock import Clock
from ._codec import TokenCodec, store_key
from ._environments import Environment
from ._errors import ConfigurationError, EventLoopError
from ._grant import Grant, oauth2_token, send_token_request
from ._lifetime import Lifetime, closed_error
from ._loop import current_loop
from ._manager import TokenManager
from ._policy import RefreshPolicy, RetryPolicy
from ._scrub import cut, without_bearer
from ._secrets import Secret
from ._settings import checked_settings, env_kwargs
from ._stores import TokenStore, default_memory_store

__all__ = ["EnturClient"]

_USE_DEFAULT = httpx2.USE_CLIENT_DEFAULT
# httpx2's own send, called as a function: cheaper than super() on every request.
_httpx_send = httpx2.AsyncClient.send
_COOKIES_DEPRECATED = (
    "Setting per-request cookies=<...> is being deprecated, because the expected behaviour "
    "on cookie persistence is ambiguous. Set cookies directly on the client instance instead."
)


class EnturClient(AsyncOAuth2Client):
    """An ``httpx2.AsyncClient`` for Entur's APIs that handles authentication for you.

    Example::

        from entur_oauth import EnturClient

        # ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET and ENTUR_CLIENT_NAME from the environment
        async with EnturClient.from_env() as entur:
            response = await entur.get("/personalisation/v1/programs/1")

    With ``client_id`` and ``client_secret`` it fetches an OAuth2 client-credentials token
    on first use, reuses it, and renews it before it expires; without them it is a client
    for Entur's open APIs. Either way every request carries ``ET-Client-Name``. The bearer
    goes only to the environment's API origins; a 401 or 408 there is retried once with
    a new token, and a final 401/403/408 raises :class:`UnauthorizedError`,
    :class:`ForbiddenError` or :class:`SessionTimeoutError`.

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
        task_group: Where ``async with client`` runs shared token fetches (they then go
            on when their caller is cancelled) and the background refresher. Without it
            the client holds a task group only for ``RefreshPolicy(background=True)``,
            and must then be left by the task that entered it (``LifetimeError``).
        clock: Time source, for tests.
        token: A token to start with (authlib's ``{"access_token": ..., "expires_at": ...}``).
        update_token: authlib's hook, awaited as ``update_token(token,
            access_token=<the previous access token or None>)`` with each new token.
        **httpx_options: Any ``httpx2.AsyncClient`` option (``transport``, ``timeout``,
            ``headers``, ``event_hooks``, ``auth``, ``limits``, ...). ``base_url``
            defaults to the environment's API base.

    Raises:
        ConfigurationError: A setting is missing or invalid.
    """

    # authlib's AsyncOAuth2Client, as an Entur client answers it (see _authlib_surface.py).
    token = surface.TokenAttribute()
    fetch_token = surface.fetch_token
    ensure_active_token = surface.ensure_active_token
    parse_response_token = surface.parse_response_token
    register_compliance_hook = surface.register_compliance_hook
    client_auth = surface.client_auth
    refresh_token = surface.refused("refresh_token")
    create_authorization_url = surface.refused("create_authorization_url")
    token_from_fragment = surface.refused("token_from_fragment")
    revoke_token = surface.refused("revoke_token")
    introspect_token = surface.refused("introspect_token")
    register_client_auth_method = surface.refused("register_client_auth_method")

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
        checked = checked_settings(
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
            token_endpoint_auth_method=surface.AUTH_METHOD if client_id else None,
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
        if user_auth is not None:
            self.auth = user_auth  # httpx2's own: runs inside the Entur flow
        self.environment = env
        self.client_name = name
        self._clock = clock
        self._task_group = task_group
        self._lifetime: Lifetime | None = None  # while inside `async with` (partner clients)
        self._loop: object = None
        self._token_url = url = httpx2.URL(env.token_url)
        self._token_key = (url.scheme, url.host, url.port, url.path)
        self._manager: TokenManager | None = None
        if client_id is not None and secret is not None:
            method = (surface.AUTH_METHOD, surface.json_client_auth(env.audience))
            AsyncOAuth2Client.register_client_auth_method(self, method)
            self._manager = _manager_for(
                self, client_id, secret=secret, store=token_store, refresh=refresh, retry=retry
            )
            if seed is not None:
                self._manager.seed(seed)
        self._bearer = EnturBearer(
            self._manager, origins_of(env), environment=env.name, client_name=name
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
        kwargs = env_kwargs(environ if environ is not None else os.environ, overrides)
        # Raised with neither the variables nor the overrides (the plain secret, maybe)
        # in this frame's locals.
        del environ, overrides
        if isinstance(kwargs, ConfigurationError):
            raise kwargs
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
        return (await self._token_manager().token()).access_token

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
            import warnings

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
        """Send ``request`` as httpx2 does, through the Entur flow (bearer, client name,
        401/408 retry, typed errors); a request's own ``auth=`` runs without the bearer."""
        if current_loop() is not self._loop:
            self._check_loop()
        if self.is_closed:  # else httpx2's RuntimeError, or a failed token request
            raise closed_error()
        if auth is _USE_DEFAULT:
            user = self.auth
            flow = self._bearer if user is None else self._bearer.around(user)
        else:
            url = request.url
            if request.method == "POST" and (
                (url.scheme, url.host, url.port, url.path) == self._token_key
            ):
                # authlib's grant: the configured URL exactly (client params are for API
                # calls); no bearer, no redirect, a capped read (_grant.py).
                request.url = self._token_url
                return await send_token_request(self, request, auth, self._clock)
            flow = self._bearer.around(request_auth(auth), withhold=True)
        try:
            response = await _httpx_send(
                self, request, stream=stream, auth=flow, follow_redirects=follow_redirects
            )
        except APIError as exc:
            # The flow's, complete in itself: httpx2's frames below this one hold the
            # API's answer as it came, with any echo of the token in it.
            error: BaseException = exc.with_traceback(None)
        except httpx2.HTTPError as exc:
            if not self._carried_bearer(request, auth):
                raise
            error = without_bearer(exc, request)
        except BaseException as exc:
            if self._carried_bearer(request, auth):
                cut(exc, request)
            raise
        else:
            if stream and isinstance(response.stream, httpx2.AsyncByteStream):
                # A read error of the body must not chain to httpcore's frames either.
                response.stream = BodyStream(response.stream, request)
            return response
        raise error  # outside the except blocks: no chain to what held the bearer

    def _carried_bearer(self, request: httpx2.Request, auth: object) -> bool:
        """Tell whether ``request`` went out with the bearer (for an error about it)."""
        return (
            self._manager is not None and auth is _USE_DEFAULT and self._bearer.covers(request.url)
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.is_closed:
            raise closed_error()
        await super().__aenter__()
        manager = self._manager
        if manager is not None:
            try:
                self._check_loop()
                # Holds a task group only if the settings ask for one (see _lifetime.py).
                self._lifetime = await Lifetime.enter(manager, self._task_group)
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
        """Stop the token manager's tasks and close the connections.

        Raises:
            LifetimeError: The client holds a task group of its own
                (``RefreshPolicy(background=True)`` without ``task_group=``) and is left
                in another task or out of nesting order; the connections are closed all
                the same.
            EventLoopError: Left in another event loop than the one that used it.
        """
        try:
            lifetime = self._lifetime
            if lifetime is not None:
                await lifetime.exit()  # raises, keeping its task group, if misplaced
                self._lifetime = None
        finally:
            if not self.is_closed:  # a second exit, after a LifetimeError
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

    # -- internals -----------------------------------------------------------------------

    def __repr__(self) -> str:
        # getattr: a traceback's capture_locals shows a client whose __init__ failed.
        kind = f"client_id={self.client_id!r}" if getattr(self, "_manager", None) else "open API"
        env = getattr(getattr(self, "environment", None), "name", None)
        name = getattr(self, "client_name", None)
        return f"<EnturClient environment={env!r} {kind} client_name={name!r}>"

    def _token_manager(self) -> TokenManager:
        manager = self._manager
        if manager is None:
            raise ConfigurationError(
                "This client has no client_id/client_secret, so it has no token; create it "
                "with credentials (or ENTUR_CLIENT_ID/ENTUR_CLIENT_SECRET) for partner APIs."
            )
        self._check_loop()
        if self.is_closed:
            raise closed_error()
        return manager

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
    store = store if store is not None else default_memory_store()
    return TokenManager(
        Grant(client, url=env.token_url, audience=env.audience, clock=clock, timeout=retry.timeout),
        clock=clock,
        refresh=refresh or RefreshPolicy(),
        retry=retry,
        store=store,
        store_key=key,
        codec=TokenCodec(secret, key),
        on_token=functools.partial(surface.announce, client),
        labels=telemetry.Labels(
            environment=env.name,
            server=client._token_url.host,
            store=type(store).__name__,
            client_id=client_id,
        ),
    )
