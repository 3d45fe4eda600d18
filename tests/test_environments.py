"""Environment registry and URL checks."""

from __future__ import annotations

import dataclasses

import pytest

from entur_oauth import ConfigurationError, Environment, get_environment

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
