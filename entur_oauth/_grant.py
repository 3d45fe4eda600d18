"""The token path's one boundary: one client-credentials request through authlib's grant.

authlib's public ``fetch_token`` builds the grant body, applies the client-auth method the
client registered (Entur's JSON body, ``audience`` included), sends it with the client's
``post`` (whose ``send`` hands the request to :func:`send_token_request`: no redirect, no
bearer, at most ``MAX_BODY_BYTES`` read), runs the ``access_token_response`` compliance
hooks and calls ``parse_response_token`` (:func:`parse_response`, our defensive parser).

Below :class:`Grant` httpx2, anyio, the parser and the user's hooks may raise what they
like; above it only :class:`TokenRequestError` comes out, the way httpx maps httpcore's
errors at one place. It is raised from a frame that holds no request, no response body and
no secret, with no ``__cause__``/``__context__`` and no traceback frame below it: error
reporters (Sentry, ``pytest -l``) print the local variables of every frame they see.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from contextlib import aclosing
from typing import Any

import httpx2

from ._authlib import AsyncOAuth2Client, OAuth2Token
from ._clock import Clock
from ._errors import ConfigurationError, TokenRequestError
from ._lifetime import closed_error
from ._token import (
    MAX_BODY_BYTES,
    Token,
    is_retryable_status,
    parse_token_response,
    sanitize_snippet,
)

__all__ = [
    "Grant",
    "Unprintable",
    "oauth2_token",
    "parse_response",
    "seed_token",
    "send_token_request",
]

#: Response extensions set by :func:`send_token_request` for :func:`parse_response`.
SENT = "entur_oauth.sent"
TRUNCATED = "entur_oauth.truncated"
# Headers that describe the bytes on the wire, not the decoded body handed on.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
# httpx2's own send: token requests get no bearer and no API status mapping.
_httpx_send = httpx2.AsyncClient.send


class Unprintable(str):
    """A secret that works as a ``str`` (to find and blank it in a response body) but shows
    as ``'[redacted]'`` in ``repr``, which is what captured frame locals print."""

    __slots__ = ()

    def __repr__(self) -> str:
        # Only repr: str() must stay the value, as the redaction code may call it.
        return "'[redacted]'"


class Grant:
    """One client-credentials token request (the manager's ``FetchOnce``), no retries.

    Raises:
        TokenRequestError: Whatever went wrong, mapped here and detached from every frame,
            request and response that held the secret or the raw body.
    """

    __slots__ = ("_audience", "_client", "_clock", "_timeout", "_url")

    def __init__(
        self, client: AsyncOAuth2Client, *, url: str, audience: str, clock: Clock, timeout: float
    ) -> None:
        self._client = client
        self._url = url
        self._audience = audience
        self._clock = clock
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<Grant client_credentials {self._url}>"

    async def __call__(self) -> Token:
        if self._client.is_closed:
            # Not httpx2's RuntimeError, which the boundary below would report as a
            # failed token request (the background refresher may still call after close).
            raise closed_error()
        clock = self._clock
        sent_monotonic, sent_wall = clock.monotonic(), clock.time()
        result = await self._attempt()
        if isinstance(result, TokenRequestError):
            # Raised here, outside any except block, from a frame whose locals are this
            # error and two floats: nothing below it stays reachable.
            raise result
        return _from_oauth2(result, sent_monotonic, sent_wall)

    async def _attempt(self) -> OAuth2Token | TokenRequestError:
        """Run authlib's grant; return its token, or the mapped error (never raise)."""
        try:
            # The base class's public fetch_token: EnturClient.fetch_token() itself goes
            # through the token manager, which calls us.
            token: OAuth2Token = await AsyncOAuth2Client.fetch_token(
                self._client,
                self._url,
                grant_type="client_credentials",
                audience=self._audience,
                timeout=self._timeout,
            )
        except TokenRequestError as exc:
            return _detached(exc)
        except Exception as exc:  # the boundary: everything becomes one type
            return _mapped(exc, self._url, self._client.client_secret)
        except BaseException as exc:
            # Cancelled (a timeout around the call) or interrupted: passed on as it is,
            # but without the frames below this one, which hold the request and its body
            # (the secret).
            raise exc.with_traceback(None)  # noqa: B904 (the same exception, re-raised)
        return token


def _detached(exc: TokenRequestError) -> TokenRequestError:
    """Return ``exc`` without its traceback (the parser's frames hold the raw body)."""
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)


def _mapped(exc: Exception, url: str, secret: object) -> TokenRequestError:
    """Map a foreign error of the token request to a :class:`TokenRequestError`."""
    name = type(exc).__name__
    if isinstance(exc, httpx2.TimeoutException):
        return TokenRequestError(
            f"The token request to {url} timed out ({name}); it is retried automatically. "
            "Check network access to the token endpoint.",
            retryable=True,
        )
    if isinstance(exc, httpx2.TransportError | OSError) or _is_anyio_error(exc):
        # The message of a connection error names a host or an errno, never the request;
        # redacted all the same, as a proxy's error text may quote anything.
        detail = sanitize_snippet(str(exc), _scrub(secret))
        return TokenRequestError(
            f"Could not reach the token endpoint {url} ({name}: {detail}); check the "
            "network, proxy and DNS.",
            retryable=True,
        )
    if isinstance(exc, httpx2.HTTPStatusError):
        # Raised by a user's response hook (raise_for_status) on the token response.
        status = exc.response.status_code
        return TokenRequestError(
            f"The token endpoint {url} answered HTTP {status} (raised by a response event "
            "hook before entur_oauth read it).",
            status_code=status,
            retryable=is_retryable_status(status),
        )
    return TokenRequestError(
        f"The token request to {url} failed ({name}), in an event hook, an "
        "access_token_response compliance hook or the transport; check those.",
    )


