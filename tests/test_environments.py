"""Environment registry and URL checks."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entur_oauth import ConfigurationError, Environment, _environments, get_environment

SEED = {
    "production": ("https://partner.entur.org/oauth/token", "https://api.entur.io"),
    "staging": ("https://partner.staging.entur.org/oauth/token", "https://api.staging.entur.io"),
    "dev": ("https://partner.dev.entur.org/oauth/token", "https://api.dev.entur.io"),
}


@pytest.mark.parametrize("name", sorted(SEED))
def test_builtin_environments_match_the_entur_document(name: str) -> None:
    """Token URL and audience are exactly those of Entur's authentication document."""
    env = get_environment(name)
    token_url, audience = SEED[name]
    assert (env.name, env.token_url, env.audience) == (name, token_url, audience)
    assert env.api_base_url == audience


def test_lookup_ignores_case_and_spaces() -> None:
    """'Staging ' from an environment variable still finds staging."""
    assert get_environment(" Staging ") is get_environment("staging")


def test_unknown_name_lists_the_known_ones() -> None:
    """A typo gets an error that says which names exist."""
    with pytest.raises(ConfigurationError, match="dev, production, staging") as info:
        get_environment("prod")
    assert isinstance(info.value, ValueError)


def test_environment_is_frozen() -> None:
    """An Environment cannot be changed after it is made."""
    env = get_environment("dev")
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.audience = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("token_url", "api_base_url"),
    [
        ("http://partner.example.org/oauth/token", "https://api.example.org"),
        ("https://partner.example.org/oauth/token", "http://api.example.org"),
    ],
)
def test_plain_http_off_loopback_is_refused(token_url: str, api_base_url: str) -> None:
    """http:// would send the secret or the token in clear text."""
    with pytest.raises(ConfigurationError, match="clear text"):
        Environment(name="x", token_url=token_url, audience="a", api_base_url=api_base_url)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.0.0.2"])
def test_plain_http_on_loopback_is_allowed(host: str) -> None:
    """Local fakes and test servers listen on loopback over http."""
    env = Environment(
        name="local",
        token_url=f"http://{host}:8000/oauth/token",
        audience="a",
        api_base_url=f"http://{host}:8000",
    )
    assert env.api_base_url.startswith("http://")


@pytest.mark.parametrize("url", ["partner.entur.org/oauth/token", "ftp://x/y", "/oauth/token"])
def test_relative_or_foreign_urls_are_refused(url: str) -> None:
    """Only absolute http(s) URLs make sense for a token endpoint."""
    with pytest.raises(ConfigurationError, match="absolute"):
        Environment(name="x", token_url=url, audience="a", api_base_url="https://api.example.org")


def test_empty_audience_is_refused() -> None:
    """Entur's token endpoint needs an audience."""
    with pytest.raises(ConfigurationError, match="audience"):
        Environment(name="x", token_url="https://a/t", audience="", api_base_url="https://b")


GOOD: dict[str, Any] = {
    "name": "x",
    "token_url": "https://auth.example.org/oauth/token",
    "audience": "https://api.example.org",
    "api_base_url": "https://api.example.org",
}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("token_url", "https://[::1"),  # unclosed IPv6 literal
        ("token_url", "https://a.example:abc/t"),  # accepted before, failed at the first request
        ("token_url", "https://a.example:99999/t"),  # no such port
        ("token_url", "https://a.example: 80/t"),  # httpx2 reads it; the stdlib does not
        ("api_base_url", "https://host:abc"),
        ("api_base_url", "https://\u3002"),  # an ideographic full stop as the host
        ("api_base_url", "https://ho\x00st"),
        ("api_base_url", "https://ho\u00d7st"),  # a multiplication sign: no IDNA form
        ("api_base_url", "https://user:pw@api.example.org"),
        ("token_url", 42),
        ("audience", None),
        ("name", 7),
    ],
)
def test_every_bad_setting_is_a_configuration_error_naming_it(setting: str, value: object) -> None:
    """Each bad value raises ConfigurationError at construction, and the message names the
    setting, never a ValueError or httpx2.InvalidURL at the first request."""
    with pytest.raises(ConfigurationError, match=setting.replace("_", ".")) as info:
        Environment(**{**GOOD, setting: value})
    assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("api_base_url", "https://a..example"),  # an empty IDNA label: UnicodeError on trio
        ("token_url", "https://a..example/t"),
        ("token_url", "https://.a.example/t"),
        ("token_url", f"https://{'a' * 64}.example/t"),  # a label over 63 characters
        ("token_url", "https://xn--zz-/t"),  # punycode that does not decode
        ("token_url", "https://a.example:0/t"),  # nothing listens on port 0
        ("api_base_url", "https://a.example:00"),
        ("token_url", " https://a.example/t"),  # leading space
        ("token_url", "https://a.example/t "),  # trailing space
        ("token_url", "https://a.exa mple/t"),  # a space in the host
        ("api_base_url", "https://api.example.org\n"),
        ("api_base_url", "http://0.0.0.00"),  # IPv4-shaped, refused by httpx2
    ],
)
def test_urls_that_would_fail_at_connection_are_refused_at_construction(
    setting: str, value: str
) -> None:
    """URLs httpx2 parses but that fail (or quietly change) when a request is sent are
    refused when the Environment is built, with the setting named."""
    with pytest.raises(ConfigurationError, match=setting.replace("_", ".")):
        Environment(**{**GOOD, setting: value})


