"""ET-Client-Name validation and configuration from ENTUR_* variables."""

from __future__ import annotations

import argparse
import warnings

import pytest

from entur_oauth import (
    ClientNameWarning,
    ConfigurationError,
    EnturClient,
    Environment,
    get_environment,
)
from entur_oauth._cli._output import Redactor
from entur_oauth._cli._settings import load
from entur_oauth.testing import FakeEntur

CREDS = {
    "ENTUR_CLIENT_ID": "id-123",
    "ENTUR_CLIENT_SECRET": "s3cr3t-value",
    "ENTUR_CLIENT_NAME": "acme-journeyplanner",
}


@pytest.mark.parametrize(
    "name", ["", " ", "acme app", "acme-app\n", "acme-\x00app", "acme-æøå", None, 42]
)
def test_unsendable_client_names_are_refused(name: object) -> None:
    """Empty, whitespace, control and non-ASCII names could not go out as a header."""
    with pytest.raises(ConfigurationError, match="client_name"):
        EnturClient(client_name=name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["AcmeApp", "acme", "Acme-App", "acme_app"])
def test_unconventional_client_names_warn(name: str) -> None:
    """A name that is not '<company>-<application>' in lower case only warns."""
    with pytest.warns(ClientNameWarning, match="<company>-<application>"):
        client = EnturClient(client_name=name)
    assert client.headers["ET-Client-Name"] == name


@pytest.mark.parametrize("name", ["acme-journeyplanner", "entur-oauth-demo", "acme.no-app2"])
def test_conventional_client_names_pass_silently(name: str) -> None:
    """A proper '<company>-<application>' name gives no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EnturClient(client_name=name)


def test_from_env_reads_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three variables are enough; the environment defaults to production."""
    for key, value in CREDS.items():
        monkeypatch.setenv(key, value)
    client = EnturClient.from_env()
    assert client.client_id == "id-123"
    assert client.environment.name == "production"
    assert client.headers["ET-Client-Name"] == "acme-journeyplanner"
    assert str(client.base_url) == "https://api.entur.io"


@pytest.mark.parametrize("missing", sorted(CREDS))
def test_from_env_names_the_missing_variable(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    """Each required variable, when missing, is named in the error."""
    for key, value in CREDS.items():
        if key != missing:
            monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=missing):
        EnturClient.from_env()


def test_from_env_environment_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENTUR_ENVIRONMENT picks a built-in environment."""
    for key, value in {**CREDS, "ENTUR_ENVIRONMENT": "staging"}.items():
        monkeypatch.setenv(key, value)
    client = EnturClient.from_env()
    assert client.environment.token_url == "https://partner.staging.entur.org/oauth/token"


@pytest.mark.parametrize("name", ["prod", "local", "Production2"])
def test_from_env_unknown_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """An ENTUR_ENVIRONMENT that is no built-in name, with no URL variables, is a
    ConfigurationError naming ENTUR_ENVIRONMENT, its value and both ways out."""
    for key, value in {**CREDS, "ENTUR_ENVIRONMENT": name}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as caught:
        EnturClient.from_env()
    message = str(caught.value)
    assert f"ENTUR_ENVIRONMENT={name!r}" in message
    assert "production, staging, dev" in message
    assert "ENTUR_TOKEN_URL, ENTUR_AUDIENCE and ENTUR_API_BASE_URL" in message


def test_from_env_custom_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENTUR_TOKEN_URL, ENTUR_AUDIENCE and ENTUR_API_BASE_URL define a custom environment."""
    custom = {
        "ENTUR_ENVIRONMENT": "local",
        "ENTUR_TOKEN_URL": "http://127.0.0.1:9/oauth/token",
        "ENTUR_AUDIENCE": "https://api.local.test",
        "ENTUR_API_BASE_URL": "http://127.0.0.1:9",
    }
    for key, value in {**CREDS, **custom}.items():
        monkeypatch.setenv(key, value)
    env = EnturClient.from_env().environment
    assert env == Environment(
        name="local",
        token_url="http://127.0.0.1:9/oauth/token",
        audience="https://api.local.test",
        api_base_url="http://127.0.0.1:9",
    )


