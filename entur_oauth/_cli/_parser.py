"""The argument parser of ``entur-oauth``: the common options and one subparser per command."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from ._settings import default_cache_path

__all__ = ["build_parser"]

_DESCRIPTIONS = {
    "token": (
        "print an access token (reused from the cache while valid)",
        "Print a valid access token on stdout. To hand it to curl, use --header with "
        "curl's -H @FILE, which keeps the token out of the process list (ps): "
        'curl -H @<(entur-oauth token --header) -H "ET-Client-Name: $ENTUR_CLIENT_NAME" '
        "https://api.entur.io/... (bash, zsh). The token is cached (encrypted with the "
        "client secret) and reused by later runs until it nears expiry.",
    ),
    "check": (
        "fetch a token and show what it grants, without printing it",
        "Fetch a fresh token and print the environment, client, audience, expiry, scopes "
        "and permissions, never the token itself. With --path, also make one authenticated "
        "GET to see whether the API accepts the token.",
    ),
    "request": (
        "send an authenticated request and print the response",
        "Send METHOD PATH with a token (PATH is relative to the environment's API base, or a "
        "full URL) and print the body on stdout (JSON pretty-printed) and the status on "
        "stderr. Exits 5 when the status is 400 or more. Without "
        "ENTUR_CLIENT_ID/ENTUR_CLIENT_SECRET it sends no token (Entur's open APIs).",
    ),
    "fake-server": (
        "run a fake Entur (token endpoint and API) on loopback",
        "Serve the fake Entur of entur_oauth.testing on a loopback port for local "
        "development and print the ENTUR_* variables that point a client at it. Stop it "
        "with Ctrl+C.",
    ),
    "demo": (
        "watch the client work: against a fake Entur, or a real one with --environment",
        "Without --environment: run the real EnturClient against a fake Entur on a loopback "
        "port (no credentials needed) and show one token fetch for many concurrent calls, "
        "reuse, renewal before expiry, one re-fetch after a 401, and a 403 raised as "
        "ForbiddenError. With --environment (and ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET, "
        "ENTUR_CLIENT_NAME): the same token steps against that Entur environment.",
    ),
}


@functools.cache
def _terminal_width() -> int:
    """The help text's width, as argparse finds it (``$COLUMNS``, else the terminal)."""
    try:
        return int(os.environ["COLUMNS"]) - 2
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns - 2  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 78


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, told the width once: argparse asks for a formatter for every
    option it adds, and finds the width through shutil each time (an import of ~2 ms that
    the cached ``token`` path would otherwise pay)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _terminal_width())


def _common_options(*, top_level: bool, client: bool = True) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command name.

    ``client=False`` (``fake-server``, which runs no client) leaves out the options that
    configure a client; given anyway, they are refused by :class:`_EnturParser`.
    """
    # Subcommand copies default to SUPPRESS so they never overwrite a value given before
    # the command name (``entur-oauth --verbose token`` and ``entur-oauth token --verbose``).
    default: Any = None if top_level else argparse.SUPPRESS
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, formatter_class=_Formatter)
    group = parser.add_argument_group("common options")

    # Without a client they are hidden, but still parsed, so that the refusal can say why.
    def client_help(text: str) -> str:
        return text if client else argparse.SUPPRESS

    group.add_argument(
        "--environment",
        metavar="NAME",
        default=default,
        help=client_help(
            "production, staging or dev (default: $ENTUR_ENVIRONMENT, else production); "
            "with ENTUR_TOKEN_URL, ENTUR_AUDIENCE and ENTUR_API_BASE_URL, any name"
        ),
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
        help=client_help("read the client secret from this file instead of $ENTUR_CLIENT_SECRET"),
    )
    # Not an option: a trap that refuses a secret typed on the command line without
    # echoing it (argparse's "unrecognized arguments" message would print it).
    group.add_argument(
        "--client-secret", nargs="?", action=_RefuseSecret, default=None, help=argparse.SUPPRESS
    )
    group.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        # None at the top level, so that a --backend given before the command name can be
        # told from no --backend at all; _EnturParser fills in asyncio.
        default=default,
        help=client_help("event loop to run on (default: asyncio)"),
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
        help=f"token cache file (default: {default_cache_path()})",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the token cache file"
    )


def _server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        choices=("auto", "uvicorn", "builtin"),
        default="auto",
        help="HTTP server for the fake: uvicorn when installed, else a small built-in one",
    )


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


class _Version(argparse.Action):
    """``--version``, reading the package metadata only when asked (it costs ~10 ms)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("entur-oauth")
        except PackageNotFoundError:  # pragma: no cover - only in an uninstalled checkout
            text = "unknown"
        print(f"{parser.prog} {text}")  # on stdout, as argparse's own version action does
        parser.exit()


def _token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--header", action="store_true", help="print the whole 'Authorization: Bearer ...' line"
    )
    _cache_options(parser)


