"""Settings that come from the user: client name validation and ``ENTUR_*`` variables."""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from ._environments import Environment, check_url, get_environment
from ._errors import ConfigurationError
from ._secrets import Secret

__all__ = [
    "ClientNameWarning",
    "EnvSettings",
    "did_you_mean",
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
