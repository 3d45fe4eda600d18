"""Settings that come from the user: client name validation and ``ENTUR_*`` variables."""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._environments import Environment, check_url, get_environment
from ._errors import ConfigurationError
from ._secrets import Secret

__all__ = [
    "HTTPX_OPTIONS",
    "ClientNameWarning",
    "EnvSettings",
    "checked_settings",
    "did_you_mean",
    "env_kwargs",
    "environment_from_env",
    "read_env",
    "resolve_environment",
    "validate_client_name",
]

_RECOMMENDED_NAME = re.compile(r"^[a-z0-9]+(?:[._][a-z0-9]+)*-[a-z0-9][a-z0-9._-]*$")
_VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]+$")


class ClientNameWarning(UserWarning):
    """Warned when ``ET-Client-Name`` is valid but not ``<company>-<application>``."""


def validate_client_name(name: object) -> str:
    """Check an ``ET-Client-Name`` value and return it.

    Raises:
        ConfigurationError: The name is empty, not a string, or holds whitespace, control or
            non-ASCII characters (it could not be sent as an HTTP header as given).
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            "client_name is required: Entur asks every request to carry ET-Client-Name "
            "as '<company>-<application>', e.g. client_name='acme-journeyplanner' or "
            "ENTUR_CLIENT_NAME=acme-journeyplanner."
        )
    if not _VISIBLE_ASCII.fullmatch(name):
        raise ConfigurationError(
            f"client_name {name!r} contains whitespace, control or non-ASCII characters; "
            "use visible ASCII only, such as 'acme-journeyplanner'."
        )
    if not _RECOMMENDED_NAME.fullmatch(name):
        warnings.warn(
            f"ET-Client-Name {name!r} is not of the form '<company>-<application>' in lower "
            "case (e.g. 'acme-journeyplanner'); Entur may throttle unidentified clients.",
            ClientNameWarning,
            stacklevel=_user_stacklevel(),
        )
    return name


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_stacklevel() -> int:
    """Return the ``stacklevel`` that makes a warning raised by our caller name the user's line.

    The caller is reached through a varying number of our own frames (``EnturClient(...)``,
    ``EnturClient.from_env(...)``, ``FakeEntur.client(...)``), so no fixed number fits them
    all: count our frames instead, as ``warnings.warn(skip_file_prefixes=...)`` does on
    Python 3.12+.
    """
    level = 1  # as warnings.warn counts, 1 is the frame calling warnings.warn
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def builtin_or_none(name: str) -> Environment | None:
    """The built-in environment called ``name``, or ``None`` when there is none."""
    try:
        return get_environment(name)
    except ConfigurationError:
        return None


def resolve_environment(environment: str | Environment) -> Environment:
    """Return ``environment`` itself, or the built-in one it names."""
    if isinstance(environment, Environment):
        return environment
    if isinstance(environment, str):
        return get_environment(environment)
    raise ConfigurationError(
        f"environment must be a name ('production', 'staging', 'dev') or an Environment, "
        f"not {type(environment).__name__}."
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


def environment_from_env(
    environ: Mapping[str, str] | None = None, *, named_by: str = "ENTUR_ENVIRONMENT="
) -> Environment:
    """Resolve the environment ``ENTUR_ENVIRONMENT`` and ``ENTUR_TOKEN_URL`` & co. select,
    to an :class:`Environment` (the library's ``from_env`` and the CLI alike).

    ``named_by`` is how a message names where the environment's name came from (the CLI
    passes ``"--environment "`` when the option gave it).

    Raises:
        ConfigurationError: An unknown name without the URL variables, a custom
            environment missing one of them, or a URL variable that is not usable.
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        return env.get(name, "").strip() or None

    custom = {k: get(f"ENTUR_{k.upper()}") for k in ("token_url", "audience", "api_base_url")}
    picked = _pick_environment(get("ENTUR_ENVIRONMENT"), custom, named_by=named_by)
    return picked if isinstance(picked, Environment) else get_environment(picked)


@dataclass(frozen=True, slots=True)
class EnvSettings:
    """What ``ENTUR_*`` variables say, ready to pass to :class:`EnturClient`."""

    client_id: str | None
    client_secret: Secret | None
    client_name: str | None
    environment: str | Environment


