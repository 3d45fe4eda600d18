"""The ``entur-oauth`` command line: tokens for curl, a credentials check, authenticated
requests, a fake Entur for local development, and the demo.

Credentials come from the ``ENTUR_*`` variables (or ``--client-secret-file``), never from a
flag that would land in shell history. Exit codes: 0 ok, 2 configuration error, 3
credentials rejected, 4 network or token endpoint failure, 5 API error; the message on
stderr says what to do next. Nothing but ``token`` prints a token, and nothing prints the
client secret, not even ``--verbose``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import logging
import os
import re
import signal
import stat
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import httpx2

from ._client import EnturClient
from ._config import EnvSettings, builtin_or_none, read_env, validate_client_name
from ._errors import (
    APIError,
    ConfigurationError,
    ForbiddenError,
    InvalidCredentialsError,
    TokenRequestError,
)
from ._fakeclock import FakeClock
from ._file_store import FileTokenStore
from ._secrets import Secret, fingerprint
from ._stores import MemoryTokenStore, TokenStore
from ._token import Token

if TYPE_CHECKING:
    from .testing import FakeEntur

__all__ = ["main"]

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_CREDENTIALS = 3
EXIT_TOKEN_ENDPOINT = 4
EXIT_API = 5
EXIT_INTERRUPTED = 130

#: Where ``token`` and ``request`` keep tokens between runs (sealed with the client secret).
CACHE_FILE_NAME = "tokens.json"
DEMO_CLIENT_NAME = "entur-oauth-demo"
FAKE_SERVER_CLIENT_ID = "fake-client-id"
FAKE_SERVER_CLIENT_SECRET = "fake-client-secret"  # the fake server's, printed on purpose
FAKE_SERVER_CLIENT_NAME = "local-dev"

_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*")


class CommandError(Exception):
    """A failure the command explains itself: an exit code, a message and what to do next."""

    def __init__(self, code: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


# -- argument parsing ----------------------------------------------------------------------


def _common_options(*, top_level: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command name."""
    # Subcommand copies default to SUPPRESS so they never overwrite a value given before
    # the command name (``entur-oauth --verbose token`` and ``entur-oauth token --verbose``).
    default: Any = None if top_level else argparse.SUPPRESS
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--environment",
        metavar="NAME",
        default=default,
        help="production, staging or dev (default: $ENTUR_ENVIRONMENT, else production); "
        "with ENTUR_TOKEN_URL, ENTUR_AUDIENCE and ENTUR_API_BASE_URL, any name",
    )
    group.add_argument(
        "--client-name",
        metavar="NAME",
        default=default,
        help="ET-Client-Name, '<company>-<application>' (default: $ENTUR_CLIENT_NAME)",
    )
    group.add_argument(
        "--client-secret-file",
        metavar="PATH",
        type=Path,
        default=default,
        help="read the client secret from this file instead of $ENTUR_CLIENT_SECRET",
    )
    # Not an option: a trap that refuses a secret typed on the command line without
    # echoing it (argparse's "unrecognized arguments" message would print it).
    group.add_argument(
        "--client-secret", nargs="?", action=_RefuseSecret, default=None, help=argparse.SUPPRESS
    )
    group.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio" if top_level else argparse.SUPPRESS,
        help="event loop to run on (default: asyncio)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help="log what the client does (DEBUG, tokens and secrets redacted) to stderr",
    )
    return parser


class _RefuseSecret(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "there is no --client-secret option: a secret on the command line lands in shell "
            "history and in 'ps' output. Set ENTUR_CLIENT_SECRET, or use --client-secret-file "
            "PATH (and consider changing the secret you just typed)."
        )


