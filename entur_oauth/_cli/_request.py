"""``entur-oauth request``: one authenticated (or, without credentials, open) API request."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._output import EXIT_API, EXIT_CONFIG, EXIT_OK, CommandError, Redactor
from ._settings import load, make_client, run_async, token_cache

if TYPE_CHECKING:
    import httpx2

__all__ = ["run"]


def run(args: argparse.Namespace, redactor: Redactor) -> int:
    """Send the request; print the body on stdout and the status on stderr."""
    settings = load(args, redactor, require_credentials=False)
    method = args.method.upper()
    if not method.isalpha():
        raise CommandError(
            EXIT_CONFIG, f"'{args.method}' is not an HTTP method.", "Use GET, POST, ..."
        )
    headers = _parse_headers(args.headers)
    body = _parse_json_body(args.json_body)
    store = token_cache(args) if settings.client_id else None
    if not settings.client_id:
        print(
            "entur-oauth: no ENTUR_CLIENT_ID/ENTUR_CLIENT_SECRET: sending without a token "
            "(open API).",
            file=sys.stderr,
        )

    async def send() -> int:
        from .._api_errors import APIError

        async with make_client(settings, token_store=store) as client:
            kwargs: dict[str, Any] = {"headers": headers}
            if body is not _NO_BODY:
                kwargs["json"] = body
            started = time.perf_counter()
            try:
                response = await client.request(method, args.path, **kwargs)
            except APIError as exc:
                _print_response(exc.response, time.perf_counter() - started, redactor)
                raise
            if response.status_code >= 400:  # an error page may echo the token it was sent
                token = client.token
                redactor.add(token.get("access_token") if token is not None else None)
        _print_response(response, time.perf_counter() - started, redactor)
        if response.status_code >= 400:
            raise CommandError(
                EXIT_API,
                f"the API answered HTTP {response.status_code} {response.reason_phrase}.",
                "Check the method, path and body against the API's documentation.",
            )
        return EXIT_OK

    return run_async(args, send)


_NO_BODY: Any = object()


def _parse_headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if (
            not sep
            or not name.strip()
            or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip())
        ):
            raise CommandError(
                EXIT_CONFIG,
                f"--header {value!r} is not 'Name: value'.",
                "For example: --header 'Entur-POS: web'.",
            )
        headers[name.strip()] = content.strip()
    return headers


def _parse_json_body(value: str | None) -> Any:
    if value is None:
        return _NO_BODY
    source = "--json"
    if value == "-":
        value, source = sys.stdin.read(), "stdin"
    elif value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            value, source = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(
                EXIT_CONFIG, f"cannot read {path}: {exc}.", "Check the path."
            ) from None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise CommandError(
            EXIT_CONFIG,
            f"the body from {source} is not valid JSON ({exc}).",
            """Quote it for the shell, e.g. --json '{"size": 5}', or use --json @body.json.""",
        ) from None


def _print_response(response: httpx2.Response, took: float, redactor: Redactor) -> None:
    status = response.status_code
    reason = response.reason_phrase
    content_type = response.headers.get("content-type", "")
    text = response.text
    if "json" in content_type:
        with suppress(ValueError):
            text = json.dumps(response.json(), indent=2, ensure_ascii=False)
    if status >= 400:  # an error answer is no data the user asked for: nothing secret in it
        reason, text = redactor.redact(reason), redactor.redact(text)
    print(f"HTTP {status} {reason} ({took:.2f} s)", file=sys.stderr)
    if text:
        print(text)