def read_env(
    environ: Mapping[str, str] | None = None,
    *,
    require_credentials: bool = True,
    require_name: bool = True,
) -> EnvSettings:
    """Read ``ENTUR_*`` variables.

    ``ENTUR_CLIENT_ID``/``ENTUR_CLIENT_SECRET`` (both or neither; required unless
    ``require_credentials`` is false), ``ENTUR_CLIENT_NAME`` (required),
    ``ENTUR_ENVIRONMENT`` (default ``production``), and ``ENTUR_TOKEN_URL``,
    ``ENTUR_AUDIENCE``, ``ENTUR_API_BASE_URL`` to define a custom environment (all three;
    named by ``ENTUR_ENVIRONMENT``, else ``custom``). Beside a built-in
    ``ENTUR_ENVIRONMENT`` those three are ignored, with a warning.

    Raises:
        ConfigurationError: A required variable is missing, or a URL variable does not
            hold a usable URL; the message names the variable.
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    client_id, secret = get("ENTUR_CLIENT_ID"), get("ENTUR_CLIENT_SECRET")
    missing = [
        name
        for name, value in (("ENTUR_CLIENT_ID", client_id), ("ENTUR_CLIENT_SECRET", secret))
        if value is None and (require_credentials or client_id or secret)
    ]
    client_name = get("ENTUR_CLIENT_NAME")
    if client_name is None and require_name:
        missing.append("ENTUR_CLIENT_NAME")
    if missing:
        # Only what is missing is asked for: an open-API caller without a name is not told
        # to create a client.
        todo = []
        if "ENTUR_CLIENT_ID" in missing or "ENTUR_CLIENT_SECRET" in missing:
            todo.append(
                "set ENTUR_CLIENT_ID and ENTUR_CLIENT_SECRET from your client at "
                "entur-partner.entur.org"
            )
        if "ENTUR_CLIENT_NAME" in missing:
            todo.append(
                "set ENTUR_CLIENT_NAME to '<company>-<application>', e.g. acme-journeyplanner"
            )
        raise ConfigurationError(
            f"Missing environment variable(s): {', '.join(missing)}; {', and '.join(todo)}."
        )
    custom = {k: get(f"ENTUR_{k.upper()}") for k in ("token_url", "audience", "api_base_url")}
    environment = _pick_environment(get("ENTUR_ENVIRONMENT"), custom)
    return EnvSettings(
        client_id=client_id,
        client_secret=Secret(secret) if secret else None,
        client_name=client_name,
        environment=environment,
    )


#: The name of the environment ``ENTUR_TOKEN_URL`` & co. define when ``ENTUR_ENVIRONMENT``
#: is not set: never a built-in name, which would label another server as Entur's.
CUSTOM_ENVIRONMENT_NAME = "custom"


def ignoring_custom_variables(name: str, builtin: Environment, given: list[str]) -> str:
    """The warning for a built-in ``ENTUR_ENVIRONMENT`` beside custom URL variables."""
    return (
        f"ENTUR_ENVIRONMENT={name} uses Entur's {builtin.name} URLs; ignoring {', '.join(given)}."
    )


def _pick_environment(
    env_name: str | None, custom: dict[str, str | None], *, named_by: str = "ENTUR_ENVIRONMENT="
) -> str | Environment:
    """The environment ``ENTUR_ENVIRONMENT`` and ``ENTUR_TOKEN_URL`` & co. select.

    A built-in name wins over the URL variables, with a warning (as the CLI's
    ``--environment`` does): ``ENTUR_ENVIRONMENT=production`` must never send the secret to
    whatever a stray ``ENTUR_TOKEN_URL`` says while the client calls itself production.
    """
    given = [f"ENTUR_{k.upper()}" for k, v in custom.items() if v]
    if not given:
        if env_name and builtin_or_none(env_name) is None:
            # Said here, naming the variable: the client would only name the value.
            meant = did_you_mean(env_name)
            raise ConfigurationError(
                f"{named_by}{env_name!r} is not one of Entur's environments (production, "
                "staging, dev)" + (f"; did you mean {meant}?" if meant else ".") + " Set it "
                "to one of those, or set ENTUR_TOKEN_URL, ENTUR_AUDIENCE and ENTUR_API_BASE_URL "
                f"to define {env_name!r} yourself."
            )
        return env_name or "production"
    builtin = builtin_or_none(env_name) if env_name else None
    if env_name and builtin is not None:
        warnings.warn(
            ignoring_custom_variables(env_name, builtin, given),
            UserWarning,
            stacklevel=_user_stacklevel(),
        )
        return builtin
    if env_name and (meant := did_you_mean(env_name)) is not None and all(custom.values()):
        warnings.warn(
            f"{env_name!r} is not one of Entur's environments, so ENTUR_TOKEN_URL, "
            f"ENTUR_AUDIENCE and ENTUR_API_BASE_URL define a custom one of that name; did "
            f"you mean {meant}? ({named_by}{meant} uses Entur's {meant} URLs)",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )
    return _custom_environment(env_name or CUSTOM_ENVIRONMENT_NAME, custom)


def _custom_environment(env_name: str, custom: dict[str, str | None]) -> Environment:
    """The environment that ``ENTUR_TOKEN_URL``/``_AUDIENCE``/``_API_BASE_URL`` define."""
    absent = [f"ENTUR_{k.upper()}" for k, v in custom.items() if v is None]
    if absent:
        raise ConfigurationError(
            f"A custom environment {env_name!r} needs {', '.join(absent)} too "
            "(ENTUR_TOKEN_URL, ENTUR_AUDIENCE and ENTUR_API_BASE_URL define it)."
        )
    # Checked here first, so the message names the variable to fix rather than a field.
    for key in ("token_url", "api_base_url"):
        check_url(custom[key], f"ENTUR_{key.upper()}", env_name)
    return Environment(
        name=env_name,
        token_url=str(custom["token_url"]),
        audience=str(custom["audience"]),
        api_base_url=str(custom["api_base_url"]),
    )


# -- EnturClient's construction checks ------------------------------------------------------
#
# Everything the constructor refuses, checked before authlib and httpx2 build anything. The
# HTTP stack, anyio and the token parser are imported inside the functions: the CLI's cached
# ``token`` path imports this module for the environment variables and must not load them.

if TYPE_CHECKING:
    from ._clock import Clock
    from ._token import Token


def checked_settings(
    client_id: object,
    secret: object,
    token: Any,
    *,
    client_name: object,
    environment: Any,
    store: object,
    refresh: object,
    retry: object,
    clock: Any,
    options: Mapping[str, Any],
    update_token: object = None,
) -> tuple[Environment, str, Clock, Token | None] | ConfigurationError:
    """Check the constructor's settings; return them resolved, or the error to raise.

    The error is returned, not raised, and stripped of its traceback and chain: their
    frames hold ``token=`` (the caller deletes it, then raises).
    """
    from ._clock import SystemClock
    from ._grant import seed_token

    try:
        env = resolve_environment(environment)
        name = validate_client_name(client_name)
        _check_settings(client_id, secret, store, options)
        _check_policies(refresh, retry, clock)
        _check_httpx_options(options, update_token)
        if "base_url" in options:
            check_url(options["base_url"], "base_url", env.name)
        clock = clock or SystemClock()
        seed = seed_token(token, clock) if token is not None and secret is not None else None
    except ConfigurationError as exc:
        return _cleaned(exc)
    return env, name, clock, seed


def env_kwargs(
    environ: Mapping[str, str], overrides: dict[str, Any]
) -> dict[str, Any] | ConfigurationError:
    """Return the constructor's arguments ``ENTUR_*`` variables and ``overrides`` give,
    the secret as a :class:`Secret`; or the (cleaned) error to raise."""
    try:
        settings = read_env(
            environ,
            require_credentials=not {"client_id", "client_secret"} <= set(overrides),
            require_name="client_name" not in overrides,
        )
    except ConfigurationError as exc:
        return _cleaned(exc)
    kwargs: dict[str, Any] = {
        "client_id": settings.client_id,
        "client_secret": settings.client_secret,
        "client_name": settings.client_name,
        "environment": settings.environment,
    }
    kwargs.update(overrides)
    if isinstance(kwargs["client_secret"], str):  # not plain in the caller's locals
        kwargs["client_secret"] = Secret(kwargs["client_secret"])
    return kwargs


def _cleaned(error: ConfigurationError) -> ConfigurationError:
    """Drop ``error``'s traceback and chain (frames that held a secret); its message says
    all there is to say."""
    error.__cause__ = error.__context__ = None
    error.__suppress_context__ = True
    return error.with_traceback(None)


def _check_settings(
    client_id: object, secret: object, token_store: object, options: Mapping[str, Any]
) -> None:
    """Check the credentials, the store and the httpx2 options."""
    from ._stores import TokenStore

    if client_id is not None and not isinstance(client_id, str):
        raise ConfigurationError(f"client_id must be a str, not {type(client_id).__name__}.")
    if secret is not None and not isinstance(secret, Secret):
        raise ConfigurationError(
            f"client_secret must be a str or a Secret, not {type(secret).__name__}."
        )
    if (client_id is None) != (secret is None) or client_id == "" or secret == Secret(""):
        raise ConfigurationError(
            "Give both client_id and client_secret (a partner-API client) or neither "
            "(an open-API client); one of them is missing or empty."
        )
    if token_store is not None and not isinstance(token_store, TokenStore):
        raise ConfigurationError(
            f"token_store must implement TokenStore (get, set, delete, lock), "
            f"not {type(token_store).__name__}."
        )
    unknown = set(options) - HTTPX_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"Unknown option(s) {sorted(unknown)}: EnturClient takes the Entur options "
            "and the httpx2.AsyncClient options only."
        )


def _is_seconds(value: object) -> bool:
    """A timeout in seconds: the policies' check (real, finite, at most MAX_SECONDS), >= 0."""
    from ._policy import check_seconds

    try:
        return check_seconds("timeout", value) >= 0
    except ConfigurationError:
        return False


