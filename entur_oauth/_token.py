"""The access token as a value, and the defensive parser that turns a token response into one.

Every way a token endpoint (or a proxy in front of it) can answer ends here in either a
:class:`Token` or a :class:`TokenRequestError`; nothing else escapes, whatever the bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import InvalidCredentialsError, TokenRequestError
from ._scrub import sanitize_snippet
from ._secrets import fingerprint

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_BODY_BYTES",
    "MAX_LIFETIME",
    "MIN_LIFETIME",
    "Token",
    "is_retryable_status",
    "parse_retry_after",
    "parse_token_response",
    "sanitize_snippet",
]

#: Lifetime assumed when neither ``expires_in`` nor the JWT ``exp`` is usable. Short on
#: purpose: a token of unknown life is re-fetched soon rather than trusted for a day.
DEFAULT_LIFETIME = 300.0
#: Lifetimes are clamped to [MIN_LIFETIME, MAX_LIFETIME]: 0 or negative values would make
#: every request fetch; huge ones would cache forever. Entur's tokens live 24 h.
MIN_LIFETIME = 10.0
MAX_LIFETIME = 7 * 24 * 3600.0
#: Token responses larger than this are not read further: no real one comes near it.
MAX_BODY_BYTES = 1024 * 1024
#: Cap on how long a ``Retry-After`` may make us wait.
MAX_RETRY_AFTER = 600.0

_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RETRYABLE_ERRORS = frozenset({"server_error", "temporarily_unavailable"})
_CREDENTIAL_ERRORS = frozenset(
    {"access_denied", "invalid_client", "unauthorized_client", "invalid_grant"}
)
# RFC 6750 b64token, the characters a bearer token may have; anything else (CR/LF above all)
# could smuggle a header.
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


@dataclass(frozen=True, slots=True)
class Token:
    """An access token and when it expires.

    ``expires_at`` is on the monotonic clock (immune to wall-clock jumps);
    ``expires_at_wall`` is the same instant in epoch seconds, for stores shared between
    processes and for display. The token text is kept out of ``repr``.

    ``replaced_at`` (monotonic) is set on a token fetched to replace one the API rejected:
    the 401-storm guard keeps such a token, if the API rejects it too, until
    ``credentials_error_ttl`` after that time. It travels with the token through a shared
    store, so every client sharing the store keeps it as well.
    """

    access_token: str = field(repr=False)
    expires_at: float
    expires_at_wall: float
    lifetime: float
    scope: str | None = None
    fingerprint: str = ""
    authorization: str = field(repr=False, default="")
    replaced_at: float | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint(self.access_token))
        object.__setattr__(self, "authorization", f"Bearer {self.access_token}")

    def claims(self) -> dict[str, Any]:
        """Return the JWT payload, unverified (empty when the token is not a JWT)."""
        return _jwt_claims(self.access_token)


def parse_retry_after(headers: Mapping[str, str], now_wall: float) -> float | None:
    """Return seconds to wait from ``Retry-After`` (seconds or HTTP date) or Auth0's
    ``x-ratelimit-reset`` (epoch seconds), capped at ``MAX_RETRY_AFTER``; ``None`` if absent.
    """
    value = headers.get("retry-after")
    delay: float | None = None
    if value is not None:
        value = value.strip()
        try:
            delay = float(value)
        except ValueError:
            delay = _http_date(value, now_wall)
        if not math.isfinite(delay if delay is not None else 0.0):
            delay = None
    if delay is None and (reset := headers.get("x-ratelimit-reset")) is not None:
        try:
            reset_at = float(reset)
        except ValueError:
            reset_at = math.nan
        # Auth0 sends an epoch timestamp; a small number can only be a delay in seconds.
        delay = reset_at - now_wall if reset_at > 1e9 else reset_at
    if delay is None or not math.isfinite(delay):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


def _http_date(value: str, now_wall: float) -> float | None:
    # Imported here, as only a Retry-After date needs them: they cost the CLI's cached
    # token path (which never parses a response) ~10 ms of start-up.
    import datetime
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            # "-0000" parses naive; HTTP dates are always GMT, never local time.
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp() - now_wall
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _jwt_claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, RecursionError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _number(value: object) -> float | None:
    """Read a JSON number or numeric string; ``None`` for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, int | float | str):
        return None
    try:
        # float() of a JSON integer with hundreds of digits raises OverflowError.
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _seconds(value: object) -> float | None:
    """Read a lifetime in seconds; ``None`` when unreadable, absurd ones included.

    A positive value too large to count in milliseconds (``1e308``, a 5,000-digit integer)
    is no real lifetime: it counts as unknown rather than as "as long as allowed".
    Zero and negative values mean "expired already" and are clamped, not ignored.
    """
    number = _number(value)
    if number is None or (number > 0 and not math.isfinite(number * 1000.0)):
        return None
    return number


