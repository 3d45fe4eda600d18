"""Redaction of secrets and token fields in the body excerpts that errors and logs quote."""

from __future__ import annotations

import html
import html.entities
import json
import logging
import random
import urllib.parse
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from entur_oauth import RetryPolicy, TokenRequestError, _scrub
from entur_oauth._scrub import body_snippet, sanitize_snippet
from entur_oauth._secrets import fingerprint
from entur_oauth._token import parse_token_response
from entur_oauth.testing import FakeEntur, ScriptedResponse

# Printable ASCII, space included: every character a secret may hold.
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
# A character no printable-ASCII secret holds: stands in for the marker when looking for
# the secret, so a secret that happens to spell part of "[redacted]" cannot fool the check.
MARK = "\u2588"

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _named(ch: str) -> list[str]:
    names = [f"&{n}" for n, v in html.entities.html5.items() if v == ch and n.endswith(";")]
    return names or [ch]


def _char_encodings(ch: str, *, lenient: bool = True) -> list[str]:
    """Every single-layer form of one character, written as servers write them (and, if
    ``lenient``, as only HTML parsers read them: a decimal entity with a leading zero)."""
    code = ord(ch)
    forms = [
        ch,
        f"%{code:02X}",
        f"%{code:02x}",
        f"\\u{code:04x}",
        f"\\u{code:04X}",
        f"&#{code};",
        f"&#x{code:x};",
        f"&#x{code:X};",
        f"&#X{code:x};",
        *_named(ch),
    ]
    if lenient:
        forms.append(f"&#0{code};")
    if ch == " ":
        forms.append("+")
    if ch in '"\\/':
        forms.append("\\" + ch)
    return forms


def _quote_lower(text: str) -> str:
    quoted = urllib.parse.quote(text, safe="")
    return "%".join(
        part[:2].lower() + part[2:] if i else part for i, part in enumerate(quoted.split("%"))
    )


#: Whole-string encodings of the secret, the forms a server that escapes everything gives.
WHOLE: dict[str, Callable[[str], str]] = {
    "plain": lambda s: s,
    "url": lambda s: urllib.parse.quote(s, safe=""),
    "url-lower": _quote_lower,
    "url-plus": lambda s: urllib.parse.quote_plus(s, safe=""),
    "json": lambda s: json.dumps(s)[1:-1],
    "json-slash": lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
    "json-ascii": lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
    "html": html.escape,
    "html-noquote": lambda s: html.escape(s, quote=False),
}

#: An outer layer around the echo: a JSON body quoted in an HTML page, sent URL-encoded...
OUTER: dict[str, Callable[[str], str]] = {
    "none": lambda s: s,
    "html": html.escape,
    "url": lambda s: urllib.parse.quote(s, safe=""),
    "url-lower": _quote_lower,
    "json": lambda s: json.dumps(s)[1:-1],
}


@st.composite
def echoed_secrets(draw: st.DrawFn, *, lenient: bool = True) -> tuple[str, str]:
    """A secret of printable ASCII, and an echo of it: each character in a random form."""
    secret = draw(st.text(alphabet=PRINTABLE, min_size=1, max_size=40))
    # A secret that is a single common character would blank half of any text; real
    # secrets are long. Short ones still run, as long as they are not just spaces.
    assume(secret.strip())
    echo = "".join(draw(st.sampled_from(_char_encodings(ch, lenient=lenient))) for ch in secret)
    return secret, echo


def _leftovers(snippet: str, secret: str, echo: str) -> list[str]:
    """The forms of ``secret`` (and the ``echo`` itself) still present in ``snippet``."""
    shown = snippet.replace("[redacted]", MARK)
    found = [name for name, encode in WHOLE.items() if encode(secret) in shown]
    if echo in shown:
        found.append("echo")
    return found


