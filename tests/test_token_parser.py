"""The defensive token-response parser: every input gives a Token or one of our errors.

Unit tests pin each documented rule; hypothesis property tests throw arbitrary bytes,
JSON, statuses, content types and headers at it.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from entur_oauth import EnturError, InvalidCredentialsError, TokenRequestError
from entur_oauth._token import (
    DEFAULT_LIFETIME,
    MAX_LIFETIME,
    MAX_RETRY_AFTER,
    MIN_LIFETIME,
    Token,
    parse_retry_after,
    parse_token_response,
    sanitize_snippet,
)

SENT_WALL = 1_800_000_000.0
SENT_MONO = 500.0
SECRET = "s3cr3t-Sentinel_9f8e7d6c5b4a"
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _jwt(claims: dict[str, Any]) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def _parse(
    payload: object = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    redact: tuple[str, ...] = (SECRET,),
) -> Token:
    raw = body if body is not None else json.dumps(payload).encode()
    return parse_token_response(
        status,
        headers or {"content-type": "application/json"},
        raw,
        sent_monotonic=SENT_MONO,
        sent_wall=SENT_WALL,
        redact=redact,
    )


def _error(**kwargs: Any) -> TokenRequestError:
    with pytest.raises(TokenRequestError) as caught:
        _parse(**kwargs)
    return caught.value


# -- a good answer ----------------------------------------------------------------------


def test_entur_answer_gives_a_token_counted_from_before_the_request() -> None:
    """Auth0's answer (JWT, expires_in 86400) gives a token whose expiry counts from the
    moment just before the request was sent, on both clocks."""
    access = _jwt({"exp": SENT_WALL + 86400, "aud": "https://api.entur.io"})
    token = _parse({"access_token": access, "token_type": "Bearer", "expires_in": 86400})
    assert token.access_token == access
    assert token.lifetime == 86400
    assert token.expires_at == SENT_MONO + 86400
    assert token.expires_at_wall == SENT_WALL + 86400
    assert token.authorization == f"Bearer {access}"
    assert token.claims()["aud"] == "https://api.entur.io"


@pytest.mark.parametrize(
    ("expires_in", "exp_in", "lifetime"),
    [
        (86400, 3600, 3600),  # the JWT says sooner: it wins
        (3600, 86400, 3600),  # expires_in says sooner: it wins
        (None, 7200, 7200),  # only exp
        (7200, None, 7200),  # only expires_in
        (86400, -3600, MIN_LIFETIME),  # exp already past (a skewed clock): clamped, not 0
    ],
)
def test_expiry_is_the_earlier_of_expires_in_and_jwt_exp(
    expires_in: float | None, exp_in: float | None, lifetime: float
) -> None:
    """The token expires at the earlier of expires_in and the JWT's exp (read unverified)."""
    claims = {} if exp_in is None else {"exp": SENT_WALL + exp_in}
    payload: dict[str, Any] = {"access_token": _jwt(claims), "token_type": "Bearer"}
    if expires_in is not None:
        payload["expires_in"] = expires_in
    assert _parse(payload).lifetime == lifetime


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (0, MIN_LIFETIME),
        (-5, MIN_LIFETIME),
        (-1e308, MIN_LIFETIME),
        (1.5, MIN_LIFETIME),
        (12.7, 12.7),
        ("3600", 3600),
        (" 60 ", 60),
        ("soon", DEFAULT_LIFETIME),
        ("", DEFAULT_LIFETIME),
        ("NaN", DEFAULT_LIFETIME),
        ("Infinity", DEFAULT_LIFETIME),
        (True, DEFAULT_LIFETIME),
        (None, DEFAULT_LIFETIME),
        ([3600], DEFAULT_LIFETIME),
        ({"s": 1}, DEFAULT_LIFETIME),
        (1e12, MAX_LIFETIME),
        (10**30, MAX_LIFETIME),
        (10**400, DEFAULT_LIFETIME),  # not even a float: unknown, not "forever"
        ("1e400", DEFAULT_LIFETIME),
    ],
)
def test_absurd_expires_in_is_clamped_or_defaulted(expires_in: object, lifetime: float) -> None:
    """0, negative, fractional, numeric strings, garbage, huge and non-finite expires_in
    values give a lifetime in [10 s, 7 days] (300 s when unknown): never a crash, never
    an infinite cache, never a token that is stale at once."""
    token = _parse({"access_token": "opaque-token", "expires_in": expires_in})
    assert token.lifetime == pytest.approx(lifetime)