def _lifetime(payload: Mapping[str, Any], access_token: str, sent_wall: float) -> float:
    candidates = []
    if (expires_in := _seconds(payload.get("expires_in"))) is not None:
        candidates.append(expires_in)
    if (exp := _seconds(_jwt_claims(access_token).get("exp"))) is not None:
        candidates.append(exp - sent_wall)
    lifetime = min(candidates) if candidates else DEFAULT_LIFETIME
    return min(max(lifetime, MIN_LIFETIME), MAX_LIFETIME)


def _json_int(digits: str) -> int | float:
    # Python refuses to parse integers of more than 4,300 digits (a ValueError that would
    # make the whole body unreadable); as a float such a number is simply infinite.
    return int(digits) if len(digits) <= 30 else float(digits)


def _error_fields(payload: object, redact: tuple[str, ...]) -> tuple[str | None, str | None]:
    if not isinstance(payload, dict):
        return None, None
    error, description = payload.get("error"), payload.get("error_description")
    # A server may echo what it was sent (the secret) in either field: redact both.
    return (
        sanitize_snippet(error, redact) if isinstance(error, str) else None,
        sanitize_snippet(description, redact) if isinstance(description, str) else None,
    )


def _content_type(headers: Mapping[str, str], redact: tuple[str, ...]) -> str:
    """The response's media type as an error may quote it (a header is server text too)."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    return sanitize_snippet(media_type, redact) or "no content type"


def _kind(body: bytes, payload: object) -> str:
    """What a body is, in words, without a character of it."""
    if not body.strip():
        return "an empty body"
    if payload is None:
        return f"a body of {len(body)} bytes that is not JSON"
    if isinstance(payload, dict):
        return "a JSON object"
    if isinstance(payload, list):
        return "a JSON array"
    return "a JSON string" if isinstance(payload, str) else "a JSON value"


def is_retryable_status(status: int) -> bool:
    # 408, 429 and the 5xx family (proxies and CDNs add their own, such as 520-524);
    # 501 Not Implemented and 505 HTTP Version Not Supported do not heal by waiting.
    return status in _RETRYABLE_STATUS or (500 <= status <= 599 and status not in {501, 505})


def _error_from_oauth(
    status: int, error: str, description: str | None, retry_after: float | None, where: str
) -> TokenRequestError:
    detail = f"{error}: {description}" if description else error
    if error in _CREDENTIAL_ERRORS:
        return InvalidCredentialsError(
            f"{where} rejected the client (HTTP {status}, {detail}). Check ENTUR_CLIENT_ID "
            "and ENTUR_CLIENT_SECRET, that the client was created in this environment "
            "(production, staging and dev have separate clients), and that the client is "
            "granted access to this audience.",
            status_code=status,
            error=error,
            error_description=description,
            retry_after=retry_after,
        )
    retryable = error in _RETRYABLE_ERRORS or is_retryable_status(status)
    hint = "this is temporary; try again shortly" if retryable else "check the request settings"
    return TokenRequestError(
        f"{where} answered HTTP {status} with OAuth error {detail}; {hint}.",
        status_code=status,
        error=error,
        error_description=description,
        retry_after=retry_after,
        retryable=retryable,
    )


def parse_token_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    sent_monotonic: float,
    sent_wall: float,
    redact: Iterable[str] = (),
    truncated: bool = False,
    where: str = "The token endpoint",
) -> Token:
    """Turn one token-endpoint response into a :class:`Token`.

    ``sent_monotonic``/``sent_wall`` are the clocks read just before the request was sent,
    so network time counts against the token's life, never in its favour.

    Raises:
        InvalidCredentialsError: The endpoint rejected the client.
        TokenRequestError: Any other failure; ``retryable`` tells whether trying again may help.
    """
    redact = tuple(redact)
    retry_after = parse_retry_after(headers, sent_wall)
    if truncated:
        raise TokenRequestError(
            f"{where} answered HTTP {status} with a body over {MAX_BODY_BYTES} bytes "
            f"({_content_type(headers, redact)}); this is not a token response. Check that "
            "the token URL is right and that no proxy answers in its place.",
            status_code=status,
            retry_after=retry_after,
            retryable=is_retryable_status(status),
        )
    try:
        payload: object = json.loads(body, parse_int=_json_int)
    except (ValueError, RecursionError):
        payload = None
    error, description = _error_fields(payload, redact)

    if not 200 <= status < 300 or error is not None:
        if error is not None:
            raise _error_from_oauth(status, error, description, retry_after, where)
        # No RFC 6749 error field: the status and what the body is tell what happened; the
        # body itself (a proxy's page, an echo of the request) is never quoted.
        what = f"{_content_type(headers, redact)}, {_kind(body, payload)}"
        if status == 401:
            # RFC 6749 section 5.2: a client that failed to authenticate gets 401. Some
            # gateways answer it with an empty, text or HTML body and no OAuth ``error``;
            # it still means the client was rejected, not that waiting would help.
            raise InvalidCredentialsError(
                f"{where} rejected the client (HTTP 401, {what}). Check ENTUR_CLIENT_ID and "
                "ENTUR_CLIENT_SECRET, and that the client was created in this environment "
                "(production, staging and dev have separate clients).",
                status_code=status,
                retry_after=retry_after,
            )
        retryable = is_retryable_status(status)
        advice = (
            "this is usually temporary; it is retried automatically"
            if retryable
            else "check the token URL, the environment and any proxy in between"
        )
        raise TokenRequestError(
            f"{where} answered HTTP {status} ({what}) without an OAuth error; {advice}.",
            status_code=status,
            retry_after=retry_after,
            retryable=retryable,
        )

    if not isinstance(payload, dict):
        raise TokenRequestError(
            f"{where} answered HTTP {status} with {_kind(body, payload)} "
            f"({_content_type(headers, redact)}), where a token response is a JSON object. "
            "A proxy or firewall page in front of the endpoint is the usual cause; check the "
            "token URL.",
            status_code=status,
            retryable=True,
        )
    access_token = payload.get("access_token")
    if not isinstance(access_token, str) or not _B64TOKEN.fullmatch(access_token):
        problem = (
            "no access_token"
            if access_token is None
            else "an access_token that is empty, not a string, or holds characters a "
            "bearer token may not have"
        )
        raise TokenRequestError(
            f"{where} answered HTTP {status} with {problem}; the response was not used. "
            "Check that the token URL points at Entur's authentication service.",
            status_code=status,
            retryable=False,
        )
    token_type = payload.get("token_type")
    if token_type is None:
        token_type = "Bearer"  # required by RFC 6749, but a missing one can only mean Bearer
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        shown = (
            sanitize_snippet(token_type, redact)
            if isinstance(token_type, str)
            else type(token_type).__name__
        )
        raise TokenRequestError(
            f"{where} issued a token of type {shown!r}; only Bearer tokens are supported.",
            status_code=status,
            retryable=False,
        )
    lifetime = _lifetime(payload, access_token, sent_wall)
    scope = payload.get("scope")
    return Token(
        access_token=access_token,
        expires_at=sent_monotonic + lifetime,
        expires_at_wall=sent_wall + lifetime,
        lifetime=lifetime,
        scope=scope if isinstance(scope, str) else None,
    )
