"""Everything that removes secrets from text: the one redactor of the library and the CLI.

A server may echo what it was sent in any encoding, and in a mix of them: one character
URL-encoded, the next as a JSON ``\\uXXXX`` escape, the next as an HTML entity, and one
more layer of escaping around any of those (``\\&quot;``: a JSON body echoed in an HTML
page). So the text is not searched for a few whole-string encodings of a secret: it is read
once, left to right, and at each character every way it may decode (itself, or an escape
starting there, one or two layers deep) is followed, as long as the decoded characters go on
spelling the secret. The work is linear in the text read (times the few partial echoes alive
at a character); the secret is read once and no pattern is built from it.
"""

from __future__ import annotations

import functools
import heapq
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

    import httpx2

    from ._secrets import Secret

__all__ = [
    "Redactor",
    "body_snippet",
    "cut",
    "is_sensitive_field",
    "sanitize_snippet",
    "strip_bearer",
    "without_bearer",
    "without_echo",
]

_SNIPPET_LEN = 160
_REDACTED = "[redacted]"
# Fields whose values are credentials whatever else a body says, compared with case and
# separators removed: access_token, accessToken, AccessToken, access-token, ACCESS_TOKEN.
_SENSITIVE_FIELDS = frozenset({"accesstoken", "refreshtoken", "idtoken", "clientsecret"})
# The same fields in a body that is not clean JSON: an HTML page around JSON (quotes as
# entities), JSON inside a JSON string (quotes escaped), a form-encoded answer.
_QUOTE = r"""(?:\\?["']|&quot;|&apos;|&#0*3[49];|&#[xX]0*2[27];|%2[27])?"""
_SPACE = r"(?:\s|%20|\+)*"
_SENSITIVE_PAIR = re.compile(
    r"(?<![A-Za-z])((?:access|refresh|id)[-_ ]?token|client[-_ ]?secret)"
    rf"({_QUOTE}{_SPACE}(?:[:=]|%3[aAdD]|&colon;|&equals;){_SPACE}{_QUOTE})"
    r"""(?:\\/|[^"'&\s,;}<>\\])+""",
    re.IGNORECASE,
)
# An Authorization value quoted in a log line or an error: the word kept, the token blanked.
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*")
# JWT-shaped strings live in runs of these characters; each run is looked at once.
# (Lazy from the run's start only, so a long run without one is read once, not once per
# character.)
_TOKEN_RUN = re.compile(r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]*?eyJ[A-Za-z0-9_.-]*+")
# The first window of a long body that is redacted (see _redacted_prefix).
_FIRST_WINDOW = 4096
_VISIBLE_PREFIX = re.compile(rf"(?:\s*+\S){{{_SNIPPET_LEN + 1}}}")
# A character that may start an escaped form of another: URL (% and + for space), JSON and
# C escapes (\), HTML character references (&).
_ESCAPE_STARTS = frozenset("%+\\&")
# Single-layer escapes, read where one starts. Decimal and hex references may carry leading
# zeros (any number: browsers accept them) and lack the semicolon.
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2}){1,4}")
_BACKSLASH = re.compile(
    r"\\(?:u([0-9A-Fa-f]{4})(?:\\u([dD][c-fC-F][0-9A-Fa-f]{2}))?|x([0-9A-Fa-f]{2})|(.))",
    re.DOTALL,
)
_JSON_SHORT = {'"': '"', "\\": "\\", "/": "/", "'": "'", "b": "\b", "f": "\f", "n": "\n"}
_JSON_SHORT |= {"r": "\r", "t": "\t"}
_DECIMAL_REF = re.compile(r"&#0*+([0-9]{1,7})")
_HEX_REF = re.compile(r"&#[xX]0*+([0-9A-Fa-f]{1,6})")
_NAMED_REF = re.compile(r"&([A-Za-z][A-Za-z0-9]{0,31})")
# What the decoded characters of a second layer may still become: the start of one
# single-layer escape (bounded in length, so a second-layer read is bounded too).
_INNER_PREFIX = re.compile(
    r"\+|%(?:[0-9A-Fa-f]{2}%?){0,3}[0-9A-Fa-f]{0,2}"
    r"|\\(?:u[0-9A-Fa-f]{0,4}(?:\\(?:u[0-9A-Fa-f]{0,4})?)?|x[0-9A-Fa-f]{0,2}|.)?"
    r"|&(?:#(?:[xX]0{0,24}[0-9A-Fa-f]{0,6}|0{0,24}[0-9]{0,7});?|[A-Za-z][A-Za-z0-9]{0,31};?)?",
    re.DOTALL,
)
_INNER_MAX = 48