@pytest.mark.parametrize(
    "expires_in",
    [
        "9" * 5000,  # more digits than Python parses into an int
        "1" + "0" * 400,
        "1e308",
        "1.7976931348623157e308",
        "1e309",
        "true",
        "false",
        "-1e309",
    ],
)
def test_valid_json_but_absurd_expires_in_is_an_unreadable_lifetime(expires_in: str) -> None:
    """An expires_in that is valid JSON but no real lifetime (a 5,000-digit integer, 1e308,
    true) counts as unreadable: the token is still used, for the default 300 s."""
    body = b'{"access_token": "opaque-token", "token_type": "Bearer", "expires_in": %s}' % (
        expires_in.encode()
    )
    token = _parse(body=body)
    assert token.access_token == "opaque-token"
    assert token.lifetime == DEFAULT_LIFETIME


@pytest.mark.parametrize("expires_in", ["9" * 5000, "1e308", "true"])
def test_absurd_expires_in_falls_back_to_a_usable_jwt_exp(expires_in: str) -> None:
    """With an absurd expires_in, a usable JWT exp decides the lifetime."""
    token = _jwt({"exp": SENT_WALL + 7200})
    body = b'{"access_token": "%s", "expires_in": %s}' % (token.encode(), expires_in.encode())
    assert _parse(body=body).lifetime == 7200


def test_absurd_jwt_exp_is_ignored() -> None:
    """A JWT exp of 1e308 (or a 5,000-digit one) is no more trusted than expires_in's."""
    for exp in ("1e308", "9" * 5000):
        claims = base64.urlsafe_b64encode(b'{"exp": %s}' % exp.encode()).rstrip(b"=").decode()
        token = f"eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln"
        assert _parse({"access_token": token, "expires_in": 3600}).lifetime == 3600
        assert _parse({"access_token": token}).lifetime == DEFAULT_LIFETIME


def test_missing_expires_in_and_opaque_token_default_to_five_minutes() -> None:
    """With neither expires_in nor a JWT exp, the token is trusted for 300 s only."""
    assert _parse({"access_token": "opaque"}).lifetime == DEFAULT_LIFETIME


@pytest.mark.parametrize("exp", ["tomorrow", None, True, 10**400, [1], float("nan")])
def test_garbage_jwt_exp_is_ignored(exp: object) -> None:
    """An exp claim that is not a finite number is ignored, not trusted or fatal."""
    body = json.dumps({"access_token": _jwt({"exp": exp}), "expires_in": 3600}).encode()
    assert _parse(body=body).lifetime == 3600


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER", "bEaReR", None])
def test_token_type_bearer_in_any_case_or_missing_is_accepted(token_type: str | None) -> None:
    """token_type is compared without case; a missing (or null) one means Bearer."""
    payload: dict[str, Any] = {"access_token": "abc", "expires_in": 60}
    if token_type is not None:
        payload["token_type"] = token_type
    assert _parse(payload).access_token == "abc"


def test_unknown_fields_are_ignored() -> None:
    """Extra fields of any type, and a non-string scope, do not matter."""
    token = _parse(
        {
            "access_token": "abc",
            "expires_in": 60,
            "scope": ["not", "a", "string"],
            "refresh_token": None,
            "x-vendor": {"nested": [1, 2, {"deep": True}]},
        }
    )
    assert token.scope is None
    assert token.lifetime == 60


def test_token_repr_shows_no_token_text() -> None:
    """repr(Token) shows a fingerprint and times, never the token or the header value."""
    token = _parse({"access_token": "SENTINEL-token-text", "expires_in": 60})
    assert "SENTINEL" not in repr(token)
    assert re.fullmatch(r"[0-9a-f]{10}", token.fingerprint)
    assert token.fingerprint in repr(token)


