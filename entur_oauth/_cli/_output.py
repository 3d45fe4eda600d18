"""What every command shares on the way out: exit codes, errors, redaction, plain-text output."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from .._errors import ConfigurationError, InvalidCredentialsError, TokenRequestError

# The library's redactor, the one that also blanks token-endpoint errors: a secret echoed
# in any encoding, credential fields, bearer tokens and JWTs, alike in both.
from .._scrub import Redactor

__all__ = [
    "CREDENTIALS_HINT",
    "EXIT_API",
    "EXIT_CONFIG",
    "EXIT_CREDENTIALS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TOKEN_ENDPOINT",
    "CommandError",
    "Redactor",
    "config_error",
    "duration",
    "out",
    "print_rows",
    "report",
    "show_warning",
    "verbose_logging",
    "warn",
]

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_CREDENTIALS = 3
EXIT_TOKEN_ENDPOINT = 4
EXIT_API = 5
EXIT_INTERRUPTED = 130

CREDENTIALS_HINT = (
    "Set ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET (or --client-secret-file) and "
    "ENTUR_CLIENT_NAME; see 'entur-oauth --help'."
)


class CommandError(Exception):
    """A failure the command explains itself: an exit code, a message and what to do next."""

    def __init__(self, code: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


def config_error(message: str, hint: str) -> CommandError:
    """A configuration error (exit 2) with what to do next."""
    return CommandError(EXIT_CONFIG, f"configuration error: {message}", hint)


def warn(message: str) -> None:
    """Print one warning line on stderr."""
    print(f"entur-oauth: warning: {message}", file=sys.stderr)


def show_warning(  # noqa: PLR0917 - the signature of warnings.showwarning
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for the CLI: one readable line, no source excerpt."""
    warn(str(message))


def _classify(leaf: BaseException) -> tuple[int, str, str] | None:
    """Exit code, message and hint for an error the CLI explains, else ``None``."""
    if isinstance(leaf, CommandError):
        return leaf.code, str(leaf), leaf.hint
    if isinstance(leaf, ConfigurationError):
        return EXIT_CONFIG, f"configuration error: {leaf}", CREDENTIALS_HINT
    if isinstance(leaf, InvalidCredentialsError):
        hint = "Run 'entur-oauth check' after fixing them; --environment picks the environment."
        return EXIT_CREDENTIALS, f"credentials rejected: {leaf}", hint
    if isinstance(leaf, TokenRequestError):
        hint = "Try again shortly; run with --verbose to see each attempt."
        return EXIT_TOKEN_ENDPOINT, f"token request failed: {leaf}", hint
    # An API error or an httpx2 error exists only once its module is loaded: look there,
    # rather than importing the HTTP stack to classify an error that cannot be one of them.
    api_errors = sys.modules.get("entur_oauth._api_errors")
    if api_errors is not None and isinstance(leaf, api_errors.APIError):
        hint = "Check the path, and the client's access to it in Entur Partner."
        return EXIT_API, f"API error: {leaf}", hint
    httpx2 = sys.modules.get("httpx2")
    if httpx2 is not None and isinstance(leaf, httpx2.TransportError):
        what = f"network error: {type(leaf).__name__}: {leaf}"
        hint = "Check the network, proxy and DNS, and the URL; --verbose shows the requests."
        return EXIT_TOKEN_ENDPOINT, what, hint
    return None


def report(exc: BaseException, redactor: Redactor) -> int:
    """Print what failed and what to do next; return the exit code for ``exc``.

    Raises:
        BaseException: ``exc`` itself, when it is not an error the CLI explains.
    """
    leaf = exc
    # Errors of concurrent calls arrive in exception groups; they are all the same error
    # (one failed token fetch is shared by every waiter), so the first one tells it.
    while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
        leaf = leaf.exceptions[0]
    explained = _classify(leaf)
    if explained is None:
        raise exc
    code, what, hint = explained
    print(f"entur-oauth: {redactor.redact(what)}", file=sys.stderr)
    if hint:
        print(f"entur-oauth: next: {hint}", file=sys.stderr)
    return code


@contextmanager
def verbose_logging(enabled: bool, redactor: Redactor) -> Iterator[None]:
    """Log entur_oauth at DEBUG and httpx2 at INFO to stderr, redacted, while inside."""
    if not enabled:
        yield
        return
    import logging

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


def out(text: str = "") -> None:
    """Print one line of a command's story on stdout, at once."""
    print(text, flush=True)


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: '23 h 59 min', '4 min 10 s', 'expired'."""
    if seconds <= 0:
        return "expired"
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {int(seconds % 60)} s" if minutes else f"{int(seconds)} s"


def print_rows(rows: list[tuple[str, str]]) -> None:
    """Print ``label: value`` rows with the values aligned."""
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        print(f"{label + ':':<{width}} {value}")