@PROPERTY
@given(echoed=echoed_secrets(lenient=False), outer=st.sampled_from(sorted(OUTER)))
def test_an_echoed_secret_is_redacted_in_any_mix_of_encodings(
    echoed: tuple[str, str], outer: str
) -> None:
    """A secret of any printable ASCII characters, each echoed URL-encoded (either hex
    case, + for space), JSON-escaped (\\/, \\uXXXX) or as an HTML named, decimal or hex
    entity, in any mix, and with one more layer of escaping around it, leaves no form of
    itself in the snippet. (Leading zeros in entities are tested without the outer layer.)"""
    secret, echo = echoed
    echo = OUTER[outer](echo)
    body = f"error: bad request <{echo}> end"
    snippet = sanitize_snippet(body, [secret])
    assert "[redacted]" in snippet
    assert _leftovers(snippet, secret, echo) == []


@PROPERTY
@given(echoed=echoed_secrets(), filler=st.text(alphabet=PRINTABLE, max_size=200))
def test_an_echoed_secret_is_redacted_wherever_it_sits_in_a_long_body(
    echoed: tuple[str, str], filler: str
) -> None:
    """The secret is removed before the text is shortened, so no part of an echo beyond
    the 160 shown characters survives, and random text around it does not hide it."""
    secret, echo = echoed
    snippet = sanitize_snippet(f"{filler}{echo}{filler}".encode(), [secret])
    assert _leftovers(snippet, secret, echo) == []


@PROPERTY
@given(echoed=echoed_secrets())
def test_a_secret_inside_json_is_redacted_after_decoding(echoed: tuple[str, str]) -> None:
    """In a JSON body the strings are decoded first: the echo is found whichever
    escapes the JSON encoder used, and in the keys as well as the values."""
    secret, echo = echoed
    payload = {"error_description": f"bad secret {echo}", echo: [secret]}
    body = json.dumps(payload).encode()
    snippet = body_snippet(body, json.loads(body), (secret,))
    assert _leftovers(snippet, secret, echo) == []


@pytest.mark.parametrize(
    ("secret", "echo"),
    [
        ("a/b/c-9f", "a%2fb%2Fc-9f"),  # lower- and upper-case URL hex
        ("a/b/c-9f", "a\\/b\\/c-9f"),  # JSON's \/ in a body that is not JSON
        ("x\"y'z<1>", "x&#34;y&#39;z&lt;1&gt;"),  # decimal entities
        ("x\"y'z<1>", "x&#x22;y&#x27;z&#x3c;1&#X3E;"),  # hex entities, both cases
        ("x\"y'z-longer", "x&quot;y'z-longer"),  # &quot; next to a raw '
        ("with space+plus", "with+space%2Bplus"),  # form encoding
        ('p"w', "p\\&quot;w"),  # a JSON echo inside an HTML page
        ("p&w!", "p%26amp%3Bw%21"),  # an HTML echo sent URL-encoded
        ("p<w>1", "p\\u003cw\\u003e1"),  # \uXXXX, as Go's JSON writes < and >
    ],
)
def test_encodings_named_in_the_hardening_report(secret: str, echo: str) -> None:
    """Each echo the hardening report found quoted verbatim is now blanked."""
    snippet = sanitize_snippet(f"before {echo} after", [secret])
    assert snippet == "before [redacted] after"


def test_snippets_stay_short_and_printable_after_redaction() -> None:
    """Control characters become spaces and the text is cut at 160 characters plus '...'."""
    snippet = sanitize_snippet("\x00\x1b[31m" + "y" * 500, ["secret-value"])
    assert snippet.isprintable()
    assert snippet.endswith("...")
    assert len(snippet) == 163


def test_whitespace_folded_into_a_secret_is_redacted() -> None:
    """Folding a newline into a space cannot assemble the secret after redaction ran."""
    assert sanitize_snippet("x a\n\tb y", ["a b"]) == "x [redacted] y"