# -- bad answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "access_token",
    [
        "",
        123,
        1.5,
        True,
        None,
        [],
        {},
        "SENTINEL\r\nX-Evil: 1",
        "SENTINEL\nb",
        "SENTINEL b",
        "SENTINEL\x00",
        "SENTINELø",
        "=SENTINEL",
    ],
)
def test_unusable_access_token_is_refused(access_token: object) -> None:
    """Missing, empty, non-string, or not an RFC 6750 b64token (CR/LF above all: header
    injection) is a non-retryable TokenRequestError that does not quote the value."""
    exc = _error(payload={"access_token": access_token, "expires_in": 60})
    assert not exc.retryable
    assert type(exc) is TokenRequestError
    if isinstance(access_token, str) and access_token:
        assert access_token not in str(exc)


def test_missing_access_token_says_so() -> None:
    """The message names the problem."""
    assert "no access_token" in str(_error(payload={"token_type": "Bearer"}))


@pytest.mark.parametrize("token_type", ["mac", "DPoP", "", 5, ["Bearer"]])
def test_token_type_other_than_bearer_is_refused(token_type: object) -> None:
    """A token that is not Bearer is refused: sending it as one would be wrong."""
    exc = _error(payload={"access_token": "abc", "token_type": token_type})
    assert "only Bearer tokens" in str(exc)
    assert not exc.retryable


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (403, False),
        (404, False),
        (408, True),
        (429, True),
        (500, True),
        (501, False),
        (502, True),
        (503, True),
        (504, True),
        (505, False),
        (522, True),
        (302, False),
        (0, False),
    ],
)
def test_status_decides_retryable_for_a_non_oauth_body(status: int, retryable: bool) -> None:
    """408, 429 and 5xx (but 501/505) are worth retrying; other statuses are not."""
    exc = _error(status=status, body=b"<html>proxy</html>", headers={"content-type": "text/html"})
    assert exc.retryable is retryable
    assert exc.status_code == status


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (400, "server_error", True),
        (400, "temporarily_unavailable", True),
        (200, "temporarily_unavailable", True),
        (200, "invalid_request", False),
        (400, "invalid_scope", False),
        (500, "invalid_request", True),
    ],
)
def test_oauth_error_decides_retryable(status: int, error: str, retryable: bool) -> None:
    """server_error and temporarily_unavailable are retried whatever the status; a 200
    that carries an error is an error."""
    exc = _error(status=status, payload={"error": error, "access_token": "ignored"})
    assert exc.error == error
    assert exc.retryable is retryable