def _cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-file",
        metavar="PATH",
        type=Path,
        help=f"token cache file (default: {_default_cache_path()})",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write the token cache file",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``entur-oauth``."""
    common = _common_options(top_level=False)
    parser = argparse.ArgumentParser(
        prog="entur-oauth",
        allow_abbrev=False,
        parents=[_common_options(top_level=True)],
        description="Entur API access from the shell: tokens, checks, requests, a fake "
        "Entur, and a demo. Credentials come from ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET and "
        "ENTUR_CLIENT_NAME.",
        epilog="Exit codes: 0 ok, 2 configuration error, 3 credentials rejected, 4 network "
        "or token endpoint failure, 5 API error. Start with: entur-oauth demo",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    token = commands.add_parser(
        "token",
        allow_abbrev=False,
        parents=[common],
        help="print an access token (reused from the cache while valid)",
        description="Print a valid access token on stdout, for "
        'curl -H "Authorization: Bearer $(entur-oauth token)". The token is cached '
        "(encrypted with the client secret) and reused by later runs until it nears expiry.",
    )
    token.add_argument(
        "--header", action="store_true", help="print the whole 'Authorization: Bearer ...' line"
    )
    _cache_options(token)
    token.set_defaults(handler=_cmd_token)

    check = commands.add_parser(
        "check",
        parents=[common],
        allow_abbrev=False,
        help="fetch a token and show what it grants, without printing it",
        description="Fetch a fresh token and print the environment, client, audience, "
        "expiry, scopes and permissions, never the token itself. With --path, also make one "
        "authenticated GET to see whether the API accepts the token.",
    )
    check.add_argument(
        "--path",
        metavar="PATH",
        help="an API path to GET with the token, e.g. /personalisation/v1/programs/1",
    )
    check.set_defaults(handler=_cmd_check)

    request = commands.add_parser(
        "request",
        parents=[common],
        allow_abbrev=False,
        help="send an authenticated request and print the response",
        description="Send METHOD PATH with a token (PATH is relative to the environment's "
        "API base, or a full URL) and print the body on stdout (JSON pretty-printed) and "
        "the status on stderr. Exits 5 when the status is 400 or more. Without "
        "ENTUR_CLIENT_ID/ENTUR_CLIENT_SECRET it sends no token (Entur's open APIs).",
    )
    request.add_argument("method", metavar="METHOD", help="GET, POST, PUT, PATCH, DELETE, ...")
    request.add_argument("path", metavar="PATH", help="e.g. /geocoder/v1/autocomplete?text=Oslo")
    request.add_argument(
        "--json",
        metavar="BODY",
        dest="json_body",
        help="JSON request body; @FILE reads it from a file, - from stdin",
    )
    request.add_argument(
        "--header",
        metavar="K:V",
        action="append",
        default=[],
        dest="headers",
        help="an extra request header, e.g. 'Entur-POS: web' (repeatable)",
    )
    _cache_options(request)
    request.set_defaults(handler=_cmd_request)

    fake_server = commands.add_parser(
        "fake-server",
        parents=[common],
        allow_abbrev=False,
        help="run a fake Entur (token endpoint and API) on loopback",
        description="Serve the fake Entur of entur_oauth.testing on a loopback port for "
        "local development and print the ENTUR_* variables that point a client at it. "
        "Stop it with Ctrl+C.",
    )
    fake_server.add_argument(
        "--port", type=_port, default=8765, help="port to listen on; 0 picks a free one (8765)"
    )
    fake_server.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on (127.0.0.1)"
    )
    fake_server.add_argument(
        "--expires-in",
        type=float,
        default=86400.0,
        metavar="SECONDS",
        help="lifetime of issued tokens (86400, as Entur's)",
    )
    _server_option(fake_server)
    fake_server.set_defaults(handler=_cmd_fake_server)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        allow_abbrev=False,
        help="watch the client work: against a fake Entur, or a real one with --environment",
        description="Without --environment: run the real EnturClient against a fake Entur "
        "on a loopback port (no credentials needed) and show one token fetch for many "
        "concurrent calls, reuse, renewal before expiry, one re-fetch after a 401, and a 403 "
        "raised as ForbiddenError. With --environment (and ENTUR_CLIENT_ID, "
        "ENTUR_CLIENT_SECRET, ENTUR_CLIENT_NAME): the same token steps against that Entur "
        "environment.",
    )
    demo.add_argument(
        "--calls", type=int, default=50, help="concurrent calls per burst (50)", metavar="N"
    )
    demo.add_argument(
        "--path",
        metavar="PATH",
        help="with --environment: an API path to GET with the token at the end",
    )
    _server_option(demo)
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _port(value: str) -> int:
    """An argparse type: a TCP port number, 0 to 65535."""
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a port number: give 0 to 65535 (0 picks a free one)"
        )
    return port