FIELD_STYLES = [
    "access_token",
    "accessToken",
    "AccessToken",
    "access-token",
    "ACCESS_TOKEN",
    "id_token",
    "idToken",
    "ID-TOKEN",
    "refresh_token",
    "refreshToken",
    "RefreshToken",
    "client_secret",
    "clientSecret",
    "Client-Secret",
]
VALUE = "opaque.value-0123456789_abc/def"


def _text_bodies(field: str) -> list[str]:
    quoted = json.dumps({field: VALUE})
    return [
        quoted + " trailing text",  # not valid JSON as a whole
        f"<pre>{html.escape(quoted)}</pre>",  # JSON shown in an HTML page
        f"<pre>{quoted}</pre>",
        json.dumps({"detail": quoted})[1:-1],  # JSON escaped inside JSON: \"field\": \"...\"
        f"{field}={VALUE}&token_type=bearer",  # form-encoded
        f"{field}: {VALUE}",  # a log-like line
        urllib.parse.quote(quoted, safe=""),  # URL-encoded JSON
    ]


@pytest.mark.parametrize("field", FIELD_STYLES)
def test_token_fields_are_blanked_in_every_naming_style(field: str) -> None:
    """access_token, accessToken, AccessToken, access-token, ACCESS_TOKEN (and the id,
    refresh and client-secret fields alike) have their value blanked in JSON bodies, nested
    or not, and in text bodies of every shape."""
    payload = {"error": "server_error", "data": [{field: VALUE}], field: VALUE}
    body = json.dumps(payload).encode()
    assert VALUE not in body_snippet(body, payload, ())
    for text in _text_bodies(field):
        snippet = sanitize_snippet(text)
        assert "opaque.value" not in snippet, text
        assert "[redacted]" in snippet


@pytest.mark.parametrize("text", ["invalid_token: the token expired", "error=invalid_token"])
def test_error_codes_that_contain_a_field_name_are_kept(text: str) -> None:
    """'invalid_token' is an error code, not an id_token field: the message keeps its words."""
    assert sanitize_snippet(text) == text


def test_an_access_token_field_never_reaches_the_token_error() -> None:
    """A 500 answering {"accessToken": ...} is reported by its status and content type,
    without the token and without any other part of the body."""
    body = json.dumps({"accessToken": VALUE, "message": "upstream failed"}).encode()
    with pytest.raises(TokenRequestError) as info:
        parse_token_response(
            500, {"content-type": "application/json"}, body, sent_monotonic=0, sent_wall=0
        )
    assert VALUE not in str(info.value)
    assert "upstream failed" not in str(info.value)
    assert "HTTP 500 (application/json, a JSON object)" in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["text", "oauth-json"])