def _builds(kind: Callable[[Any], object]) -> Callable[[object], bool]:
    """A check that ``kind(value)`` accepts ``value`` (httpx2's own parsing, no guessing)."""

    def check(value: object) -> bool:
        try:
            kind(value)
        except Exception:  # any refusal means the setting is unusable
            return False
        return True

    return check


@functools.cache
def _httpx_checks() -> dict[str, tuple[Callable[[object], bool], str]]:
    """The httpx2.AsyncClient options checked here, with what each must be: httpx2 itself
    would fail on most of these only at the first request, or with a bare TypeError."""
    import ssl

    import httpx2

    def is_timeout(value: object) -> bool:
        if value is None or isinstance(value, httpx2.Timeout) or _is_seconds(value):
            return True
        return isinstance(value, tuple) and all(v is None or _is_seconds(v) for v in value)

    def are_hooks(value: object) -> bool:
        return value is None or (
            isinstance(value, Mapping)
            and set(value) <= {"request", "response"}
            and all(isinstance(h, list | tuple) and all(map(callable, h)) for h in value.values())
        )

    flag = (lambda v: isinstance(v, bool), "True or False")
    return {
        "timeout": (is_timeout, "None, a number of seconds, a tuple of them or httpx2.Timeout"),
        "follow_redirects": flag,
        "http1": flag,
        "http2": flag,
        "trust_env": flag,
        "max_redirects": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "a whole number of redirects, 0 or more",
        ),
        "transport": (
            lambda v: v is None or isinstance(v, httpx2.AsyncBaseTransport),
            "an httpx2.AsyncBaseTransport",
        ),
        "limits": (lambda v: isinstance(v, httpx2.Limits), "an httpx2.Limits"),
        "headers": (_builds(httpx2.Headers), "a mapping or a list of (name, value) pairs"),
        "params": (_builds(httpx2.QueryParams), "a mapping, a list of pairs or a query string"),
        "cookies": (_builds(httpx2.Cookies), "a mapping or an httpx2.Cookies"),
        "event_hooks": (
            are_hooks,
            'a mapping like {"request": [hook], "response": [hook]} of lists of callables',
        ),
        "verify": (
            lambda v: isinstance(v, bool | str | ssl.SSLContext),
            "True, False, a CA bundle path or an ssl.SSLContext",
        ),
    }


