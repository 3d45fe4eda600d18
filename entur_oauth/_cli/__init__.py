"""The ``entur-oauth`` command line: tokens for curl, a credentials check, authenticated
requests, a fake Entur for local development, and the demo.

Credentials come from the ``ENTUR_*`` variables (or ``--client-secret-file``), never from a
flag that would land in shell history. Exit codes: 0 ok, 2 configuration error, 3
credentials rejected, 4 network or token endpoint failure, 5 API error; the message on
stderr says what to do next. Nothing but ``token`` prints a token, and nothing prints the
client secret, not even ``--verbose``.

One module per command, each with ``run(args, redactor) -> int``; a command's module is
imported only when it runs, so ``entur-oauth token`` with a cached token never imports the
HTTP stack.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Sequence

from ._output import EXIT_CONFIG, EXIT_INTERRUPTED, Redactor, report, show_warning, verbose_logging
from ._parser import build_parser

__all__ = ["build_parser", "main"]

#: Command -> the module that runs it.
_COMMANDS = {
    "token": "_token",
    "check": "_check",
    "request": "_request",
    "fake-server": "_fake_server",
    "demo": "_demo",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``entur-oauth`` with ``argv`` (default: the process arguments); return the exit code."""
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        print(parser.format_usage(), end="", file=sys.stderr)
        print(
            "entur-oauth: no command given. Start with 'entur-oauth demo' (no credentials "
            "needed), or see 'entur-oauth --help' for every command.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    redactor = Redactor()
    with warnings.catch_warnings(), verbose_logging(args.verbose, redactor):
        # A ClientNameWarning (and any other) as one readable line, not a source excerpt.
        warnings.showwarning = show_warning
        warnings.simplefilter("default")
        try:
            module = importlib.import_module(f".{_COMMANDS[args.command]}", __name__)
            command: Callable[..., int] = module.run
            return command(args, redactor)
        except KeyboardInterrupt:
            print("entur-oauth: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BaseException as exc:  # mapped to an exit code, or re-raised
            return report(exc, redactor)