@pytest.mark.parametrize("url", ["https://a.example./t", "https://xn--mnchen-3ya.de/t"])
def test_fully_qualified_and_punycode_hosts_are_still_accepted(url: str) -> None:
    """A trailing root dot and valid punycode are real host names, not empty labels."""
    assert Environment(**{**GOOD, "token_url": url}).token_url == url


@pytest.mark.parametrize("hosts", [None, 123, 1.5, b"api2.entur.io", {1, 2}])
def test_extra_token_hosts_of_the_wrong_type_is_a_configuration_error(hosts: object) -> None:
    """extra_token_hosts that is not a collection of strings (None, a number, bytes) raises
    ConfigurationError naming it, not TypeError."""
    with pytest.raises(ConfigurationError, match="extra_token_hosts"):
        Environment(**GOOD, extra_token_hosts=hosts)


@pytest.mark.parametrize("host", ["[", "a:abc", "a:+80", "\u3002", "ho\x00st", "u@a", "a/b"])
def test_bad_extra_token_hosts_are_configuration_errors(host: str) -> None:
    """extra_token_hosts entries that are not a usable bare host[:port] are refused."""
    with pytest.raises(ConfigurationError, match="extra_token_hosts"):
        Environment(**GOOD, extra_token_hosts=frozenset({host}))


def test_idna_and_ipv6_urls_that_httpx2_accepts_are_accepted() -> None:
    """Hosts outside the plain ASCII shape are parsed by httpx2 and accepted when it can
    send to them: an IDNA name, an IPv6 literal, an explicit port."""
    env = Environment(
        **{**GOOD, "api_base_url": "https://bl\u00e5b\u00e6r.example:8443/v1"},
        extra_token_hosts=frozenset({"[::1]:8443", "\u00e6\u00f8\u00e5.example"}),
    )
    assert env.api_base_url.endswith(":8443/v1")
    assert "[::1]:8443" in env.extra_token_hosts
    Environment(**{**GOOD, "token_url": "http://[::1]:8000/oauth/token"})


@settings(max_examples=200, deadline=None)
@given(url=st.from_regex(_environments._PLAIN_URL, fullmatch=True))
def test_urls_checked_without_httpx2_are_urls_httpx2_accepts(url: str) -> None:
    """The fast path (no httpx2 import) accepts only URLs httpx2 parses too, so skipping
    httpx2 for them never accepts what a request would then refuse."""
    if _environments.url_problem(url) is not None:
        return  # refused (such as http://0.0.0.00): nothing for httpx2 to agree with
    httpx2.URL(url)
    httpx2.Request("GET", url)


@settings(max_examples=300, deadline=None)
@given(host=st.text(max_size=20), path=st.text(max_size=10))
def test_any_url_is_accepted_or_refused_with_our_error(host: str, path: str) -> None:
    """Whatever the text, building an Environment ends in an Environment whose URL httpx2
    can send to, or in ConfigurationError: never another exception."""
    url = f"https://{host}/{path}"
    try:
        Environment(**{**GOOD, "api_base_url": url})
    except ConfigurationError:
        return
    httpx2.Request("GET", url)


def test_builtin_environments_are_built_without_httpx2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making the three built-in environments (done at import) needs no httpx2 import, so
    the CLI's cached-token path does not pay for it; any other URL shape does use it."""
    monkeypatch.setitem(sys.modules, "httpx2", None)  # importing it now raises ImportError
    for name in SEED:
        env = get_environment(name)
        assert Environment(**{f.name: getattr(env, f.name) for f in dataclasses.fields(env)})
    with pytest.raises(ImportError):
        Environment(**{**GOOD, "api_base_url": "https://bl\u00e5b\u00e6r.example"})


# -- extra_token_hosts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "hosts",
    ["api2.entur.io", ["evil.test/x@api.entur.io"], ["https://api2.entur.io"], ["user@api2.test"]],
)
def test_extra_token_hosts_must_be_bare_hosts(hosts: object) -> None:
    """A string (read as its characters) or a URL-ish entry is refused, not half-used."""
    with pytest.raises(ConfigurationError, match="extra_token_hosts"):
        Environment(
            name="t",
            token_url="https://partner.entur.org/oauth/token",
            audience="https://api.entur.io",
            api_base_url="https://api.entur.io",
            extra_token_hosts=hosts,  # type: ignore[arg-type]
        )


def test_extra_token_hosts_accept_host_and_port() -> None:
    """host and host:port are accepted, lower-cased."""
    env = Environment(
        name="t",
        token_url="https://partner.entur.org/oauth/token",
        audience="https://api.entur.io",
        api_base_url="https://api.entur.io",
        extra_token_hosts=frozenset({"API2.entur.io", "api3.entur.io:8443"}),
    )
    assert env.extra_token_hosts == frozenset({"api2.entur.io", "api3.entur.io:8443"})