def _check(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--path",
        metavar="PATH",
        help="an API path to GET with the token, e.g. /personalisation/v1/programs/1",
    )


def _request(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", metavar="METHOD", help="GET, POST, PUT, PATCH, DELETE, ...")
    parser.add_argument("path", metavar="PATH", help="e.g. /geocoder/v1/autocomplete?text=Oslo")
    parser.add_argument(
        "--json",
        metavar="BODY",
        dest="json_body",
        help="JSON request body; @FILE reads it from a file, - from stdin",
    )
    parser.add_argument(
        "--header",
        metavar="K:V",
        action="append",
        default=[],
        dest="headers",
        help="an extra request header, e.g. 'Entur-POS: web' (repeatable)",
    )
    _cache_options(parser)


def _loopback(value: str) -> str:
    """An argparse type: a loopback address, checked before anything binds a socket."""
    from .._environments import is_loopback_host

    if not is_loopback_host(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a loopback address: the fake never listens beyond this "
            "machine. Use 127.0.0.1 or ::1"
        )
    return value


#: Common options that mean nothing to ``fake-server`` -> why, and what to do instead.
_NOT_FOR_FAKE_SERVER = {
    "environment": (
        "--environment",
        "the fake is an environment of its own (it prints ENTUR_ENVIRONMENT=fake); "
        "give --environment to the client you point at Entur instead",
    ),
    "client_secret_file": (
        "--client-secret-file",
        "the fake has its own credentials (it prints them); drop the option",
    ),
    "backend": (
        "--backend",
        "the fake runs its server on an event loop of its own; choose the HTTP server "
        "with --server",
    ),
}


def _fake_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=_port, default=8765, help="port to listen on; 0 picks a free one (8765)"
    )
    parser.add_argument(
        "--host",
        type=_loopback,
        default="127.0.0.1",
        help="loopback address to listen on (127.0.0.1)",
    )
    parser.add_argument(
        "--expires-in",
        type=float,
        default=86400.0,
        metavar="SECONDS",
        help="lifetime of issued tokens (86400, as Entur's)",
    )
    _server_option(parser)


def _demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calls", type=int, default=50, help="concurrent calls per burst (50)", metavar="N"
    )
    parser.add_argument(
        "--path", metavar="PATH", help="with --environment: an API path to GET with the token"
    )
    _server_option(parser)


_ARGUMENTS = {
    "token": _token,
    "check": _check,
    "request": _request,
    "fake-server": _fake_server,
    "demo": _demo,
}


_N = TypeVar("_N")


class _EnturParser(argparse.ArgumentParser):
    """The top-level parser: after parsing, refuses the options the chosen command does not
    take (wherever they stood) and fills in the default event loop."""

    @overload
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> tuple[argparse.Namespace, list[str]]: ...
    @overload
    def parse_known_args(
        self, args: Iterable[str] | None, namespace: _N
    ) -> tuple[_N, list[str]]: ...
    @overload
    def parse_known_args(self, *, namespace: _N) -> tuple[_N, list[str]]: ...
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """Parse as argparse does (``parse_args`` comes here too), then check the whole."""
        parsed, extras = super().parse_known_args(args, namespace)
        if getattr(parsed, "command", None) == "fake-server":
            for dest, (option, why) in _NOT_FOR_FAKE_SERVER.items():
                if getattr(parsed, dest, None) is not None:
                    self.error(f"fake-server does not take {option}: {why}.")
        if getattr(parsed, "backend", None) is None:
            parsed.backend = "asyncio"
        return parsed, extras


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Return the argument parser of ``entur-oauth``; ``args.command`` names the command.

    With ``argv``, only the commands named in it get their options: the others are listed
    (for ``--help``) but not built, which saves most of the parser's cost on every run.
    """
    named = None if argv is None else set(argv)
    parser = _EnturParser(
        prog="entur-oauth",
        allow_abbrev=False,
        formatter_class=_Formatter,
        parents=[_common_options(top_level=True)],
        description="Entur API access from the shell: tokens, checks, requests, a fake "
        "Entur, and a demo. Credentials come from ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET and "
        "ENTUR_CLIENT_NAME.",
        epilog="Exit codes: 0 ok, 2 configuration error, 3 credentials rejected, 4 network "
        "or token endpoint failure, 5 API error. Start with: entur-oauth demo",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    # Plain parsers below: the checks of _EnturParser run once, on the whole command line.
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=argparse.ArgumentParser
    )
    for name, add_arguments in _ARGUMENTS.items():
        summary, description = _DESCRIPTIONS[name]
        if named is not None and name not in named:
            commands.add_parser(name, help=summary, formatter_class=_Formatter)
            continue
        sub = commands.add_parser(
            name,
            allow_abbrev=False,
            parents=[_common_options(top_level=False, client=name != "fake-server")],
            help=summary,
            description=description,
            formatter_class=_Formatter,
        )
        add_arguments(sub)
    return parser
