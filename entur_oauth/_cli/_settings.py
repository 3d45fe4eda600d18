"""Settings for one CLI call: ``ENTUR_*`` variables and options, read and checked once.

The environment is resolved once per call, by the library's ``_settings`` (the same rules
and messages as ``EnturClient.from_env``), to an :class:`Environment` that the commands
pass on as is; the client name is validated here, once. Nothing in this module
imports the HTTP stack: the cached ``token`` path runs on it alone.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._environments import Environment
from .._errors import ConfigurationError
from .._secrets import Secret
from .._settings import builtin_or_none, environment_from_env, read_env, validate_client_name
from ._output import EXIT_CONFIG, CommandError, Redactor, config_error, warn

if TYPE_CHECKING:
    from .._client import EnturClient
    from .._stores import TokenStore

__all__ = [
    "Settings",
    "default_cache_path",
    "load",
    "make_client",
    "run_async",
    "token_cache",
]

#: Where ``token`` and ``request`` keep tokens between runs (sealed with the client secret).
CACHE_FILE_NAME = "tokens.json"

_CUSTOM_VARIABLES = ("ENTUR_TOKEN_URL", "ENTUR_AUDIENCE", "ENTUR_API_BASE_URL")
_BUILTIN_NAMES = "production|staging|dev"
_URL_HINT = (
    "Give ENTUR_TOKEN_URL and ENTUR_API_BASE_URL as full https:// URLs (http:// only for "
    "loopback such as http://127.0.0.1:8765) and a non-empty ENTUR_AUDIENCE."
)
_NAME_HINT = (
    "Set ENTUR_CLIENT_NAME (or --client-name) to '<company>-<application>' in visible "
    "ASCII, e.g. acme-journeyplanner."
)
_CREDENTIALS_WAYS = (
    "--client-secret-file reads the secret from a file; 'entur-oauth demo' runs without "
    "credentials."
)
_SECRET_FILE_HINT = (
    "Put only the client secret in the file (readable by you alone: chmod 600), or set "
    "ENTUR_CLIENT_SECRET instead of --client-secret-file."
)


@dataclass(frozen=True, slots=True)
class Settings:
    """What one call runs with: the ``ENTUR_*`` settings, the environment resolved."""

    client_id: str | None
    client_secret: Secret | None
    client_name: str | None
    environment: Environment


def _environment(environ: dict[str, str], named_by: str) -> Environment:
    """Resolve the environment as the library does; a configuration error says what next."""
    try:
        # Its warnings (URL variables ignored, a custom name like a built-in one) as the
        # CLI's one-line warnings, printed here, whoever calls load().
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            environment = environment_from_env(environ, named_by=named_by)
        for warning in caught:
            warn(str(warning.message))
        return environment
    except ConfigurationError as exc:
        given = [k for k in _CUSTOM_VARIABLES if environ.get(k, "").strip()]
        absent = [k for k in _CUSTOM_VARIABLES if k not in given]
        if not given:
            hint = ""  # the message names both ways out already
        elif absent:
            hint = f"Set {', '.join(absent)} as well, or use --environment {_BUILTIN_NAMES}."
        else:
            hint = _URL_HINT
        raise config_error(str(exc), hint) from None


def _apply_options(args: argparse.Namespace, environ: dict[str, str]) -> Environment | None:
    """Let the command-line options override the variables in ``environ``.

    Returns the built-in environment ``--environment`` names, if it names one (resolved
    here, once: the caller need not look again).
    """
    chosen: str | None = getattr(args, "environment", None)
    builtin = None
    if chosen:
        environ["ENTUR_ENVIRONMENT"] = chosen
        builtin = builtin_or_none(chosen)
        if builtin is not None:
            # An explicit built-in name wins over a custom environment from the variables:
            # '--environment staging' talks to staging, not to wherever ENTUR_TOKEN_URL says.
            ignored = [name for name in _CUSTOM_VARIABLES if environ.pop(name, "").strip()]
            if ignored:
                warn(
                    f"--environment {chosen} uses Entur's {builtin.name} URLs; "
                    f"ignoring {', '.join(ignored)}."
                )
    if getattr(args, "client_name", None):
        environ["ENTUR_CLIENT_NAME"] = args.client_name
    secret_file: Path | None = getattr(args, "client_secret_file", None)
    if secret_file is not None:
        environ["ENTUR_CLIENT_SECRET"] = _read_secret_file(secret_file)
    return builtin


def load(
    args: argparse.Namespace, redactor: Redactor, *, require_credentials: bool = True
) -> Settings:
    """Read ``ENTUR_*`` variables, with the command-line options taking precedence.

    The environment comes back resolved (an :class:`Environment`) and the client name
    validated, each once; a ``ClientNameWarning`` is shown here.
    """
    environ = dict(os.environ)
    chosen = _apply_options(args, environ)
    redactor.add(environ.get("ENTUR_CLIENT_SECRET", "").strip())
    named_by = "--environment " if getattr(args, "environment", None) else "ENTUR_ENVIRONMENT="
    environment = chosen or _environment(environ, named_by)
    # The environment is settled: read_env sees only the credentials and the name.
    rest = {k: v for k, v in environ.items() if k not in {"ENTUR_ENVIRONMENT", *_CUSTOM_VARIABLES}}
    try:
        settings = read_env(rest, require_credentials=require_credentials)
    except ConfigurationError as exc:
        # The message says which variables to set; the hint adds the CLI's other ways.
        given = [bool(rest.get(k, "").strip()) for k in ("ENTUR_CLIENT_ID", "ENTUR_CLIENT_SECRET")]
        ways = []
        if (require_credentials or any(given)) and not all(given):
            ways.append(_CREDENTIALS_WAYS)
        if not rest.get("ENTUR_CLIENT_NAME", "").strip():
            ways.append("--client-name works too.")
        hint = " ".join(ways)
        raise config_error(str(exc), hint) from None
    if settings.client_name is not None:
        try:
            validate_client_name(settings.client_name)
        except ConfigurationError as exc:
            raise config_error(str(exc), _NAME_HINT) from None
    return Settings(
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        client_name=settings.client_name,
        environment=environment,
    )


def _read_secret_file(path: Path) -> str:
    try:
        text = path.expanduser().read_text(encoding="utf-8").strip()
        mode = path.expanduser().stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise config_error(
            f"Cannot read the client secret file {path} ({type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or exc}).",
            _SECRET_FILE_HINT,
        ) from None
    if not text:
        raise config_error(f"The client secret file {path} is empty.", _SECRET_FILE_HINT)
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"{path} is readable by other users; run 'chmod 600 {path}'.")
    return text


def make_client(
    settings: Settings, *, token_store: TokenStore | None = None, **kwargs: Any
) -> EnturClient:
    """An :class:`EnturClient` for ``settings`` (imports the HTTP stack)."""
    from .._client import EnturClient
    from .._settings import ClientNameWarning

    assert settings.client_name is not None  # read_env requires it
    with warnings.catch_warnings():
        # load() has shown it already: once per call is enough.
        warnings.simplefilter("ignore", ClientNameWarning)
        return EnturClient(
            settings.client_id,
            settings.client_secret,
            client_name=settings.client_name,
            environment=settings.environment,
            token_store=token_store,
            **kwargs,
        )


def run_async(args: argparse.Namespace, func: Callable[[], Awaitable[int]]) -> int:
    """Run ``func`` on the event loop ``--backend`` names; return its exit code."""
    import importlib.util

    import anyio

    backend: str = args.backend
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise CommandError(EXIT_CONFIG, "--backend trio needs trio.", "pip install trio")
    result: int = anyio.run(func, backend=backend)
    return result


def default_cache_path() -> Path:
    """The token cache file: under ``$XDG_CACHE_HOME`` (or ``%LOCALAPPDATA%``)."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "entur-oauth" / CACHE_FILE_NAME


def token_cache(args: argparse.Namespace) -> TokenStore:
    """The file that carries a token from one run to the next (or a store for this run)."""
    from .._file_store import FileTokenStore

    if not args.no_cache:
        try:
            return FileTokenStore(args.cache_file or default_cache_path())
        except ConfigurationError as exc:
            # An unsafe cache file (a symlink, readable by others) or an OS without flock:
            # the command still works, with a token that lives for this run only.
            print(f"entur-oauth: not caching the token ({exc})", file=sys.stderr)
    from .._stores import MemoryTokenStore

    return MemoryTokenStore()