async def test_echoes_are_redacted_in_the_error_and_the_debug_log(
    caplog: pytest.LogCaptureFixture, shape: str
) -> None:
    """Through the client: a token endpoint echoing the secret in mixed encodings and an
    accessToken field leaves neither in the exception nor in any log record. A text body
    is not quoted at all (status and content type are); an OAuth error_description is
    quoted, with the echo blanked."""
    secret = "s3cr/et+\"quoted\" & 'more'"
    mixed = "s3cr%2fet%2B&quot;quoted\\u0022 &amp; &#39;more'"
    if shape == "text":
        body = json.dumps({"accessToken": VALUE, "note": mixed}) + " and " + html.escape(secret)
        content_type, expected = "text/plain", "HTTP 500 (text/plain, a body of"
    else:
        described = f"bad {mixed} and {html.escape(secret)} {VALUE}"
        fields = {"error": "invalid_request", "error_description": described}
        body = json.dumps({**fields, "accessToken": VALUE})
        content_type, expected = "application/json", "[redacted]"
    fake = FakeEntur()
    fake.fail_token(
        ScriptedResponse(500, body=body.encode(), headers={"content-type": content_type})
    )
    caplog.set_level(logging.DEBUG, logger="entur_oauth")
    async with fake.client(client_secret=secret, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(TokenRequestError) as info:
            await client.get("/x")
    shown = str(info.value) + "\n" + "\n".join(r.getMessage() for r in caplog.records)
    for leak in (mixed, html.escape(secret), secret, "s3cr"):
        assert leak not in shown
    assert expected in str(info.value)


def test_token_fingerprints_are_kept() -> None:
    """A token's fingerprint (a short hash) is no secret: it stays readable in a snippet,
    while the token itself, JWT-shaped, is blanked."""
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    text = f"token {fingerprint(token)} refused: {token}"
    assert sanitize_snippet(text) == f"token {fingerprint(token)} refused: [redacted]"


# -- a long body is redacted only as far as the snippet needs (F10) ----------------------


def _whole_text_snippet(body: str, secrets: tuple[str, ...]) -> str:
    """The snippet as it was made before the window: the whole text redacted, then cut."""
    text = _scrub._fold(_scrub._redact_text(body, secrets))
    if len(text) > 160:
        text = text[:160] + "..."
    return _scrub._redact_text(text, secrets)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    echoed=echoed_secrets(),
    pieces=st.lists(
        st.one_of(
            st.tuples(st.just("space"), st.integers(1, 30_000)),
            st.tuples(st.just("visible"), st.integers(1, 300)),
            st.tuples(st.just("echo"), st.just(0)),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_a_long_body_gives_the_snippet_the_whole_text_would_give(
    echoed: tuple[str, str], pieces: list[tuple[str, int]]
) -> None:
    """Redacting only a window of a long body gives exactly the snippet that redacting all
    of it gives, wherever echoes fall (also across the window's edge, behind long runs of
    whitespace that folding removes), so no part of an echo cut by the window is shown."""
    secret, echo = echoed
    body = "".join(
        echo if kind == "echo" else (" " if kind == "space" else "v") * n for kind, n in pieces
    )
    assert sanitize_snippet(body, [secret]) == _whole_text_snippet(body, (secret,))


@pytest.mark.parametrize("before", [0, 100, 140, 150, 155, 159, 160])
@pytest.mark.parametrize("gap", ["", " " * 70_000])
def test_an_echo_where_the_snippet_ends_is_redacted_in_a_long_body(before: int, gap: str) -> None:
    """An echo that starts just before the 160th shown character of a long body (also
    behind a run of whitespace longer than the first window) is blanked whole."""
    secret = "S3cr3t/value+xyz&<>'\\"
    echo = html.escape(urllib.parse.quote(secret, safe=""))
    body = gap + "v" * before + echo + "v" * 200_000
    snippet = sanitize_snippet(body, [secret])
    assert snippet == _whole_text_snippet(body, (secret,))
    assert "[redacted]" in snippet or before > 150  # (the marker itself may be cut short)
    assert _leftovers(snippet, secret, echo) == []
    assert "%2" not in snippet


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": "invalid_request", "detail": "' + b"a" * (1 << 20) + b'"}',
        b"<html>" + b"&quot;x&#34; %2f \\/ " * (1 << 16),
        json.dumps({"error": "invalid_request", "items": ["ab"] * (1 << 18)}).encode(),
        json.dumps({"error": "invalid_request", "d": {str(i): i for i in range(1 << 16)}}).encode(),
    ],
    ids=["long-text", "escapes", "json-list", "json-object"],
)
def test_a_one_mebibyte_error_body_is_redacted_in_a_bounded_window(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1 MiB error body (text, or JSON of many short items) is quoted after redacting only
    the window the snippet needs, not the whole body (which took 0.3-2.4 s of CPU): counted
    as the characters the redaction read, not timed, so the machine's load cannot make it
    flaky. The timing itself is reported by the benchmarks, not asserted here."""
    seen: list[int] = []
    inner, blank = _scrub._redact_text, _scrub._blank_secrets

    def counting(text: str, redact: tuple[str, ...]) -> str:
        seen.append(len(text))
        return inner(text, redact)

    def counting_blank(text: str, redact: tuple[str, ...], stop: int) -> tuple[str, int]:
        blanked, end = blank(text, redact, stop)
        seen.append(end)  # how far into the text it read
        return blanked, end

    monkeypatch.setattr(_scrub, "_redact_text", counting)
    monkeypatch.setattr(_scrub, "_blank_secrets", counting_blank)
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    snippet = body_snippet(body, payload, ("S3cr3t-value-xyz", "other-secret"))
    assert 150 < len(snippet) <= 163
    assert sum(seen) < len(body) // 16


def test_a_jwt_cut_by_the_window_is_blanked() -> None:
    """A JWT-shaped run that the window's end cuts (no dot left in it) is blanked as the
    whole run would be, not shown as a bare start."""
    body = " " * 30_000 + "x " * 100 + "eyJ" + "A" * 200_000 + ".payload.sig"
    snippet = sanitize_snippet(body, ["S3cr3t-value-xyz"])
    assert "eyJ" not in snippet
    assert snippet == _whole_text_snippet(body, ("S3cr3t-value-xyz",))


# -- redaction costs what the text costs to read, whatever the secret (issue 19) ---------


def _count_work(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the echo search's work: one unit per partial echo carried over a position."""
    work = [0]
    inner = _scrub._step

    def counting(text: str, pos: int, states: dict[int, int], *rest: object) -> None:
        work[0] += 1 + len(states)
        inner(text, pos, states, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(_scrub, "_step", counting)
    return work


def _mixed_echo(secret: str) -> str:
    """The secret with every third character URL-encoded and every fifth an HTML entity."""
    forms = []
    for i, ch in enumerate(secret):
        if i % 3 == 0:
            forms.append(f"%{ord(ch):02X}")
        elif i % 5 == 0:
            forms.append(f"&#{ord(ch)};")
        else:
            forms.append(ch)
    return "".join(forms)


@pytest.mark.parametrize("length", [64, 20_000])
def test_redaction_work_is_linear_in_the_text_not_the_secret(
    length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The echo search does a bounded amount of work per character of the text it reads,
    with a 64- or a 20,000-character secret alike: counted, not timed. A text full of
    escapes and of the secret's first character (where an echo could start) and a long
    mixed echo of the secret itself are blanked, and doubling the text doubles the work."""
    work = _count_work(monkeypatch)
    # Random, as client secrets are (a secret that repeats itself, such as "abcabc...",
    # keeps one partial echo alive per repetition: see _echo_spans).
    secret = "".join(random.Random(length).choices(PRINTABLE[1:], k=length))
    noise = f"{secret[:3]}%41&amp;\\u0041+{secret[0]}&#65;x " * 2_000

    costs = []
    for copies in (1, 2):
        text = (noise + _mixed_echo(secret) + " ") * copies
        work[0] = 0
        redacted = _scrub._redact_text(text, (secret,))
        assert redacted.count("[redacted]") == copies
        assert secret[:40] not in redacted
        costs.append(work[0])
        # A bounded number of units per character read, whatever the secret's length.
        assert work[0] <= 4 * len(text)
    assert costs[1] <= 2.2 * costs[0]


def test_a_successful_token_response_runs_no_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing a 200 OK token response reads nothing of the secret (a 1,000,000-character
    one is accepted as any other): no echo search runs, however long the secret."""
    calls: list[str] = []

    def refusing(text: str, redact: tuple[str, ...], stop: int) -> tuple[str, int]:
        calls.append(text)
        return text, len(text)

    monkeypatch.setattr(_scrub, "_blank_secrets", refusing)
    secret = "s" * 1_000_000
    body = json.dumps({"access_token": "abc.def", "token_type": "Bearer", "expires_in": 60})
    token = parse_token_response(
        200,
        {"content-type": "application/json"},
        body.encode(),
        sent_monotonic=0,
        sent_wall=0,
        redact=(secret,),
    )
    assert token.access_token == "abc.def"
    assert calls == []
