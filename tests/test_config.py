"""ET-Client-Name validation and configuration from ENTUR_* variables."""

from __future__ import annotations

import warnings

import pytest

from entur_oauth import ClientNameWarning, ConfigurationError, EnturClient, Environment
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
    for key, setting in {**CREDS, "ENTUR_ENVIRONMENT": "staging", variable: value}.items():
        monkeypatch.setenv(key, setting)
    with pytest.raises(ConfigurationError, match=variable):
        EnturClient.from_env()


def test_from_env_custom_audience_alone_keeps_the_builtin_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENTUR_AUDIENCE alone on a built-in environment changes only the audience; the
    built-in URLs it keeps are not re-checked as if they came from a variable."""
    for key, value in {**CREDS, "ENTUR_ENVIRONMENT": "dev", "ENTUR_AUDIENCE": "aud"}.items():
        monkeypatch.setenv(key, value)
    env = EnturClient.from_env().environment
    assert (env.audience, env.token_url) == ("aud", "https://partner.dev.entur.org/oauth/token")
