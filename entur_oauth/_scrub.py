"""Redaction of secrets and tokens in the excerpts of response bodies that errors quote.

A server may echo what it was sent in any encoding, and in a mix of them: one character
URL-encoded, the next as a JSON ``\\uXXXX`` escape, the next as an HTML entity. So a secret
is found with a pattern in which every character may take any of those forms (and the forms
one more layer of escaping makes of them, such as ``\\&quot;``: a JSON body echoed in an
HTML page), rather than by searching a few whole-string encodings.
"""

from __future__ import annotations

import functools
import html
import html.entities
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx2

__all__ = [
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
_JWT_TAIL = re.compile(r"eyJ[A-Za-z0-9_.-]*\Z")
# The first window of a long body that is redacted (see _redacted_prefix), and the margin
# kept for a JWT-shaped run or a token field cut by the window's end.
_FIRST_WINDOW = 4096
_VISIBLE_PREFIX = re.compile(rf"(?:\s*+\S){{{_SNIPPET_LEN + 1}}}")
_JWT_MARGIN = 64
_JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)?")
# The escape sequences whose hex digits a server may write in either case.
_ESCAPE = re.compile(
    r"(?P<pct>%[0-9A-Fa-f]{2})|(?P<u>\\u[0-9A-Fa-f]{4})|(?P<x>\\x[0-9A-Fa-f]{2})"
    r"|(?P<hex>&#[xX][0-9A-Fa-f]+;)|(?P<dec>&#[0-9]+;)"
)
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "'": "\\'"}


def sanitize_snippet(body: bytes | str, redact: Iterable[str] = ()) -> str:
    """Return a short, printable excerpt of a response body with known secrets removed.

    Each secret is removed in every form a server may echo it in (plain; URL-encoded with
    either hex case and ``+`` for space; JSON escapes such as ``\\/`` and ``\\uXXXX``; HTML
    named, decimal and hex entities; any mix of them, character by character), before the
    text is shortened, so no part of it survives. The values of token-carrying fields and
    anything shaped like a JWT are blanked too.
    """
    secrets = tuple(redact)
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = _fold(_redacted_prefix(text, secrets))
    if len(text) > _SNIPPET_LEN:
        text = text[:_SNIPPET_LEN] + "..."
    # Again, on the short text: folding whitespace can join what was apart.
    return _redact_text(text, secrets)


def _fold(text: str) -> str:
    """``text`` on one line: control characters as spaces, runs of whitespace as one."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _redacted_prefix(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` redacted, or a redacted beginning of it that is long enough for a snippet.

    Redacting a whole 1 MiB error body took half a second per failed attempt, for 160
    characters shown. So a window of the text is redacted, plus a margin as wide as the
    longest echo of a secret can be: every echo that starts inside the window then lies
    whole in what is redacted, and is blanked as it would be in the whole text. What the
    margin holds (perhaps the start of an echo cut by the window's end) is then dropped,
    so no part of a secret is ever shown. The window grows until what is left folds to
    more than a snippet, or covers the text.
    """
    width = max((_echo_width(s) for s in secrets if s), default=0) + _JWT_MARGIN
    # A pass over text the previous passes changed sees that margin grown (a blanked
    # character becomes ten), so the part dropped is sized for every pass.
    dropped = len(_REDACTED) * width * (len(secrets) + 2)
    # Start where the text holds enough visible characters for a snippet: a body of
    # mostly whitespace (folded away) would otherwise grow the window step by step.
    visible = _VISIBLE_PREFIX.match(text)
    window = max(_FIRST_WINDOW, dropped, visible.end() if visible else len(text))
    while window + width < len(text):
        kept = _redact_text(text[: window + width], secrets)[:-dropped]
        # An unfinished JWT-shaped run where the cut fell: blank it as the whole text would.
        kept = _JWT_TAIL.sub(_REDACTED, kept)
        if len(_fold(kept)) > _SNIPPET_LEN:
            return kept
        window *= 4
    return _redact_text(text, secrets)


def _echo_width(secret: str) -> int:
    """The most characters an echo of ``secret`` can take (each character's longest form)."""
    return sum(_char_width(ch) for ch in secret)


@functools.lru_cache(maxsize=512)
def _char_width(ch: str) -> int:
    forms = set(_forms(ch))
    forms |= {outer(form) for form in list(forms) for outer in _OUTER}
    # Decimal entities may carry any number of leading zeros: such an echo is unbounded, so
    # a generous width stands in for it (a server pads to a few digits, if at all).
    return max(map(len, forms)) + 16


