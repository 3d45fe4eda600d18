"""Settings for one CLI call: ``ENTUR_*`` variables and options, read and checked once.

The environment is resolved here, once per call, to an :class:`Environment` that the
commands pass on as is; the client name is validated here, once. Nothing in this module
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
from .._settings import (
    CUSTOM_ENVIRONMENT_NAME,
    builtin_or_none,
    ignoring_custom_variables,
    read_env,
    validate_client_name,
)
from ._output import CREDENTIALS_HINT, EXIT_CONFIG, CommandError, Redactor, config_error, warn

if TYPE_CHECKING:
    from .._client import EnturClient
    from .._stores import TokenStore

__all__ = [
    "Settings",
    "default_cache_path",
    "did_you_mean",
    "load",
    "make_client",
    "run_async",
    "token_cache",
]

#: Where ``token`` and ``request`` keep tokens between runs (sealed with the client secret).
CACHE_FILE_NAME = "tokens.json"

_CUSTOM_VARIABLES = ("ENTUR_TOKEN_URL", "ENTUR_AUDIENCE", "ENTUR_API_BASE_URL")
_BUILTIN_NAMES = "production|staging|dev"
_ENVIRONMENT_HINT = (
    f"use --environment {_BUILTIN_NAMES}, or set ENTUR_TOKEN_URL, ENTUR_AUDIENCE and "
    "ENTUR_API_BASE_URL to define a custom one."
)
_URL_HINT = (
    "Give ENTUR_TOKEN_URL and ENTUR_API_BASE_URL as full https:// URLs (http:// only for "
    "loopback such as http://127.0.0.1:8765) and a non-empty ENTUR_AUDIENCE."
)
_NAME_HINT = (
    "Set ENTUR_CLIENT_NAME (or --client-name) to '<company>-<application>' in visible "
    "ASCII, e.g. acme-journeyplanner."
)
_SECRET_FILE_HINT = (
    "Put only the client secret in the file (readable by you alone: chmod 600), or set "
    "ENTUR_CLIENT_SECRET instead of --client-secret-file."
)
#: Names people type for a built-in environment; a custom one called so is likely a slip.
_ALIASES = {
    "production": "production",
    "prod": "production",
    "prd": "production",
    "live": "production",
    "staging": "staging",
    "stage": "staging",
    "stg": "staging",
    "dev": "dev",
    "develop": "dev",
    "development": "dev",
}


@dataclass(frozen=True, slots=True)
class Settings:
    """What one call runs with: the ``ENTUR_*`` settings, the environment resolved."""

    client_id: str | None
    client_secret: Secret | None
    client_name: str | None
    environment: Environment


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether ``a`` becomes ``b`` by at most one insertion, deletion or substitution."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    # Skip the one differing character of b (insertion) or of both (substitution).
    return a[i:] == b[i + 1 :] or (len(a) == len(b) and a[i + 1 :] == b[i + 1 :])


def did_you_mean(name: str) -> str | None:
    """The built-in environment a custom ``name`` most likely means, or ``None``."""
    typed = name.strip().lower()
    for alias, builtin in _ALIASES.items():
        if _one_edit_apart(typed, alias):
            return builtin
    return None


def _check_custom(name: str, custom: dict[str, str]) -> None:
    """A custom environment needs all three variables; warn if its name looks like a slip."""
    absent = [k for k, v in custom.items() if not v]
    if absent:
        raise config_error(
            f"A custom environment {name!r} needs {', '.join(absent)} too.",
            f"Set {', '.join(absent)} as well, or use --environment {_BUILTIN_NAMES}.",
        )
    meant = did_you_mean(name)
    if meant is not None:
        warn(
            f"{name!r} is not one of Entur's environments, so ENTUR_TOKEN_URL, "
            f"ENTUR_AUDIENCE and ENTUR_API_BASE_URL define a custom one of that name; "
            f"did you mean {meant}? (--environment {meant} uses Entur's {meant} URLs)"
        )


def _environment(environ: dict[str, str]) -> Environment:
    """Resolve the environment the variables name, once; raise a configuration error."""
    explicit = environ.get("ENTUR_ENVIRONMENT", "").strip()
    name = explicit or "production"
    custom = {k: environ.get(k, "").strip() for k in _CUSTOM_VARIABLES}
    builtin = builtin_or_none(name)
    if not any(custom.values()):
        if builtin is None:
            meant = did_you_mean(name)
            raise config_error(
                f"Unknown Entur environment {name!r}; known environments: dev, production, "
                "staging." + (f" Did you mean {meant}?" if meant else ""),
                _ENVIRONMENT_HINT,
            )
        return builtin
    if explicit and builtin is not None:
        # As the library does: a built-in name wins over the URL variables, so a stray
        # ENTUR_TOKEN_URL never gets the secret under Entur's name.
        warn(ignoring_custom_variables(explicit, builtin, [k for k, v in custom.items() if v]))
        return builtin
    if not explicit:
        name = CUSTOM_ENVIRONMENT_NAME
    _check_custom(name, custom)
    token_url, audience, api_base_url = (custom[k] for k in _CUSTOM_VARIABLES)
    try:
        return Environment(
            name=name, token_url=token_url, audience=audience, api_base_url=api_base_url
        )
    except ConfigurationError as exc:
        raise config_error(str(exc), _URL_HINT) from None


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
    environment = chosen or _environment(environ)
    # The environment is settled: read_env sees only the credentials and the name.
    rest = {k: v for k, v in environ.items() if k not in {"ENTUR_ENVIRONMENT", *_CUSTOM_VARIABLES}}
    try:
        settings = read_env(rest, require_credentials=require_credentials)
    except ConfigurationError as exc:
        raise config_error(str(exc), CREDENTIALS_HINT) from None
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