def test_from_env_custom_environment_needs_all_three(monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom environment that is not a built-in name needs all three URLs."""
    for key, value in {
        **CREDS,
        "ENTUR_ENVIRONMENT": "local",
        "ENTUR_TOKEN_URL": "https://t.test/t",
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match="ENTUR_AUDIENCE, ENTUR_API_BASE_URL"):
        EnturClient.from_env()


def test_from_env_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword arguments override the variables; client_id=None etc. makes an open client."""
    monkeypatch.setenv("ENTUR_CLIENT_NAME", "acme-app")
    client = EnturClient.from_env(client_id=None, client_secret=None, environment="dev")
    assert client.environment.name == "dev"
    assert "open API" in repr(client)


@pytest.mark.parametrize(
    ("cid", "secret"), [("id", None), (None, "secret"), ("", "secret"), ("id", "")]
)
def test_half_credentials_are_refused(cid: str | None, secret: str | None) -> None:
    """client_id without client_secret (or the reverse, or empty ones) is a mistake."""
    with pytest.raises(ConfigurationError, match="both client_id and client_secret"):
        EnturClient(cid, secret, client_name="acme-app")


def test_unknown_options_are_refused() -> None:
    """A misspelt option is an error, not silently ignored."""
    with pytest.raises(ConfigurationError, match="timout"):
        EnturClient(client_name="acme-app", timout=3)


def test_token_store_must_be_a_store() -> None:
    """A token_store that lacks the protocol's methods is refused at construction."""
    with pytest.raises(ConfigurationError, match="TokenStore"):
        EnturClient("id", "secret", client_name="acme-app", token_store=object())  # type: ignore[arg-type]


def test_client_name_warning_points_at_the_users_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning names the line that built the client, however it was built."""
    for key, value in CREDS.items():
        monkeypatch.setenv(key, value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        EnturClient(client_name="AcmeApp")
        EnturClient.from_env(client_name="AcmeApp")
        FakeEntur().client(client_name="AcmeApp")
    assert [w.category for w in caught] == [ClientNameWarning] * 3
    assert [w.filename for w in caught] == [__file__] * 3


@pytest.mark.parametrize("variable", ["ENTUR_TOKEN_URL", "ENTUR_API_BASE_URL"])
@pytest.mark.parametrize(
    "value", ["https://[::1", "https://a.example:abc/t", "https://\u3002", "ftp://a/b"]
)
def test_from_env_names_the_variable_holding_a_bad_url(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A URL variable that does not hold a usable URL raises ConfigurationError naming the
    variable, when the client is built."""
    for key, setting in {**CREDS, **LOCAL, variable: value}.items():
        monkeypatch.setenv(key, setting)
    with pytest.raises(ConfigurationError, match=variable):
        EnturClient.from_env()


def test_from_env_builtin_name_ignores_a_lone_custom_audience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENTUR_AUDIENCE beside a built-in ENTUR_ENVIRONMENT is ignored with a warning: the
    client is Entur's dev, audience included, not a custom environment called dev."""
    for key, value in {**CREDS, "ENTUR_ENVIRONMENT": "dev", "ENTUR_AUDIENCE": "aud"}.items():
        monkeypatch.setenv(key, value)
    with pytest.warns(UserWarning, match="ignoring ENTUR_AUDIENCE"):
        env = EnturClient.from_env().environment
    assert env is get_environment("dev")


LOCAL = {
    "ENTUR_ENVIRONMENT": "local",
    "ENTUR_TOKEN_URL": "http://127.0.0.1:9/oauth/token",
    "ENTUR_AUDIENCE": "https://api.local.test",
    "ENTUR_API_BASE_URL": "http://127.0.0.1:9",
}
STRAY = {
    "ENTUR_TOKEN_URL": "https://token.attacker.example/oauth/token",
    "ENTUR_AUDIENCE": "https://api.entur.io",
    "ENTUR_API_BASE_URL": "https://api.attacker.example",
}


@pytest.mark.parametrize("name", ["production", "Staging", "dev "])
def test_builtin_environment_variable_wins_over_custom_urls_with_a_warning(name: str) -> None:
    """ENTUR_ENVIRONMENT naming a built-in plus stray ENTUR_TOKEN_URL & co.: the built-in
    environment is used (the secret never goes to the stray token URL) and a warning names
    the ignored variables and the user's line; never a custom environment under Entur's
    name."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = EnturClient.from_env({**CREDS, **STRAY, "ENTUR_ENVIRONMENT": name})
    builtin = get_environment(name)
    assert client.environment is builtin
    assert [str(w.message) for w in caught] == [
        f"ENTUR_ENVIRONMENT={name.strip()} uses Entur's {builtin.name} URLs; ignoring "
        "ENTUR_TOKEN_URL, ENTUR_AUDIENCE, ENTUR_API_BASE_URL."
    ]
    assert [w.filename for w in caught] == [__file__]


def test_builtin_environment_variable_ignores_even_a_bad_custom_url() -> None:
    """An ignored variable is not used, so its value does not matter (only warned about)."""
    environ = {**CREDS, "ENTUR_ENVIRONMENT": "staging", "ENTUR_TOKEN_URL": "ftp://a/b"}
    with pytest.warns(UserWarning, match="ignoring ENTUR_TOKEN_URL"):
        assert EnturClient.from_env(environ).environment is get_environment("staging")


def test_custom_urls_without_an_environment_name_are_called_custom() -> None:
    """All three URL variables and no ENTUR_ENVIRONMENT: a custom environment named
    'custom', never labelled production (the default name)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = EnturClient.from_env({**CREDS, **STRAY}).environment
    assert (env.name, env.token_url) == ("custom", STRAY["ENTUR_TOKEN_URL"])


def test_part_of_a_custom_environment_without_a_name_is_refused() -> None:
    """One URL variable and no ENTUR_ENVIRONMENT is not half of production: the other two
    are asked for, by name."""
    environ = {**CREDS, "ENTUR_TOKEN_URL": STRAY["ENTUR_TOKEN_URL"]}
    with pytest.raises(ConfigurationError, match="'custom' needs ENTUR_AUDIENCE, ENTUR_API_"):
        EnturClient.from_env(environ)


def test_cli_settings_agree_with_from_env_on_a_builtin_environment_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI reading ENTUR_ENVIRONMENT=staging beside the URL variables uses staging too,
    and prints the same warning once."""
    for key, value in {**CREDS, **STRAY, "ENTUR_ENVIRONMENT": "staging"}.items():
        monkeypatch.setenv(key, value)
    args = argparse.Namespace(environment=None, client_name=None, client_secret_file=None)
    settings = load(args, Redactor())
    assert settings.environment is get_environment("staging")
    assert capsys.readouterr().err.splitlines() == [
        "entur-oauth: warning: ENTUR_ENVIRONMENT=staging uses Entur's staging URLs; "
        "ignoring ENTUR_TOKEN_URL, ENTUR_AUDIENCE, ENTUR_API_BASE_URL."
    ]


def test_cli_settings_name_a_nameless_custom_environment_custom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI, like from_env, calls URL variables without ENTUR_ENVIRONMENT 'custom'."""
    for key, value in {**CREDS, **STRAY}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ENTUR_ENVIRONMENT", raising=False)
    args = argparse.Namespace(environment=None, client_name=None, client_secret_file=None)
    env = load(args, Redactor()).environment
    assert (env.name, env.api_base_url) == ("custom", STRAY["ENTUR_API_BASE_URL"])