def body_snippet(body: bytes, payload: object, redact: tuple[str, ...]) -> str:
    """A snippet of ``body``; a JSON body is shown re-serialised with credentials removed."""
    if payload is None:
        return sanitize_snippet(body, redact)
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
    # Longest first, so a secret that contains another is removed whole.
    for secret in sorted((s for s in redact if s), key=len, reverse=True):
        text = _secret_pattern(secret).sub(_REDACTED, text)
    # Bodies that are not clean JSON (an HTML page around JSON, a form-encoded answer) can
    # still carry a token: blank the values of credential fields and anything JWT-shaped.
    text = _SENSITIVE_PAIR.sub(lambda m: m.group(1) + m.group(2) + _REDACTED, text)
    return _JWT_SHAPED.sub(_REDACTED, text)


def _secret_pattern(secret: str) -> re.Pattern[str]:
    """A pattern matching ``secret`` with each character in any of its echoed forms."""
    return re.compile("".join(_char_pattern(ch) for ch in secret))


@functools.lru_cache(maxsize=512)
def _char_pattern(ch: str) -> str:
    # Cached per character (never per secret): a secret is not kept here, only the forms
    # an alphabet of single characters takes.
    forms = set(_forms(ch))
    # One more layer: the forms an outer encoding makes of each form (a JSON echo inside an
    # HTML page gives \&quot;, an HTML echo sent URL-encoded gives %26quot%3B, ...).
    forms |= {outer(form) for form in list(forms) for outer in _OUTER}
    # Longest first, so the widest reading is blanked; the engine backtracks if needed.
    regexes = dict.fromkeys(_to_regex(f) for f in sorted(forms, key=len, reverse=True))
    return "(?:" + "|".join(regexes) + ")"


def _forms(ch: str) -> list[str]:
    """Every single-layer form of one character a server may echo it in."""
    code = ord(ch)
    utf8 = ch.encode("utf-8", "surrogatepass")
    # Hex digits in both cases: the single-layer regex accepts either anyway, but the
    # second layer escapes the form as written (%2f and %2F become %252f and %252F).
    forms = [ch, "".join(f"%{b:02X}" for b in utf8), "".join(f"%{b:02x}" for b in utf8)]
    if ch == " ":
        forms.append("+")
    if code > 0xFFFF:
        pair = json.dumps(ch)[1:-1]
        forms += [pair, pair.upper().replace("\\U", "\\u")]
    else:
        forms += [f"\\u{code:04X}", f"\\u{code:04x}"]
    if code < 0x100:
        forms += [f"\\x{code:02X}", f"\\x{code:02x}"]
    if ch in _JSON_SHORT:
        forms.append(_JSON_SHORT[ch])
    elif (short := json.dumps(ch)[1:-1]).startswith("\\") and len(short) == 2:
        forms.append(short)  # \b \f \n \r \t
    forms += [f"&#{code};", f"&#x{code:X};", f"&#x{code:x};", f"&#X{code:X};", f"&#X{code:x};"]
    forms += ["&" + name for name in _entity_names().get(ch, ())]
    return forms


def _json_escape(text: str) -> str:
    return json.dumps(text)[1:-1].replace("/", "\\/")


def _go_json_escape(text: str) -> str:
    # Go's encoding/json (and others) escape the HTML-special characters as \u00XX.
    escaped = json.dumps(text)[1:-1]
    return escaped.replace("&", "\\u0026").replace("<", "\\u003C").replace(">", "\\u003E")


_OUTER: tuple[Callable[[str], str], ...] = (
    html.escape,
    functools.partial(urllib.parse.quote, safe=""),
    functools.partial(urllib.parse.quote_plus, safe=""),
    _json_escape,
    _go_json_escape,
)


@functools.cache
def _entity_names() -> dict[str, tuple[str, ...]]:
    """HTML5 entity names by the single character they stand for (``"`` -> quot; ...)."""
    names: dict[str, list[str]] = {}
    for name, value in html.entities.html5.items():
        if len(value) == 1:
            names.setdefault(value, []).append(name)
    return {ch: tuple(found) for ch, found in names.items()}


def _to_regex(form: str) -> str:
    """The regex for one literal form, with the hex digits of its escapes in either case."""
    parts: list[str] = []
    pos = 0
    for match in _ESCAPE.finditer(form):
        parts.append(re.escape(form[pos : match.start()]))
        pos = match.end()
        token = match.group()
        if match.lastgroup == "dec":
            # Browsers accept leading zeros and a missing semicolon.
            parts.append(f"&\\#0*{token[2:-1]};?")
        elif match.lastgroup == "hex":
            parts.append(f"&\\#[xX]0*{_hex_any_case(token[3:-1].lstrip('0') or '0')};?")
        else:
            digits = token[-2:] if match.lastgroup in {"pct", "x"} else token[-4:]
            parts.append(re.escape(token[: -len(digits)]) + _hex_any_case(digits))
    parts.append(re.escape(form[pos:]))
    return "".join(parts)


def _hex_any_case(digits: str) -> str:
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in digits)


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
