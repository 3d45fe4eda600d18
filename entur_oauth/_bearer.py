"""The Entur bearer as an ``httpx2.Auth`` flow: httpx2's own place for "add a credential,
read the answer, maybe send once more".

For each API request :class:`EnturBearer` asks the token manager for a token and sets
``Authorization`` only on Entur's API origins (https on the API host and port, the hosts
listed in ``extra_token_hosts``, the environment's own loopback ``http://`` base); every
request gets ``ET-Client-Name``. A 401 or 408 from the API drops the token and sends the
request once more with a new one (when its body can be sent twice and the storm guard
allows it); a final 401, 403 or 408 raises the typed error. A user's own ``auth=`` flow
runs inside it: its requests get the bearer on Entur's origins, and it runs alone where
no bearer goes.

The flow takes the bearer off the request as soon as the answer is in, so that nothing
a caller gets back (a response's ``request``, its history, an error) holds it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import suppress

import httpx2

from . import _telemetry as telemetry
from ._api_errors import (
    ENTUR_STATUSES,
    NO_TOKEN,
    NOT_REPLAYABLE,
    RETRIED,
    STORM,
    WITHHELD,
    api_error,
)
from ._environments import Environment, is_loopback_host
from ._manager import TokenManager
from ._scrub import strip_bearer, without_bearer, without_echo
from ._token import Token

__all__ = ["BodyStream", "EnturBearer", "Origin", "origin_of", "origins_of", "request_auth"]

logger = logging.getLogger("entur_oauth")

Origin = tuple[str, str, int | None]
_RETRIED_STATUSES = frozenset({401, 408})
_CLIENT_NAME = b"et-client-name"
_Flow = AsyncGenerator[httpx2.Request, httpx2.Response]


def origin_of(url: httpx2.URL) -> Origin:
    """Return ``url``'s (scheme, host, port): lowercase, the host IDNA-encoded, a default
    port as ``None``, as httpx2 normalises every URL it parses."""
    return (url.scheme, url.raw_host.decode("ascii"), url.port)


def origins_of(env: Environment) -> frozenset[Origin]:
    """Return the (scheme, host, port) triples that may receive the bearer token.

    Parsed by httpx2.URL, as request URLs are, so both are normalised alike.
    """
    candidates = [httpx2.URL(env.api_base_url)]
    candidates += [httpx2.URL(f"https://{extra}") for extra in env.extra_token_hosts]
    # http:// only ever on loopback (Environment refuses it elsewhere).
    return frozenset(
        origin_of(u)
        for u in candidates
        if u.host and (u.scheme == "https" or is_loopback_host(u.host))
    )


def request_auth(auth: object) -> httpx2.Auth | None:
    """Build a request's own ``auth=`` as httpx2 does (a pair: Basic; a callable: a
    function auth), to run inside the Entur flow.

    Raises:
        TypeError: ``auth`` is none of those (httpx2's own error).
    """
    if auth is None or isinstance(auth, httpx2.Auth):
        return auth
    if isinstance(auth, tuple):
        return httpx2.BasicAuth(*auth)
    if callable(auth):
        return httpx2.FunctionAuth(auth)
    raise TypeError(f'Invalid "auth" argument: {auth!r}')


def _replayable(stream: object) -> bool:
    """Tell whether a request body can be sent a second time.

    httpx2's in-memory bodies (``ByteStream``) and multipart bodies (which rewind their
    files) implement both the sync and async stream interfaces; generator bodies do not.
    """
    return isinstance(stream, httpx2.SyncByteStream) and isinstance(stream, httpx2.AsyncByteStream)


class EnturBearer(httpx2.Auth):
    """The Entur bearer, ``ET-Client-Name`` and Entur's meaning of 401/403/408.

    Args:
        manager: The token manager (``None`` for an open-API client: no bearer).
        origins: Where the bearer may go (:func:`origins_of`).
        environment: The environment's name, for the error messages.
        client_name: ``ET-Client-Name``.
        inner: A user's own auth, run inside this flow.
        withhold: Send no bearer (``withhold_token=True``, or a request's own ``auth=``).
    """

    def __init__(
        self,
        manager: TokenManager | None,
        origins: frozenset[Origin],
        *,
        environment: str,
        client_name: str,
        inner: httpx2.Auth | None = None,
        withhold: bool = False,
    ) -> None:
        self._manager = manager
        self._origins = origins
        self._raw_origins = frozenset((s, h.encode("ascii"), p) for s, h, p in origins)
        self._environment = environment
        self._client_name = client_name
        self._inner = inner
        self._withhold = withhold

    def __repr__(self) -> str:
        # Never a token: an auth object can end up in a log or a traceback.
        return f"<EnturBearer {self._environment} inner={self._inner!r}>"

    def around(self, inner: httpx2.Auth | None, *, withhold: bool = False) -> EnturBearer:
        """This flow with ``inner`` (a user's auth) run inside it."""
        return EnturBearer(
            self._manager,
            self._origins,
            environment=self._environment,
            client_name=self._client_name,
            inner=inner,
            withhold=withhold,
        )

    def covers(self, url: httpx2.URL) -> bool:
        """Tell whether ``url`` is on an origin that receives the token (the API's own)."""
        return origin_of(url) in self._origins

    def async_auth_flow(self, request: httpx2.Request) -> _Flow:
        """Return the flow for ``request``: with the bearer on Entur's API origins (a
        plain function: the choice costs no generator step)."""
        # Merged from the client's headers as a rule; a request built by hand, or a client
        # whose headers were replaced, gets it here. Looked for in the raw entries: the
        # str look-ups work out the headers' encoding first, which costs more.
        headers = request.headers
        for name, _ in reversed(headers.raw):  # the client's headers come last
            if name.lower() == _CLIENT_NAME:
                break
        else:
            headers["ET-Client-Name"] = self._client_name
        url = request.url
        manager = self._manager
        if (
            manager is None
            or self._withhold
            or (url.scheme, url.raw_host, url.port) not in self._raw_origins
        ):
            return self._without_bearer(request)
        if self._inner is None:
            return self._with_bearer(request, manager)
        return self._with_bearer_after(request, manager, self._inner)

    async def _without_bearer(self, request: httpx2.Request) -> _Flow:
        """Send ``request`` as it is, through the user's auth if any (httpx2's Basic auth
        for a URL with a user:password, as httpx2 does); map an API's 401/403/408."""
        inner = self._inner
        url = request.url
        if inner is None and url.userinfo:
            inner = httpx2.BasicAuth(url.username, url.password)
        if inner is None:
            response = yield request
        else:
            flow = inner.async_auth_flow(request)
            try:
                outgoing = await flow.__anext__()
                while True:
                    response = yield outgoing
                    try:
                        outgoing = await flow.asend(response)
                    except StopAsyncIteration:
                        break
            finally:
                await flow.aclose()
        if response.status_code in ENTUR_STATUSES and self.covers(response.request.url):
            await self._raise(request, response, NO_TOKEN if self._manager is None else WITHHELD)

    async def _with_bearer(self, request: httpx2.Request, manager: TokenManager) -> _Flow:
        """Send ``request`` with the bearer (every API request's path: kept short)."""
        token = await manager.token()
        headers = request.headers
        # The bearer goes on a copy of the headers, and the request gets its own back once
        # the answer is in: nothing a caller reads there holds it (a copy costs less than
        # taking the header out again, which decodes every header first).
        sent = httpx2.Headers(headers)
        sent["Authorization"] = token.authorization
        added = len(sent) - len(headers)  # 0: the bearer replaced the caller's own
        request.headers = sent
        response = yield request
        if added and len(sent) - len(headers) == added:
            request.headers = headers
        else:  # the caller's own Authorization, or an event hook's headers: the slow way
            sent.pop("Authorization", None)
        if response.history or response.request is not request:
            strip_bearer(request, response)
        if response.status_code in ENTUR_STATUSES:
            # Rare: hand on to the general flow, which may send the request once more.
            rest = self._with_bearer_after(request, manager, None, (token, response))
            try:
                outgoing = await rest.__anext__()
                while True:
                    response = yield outgoing
                    outgoing = await rest.asend(response)
            except StopAsyncIteration:
                pass
            finally:
                await rest.aclose()

    async def _with_bearer_after(
        self,
        request: httpx2.Request,
        manager: TokenManager,
        inner: httpx2.Auth | None,
        answered: tuple[Token, httpx2.Response] | None = None,
    ) -> _Flow:
        """Send ``request`` with the bearer, through the user's ``inner`` auth flow if any
        (the bearer goes on each request it yields); once more with a new token after a
        401/408; raise the error a final 401/403/408 means.

        ``answered``: the token and the API's answer of a first attempt already made.
        """
        detail = ""
        used: list[Token] = []
        while True:
            if answered is not None:
                token, response = answered
                answered = None
            else:
                token = await manager.token()
                flow = (inner or _AS_IS).async_auth_flow(request)
                try:
                    outgoing = await flow.__anext__()
                    while True:
                        outgoing.headers["Authorization"] = token.authorization
                        response = yield outgoing
                        outgoing.headers.pop("Authorization", None)
                        strip_bearer(request, response)
                        try:
                            outgoing = await flow.asend(response)
                        except StopAsyncIteration:
                            break
                finally:
                    await flow.aclose()
            used.append(token)
            status = response.status_code
            if detail or status not in _RETRIED_STATUSES or not self.covers(response.request.url):
                break
            # The token was rejected, or expired mid-flight: it is dropped either way,
            # unless it replaced a rejected token moments ago (the 401-storm guard).
            # httpx2 reads an answer only after the flow has yielded the next request: read
            # this one now, or its connection stays taken while a new token is fetched (as
            # many concurrent 401s as the pool has connections would hold all of them, and
            # the token request would wait for one until the pool timeout).
            await response.aread()
            if not await manager.invalidate(token, status=status):
                telemetry.storm_guard_kept(status, self._environment)
                detail = STORM
                break
            if not _replayable(request.stream):
                detail = NOT_REPLAYABLE
                break
            logger.debug("API answered %d; retrying once with a new token", status)
            detail = RETRIED
        del token
        if status in ENTUR_STATUSES and self.covers(response.request.url):
            await self._raise(request, response, detail or RETRIED, used)
        elif len(used) > 1:
            # The rejected answer is in the history now (as httpx2 keeps a Digest 401).
            texts = _texts(used)
            response.history = [without_echo(earlier, texts) for earlier in response.history]

    async def _raise(
        self,
        request: httpx2.Request,
        response: httpx2.Response,
        detail: str,
        used: list[Token] | None = None,
    ) -> None:
        """Raise the APIError a final 401/403/408 from the API means, its response read
        and without any token the API echoed."""
        await response.aread()  # a stream's too: the error's response must be usable
        strip_bearer(request, response)
        answer = without_echo(response, _texts(used or []))
        error = api_error(request, answer, environment=self._environment, detail=detail)
        telemetry.api_error(answer.status_code, type(error), self._environment, request.url.host)
        raise error


class _AsIs(httpx2.Auth):
    """A flow that sends the request as it is (what the bearer is put on, with no user auth)."""

    async def async_auth_flow(self, request: httpx2.Request) -> _Flow:
        yield request


_AS_IS = _AsIs()


def _texts(used: list[Token]) -> tuple[str, ...]:
    return tuple(token.access_token for token in used)


class BodyStream(httpx2.AsyncByteStream):
    """An API response body that re-raises a read error without the bearer: httpx2's error
    chains to httpcore's, whose frames hold the request as sent, token included."""

    def __init__(self, inner: httpx2.AsyncByteStream, request: httpx2.Request) -> None:
        self._inner = inner
        self._request = request

    @property
    def elapsed(self) -> object:
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
                    error = without_bearer(exc, self._request)
                if error is not None:
                    raise error  # outside the except block: no chain to httpcore's frames
                yield chunk
        finally:
            # Also when the reader stops early: the inner generator is closed now, not
            # whenever the garbage collector finds it.
            aclose: Callable[[], object] | None = getattr(chunks, "aclose", None)
            if aclose is not None:
                with suppress(Exception):
                    await aclose()  # type: ignore[misc]

    async def aclose(self) -> None:
        error: httpx2.HTTPError | None = None
        try:
            await self._inner.aclose()
        except httpx2.HTTPError as exc:
            error = without_bearer(exc, self._request)
        if error is not None:
            raise error