class Redactor:
    """The one redactor: known secrets in every form a server may echo them in, credential
    fields, bearer tokens and JWT-shaped strings, replaced by ``[redacted]``.

    Also a logging filter (an object with ``filter``, which is all logging asks of one), so
    the CLI's ``--verbose`` log lines pass through it.
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def __repr__(self) -> str:
        return f"<Redactor {len(self._secrets)} secret(s)>"

    def add(self, value: str | Secret | None) -> None:
        """Redact ``value`` (a client secret, a token) from now on."""
        reveal = getattr(value, "reveal", None)
        text = reveal() if callable(reveal) else value
        if isinstance(text, str) and text and text not in self._secrets:
            self._secrets += (text,)

    def redact(self, text: str) -> str:
        """Return ``text`` with everything secret in it blanked (all of it is read)."""
        return _redact_text(text, self._secrets)

    def snippet(self, body: bytes | str) -> str:
        """Return a short, printable, redacted excerpt of ``body`` (see sanitize_snippet)."""
        return sanitize_snippet(body, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact a log record's message in place (a ``logging.Filter``)."""
        record.msg, record.args = self.redact(record.getMessage()), None
        return True


def sanitize_snippet(body: bytes | str, redact: Iterable[str] = ()) -> str:
    """Return a short, printable excerpt of a response body with known secrets removed.

    Each secret is removed in every form a server may echo it in (plain; URL-encoded with
    either hex case and ``+`` for space; JSON escapes such as ``\\/`` and ``\\uXXXX``; HTML
    named, decimal and hex entities; any mix of them, character by character, and one more
    layer of escaping around them), before the text is shortened, so no part of it survives.
    The values of token-carrying fields, bearer tokens and anything shaped like a JWT are
    blanked too.
    """
    secrets = tuple(s for s in redact if s)
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = _fold(_redacted_prefix(text, secrets))
    if len(text) > _SNIPPET_LEN:
        text = text[:_SNIPPET_LEN] + "..."
    # Again, on the short text: folding whitespace can join what was apart.
    return _redact_text(text, secrets)