def _check_httpx_options(options: Mapping[str, Any], update_token: object) -> None:
    """Refuse an httpx2 option or ``update_token`` of the wrong kind now, naming it."""
    if update_token is not None and not callable(update_token):
        raise ConfigurationError(
            f"update_token must be a callable (authlib's hook, called as "
            f"update_token(token, access_token=...)), not {type(update_token).__name__}."
        )
    checks = _httpx_checks()
    for name, value in options.items():
        check = checks.get(name)
        if check is not None and not check[0](value):
            raise ConfigurationError(
                f"{name} must be {check[1]}, not {type(value).__name__}: see the "
                "httpx2.AsyncClient option of that name."
            )


def _check_policies(refresh: object, retry: object, clock: object) -> None:
    """Refuse a ``refresh``, ``retry`` or ``clock`` of the wrong type now, not at first use."""
    from ._policy import RefreshPolicy, RetryPolicy

    for setting, value, kind in (
        ("refresh", refresh, RefreshPolicy),
        ("retry", retry, RetryPolicy),
    ):
        if value is not None and not isinstance(value, kind):
            raise ConfigurationError(
                f"{setting} must be a {kind.__name__} (or None), not {type(value).__name__}; "
                f"for example {setting}={kind.__name__}()."
            )
    if clock is not None and not all(
        callable(getattr(clock, method, None)) for method in ("monotonic", "time", "sleep")
    ):
        raise ConfigurationError(
            f"clock must have monotonic(), time() and async sleep() (see entur_oauth.Clock), "
            f"not {type(clock).__name__}."
        )


#: The httpx2.AsyncClient options EnturClient passes on.
HTTPX_OPTIONS = frozenset(
    {
        "auth",
        "params",
        "headers",
        "cookies",
        "verify",
        "cert",
        "http1",
        "http2",
        "proxy",
        "mounts",
        "timeout",
        "follow_redirects",
        "limits",
        "max_redirects",
        "event_hooks",
        "base_url",
        "transport",
        "trust_env",
        "default_encoding",
    }
)