@pytest.mark.parametrize(
    "error", ["access_denied", "invalid_client", "unauthorized_client", "invalid_grant"]
)
def test_credentials_errors_are_invalid_credentials(error: str) -> None:
    """A rejected client is InvalidCredentialsError, never retryable, with what to check."""
    exc = _error(status=401, payload={"error": error, "error_description": "Unauthorized"})
    assert isinstance(exc, InvalidCredentialsError)
    assert not exc.retryable
    assert (exc.status_code, exc.error, exc.error_description) == (401, error, "Unauthorized")
    assert "ENTUR_CLIENT_SECRET" in str(exc)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("", b""),
        ("text/plain", b"Unauthorized"),
        ("text/html", b"<html><body>401 Authorization Required</body></html>"),
        ("application/json", b'{"message": "Unauthorized"}'),
    ],
)
def test_401_without_an_oauth_error_is_invalid_credentials(content_type: str, body: bytes) -> None:
    """RFC 6749 section 5.2: a client that failed to authenticate gets 401. Without an OAuth
    ``error`` field (a gateway's empty, text or HTML answer) it is still a rejected client:
    InvalidCredentialsError, never retried, with what to check; no secret in it."""
    exc = _error(status=401, headers={"content-type": content_type}, body=body + SECRET.encode())
    assert isinstance(exc, InvalidCredentialsError)
    assert not exc.retryable
    assert (exc.status_code, exc.error) == (401, None)
    assert "ENTUR_CLIENT_SECRET" in str(exc)
    assert SECRET not in str(exc)


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (200, "text/html", b"<html><body>Log in to the guest Wi-Fi</body></html>"),
        (502, "text/html", b"<html><title>502 Bad Gateway</title></html>"),
        (403, "text/plain", b"Request blocked by WAF"),
        (200, "application/json", b"[1, 2, 3]"),
        (200, "application/json", b'"just a string"'),
        (200, "application/json", b"null"),
        (200, "application/json", b"{truncated"),
        (200, "", b""),
        (500, "application/octet-stream", bytes(range(256))),
        (200, "application/json", b"\xff\xfe\x00bad utf-8"),
        (200, "application/json", b"[" * 100_000),
    ],
)
def test_non_token_bodies_end_in_a_typed_error_with_a_short_snippet(
    status: int, content_type: str, body: bytes
) -> None:
    """HTML, plain text, JSON that is not an object, broken JSON, binary and absurdly
    nested bodies give a TokenRequestError with a short printable snippet, never a
    JSONDecodeError, KeyError or RecursionError."""
    exc = _error(status=status, headers={"content-type": content_type}, body=body)
    message = str(exc)
    assert message.isprintable()
    assert len(message) < 600


def test_snippet_is_short_printable_and_redacts_the_secret_in_every_form() -> None:
    """The secret is removed as written and JSON-, URL- and HTML-escaped, before the text is
    shortened, so no part of it survives."""
    secret = 'p@ss/w0rd+&"<x>'
    forms = [
        secret,
        json.dumps(secret)[1:-1],
        "p%40ss%2Fw0rd%2B%26%22%3Cx%3E",
        "p%40ss%2Fw0rd%2B%26%22%3Cx%3E".replace("%20", "+"),
        "p@ss/w0rd+&amp;&quot;&lt;x&gt;",
    ]
    body = " | ".join(forms) + "\x00\x1b[31m" + "y" * 500
    snippet = sanitize_snippet(body, [secret])
    assert snippet.count("[redacted]") == len(forms)
    assert "w0rd" not in snippet
    assert snippet.isprintable()
    assert len(snippet) <= 163


def test_json_error_body_echoing_the_secret_or_a_token_is_redacted() -> None:
    """error_description echoing the secret, and a token inside an error body, are blanked
    in the message and in the attributes."""
    exc = _error(status=400, payload={"error": "invalid_request", "error_description": SECRET})
    assert SECRET not in str(exc)
    assert exc.error_description is not None
    assert SECRET not in exc.error_description
    exc = _error(status=500, payload={"access_token": "tok-SENTINEL", "note": f"got {SECRET}"})
    assert "tok-SENTINEL" not in str(exc)
    assert SECRET not in str(exc)


def test_content_type_is_sanitised_in_the_message() -> None:
    """A hostile Content-Type cannot put control characters or the secret in a message."""
    exc = _error(status=502, headers={"content-type": f"text/html\r\nX: {SECRET}"}, body=b"x")
    assert SECRET not in str(exc)
    assert "\r" not in str(exc)


def test_truncated_body_is_a_typed_error() -> None:
    """A body the client stopped reading at 1 MiB is refused without being parsed."""
    with pytest.raises(TokenRequestError, match="over 1048576 bytes") as caught:
        parse_token_response(
            200, {}, b"{", sent_monotonic=0, sent_wall=0, truncated=True, redact=()
        )
    assert not caught.value.retryable


