"""Entur's environments: where to get a token, for which audience, and where the APIs live."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._errors import ConfigurationError

__all__ = ["Environment", "check_url", "get_environment", "is_loopback_host", "url_problem"]

_API = "https://api.entur.io"


def is_loopback_host(host: str) -> bool:
    """Tell whether ``host`` names this machine (``localhost`` or a loopback address)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The shape of Entur's own URLs: accepted without importing httpx2, which neither the
# built-in environments (made at import) nor the CLI's cached-token path should pay for.
# httpx2 accepts every URL of this shape (a property test holds that); any other URL is
# parsed by httpx2 itself, so a setting is accepted exactly when requests can use it.
_PLAIN_URL = re.compile(
    r"https?://[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?"
)
_IPV4_SHAPED = re.compile(r"[0-9]+(?:\.[0-9]+){3}")


def url_problem(url: str) -> str | None:
    """Say why ``url`` cannot be used for a request (``None`` when it can)."""
    # httpx2 would quietly strip or encode whitespace, or fail only when connecting.
    if any(ch.isspace() for ch in url):
        return "it holds whitespace, such as a stray space or newline"
    try:
        parts = urlsplit(url)
        port = parts.port  # reading it checks it: a number in 0-65535
    except ValueError as exc:
        return str(exc)
    if port == 0:
        return "port 0 is not a port a server listens on"
    if (problem := _host_problem(parts.hostname)) is not None:
        return problem
    if _PLAIN_URL.fullmatch(url):
        return None
    import httpx2  # here, not at the top: see _PLAIN_URL

    try:
        httpx2.URL(url)
    except (httpx2.InvalidURL, ValueError, TypeError) as exc:
        return str(exc)
    return None


def _host_problem(host: str | None) -> str | None:
    """Say why a host name would fail at connection time (empty or over-long labels, broken
    punycode), which httpx2 does not check when it parses the URL."""
    if not host or ":" in host:  # none, or an IPv6 literal
        return None
    if _IPV4_SHAPED.fullmatch(host):
        # httpx2 reads such a host as an address and refuses one like 0.0.0.00.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"host {host!r} is not a valid IPv4 address"
        return None
    try:
        host.encode("idna")  # what asyncio's and trio's resolvers do with it
    except UnicodeError:
        return f"host {host!r} has an empty or over-long label"
    if "xn--" in host:
        import idna  # httpx2's own dependency; only for punycode labels

        try:
            idna.decode(host)
        except idna.IDNAError as exc:
            return f"host {host!r} is not valid punycode ({exc})"
    return None


def check_url(url: object, what: str, env_name: str) -> None:
    """Refuse a URL setting that is not an absolute, usable http(s) URL.

    ``what`` names the setting in the message (``token_url``, ``ENTUR_TOKEN_URL``, ...).

    Raises:
        ConfigurationError: The URL is not a string, does not parse, is relative, carries a
            user name or password, or uses ``http://`` off loopback.
    """
    where = f"{what} of environment {env_name!r}"
    if not isinstance(url, str):
        raise ConfigurationError(f"{where} must be a URL string, not {type(url).__name__}.")
    if (problem := url_problem(url)) is not None:
        raise ConfigurationError(
            f"{where} is not a valid URL ({problem}): {url!r}; give a full URL such as "
            "'https://partner.entur.org/oauth/token'."
        )
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ConfigurationError(
            f"{what} {url!r} of environment {env_name!r} is not an absolute http(s) URL; "
            "give a full URL such as 'https://partner.entur.org/oauth/token'."
        )
    if "@" in parts.netloc:
        # Not echoed: the part before '@' may be a password.
        raise ConfigurationError(
            f"{where} holds a user name or password ('user@host'); give the URL without it."
        )
    # Plain http would send the client secret and bearer tokens in clear text. Loopback is
    # allowed because that is where local fakes and test servers listen.
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            f"{what} {url!r} of environment {env_name!r} uses http://, which would send "
            "credentials in clear text; use https:// (http:// is accepted only for "
            "loopback addresses such as 127.0.0.1)."
        )


def _bare_host(host: str) -> str | None:
    """Return ``host`` (``name`` or ``name:port``) lower-cased if it is only that, else None."""
    try:
        parts = urlsplit(f"https://{host}")
        parts.port  # noqa: B018  (reading it checks it)
    except ValueError:
        return None
    only_a_host = parts.hostname and parts.netloc.lower() == host.lower()
    if not only_a_host or "@" in host or url_problem(f"https://{host}/") is not None:
        return None
    return parts.netloc.lower()


def _check_host(host: str, env_name: str) -> str:
    """Return ``host`` (``name`` or ``name:port``) lower-cased, if it is only that."""
    bare = _bare_host(host.strip())
    if bare is None:
        raise ConfigurationError(
            f"extra_token_hosts entry {host!r} of environment {env_name!r} is not a bare "
            "host name; give 'host' or 'host:port' (no scheme, path or user), e.g. "
            "'api2.entur.io'."
        )
    return bare


def _check_text(value: object, what: str, example: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"An Environment needs {what} as a non-empty string, such as {example!r}."
        )


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
        ConfigurationError: A setting is empty or not a string, a URL does not parse (as
            httpx2 would parse it for a request), is not absolute, or uses ``http://`` off
            loopback, or an extra host is not a bare ``host[:port]``; the message names
            the setting.
    """

    name: str
    token_url: str
    audience: str
    api_base_url: str
    extra_token_hosts: frozenset[str] = field(default=frozenset())

    def __post_init__(self) -> None:
        _check_text(self.name, "a name", "production")
        # Entur's token endpoint needs an audience.
        _check_text(self.audience, f"an audience (environment {self.name!r})", _API)
        check_url(self.token_url, "token_url", self.name)
        check_url(self.api_base_url, "api_base_url", self.name)
        # Accept any iterable of hosts while keeping the field hashable and frozen; a bare
        # string would be read as its characters, each a "host" that gets the token.
        hosts: object = self.extra_token_hosts
        if (
            isinstance(hosts, str | bytes)
            or not isinstance(hosts, Iterable)
            or not all(isinstance(h, str) for h in hosts)
        ):
            raise ConfigurationError(
                f"extra_token_hosts of environment {self.name!r} must be a collection of "
                "host name strings such as {'api2.entur.io'}, not "
                f"{type(hosts).__name__}."
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