def _fold(text: str) -> str:
    """``text`` on one line: control characters as spaces, runs of whitespace as one."""
    if text.isprintable():
        return " ".join(text.split())
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _redacted_prefix(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` redacted, or a redacted beginning of it that is long enough for a snippet.

    Redacting a whole 1 MiB error body for 160 characters shown is waste. So only echoes
    that start inside a window are looked for (each followed to its end, however long),
    and what comes back is exactly the beginning of what redacting the whole text gives:
    a token-shaped run that the window's end cuts is left out, as the whole text might
    blank more of it. The window grows until what is kept folds to more than a snippet,
    or covers the text.
    """
    visible = _VISIBLE_PREFIX.match(text)
    window = max(_FIRST_WINDOW, visible.end() if visible else len(text))
    while True:
        blanked, end = _blank_secrets(text, secrets, window)
        if end >= len(text):
            return _redact_patterns(blanked)
        kept = _stable_part(_redact_patterns(blanked))
        if len(_fold(kept)) > _SNIPPET_LEN:
            return kept
        window *= 4


def _stable_part(redacted: str) -> str:
    """The part of a redacted beginning that redacting more of the text cannot change.

    Past the last whitespace, a token-shaped run cut by the window may be blanked further
    once the rest of it is read (a JWT whose dots come later); before it nothing changes,
    as no pattern's blanked part spans whitespace.
    """
    if not redacted or redacted[-1].isspace():
        return redacted
    tail = len(redacted) - len(redacted.rsplit(maxsplit=1)[-1])
    cut = redacted.find("eyJ", tail)
    cut = len(redacted) if cut == -1 else cut
    # The start of an "eyJ" the window's end splits.
    for partial in ("ey", "e"):
        if redacted.endswith(partial):
            cut = min(cut, len(redacted) - len(partial))
            break
    return redacted[:cut]


def body_snippet(body: bytes, payload: object, redact: tuple[str, ...]) -> str:
    """A snippet of ``body``; a JSON body is shown re-serialised with credentials removed."""
    if payload is None:
        return sanitize_snippet(body, redact)
    import json  # here: the CLI imports this module on its cached token path

    # Only the first characters are shown: the walk stops once it has produced plenty more
    # (a 1 MiB list of short strings took seconds to redact item by item).
    budget = [_FIRST_WINDOW + _SNIPPET_LEN]
    try:
        shown = json.dumps(_redact_json(payload, redact, budget), ensure_ascii=False)
    except RecursionError:
        # Too deeply nested to walk: show nothing rather than an unredacted excerpt.
        shown = "<deeply nested JSON>"
    return sanitize_snippet(shown, redact)


def is_sensitive_field(name: str) -> bool:
    """Tell whether a field called ``name`` carries a credential, in any naming style."""
    return re.sub(r"[^a-z0-9]", "", name.lower()) in _SENSITIVE_FIELDS


def _redact_json(value: object, redact: tuple[str, ...], budget: list[int]) -> object:
    """Return ``value`` with sensitive fields and every string holding a secret blanked.

    ``budget`` counts down the characters produced; at zero, containers are cut short
    there: what follows would lie beyond the snippet.
    """
    if isinstance(value, dict):
        kept: dict[str, object] = {}
        for k, v in value.items():
            if budget[0] <= 0:
                break
            key = _redacted_prefix(str(k), redact)
            budget[0] -= len(key) + 4
            kept[key] = _REDACTED if is_sensitive_field(str(k)) else _redact_json(v, redact, budget)
        return kept
    if isinstance(value, list):
        items: list[object] = []
        for v in value:
            if budget[0] <= 0:
                break
            items.append(_redact_json(v, redact, budget))
        return items
    if isinstance(value, str):
        text = _redacted_prefix(value, redact)
        budget[0] -= len(text) + 2
        return text
    budget[0] -= 8
    return value


def _redact_text(text: str, redact: tuple[str, ...]) -> str:
    """``text`` with every echo of a secret and every credential pattern blanked."""
    return _redact_patterns(_blank_secrets(text, redact, len(text))[0])


def _redact_patterns(text: str) -> str:
    # Bodies that are not clean JSON (an HTML page around JSON, a form-encoded answer) can
    # still carry a token: blank the values of credential fields, bearer tokens and
    # anything JWT-shaped. Each keeps what precedes the value, so a cut text is blanked as
    # the whole would be up to the value.
    if "=" in text or ":" in text or "%3" in text or "&" in text:
        text = _SENSITIVE_PAIR.sub(lambda m: m.group(1) + m.group(2) + _REDACTED, text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(lambda m: m.group(1) + _REDACTED, text)
    if "eyJ" in text:
        text = _TOKEN_RUN.sub(_blank_jwts, text)
    return text


def _blank_jwts(run: re.Match[str]) -> str:
    """Blank the JWT-shaped parts of one run of token characters (``eyJ...``, a dot, a
    segment, optionally a dot and a last segment), reading the run once."""
    text = run.group()
    parts: list[str] = []
    pos = done = 0
    while (start := text.find("eyJ", pos)) != -1:
        dot = text.find(".", start)
        if dot == -1:
            break
        second = text.find(".", dot + 1)
        second = len(text) if second == -1 else second
        if second == dot + 1:
            # An empty second segment: every eyJ before this dot fails the same way.
            pos = dot + 1
            continue
        end = second
        if second < len(text):
            third = text.find(".", second + 1)
            end = len(text) if third == -1 else third
        parts += [text[done:start], _REDACTED]
        pos = done = end
    parts.append(text[done:])
    return "".join(parts)


# -- the echo search --------------------------------------------------------------------


def _blank_secrets(text: str, secrets: tuple[str, ...], stop: int) -> tuple[str, int]:
    """Blank every echo of a secret that starts before ``stop``; return the blanked
    beginning of ``text`` and where it ends (``stop``, or the end of an echo across it)."""
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        if secret:
            spans += _echo_spans(text, secret, stop)
    end = min(stop, len(text))
    if not spans:
        return text[:end], end
    spans.sort()
    parts: list[str] = []
    done = 0
    for start, stop_ in spans:
        if start >= end:
            break
        if start >= done:
            parts += [text[done:start], _REDACTED]
            done = stop_
        elif stop_ > done:
            done = stop_
        end = max(end, done)
    parts.append(text[done:end])
    return "".join(parts), end


def _echo_spans(text: str, secret: str, stop: int) -> list[tuple[int, int]]:
    """The spans of ``text`` that spell ``secret`` (each character in any form) and start
    before ``stop``.

    Read left to right; at each position, the partial echoes that reach it (how much of
    the secret they spelled, and the earliest start among the ways to spell it) are carried
    on over every reading of the character there. Positions where no partial echo is alive
    and the secret cannot start are skipped in C. The work per position is the number of
    partial echoes alive there: one or two for a random secret, whatever its length; a
    secret that repeats itself ("abcabc...") keeps one alive per repetition it has matched.
    """
    size = len(secret)
    first = _first_candidates(secret[0])
    # position -> {characters of the secret spelled: earliest start}
    alive: dict[int, dict[int, int]] = {}
    queue: list[int] = []
    spans: list[tuple[int, int]] = []
    memo: dict[int, list[tuple[str, int]]] = {}
    limit = min(stop, len(text))
    none = len(text)  # no position left where an echo may start
    found = first.search(text, 0, limit)
    nxt = found.start() if found else none
    while True:
        pos = queue[0] if queue and queue[0] <= nxt else nxt
        if pos >= len(text):
            return spans
        states = alive.pop(pos, None)
        if states is not None:
            heapq.heappop(queue)
        else:
            states = {}
        if pos == nxt:
            states.setdefault(0, pos)
            found = first.search(text, pos + 1, limit)
            nxt = found.start() if found else none
        _step(text, pos, states, secret, size, alive, queue, spans, memo)


def _step(  # noqa: PLR0917 - the scanner's state, passed rather than kept on an object
    text: str,
    pos: int,
    states: dict[int, int],
    secret: str,
    size: int,
    alive: dict[int, dict[int, int]],
    queue: list[int],
    spans: list[tuple[int, int]],
    memo: dict[int, list[tuple[str, int]]],
) -> None:
    """Carry the partial echoes at ``pos`` over each reading of the character there."""
    ch = text[pos]
    readings = [(ch, pos + 1)]
    if ch in _ESCAPE_STARTS:
        escaped = memo.get(pos)
        if escaped is None:
            escaped = memo[pos] = _readings(text, pos)
        readings += escaped
    for done, start in states.items():
        want = secret[done]
        for got, end in readings:
            if got != want:
                continue
            if done + 1 == size:
                spans.append((start, end))
                continue
            there = alive.get(end)
            if there is None:
                there = alive[end] = {}
                heapq.heappush(queue, end)
            known = there.get(done + 1)
            if known is None or start < known:
                there[done + 1] = start


@functools.lru_cache(maxsize=256)
def _first_candidates(ch: str) -> re.Pattern[str]:
    # Cached per character (never per secret): where an echo of a secret starting with
    # ``ch`` may start, itself or an escape.
    return re.compile(f"[{re.escape(ch)}%+\\\\&]")


def _readings(text: str, pos: int) -> list[tuple[str, int]]:
    """The characters an escape starting at ``pos`` may stand for, each with where it ends:
    one layer (``%2F``, ``\\/``, ``&#47;``) or two (``%252F``, ``\\&quot;``, ``%26amp%3B``)."""
    found = set(_single(text, pos))
    # A second layer: the characters the first layer decodes to, read as one escape.
    inner: list[tuple[str, list[int]]] = [("", [pos])]
    while inner:
        prefix, ends = inner.pop()
        at = ends[-1]
        if at >= len(text):
            continue
        options = [(text[at], at + 1), *(_single(text, at) if text[at] in _ESCAPE_STARTS else ())]
        for got, end in options:
            grown = prefix + got
            if len(grown) > _INNER_MAX or not _INNER_PREFIX.fullmatch(grown):
                continue
            path = [*ends, end]
            for decoded, used in _single(grown, 0):
                found.add((decoded, path[used]))
            inner.append((grown, path))
    return list(found)


def _single(text: str, pos: int) -> list[tuple[str, int]]:
    """The characters a one-layer escape starting at ``pos`` may stand for, with its end."""
    lead = text[pos]
    out: list[tuple[str, int]] = []
    if lead == "+":
        out.append((" ", pos + 1))
    elif lead == "%":
        if match := _PERCENT.match(text, pos):
            out += _percent(match.group(), pos)
    elif lead == "\\":
        if match := _BACKSLASH.match(text, pos):
            out += _backslash(match, pos)
    elif lead == "&":
        out += _references(text, pos)
    return out


def _percent(run: str, pos: int) -> list[tuple[str, int]]:
    data = bytes.fromhex(run.replace("%", ""))
    out: list[tuple[str, int]] = []
    # The first character of the bytes (one to four of them in UTF-8).
    for length in range(1, len(data) + 1):
        try:
            char = data[:length].decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.append((char, pos + 3 * length))
        break
    return out


def _backslash(match: re.Match[str], pos: int) -> list[tuple[str, int]]:
    high, low, byte, short = match.groups()
    if high is not None:
        code = int(high, 16)
        out = [(chr(code), pos + 6)]
        if low is not None and 0xD800 <= code <= 0xDBFF:
            pair = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
            out.append((chr(pair), pos + 12))
        return out
    if byte is not None:
        return [(chr(int(byte, 16)), pos + 4)]
    decoded = _JSON_SHORT.get(short)
    return [(decoded, pos + 2)] if decoded is not None else []


def _references(text: str, pos: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    # The semicolon is optional, and without one the digits may stop anywhere: "&#65"
    # followed by "6" is an A and a 6 to a browser.
    for pattern, base in ((_DECIMAL_REF, 10), (_HEX_REF, 16)):
        if match := pattern.match(text, pos):
            digits, start = match.group(1), match.start(1)
            for length in range(1, len(digits) + 1):
                code = int(digits[:length], base)
                if code <= 0x10FFFF:
                    end = start + length
                    out.append((chr(code), end))
                    if length == len(digits) and text.startswith(";", end):
                        out.append((chr(code), end + 1))
            return out
    if match := _NAMED_REF.match(text, pos):
        name = match.group(1)
        names = _entity_names()
        for length in range(1, len(name) + 1):
            char = names.get(name[:length])
            if char is not None:
                out.append((char, pos + 1 + length))
            end = pos + 1 + length
            if length == len(name) and text.startswith(";", end):
                char = names.get(name + ";")
                if char is not None:
                    out.append((char, end + 1))
    return out


@functools.cache
def _entity_names() -> dict[str, str]:
    """HTML5 entity names (with and without their semicolon) of single characters."""
    import html.entities  # a large table, loaded when a reference is first read

    return {name: value for name, value in html.entities.html5.items() if len(value) == 1}


# -- the request path: the bearer off requests, errors and echoing answers ---------------
#
# What the API request path (``_bearer.py``, ``EnturClient.send``) uses to keep the bearer
# out of everything a caller can reach: the requests of answered responses, the httpx2
# errors it re-raises, the frames of a cancelled call, a token an API echoes back.

# httpx2 is imported where an error is handled, not here: the CLI's cached ``token`` path
# imports this module and must not load the HTTP stack.

_AUTHORIZATION = "Authorization"
# Headers that describe the bytes on the wire, not the decoded body a new response holds.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def strip_bearer(request: httpx2.Request, response: httpx2.Response) -> None:
    """Take the token off ``request`` and every request ``response`` carries (a same-origin
    redirect copies the header onto the request httpx2 builds for it)."""
    request.headers.pop(_AUTHORIZATION, None)
    if response.history or response.request is not request:
        for sent in (response.request, *(r.request for r in response.history)):
            sent.headers.pop(_AUTHORIZATION, None)


def without_bearer(exc: httpx2.HTTPError, request: httpx2.Request) -> httpx2.HTTPError:
    """Return a new ``exc`` of the same type whose requests carry no ``Authorization``.

    The original is dropped with its traceback and chain: httpcore's frames and httpx2's
    ``request`` hold the bearer, and a pickle of the error would carry it.
    """
    try:
        sent = exc.request
    except RuntimeError:  # httpx2 raises this when no request was attached
        sent = request
    bearer = request.headers.get(_AUTHORIZATION) or sent.headers.get(_AUTHORIZATION)
    for each in (request, sent):
        each.headers.pop(_AUTHORIZATION, None)
    import httpx2

    message = str(exc)
    if bearer:  # a transport may quote the header it was given
        message = message.replace(bearer.removeprefix("Bearer "), "[redacted]")
    del bearer
    if isinstance(exc, httpx2.HTTPStatusError):  # from a user's response event hook
        return type(exc)(message, request=sent, response=exc.response)
    if isinstance(exc, httpx2.RequestError):
        return type(exc)(message, request=sent)
    return httpx2.TransportError(message, request=sent)


def cut(exc: BaseException, request: httpx2.Request) -> None:
    """Make ``exc``, raised while ``request`` was out (or being retried), fit to leave send.

    The request loses its ``Authorization``, which clears it in every frame that holds it.
    A cancellation (a timeout around the call) or an interrupt also loses its frames from
    here down: httpcore's hold their own copy of the request as sent. Other errors keep
    their traceback (an event hook's error should point at the hook).
    """
    request.headers.pop(_AUTHORIZATION, None)
    if not isinstance(exc, Exception):
        exc.with_traceback(None)


def without_echo(response: httpx2.Response, tokens: tuple[str, ...]) -> httpx2.Response:
    """Return ``response`` (read), or a new one in which every one of ``tokens`` the API
    echoed (in a header, the body or the reason phrase: a debug endpoint, a proxy's error
    page) reads ``[redacted]``; its history is treated the same way."""
    history = [without_echo(earlier, tokens) for earlier in response.history]
    content = response.content
    headers = response.headers.multi_items()
    reason = response.extensions.get("reason_phrase", b"")
    found = [
        t
        for t in tokens
        if t
        and (
            t.encode() in content
            or any(t in value for _, value in headers)
            or (isinstance(reason, bytes) and t.encode() in reason)
        )
    ]
    import httpx2

    if not found:
        if any(a is not b for a, b in zip(history, response.history, strict=True)):
            response.history = history
        return response
    for token in found:
        needle = token.encode()
        content = content.replace(needle, b"[redacted]")
        headers = [(name, value.replace(token, "[redacted]")) for name, value in headers]
        if isinstance(reason, bytes):
            reason = reason.replace(needle, b"[redacted]")
    return httpx2.Response(
        response.status_code,
        headers=[(k, v) for k, v in headers if k.lower() not in _WIRE_HEADERS],
        content=content,
        request=response.request,
        extensions={**response.extensions, "reason_phrase": reason},
        history=history,
    )