# -- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"retry-after": "-3"}, 0),
        ({"retry-after": "100000"}, MAX_RETRY_AFTER),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf", "x-ratelimit-reset": str(int(SENT_WALL) + 4)}, 4),
        ({"retry-after": email.utils.formatdate(SENT_WALL + 30, usegmt=True)}, 30),
        ({"retry-after": email.utils.formatdate(SENT_WALL - 30, usegmt=True)}, 0),
        ({"retry-after": "Fri, 01 Jan 2100 00:00:00 GMT"}, MAX_RETRY_AFTER),
        ({"retry-after": "Mon, 99 Foo 20000 99:99:99 GMT"}, None),
        ({"x-ratelimit-reset": str(int(SENT_WALL) + 9)}, 9),
        ({"x-ratelimit-reset": "12"}, 12),
        ({"x-ratelimit-reset": "later"}, None),
        ({"retry-after": "3", "x-ratelimit-reset": str(int(SENT_WALL) + 60)}, 3),
    ],
)
def test_retry_after_forms(headers: dict[str, str], expected: float | None) -> None:
    """Seconds, HTTP dates (GMT even when written -0000) and Auth0's x-ratelimit-reset
    (epoch seconds, or seconds when small) are read; garbage is ignored; the result is
    never negative and never above 600 s."""
    assert parse_retry_after(headers, SENT_WALL) == (
        None if expected is None else pytest.approx(expected)
    )


def test_retry_after_date_without_zone_is_gmt_not_local_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A date written with -0000 is read as GMT even where local time is not (Oslo)."""
    monkeypatch.setenv("TZ", "Europe/Oslo")
    time.tzset()
    try:
        date = email.utils.formatdate(SENT_WALL + 30)  # "... -0000"
        assert date.endswith("-0000")
        assert parse_retry_after({"retry-after": date}, SENT_WALL) == pytest.approx(30)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_retry_after_is_carried_on_the_error() -> None:
    """A 429's Retry-After reaches the error, for the retry loop to honour."""
    exc = _error(status=429, headers={"retry-after": "7"}, body=b"slow down")
    assert exc.retry_after == 7
    assert exc.retryable


# -- properties ---------------------------------------------------------------------------

_HYPOTHESIS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=16,
)
_token_like = st.fixed_dictionaries(
    {},
    optional={
        "access_token": _json_values | st.from_regex(B64TOKEN, fullmatch=True),
        "token_type": _json_values | st.sampled_from(["Bearer", "bearer", "mac"]),
        "expires_in": _json_values,
        "scope": _json_values,
        "error": _json_values | st.sampled_from(["server_error", "access_denied"]),
        "error_description": _json_values,
    },
)
_headers = st.dictionaries(
    st.sampled_from(["content-type", "retry-after", "x-ratelimit-reset", "x-other"]),
    st.text(max_size=40),
)
_statuses = st.integers(min_value=-1, max_value=1000) | st.sampled_from([200, 401, 429, 503])


def _check(result: Token) -> None:
    assert isinstance(result, Token)
    assert B64TOKEN.fullmatch(result.access_token)
    assert MIN_LIFETIME <= result.lifetime <= MAX_LIFETIME
    assert result.expires_at == SENT_MONO + result.lifetime
    if len(result.access_token) >= 8:  # a short one matches any text by chance
        assert result.access_token not in repr(result)


def _parse_any(status: int, headers: dict[str, str], body: bytes, truncated: bool = False) -> None:
    # Not pytest.raises: either outcome is fine, anything else must fail the test.
    try:
        result = parse_token_response(
            status,
            headers,
            body,
            sent_monotonic=SENT_MONO,
            sent_wall=SENT_WALL,
            redact=(SECRET,),
            truncated=truncated,
        )
    except EnturError as exc:
        error: EnturError = exc
    else:
        _check(result)
        return
    assert isinstance(error, TokenRequestError)
    assert str(error).isprintable()


@_HYPOTHESIS
@given(status=_statuses, headers=_headers, body=st.binary(max_size=2000), truncated=st.booleans())
@example(
    status=200,
    headers={},
    body=b'{"access_token":"a","expires_in":1' + b"0" * 400 + b"}",
    truncated=False,
)
def test_any_bytes_give_a_token_or_our_error(
    status: int, headers: dict[str, str], body: bytes, truncated: bool
) -> None:
    """Any bytes, with any status, content type and headers: a Token or a TokenRequestError."""
    _parse_any(status, headers, body, truncated)