def _server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        choices=("auto", "uvicorn", "builtin"),
        default="auto",
        help="HTTP server for the fake: uvicorn when installed, else a small built-in one",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("entur-oauth")
    except PackageNotFoundError:  # pragma: no cover - only in an uninstalled checkout
        return "unknown"


# -- entry point -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``entur-oauth`` with ``argv`` (default: the process arguments); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print(parser.format_usage(), end="", file=sys.stderr)
        print(
            "entur-oauth: no command given. Start with 'entur-oauth demo' (no credentials "
            "needed), or see 'entur-oauth --help' for every command.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    redactor = _Redactor()
    with warnings.catch_warnings(), _verbose_logging(args.verbose, redactor):
        # A ClientNameWarning (and any other) as one readable line, not a source excerpt.
        warnings.showwarning = _show_warning
        warnings.simplefilter("default")
        try:
            handler: Callable[[argparse.Namespace, _Redactor], int] = args.handler
            return handler(args, redactor)
        except KeyboardInterrupt:
            print("entur-oauth: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BaseException as exc:  # mapped to an exit code, or re-raised
            return _report(exc, redactor)


def _show_warning(  # noqa: PLR0917 - the signature of warnings.showwarning
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"entur-oauth: warning: {message}", file=sys.stderr)


def _report(exc: BaseException, redactor: _Redactor) -> int:
    """Print what failed and what to do next; return the exit code for ``exc``."""
    leaf = _first_leaf(exc)
    if isinstance(leaf, CommandError):
        code, what, hint = leaf.code, str(leaf), leaf.hint
    elif isinstance(leaf, ConfigurationError):
        code, what = EXIT_CONFIG, f"configuration error: {leaf}"
        hint = _CREDENTIALS_HINT
    elif isinstance(leaf, InvalidCredentialsError):
        code, what = EXIT_CREDENTIALS, f"credentials rejected: {leaf}"
        hint = "Run 'entur-oauth check' after fixing them; --environment picks the environment."
    elif isinstance(leaf, TokenRequestError):
        code, what = EXIT_TOKEN_ENDPOINT, f"token request failed: {leaf}"
        hint = "Try again shortly; run with --verbose to see each attempt."
    elif isinstance(leaf, APIError):
        code, what = EXIT_API, f"API error: {leaf}"
        hint = "Check the path, and the client's access to it in Entur Partner."
    elif isinstance(leaf, httpx2.TransportError):
        code = EXIT_TOKEN_ENDPOINT
        what = f"network error: {type(leaf).__name__}: {leaf}"
        hint = "Check the network, proxy and DNS, and the URL; --verbose shows the requests."
    else:
        raise exc
    print(f"entur-oauth: {redactor.redact(what)}", file=sys.stderr)
    if hint:
        print(f"entur-oauth: next: {hint}", file=sys.stderr)
    return code


def _first_leaf(exc: BaseException) -> BaseException:
    # Errors of concurrent calls arrive in exception groups; they are all the same error
    # (one failed token fetch is shared by every waiter), so the first one tells it.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _run(args: argparse.Namespace, func: Callable[[], Awaitable[int]]) -> int:
    backend: str = args.backend
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise CommandError(EXIT_CONFIG, "--backend trio needs trio.", "pip install trio")
    result: int = anyio.run(func, backend=backend)
    return result


# -- logging -------------------------------------------------------------------------------


class _Redactor(logging.Filter):
    """Removes known secrets, bearer tokens and JWT-shaped strings from log lines and errors."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, value: str | Secret | None) -> None:
        """Redact ``value`` (a client secret) from now on."""
        text = value.reveal() if isinstance(value, Secret) else value
        if text:
            self._secrets.add(text)

    def redact(self, text: str) -> str:
        """Return ``text`` without anything secret."""
        for value in self._secrets:
            text = text.replace(value, "[redacted]")
        text = _BEARER.sub("Bearer [redacted]", text)
        return _JWT.sub("[redacted token]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        return True


@contextmanager
def _verbose_logging(enabled: bool, redactor: _Redactor) -> Iterator[None]:
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(redactor)
    # entur_oauth at DEBUG (token fingerprints, fetches, retries); httpx2 at INFO (one line
    # per HTTP request, no headers).
    loggers = [(logging.getLogger("entur_oauth"), logging.DEBUG)]
    loggers.append((logging.getLogger("httpx2"), logging.INFO))
    saved = [(logger, logger.level) for logger, _ in loggers]
    for logger, level in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


# -- configuration -------------------------------------------------------------------------


_CUSTOM_VARIABLES = ("ENTUR_TOKEN_URL", "ENTUR_AUDIENCE", "ENTUR_API_BASE_URL")
_BUILTIN_NAMES = "production|staging|dev"
_CREDENTIALS_HINT = (
    "Set ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET (or --client-secret-file) and "
    "ENTUR_CLIENT_NAME; see 'entur-oauth --help'."
)
_ENVIRONMENT_HINT = (
    f"use --environment {_BUILTIN_NAMES}, or set ENTUR_TOKEN_URL, ENTUR_AUDIENCE and "
    "ENTUR_API_BASE_URL to define a custom one."
)


def _config_error(message: str, hint: str) -> CommandError:
    return CommandError(EXIT_CONFIG, f"configuration error: {message}", hint)


def _settings(
    args: argparse.Namespace, redactor: _Redactor, *, require_credentials: bool = True
) -> EnvSettings:
    """Read ``ENTUR_*`` variables, with the command-line options taking precedence."""
    environ = dict(os.environ)
    if getattr(args, "environment", None):
        environ["ENTUR_ENVIRONMENT"] = args.environment
        if builtin_or_none(args.environment) is not None:
            # An explicit built-in name wins over a custom environment from the variables:
            # '--environment staging' talks to staging, not to wherever ENTUR_TOKEN_URL says.
            ignored = [name for name in _CUSTOM_VARIABLES if environ.pop(name, "").strip()]
            if ignored:
                print(
                    f"entur-oauth: warning: --environment {args.environment} uses Entur's "
                    f"{args.environment.strip().lower()} URLs; ignoring {', '.join(ignored)}.",
                    file=sys.stderr,
                )
    if getattr(args, "client_name", None):
        environ["ENTUR_CLIENT_NAME"] = args.client_name
    secret_file: Path | None = getattr(args, "client_secret_file", None)
    if secret_file is not None:
        environ["ENTUR_CLIENT_SECRET"] = _read_secret_file(secret_file)
    redactor.add(environ.get("ENTUR_CLIENT_SECRET", "").strip())
    _check_environment(environ)
    try:
        settings = read_env(environ, require_credentials=require_credentials)
    except ConfigurationError as exc:
        raise _config_error(str(exc), _CREDENTIALS_HINT) from None
    if settings.client_name is not None:
        try:
            with warnings.catch_warnings():
                # Only the error here: EnturClient warns about the name's form itself.
                warnings.simplefilter("ignore")
                validate_client_name(settings.client_name)
        except ConfigurationError as exc:
            raise _config_error(
                str(exc),
                "Set ENTUR_CLIENT_NAME (or --client-name) to '<company>-<application>' in "
                "visible ASCII, e.g. acme-journeyplanner.",
            ) from None
    return settings


def _check_environment(environ: Mapping[str, str]) -> None:
    """Raise a configuration error with a fitting hint if the environment is not usable."""
    name = environ.get("ENTUR_ENVIRONMENT", "").strip() or "production"
    custom = {k: environ.get(k, "").strip() for k in _CUSTOM_VARIABLES}
    if not any(custom.values()):
        if builtin_or_none(name) is None:
            raise _config_error(
                f"Unknown Entur environment {name!r}; known environments: dev, production, "
                "staging.",
                _ENVIRONMENT_HINT,
            )
        return
    if builtin_or_none(name) is None:
        absent = [k for k, v in custom.items() if not v]
        if absent:
            raise _config_error(
                f"A custom environment {name!r} needs {', '.join(absent)} too.",
                f"Set {', '.join(absent)} as well, or use --environment {_BUILTIN_NAMES}.",
            )
    try:
        # The environment variables alone: URL checks, without requiring credentials.
        only = {k: v for k, v in environ.items() if k in {"ENTUR_ENVIRONMENT", *custom}}
        read_env(only, require_credentials=False, require_name=False)
    except ConfigurationError as exc:
        raise _config_error(
            str(exc),
            "Give ENTUR_TOKEN_URL and ENTUR_API_BASE_URL as full https:// URLs (http:// only "
            "for loopback such as http://127.0.0.1:8765) and a non-empty ENTUR_AUDIENCE.",
        ) from None


_SECRET_FILE_HINT = (
    "Put only the client secret in the file (readable by you alone: chmod 600), or set "
    "ENTUR_CLIENT_SECRET instead of --client-secret-file."
)


def _read_secret_file(path: Path) -> str:
    try:
        text = path.expanduser().read_text(encoding="utf-8").strip()
        mode = path.expanduser().stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise _config_error(
            f"Cannot read the client secret file {path} ({type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or exc}).",
            _SECRET_FILE_HINT,
        ) from None
    if not text:
        raise _config_error(f"The client secret file {path} is empty.", _SECRET_FILE_HINT)
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"entur-oauth: warning: {path} is readable by other users; run 'chmod 600 {path}'.",
            file=sys.stderr,
        )
    return text


def _client(
    settings: EnvSettings, *, token_store: TokenStore | None = None, **kwargs: Any
) -> EnturClient:
    assert settings.client_name is not None  # read_env requires it
    return EnturClient(
        settings.client_id,
        settings.client_secret,
        client_name=settings.client_name,
        environment=settings.environment,
        token_store=token_store,
        **kwargs,
    )


def _default_cache_path() -> Path:
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "entur-oauth" / CACHE_FILE_NAME


def _token_cache(args: argparse.Namespace) -> TokenStore | None:
    """The file that carries a token from one run to the next (``None``: this run only)."""
    if args.no_cache:
        return MemoryTokenStore()
    path = args.cache_file or _default_cache_path()
    try:
        return FileTokenStore(path)
    except ConfigurationError as exc:
        # An unsafe cache file (a symlink, readable by others) or an OS without flock: the
        # command still works, with a token that lives for this run only.
        print(f"entur-oauth: not caching the token ({exc})", file=sys.stderr)
        return MemoryTokenStore()


# -- token -------------------------------------------------------------------------------


def _cmd_token(args: argparse.Namespace, redactor: _Redactor) -> int:
    settings = _settings(args, redactor)
    store = _token_cache(args)

    async def run() -> int:
        async with _client(settings, token_store=store) as client:
            token = await client.get_access_token()
        print(f"Authorization: Bearer {token}" if args.header else token)
        return EXIT_OK

    return _run(args, run)


# -- check -------------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace, redactor: _Redactor) -> int:
    settings = _settings(args, redactor)

    async def run() -> int:
        # A store of its own: check proves the credentials work now, not that a cached
        # token from an earlier run still does.
        async with _client(settings, token_store=MemoryTokenStore()) as client:
            env = client.environment
            rows = [
                ("environment", env.name),
                ("token URL", env.token_url),
                ("audience", env.audience),
                ("API base", env.api_base_url),
                ("client id", str(client.client_id)),
                ("client name", client.client_name),
            ]
            started = time.perf_counter()
            token = await client._current_token()
            took = time.perf_counter() - started
            rows.append(("token", f"fetched in {took:.2f} s, fingerprint {token.fingerprint}"))
            rows += _token_rows(token)
            _print_rows(rows)
            if args.path:
                return await _check_path(client, args.path)
        print("OK: the token endpoint accepts these credentials.")
        if not args.path:
            print("Add --path /some/endpoint to check that an API accepts the token too.")
        return EXIT_OK

    return _run(args, run)


def _token_rows(token: Token) -> list[tuple[str, str]]:
    """Describe ``token`` from its expiry and (unverified) claims, never its text."""
    remaining = token.expires_at_wall - time.time()
    expires = dt.datetime.fromtimestamp(token.expires_at_wall, tz=dt.UTC)
    rows = [("expires", f"{expires:%Y-%m-%d %H:%M:%S} UTC (in {_duration(remaining)})")]
    claims = token.claims()
    scope = claims.get("scope", token.scope)
    rows.append(("scopes", str(scope) if scope else "(none)"))
    permissions = claims.get("permissions")
    if isinstance(permissions, list):
        rows.append(("permissions", ", ".join(map(str, permissions)) or "(none)"))
    for claim in ("iss", "sub", "aud", "azp"):
        if claim in claims:
            rows.append((f"claim {claim}", _claim(claims[claim])))
    for claim in sorted(claims):
        # Entur's own claims (organisation, ...) are namespaced URLs.
        if claim.startswith("https://"):
            rows.append((f"claim {claim}", _claim(claims[claim])))
    return rows


def _claim(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {int(seconds % 60)} s" if minutes else f"{int(seconds)} s"


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        print(f"{label + ':':<{width}} {value}")


async def _check_path(client: EnturClient, path: str) -> int:
    response = await client.get(path)  # 401/403/408 raise, and map to exit code 5
    line = f"GET {path} -> HTTP {response.status_code} {response.reason_phrase}"
    if response.is_success:
        print(f"API: {line}: the API accepts the token.")
        print("OK: the credentials work for this API.")
        return EXIT_OK
    raise CommandError(
        EXIT_API,
        f"API: {line}.",
        "The token was not refused (no 401/403), but the call failed: check the path.",
    )


# -- request -----------------------------------------------------------------------------


def _cmd_request(args: argparse.Namespace, redactor: _Redactor) -> int:
    settings = _settings(args, redactor, require_credentials=False)
    method = args.method.upper()
    if not method.isalpha():
        raise CommandError(
            EXIT_CONFIG, f"'{args.method}' is not an HTTP method.", "Use GET, POST, ..."
        )
    headers = _parse_headers(args.headers)
    body = _parse_json_body(args.json_body)
    store = _token_cache(args) if settings.client_id else None
    if not settings.client_id:
        print(
            "entur-oauth: no ENTUR_CLIENT_ID/ENTUR_CLIENT_SECRET: sending without a token "
            "(open API).",
            file=sys.stderr,
        )

    async def run() -> int:
        async with _client(settings, token_store=store) as client:
            kwargs: dict[str, Any] = {"headers": headers}
            if body is not _NO_BODY:
                kwargs["json"] = body
            started = time.perf_counter()
            try:
                response = await client.request(method, args.path, **kwargs)
            except APIError as exc:
                _print_response(exc.response, time.perf_counter() - started)
                raise
        _print_response(response, time.perf_counter() - started)
        if response.status_code >= 400:
            raise CommandError(
                EXIT_API,
                f"the API answered HTTP {response.status_code} {response.reason_phrase}.",
                "Check the method, path and body against the API's documentation.",
            )
        return EXIT_OK

    return _run(args, run)


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


def _print_response(response: httpx2.Response, took: float) -> None:
    print(f"HTTP {response.status_code} {response.reason_phrase} ({took:.2f} s)", file=sys.stderr)
    content_type = response.headers.get("content-type", "")
    text = response.text
    if "json" in content_type:
        with suppress(ValueError):
            text = json.dumps(response.json(), indent=2, ensure_ascii=False)
    if text:
        print(text)


# -- fake-server ---------------------------------------------------------------------------


def _cmd_fake_server(args: argparse.Namespace, redactor: _Redactor) -> int:
    from .testing import FakeEntur, serving

    fake = FakeEntur(
        client_id=FAKE_SERVER_CLIENT_ID,
        client_secret=FAKE_SERVER_CLIENT_SECRET,
        expires_in=args.expires_in,
        samples=True,
    )
    try:
        with serving(_access_log(fake), host=args.host, port=args.port, server=args.server) as port:
            shown = f"[{args.host}]" if ":" in args.host else args.host
            url = f"http://{shown}:{port}"
            variables = fake.env(
                url, client_name=getattr(args, "client_name", None) or FAKE_SERVER_CLIENT_NAME
            )
            print(f"Fake Entur listening on {url} (token endpoint {url}{fake.TOKEN_PATH}).")
            print("Point a client (or entur-oauth itself) at it with these variables:")
            print()
            for name in sorted(variables):
                print(f"export {name}={variables[name]}")
            print()
            print(
                "Partner paths need the token; /geocoder and /journey-planner are open; "
                "/forbidden answers 403. Ctrl+C stops it.",
                flush=True,
            )
            _wait_for_stop_signal()
    except ModuleNotFoundError as exc:
        raise CommandError(
            EXIT_CONFIG, str(exc), "pip install uvicorn, or --server builtin"
        ) from None
    except ValueError as exc:
        raise CommandError(EXIT_CONFIG, str(exc), "Use --host 127.0.0.1 or ::1.") from None
    except OSError as exc:
        raise CommandError(
            EXIT_CONFIG,
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}).",
            "Pick another --port (0 picks a free one).",
        ) from None
    print("Fake Entur stopped.", file=sys.stderr)
    return EXIT_OK


def _access_log(app: Any) -> Any:
    """Wrap an ASGI app to print one line per request on stderr (no headers, no query)."""

    async def logged(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        status = 0

        async def watch(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await app(scope, receive, watch)
        if scope["type"] == "http":
            print(f"{scope['method']} {scope['path']} -> {status}", file=sys.stderr, flush=True)

    return logged


def _wait_for_stop_signal() -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    wanted = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    previous = {signum: signal.signal(signum, on_signal) for signum in wanted}
    try:
        # A timeout keeps the wait responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# -- demo ----------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace, redactor: _Redactor) -> int:
    if args.calls < 1:
        raise CommandError(EXIT_CONFIG, "--calls must be at least 1.", "For example: --calls 50")
    if getattr(args, "environment", None):
        settings = _settings(args, redactor)
        return _run(args, partial(_demo_real, settings, args.calls, args.path))
    if os.environ.get("ENTUR_CLIENT_ID"):
        print(
            "entur-oauth: ENTUR_* credentials are set but not used: the demo runs against a "
            "fake Entur unless you pass --environment (e.g. --environment staging).",
            file=sys.stderr,
        )
    from .testing import FakeEntur, pick_server

    try:
        server = pick_server(args.server)
    except ModuleNotFoundError as exc:
        raise CommandError(
            EXIT_CONFIG, str(exc), "pip install uvicorn, or --server builtin"
        ) from None
    clock = FakeClock()
    fake = FakeEntur(clock=clock)
    redactor.add(fake.client_secret)
    name = (
        getattr(args, "client_name", None)
        or os.environ.get("ENTUR_CLIENT_NAME")
        or DEMO_CLIENT_NAME
    )
    with fake.serve(server=server) as url:
        return _run(
            args,
            partial(
                _demo_fake,
                fake=fake,
                clock=clock,
                url=url,
                name=name,
                calls=args.calls,
                backend=args.backend,
                server=server,
            ),
        )


def _out(text: str = "") -> None:
    print(text, flush=True)


def _tally(statuses: Sequence[int]) -> str:
    counts = Counter(statuses)
    return ", ".join(
        f"{n} x {code} {httpx2.codes.get_reason_phrase(code)}" for code, n in sorted(counts.items())
    )


async def _demo_fake(
    *, fake: FakeEntur, clock: FakeClock, url: str, name: str, calls: int, backend: str, server: str
) -> int:
    seen: list[int] = []

    async def record(response: httpx2.Response) -> None:
        seen.append(response.status_code)

    _out(f"entur-oauth demo: the real EnturClient against a fake Entur at {url}")
    _out(
        f"(no credentials needed; event loop: {backend}; server: {server}; ET-Client-Name: {name})"
    )
    _out()
    client = EnturClient(
        fake.client_id,
        fake.client_secret,
        client_name=name,
        environment=fake.environment(url),
        clock=clock,
        token_store=MemoryTokenStore(),
        event_hooks={"response": [record]},
    )
    async with client:

        async def burst(n: int, path: str = "/personalisation/v1/programs/1") -> list[int]:
            results: list[int] = []

            async def one() -> None:
                results.append((await client.get(path)).status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)
            return results

        def step(title: str, result: str, before: int, note: str) -> int:
            fetched = fake.token_count - before
            _out(f"{title}")
            _out(f"   -> {result}; token requests: {fetched} ({note})")
            return fake.token_count

        count = step(
            f"1. {calls} concurrent first calls",
            _tally(await burst(calls)),
            0,
            "one fetch, shared by every call",
        )
        count = step(
            f"2. {calls} more calls",
            _tally(await burst(calls)),
            count,
            "the cached token was reused",
        )
        lifetime = float(fake.expires_in or 86400)
        clock.advance(lifetime - 30)
        seen.clear()
        results = await burst(1)
        count = step(
            f"3. {_duration(lifetime - 30)} later (on a fake clock), 30 s before expiry, one call",
            _tally(results),
            count,
            "renewed before it expired: no 401 seen" if 401 not in seen else "renewed after a 401",
        )
        fake.revoke_all()
        seen.clear()
        results = await burst(calls)
        rejected = seen.count(401)
        count = step(
            f"4. the fake revokes every token; {calls} concurrent calls",
            f"{rejected} x 401 Unauthorized, retried with a new token: {_tally(results)}",
            count,
            "one re-fetch for all of them",
        )
        _out("5. GET /forbidden/reports (the fake's 403 path)")
        try:
            await client.get("/forbidden/reports")
        except ForbiddenError as exc:
            # The message's first sentence after the URL: Entur's meaning of 403.
            reason = str(exc).split(": ", 1)[-1].split(". ", 1)[0]
            _out(f"   -> raised ForbiddenError (HTTP {exc.status_code}): {reason}.")
        else:  # pragma: no cover - the fake always answers 403 there
            raise CommandError(1, "the fake did not answer 403", "")
        fingerprints = {
            fingerprint(r.headers["authorization"].partition(" ")[2])
            for r in fake.api_requests
            if "authorization" in r.headers
        }
        named = all(
            r.headers.get("et-client-name") == name for r in fake.token_requests + fake.api_requests
        )
    _out()
    _out(
        f"In all: {len(fake.api_requests)} API requests, {fake.token_count} token requests, "
        f"{len(fingerprints)} distinct tokens (shown here by fingerprint only: "
        f"{', '.join(sorted(fingerprints))})."
    )
    _out(f"ET-Client-Name on every request, token requests included: {'yes' if named else 'NO'}.")
    _out()
    _out("Next: the same against Entur staging, with your client from Entur Partner:")
    _out("  export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-app")
    _out("  entur-oauth demo --environment staging")
    return EXIT_OK


async def _demo_real(settings: EnvSettings, calls: int, path: str | None) -> int:
    # A store of its own: every fetch below is a real one, not a token cached by 'token'.
    async with _client(settings, token_store=MemoryTokenStore()) as client:
        manager = client._manager
        assert manager is not None  # read_env required credentials
        env = client.environment
        _out(f"entur-oauth demo: the real EnturClient against Entur {env.name!r}")
        _out(f"(token URL {env.token_url}, API {env.api_base_url}, client id {client.client_id})")
        _out()

        async def burst(n: int) -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(client.get_access_token)

        await burst(calls)
        token = manager.current
        assert token is not None
        _out(f"1. {calls} concurrent get_access_token() calls")
        _out(
            f"   -> token requests: {client.token_fetches} (token {token.fingerprint}, "
            f"expires in {_duration(token.expires_at_wall - time.time())})"
        )
        before = client.token_fetches
        await burst(calls)
        _out(f"2. {calls} more calls")
        _out(f"   -> token requests: {client.token_fetches - before} (the cached token was reused)")
        before = client.token_fetches
        await manager.invalidate(token)  # what an API 401 does
        await burst(calls)
        renewed = manager.current
        assert renewed is not None
        _out(f"3. the token is dropped, as after a 401; {calls} concurrent calls")
        _out(
            f"   -> token requests: {client.token_fetches - before} (one re-fetch for all; "
            f"new token {renewed.fingerprint})"
        )
        if path:
            _out(f"4. GET {path}")
            try:
                response = await client.get(path)
            except ForbiddenError as exc:
                _out(
                    f"   -> raised ForbiddenError (HTTP {exc.status_code}): the token is valid "
                    "but this client lacks permission for the endpoint"
                )
                return EXIT_OK
            _out(f"   -> HTTP {response.status_code} {response.reason_phrase}")
            if not response.is_success:
                raise CommandError(
                    EXIT_API,
                    f"API: GET {path} -> HTTP {response.status_code} {response.reason_phrase}.",
                    "The token was not refused (no 401/403), but the call failed: check the path.",
                )
            return EXIT_OK
        _out("4. (add --path /some/partner/endpoint to call an API with the token)")
    return EXIT_OK