def _is_anyio_error(exc: Exception) -> bool:
    # anyio's stream errors (BrokenResourceError, EndOfStream, ...) reach us from custom
    # transports; checked by module so anyio's exception list is not imported per fetch.
    return type(exc).__module__.startswith("anyio")


def _scrub(secret: object) -> tuple[str, ...]:
    reveal = getattr(secret, "reveal", None)
    return (Unprintable(reveal()),) if callable(reveal) else ()


async def send_token_request(
    client: httpx2.AsyncClient, request: httpx2.Request, auth: Any, clock: Clock
) -> httpx2.Response:
    """Send the token request authlib built and return its response, fully read (capped).

    Never follows a redirect (a 307/308 would re-send the secret to wherever ``Location``
    points), and reads at most ``MAX_BODY_BYTES`` (one chunk more flags truncation).
    """
    request.headers.pop("Authorization", None)
    sent = (clock.monotonic(), clock.time())
    response = await _httpx_send(client, request, auth=auth, stream=True, follow_redirects=False)
    try:
        content, truncated = await _read_capped(response)
    finally:
        await response.aclose()
    return httpx2.Response(
        response.status_code,
        headers=[
            (key, value)
            for key, value in response.headers.multi_items()
            if key.lower() not in _WIRE_HEADERS
        ],
        content=content,
        request=response.request,
        extensions={**response.extensions, SENT: sent, TRUNCATED: truncated},
    )


async def _read_capped(response: httpx2.Response) -> tuple[bytes, bool]:
    content = bytearray()
    # aclosing: leaving the loop early must close the generator now, not at GC.
    async with aclosing(response.aiter_bytes()) as chunks:
        async for chunk in chunks:
            content += chunk
            if len(content) > MAX_BODY_BYTES:
                return bytes(content), True
    return bytes(content), False


def parse_response(
    response: httpx2.Response, *, secret: object, clock: Clock, where: str
) -> OAuth2Token:
    """Read a token response defensively (``parse_response_token``) into an OAuth2Token.

    Raises:
        TokenRequestError: The response holds no usable bearer token.
    """
    sent = response.extensions.get(SENT)
    if sent is None:
        # A compliance hook returned a response of its own: time it from now.
        sent = (clock.monotonic(), clock.time())
    token = parse_token_response(
        response.status_code,
        response.headers,
        response.content,
        sent_monotonic=sent[0],
        sent_wall=sent[1],
        # Wrapped: parse_token_response keeps ``redact`` in a local of the frame that
        # raises (the Grant drops those frames, but a direct caller may not).
        redact=_scrub(secret),
        truncated=bool(response.extensions.get(TRUNCATED)),
        where=where,
    )
    return oauth2_token(token, exact=True)


def oauth2_token(token: Token, *, exact: bool = False) -> OAuth2Token:
    """Return ``token`` as authlib's OAuth2Token (what ``client.token`` shows).

    ``expires_in`` is the lifetime the token was given, in whole seconds as a token
    response has it; ``exact`` keeps the fraction (the grant turns it back into a Token).
    """
    lifetime: float = token.lifetime if exact else round(token.lifetime)
    if lifetime == int(lifetime):
        lifetime = int(lifetime)
    fields: dict[str, Any] = {
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "expires_at": int(token.expires_at_wall),
    }
    if token.scope is not None:
        fields["scope"] = token.scope
    return OAuth2Token(fields)


def _from_oauth2(oauth: Mapping[str, Any], sent_monotonic: float, sent_wall: float) -> Token:
    # parse_response put the lifetime it settled on (clamped, JWT exp considered) in
    # expires_in; the clocks are the ones read before the request, so network time counts
    # against the token's life.
    lifetime = float(oauth["expires_in"])
    scope = oauth.get("scope")
    return Token(
        access_token=oauth["access_token"],
        expires_at=sent_monotonic + lifetime,
        expires_at_wall=sent_wall + lifetime,
        lifetime=lifetime,
        scope=scope if isinstance(scope, str) else None,
    )


def seed_token(value: Mapping[str, Any], clock: Clock) -> Token | None:
    """Turn ``token=`` given to the constructor (authlib's dict) into a :class:`Token`.

    Validated by the same parser as a token response. ``None`` when it has already
    expired (the first request then fetches a new one).

    Raises:
        ConfigurationError: It holds no usable bearer token.
    """
    result = _parse_seed(value, clock)
    del value  # not left in a local of the frame that raises
    if isinstance(result, ConfigurationError):
        raise result
    return result


def _parse_seed(value: object, clock: Clock) -> Token | ConfigurationError | None:
    if not isinstance(value, Mapping):
        return ConfigurationError(
            f"token must be a mapping like {{'access_token': ..., 'expires_at': ...}}, "
            f"not {type(value).__name__}."
        )
    now_monotonic, now_wall = clock.monotonic(), clock.time()
    fields = {k: value[k] for k in ("access_token", "token_type", "scope") if k in value}
    expires_at = value.get("expires_at")
    if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
        if not math.isfinite(expires_at) or expires_at <= now_wall:
            return None
        fields["expires_in"] = expires_at - now_wall
    elif "expires_in" in value:
        fields["expires_in"] = value["expires_in"]
    try:
        return parse_token_response(
            200,
            {},
            json.dumps(fields).encode(),
            sent_monotonic=now_monotonic,
            sent_wall=now_wall,
            where="token=",
        )
    except (TokenRequestError, TypeError, ValueError):
        return ConfigurationError(
            "token must hold a Bearer access_token (and optionally expires_at or "
            "expires_in), as authlib's OAuth2Token does; it was not usable."
        )