@_HYPOTHESIS
@given(status=_statuses, headers=_headers, value=_json_values)
def test_any_json_gives_a_token_or_our_error(
    status: int, headers: dict[str, str], value: object
) -> None:
    """Any JSON document (huge integers, NaN and Infinity included) as the body."""
    _parse_any(status, headers, json.dumps(value).encode())


@_HYPOTHESIS
@given(status=_statuses, headers=_headers, payload=_token_like)
def test_any_token_shaped_object_gives_a_token_or_our_error(
    status: int, headers: dict[str, str], payload: dict[str, object]
) -> None:
    """Objects with the real field names and hostile values: a valid Token (b64token text,
    lifetime within bounds) or a TokenRequestError, nothing else."""
    _parse_any(status, headers, json.dumps(payload).encode())


_secret_alphabet = st.characters(
    codec="ascii", categories=["L", "N"], include_characters='-_.~+/=@&<>"%'
)


@_HYPOTHESIS
@given(
    # A fixed prefix keeps a generated secret from being a word of our own messages.
    secret=st.text(_secret_alphabet, min_size=9, max_size=37).map(lambda s: "Zq9" + s),
    status=_statuses,
    before=st.text(max_size=200),
    after=st.text(max_size=200),
    form=st.sampled_from(["plain", "json", "field"]),
)
def test_the_secret_never_reaches_an_error_message(
    secret: str, status: int, before: str, after: str, form: str
) -> None:
    """However a body echoes the client secret (raw, inside JSON, in an OAuth error field),
    the resulting error's text and attributes do not contain it."""
    if form == "plain":
        body = (before + secret + after).encode()
    elif form == "json":
        body = json.dumps({"echo": before + secret + after, "error": "invalid_request"}).encode()
    else:
        body = json.dumps({"error": secret, "error_description": before + secret}).encode()
    try:
        parse_token_response(
            status, {}, body, sent_monotonic=0, sent_wall=SENT_WALL, redact=(secret,)
        )
    except TokenRequestError as exc:
        shown = [str(exc), repr(exc), str(exc.error), str(exc.error_description)]
        assert all(secret not in text for text in shown)


@_HYPOTHESIS
@given(headers=st.dictionaries(st.sampled_from(["retry-after", "x-ratelimit-reset"]), st.text()))
def test_retry_after_is_none_or_within_bounds(headers: dict[str, str]) -> None:
    """Any Retry-After / x-ratelimit-reset text gives None or a delay in [0, 600] s."""
    delay = parse_retry_after(headers, SENT_WALL)
    assert delay is None or 0 <= delay <= MAX_RETRY_AFTER


@_HYPOTHESIS
@given(text=st.text() | st.from_regex(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_=-]*\.[A-Za-z0-9_-]*"))
def test_claims_of_any_token_text_is_a_dict(text: str) -> None:
    """Reading the JWT payload of any text gives a dict (empty when it is not a JWT)."""
    token = Token(access_token=text, expires_at=0, expires_at_wall=0, lifetime=10)
    assert isinstance(token.claims(), dict)


# -- redaction in unparseable bodies -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b'{"access_token":"eyJhbGciOi.eyJzdWIi.c2ln","expires_in":60} trailing'),
        (502, b'<pre>{"access_token":"opaque-token-value-123"}</pre>'),
        (200, b"access_token=opaque-token-value-123&token_type=bearer"),
    ],
)
def test_tokens_in_unparseable_bodies_are_redacted(status: int, body: bytes) -> None:
    """A token inside a body that is not clean JSON never reaches the error message: the
    body is described (status, content type, not JSON), never quoted."""
    with pytest.raises(TokenRequestError) as info:
        parse_token_response(
            status,
            {"content-type": "text/plain"},
            body,
            sent_monotonic=0.0,
            sent_wall=0.0,
        )
    message = str(info.value)
    assert "opaque-token-value-123" not in message
    assert "eyJhbGciOi.eyJzdWIi" not in message
    assert f"HTTP {status}" in message
    assert "(text/plain)" in message or "text/plain," in message
