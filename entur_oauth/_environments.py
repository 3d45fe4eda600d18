"""Entur's environments: where to get a token, for which audience, and where the APIs live."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._errors import ConfigurationError

__all__ = ["Environment", "get_environment", "is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """Tell whether ``host`` names this machine (``localhost`` or a loopback address)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, what: str, env_name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ConfigurationError(
            f"{what} {url!r} of environment {env_name!r} is not an absolute http(s) URL; "
            "give a full URL such as 'https://partner.entur.org/oauth/token'."
        )
    # Plain http would send the client secret and bearer tokens in clear text. Loopback is
    # allowed because that is where local fakes and test servers listen.
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            f"{what} {url!r} of environment {env_name!r} uses http://, which would send "
            "credentials in clear text; use https:// (http:// is accepted only for "
            "loopback addresses such as 127.0.0.1)."
        )


def _check_host(host: str, env_name: str) -> str:
    """Return ``host`` (``name`` or ``name:port``) lower-cased, if it is only that."""
    parts = urlsplit(f"https://{host.strip()}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        not parts.hostname
        or port == -1
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or parts.netloc.lower() != host.strip().lower()
    ):
        raise ConfigurationError(
            f"extra_token_hosts entry {host!r} of environment {env_name!r} is not a bare "
            "host name; give 'host' or 'host:port' (no scheme, path or user), e.g. "
            "'api2.entur.io'."
        )
    return parts.netloc.lower()


@dataclass(frozen=True, slots=True)
class Environment:
    """One Entur environment.

    Args:
        name: A short name, such as ``"production"``.
        token_url: The OAuth2 token endpoint.
        audience: The ``audience`` sent in the token request.
        api_base_url: Where relative request URLs are resolved; also the host that gets
            the bearer token.
        extra_token_hosts: More ``https`` hosts (``host`` or ``host:port``) that may receive
            the bearer token, for APIs outside ``api_base_url``.

    Raises:
        ConfigurationError: A URL is not absolute, or uses ``http://`` off loopback.
    """

    name: str
    token_url: str
    audience: str
    api_base_url: str
    extra_token_hosts: frozenset[str] = field(default=frozenset())

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigurationError("An Environment needs a non-empty name.")
        if not self.audience:
            raise ConfigurationError(
                f"Environment {self.name!r} has an empty audience; Entur's token endpoint "
                "needs one, such as 'https://api.entur.io'."
            )
        _check_url(self.token_url, "token_url", self.name)
        _check_url(self.api_base_url, "api_base_url", self.name)
        # Accept any iterable of hosts while keeping the field hashable and frozen; a bare
        # string would be read as its characters, each a "host" that gets the token.
        hosts: object = self.extra_token_hosts
        if isinstance(hosts, str | bytes) or not all(isinstance(h, str) for h in hosts):  # type: ignore[attr-defined]
            raise ConfigurationError(
                f"extra_token_hosts of environment {self.name!r} must be a collection of "
                "host names such as {'api2.entur.io'}, not a single string."
            )
        object.__setattr__(
            self,
            "extra_token_hosts",
            frozenset(_check_host(h, self.name) for h in self.extra_token_hosts),
        )


_BUILTIN: dict[str, Environment] = {
    env.name: env
    for env in (
        Environment(
            name="production",
            token_url="https://partner.entur.org/oauth/token",
            audience="https://api.entur.io",
            api_base_url="https://api.entur.io",
        ),
        Environment(
            name="staging",
            token_url="https://partner.staging.entur.org/oauth/token",
            audience="https://api.staging.entur.io",
            api_base_url="https://api.staging.entur.io",
        ),
        Environment(
            name="dev",
            token_url="https://partner.dev.entur.org/oauth/token",
            audience="https://api.dev.entur.io",
            api_base_url="https://api.dev.entur.io",
        ),
    )
}


def get_environment(name: str) -> Environment:
    """Return the built-in environment called ``name`` (case-insensitive).

    Raises:
        ConfigurationError: ``name`` is not ``production``, ``staging`` or ``dev``.
    """
    try:
        return _BUILTIN[name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(_BUILTIN))
        raise ConfigurationError(
            f"Unknown Entur environment {name!r}; known environments: {known}. "
            "Pass an Environment(...) for anything else, such as a local test server."
        ) from None
