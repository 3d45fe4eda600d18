"""The ``entur-oauth`` command line, run through its real entry points (the installed console
script and ``python -m entur_oauth``) in subprocesses, against the fake Entur on loopback."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from entur_oauth.testing import FakeEntur, ScriptedResponse

from .conftest import NO_NETWORK

SCRIPT = Path(sys.executable).with_name("entur-oauth")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.")
#: The shape of a FakeEntur's random default secret (the demo's fake is one).
FAKE_SECRET = re.compile(r"fake-[A-Za-z0-9_-]{24}")
CUSTOM = {"ENTUR_TOKEN_URL", "ENTUR_AUDIENCE", "ENTUR_API_BASE_URL"}


def run(
    *args: str,
    env: dict[str, str] | None = None,
    module: bool = False,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``entur-oauth ARGS`` (or ``python -m entur_oauth ARGS``) with exactly ``env``."""
    command = [sys.executable, "-m", "entur_oauth"] if module else [str(SCRIPT)]
    return subprocess.run(
        [*command, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_nothing_secret(fake: FakeEntur, *texts: str) -> None:
    """No client secret and no token (issued by ``fake``, or JWT-shaped) in ``texts``."""
    for text in texts:
        assert fake.client_secret not in text
        for token in fake.all_issued_tokens:
            assert token not in text
        assert not JWT.search(text), text


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """The test process's environment without ENTUR_*, with a private token cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTUR_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


@pytest.fixture
def fake_env(
    base_env: dict[str, str], entur_fake: FakeEntur, entur_fake_url: str
) -> dict[str, str]:
    """``base_env`` plus the ENTUR_* variables of the fake served on loopback."""
    return {**base_env, **entur_fake.env(entur_fake_url, client_name="acme-cli")}


@pytest.mark.slow
def test_console_script_and_module_both_answer_help(base_env: dict[str, str]) -> None:
    """Both entry points run, list every command and the exit codes."""
    script, module = run("--help", env=base_env), run("--help", env=base_env, module=True)
    assert script.returncode == module.returncode == 0
    for command in ("token", "check", "request", "fake-server", "demo"):
        assert command in script.stdout
    assert "2 configuration error" in script.stdout
    assert script.stdout.replace("__main__.py", "entur-oauth") == module.stdout


@pytest.mark.parametrize(
    "form", [["--client-secret", "hunter2-9b"], ["--client-secret=hunter2-9b"]]
)
@pytest.mark.slow
def test_no_client_secret_flag_exists(base_env: dict[str, str], form: list[str]) -> None:
    """A secret on the command line lands in shell history: there is no flag for it, and
    the refusal does not echo the value (nor is it taken for --client-secret-file)."""
    result = run("token", *form, env=base_env)
    assert result.returncode == 2
    assert "there is no --client-secret option" in result.stderr
    assert "hunter2-9b" not in result.stderr + result.stdout


# -- token -------------------------------------------------------------------------------


def test_token_prints_a_token_the_fake_issued(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """stdout is exactly the token (for $(...)), stderr is empty."""
    result = run("token", env=fake_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == entur_fake.all_issued_tokens[0] + "\n"
    assert result.stderr == ""


def test_token_header_prints_the_authorization_line(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """--header prints the whole header line, ready for curl -H."""
    result = run("token", "--header", "--no-cache", env=fake_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Authorization: Bearer {entur_fake.all_issued_tokens[0]}\n"


def test_token_is_reused_across_runs_through_the_cache_file(
    fake_env: dict[str, str], entur_fake: FakeEntur, tmp_path: Path
) -> None:
    """A second run (python -m, on trio) reuses the cached token; the cache file is private
    and holds no token."""
    first = run("token", env=fake_env)
    second = run("token", "--backend", "trio", env=fake_env, module=True)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert entur_fake.token_count == 1
    cache = tmp_path / "cache" / "entur-oauth" / "tokens.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert first.stdout.strip() not in cache.read_text()
    assert run("token", "--no-cache", env=fake_env).returncode == 0
    assert entur_fake.token_count == 2


HTTP_STACK = ("httpx2", "authlib", "anyio", "httpcore", "h11")


def imported_modules(importtime_stderr: str) -> set[str]:
    """The top-level modules ``python -X importtime`` reported importing."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_cached_token_path_imports_no_http_stack(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """With a fresh token in the cache file, 'token' prints it without importing httpx2,
    authlib or anyio; the first run (a cache miss) fetches through the client as before."""
    command = [sys.executable, "-X", "importtime", "-m", "entur_oauth", "token"]
    miss = subprocess.run(command, env=fake_env, capture_output=True, text=True, check=False)
    hit = subprocess.run(command, env=fake_env, capture_output=True, text=True, check=False)
    assert miss.returncode == hit.returncode == 0, hit.stderr
    assert miss.stdout == hit.stdout == entur_fake.all_issued_tokens[0] + "\n"
    assert entur_fake.token_count == 1
    assert {"httpx2", "authlib", "anyio"} <= imported_modules(miss.stderr)
    assert imported_modules(hit.stderr).isdisjoint(HTTP_STACK)
    assert "cryptography" in imported_modules(hit.stderr)  # the cache was unsealed


def test_cached_token_verbose_says_where_it_came_from(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """--verbose on the cached path logs the token's fingerprint and the cache file, never
    the token."""
    assert run("token", env=fake_env).returncode == 0
    result = run("token", "--verbose", env=fake_env)
    assert result.returncode == 0, result.stderr
    assert "read from FileTokenStore(" in result.stderr
    assert "no request made" in result.stderr
    assert entur_fake.token_count == 1
    assert_nothing_secret(entur_fake, result.stderr)


def test_cached_token_near_its_expiry_takes_the_client_path(
    fake_env: dict[str, str], entur_fake: FakeEntur, tmp_path: Path
) -> None:
    """A cached token 30 s from expiry is not printed by the fast path: the client renews
    it (one more token request), as it would without the fast path."""
    import anyio

    from entur_oauth._codec import TokenCodec, store_key
    from entur_oauth._file_store import FileTokenStore
    from entur_oauth._secrets import Secret
    from entur_oauth._token import Token

    first = run("token", env=fake_env)
    assert first.returncode == 0, first.stderr
    # Age the cached token: the same text, sealed again with 30 s left of a day's life.
    env = entur_fake.environment(fake_env["ENTUR_API_BASE_URL"])
    key = store_key(env.token_url, env.audience, entur_fake.client_id)
    aged = Token(
        first.stdout.strip(), expires_at=0.0, expires_at_wall=time.time() + 30, lifetime=86400
    )
    data = TokenCodec(Secret(entur_fake.client_secret), key).encode(aged)
    store = FileTokenStore(tmp_path / "cache" / "entur-oauth" / "tokens.json")
    anyio.run(partial(store.set, key, data, ttl=30))
    second = run("token", env=fake_env)
    assert second.returncode == 0, second.stderr
    assert entur_fake.token_count == 2
    assert second.stdout.strip() == entur_fake.all_issued_tokens[1]


@pytest.mark.slow
def test_token_help_recommends_header_with_a_file_descriptor(base_env: dict[str, str]) -> None:
    """'token --help' shows curl -H @<(entur-oauth token --header), never the form that puts
    the token on curl's command line."""
    result = run("token", "--help", env=base_env)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "curl -H @<(entur-oauth token --header)" in text
    assert "$(entur-oauth token)" not in text
    assert "Bearer $(" not in text


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("prod", "production"),
        ("produktion", "production"),
        ("stage", "staging"),
        ("stagin", "staging"),
        ("deb", "dev"),
        ("fake", None),
        ("acme-test", None),
    ],
)
def test_custom_environment_named_like_a_builtin_warns(
    fake_env: dict[str, str], entur_fake: FakeEntur, name: str, meant: str | None
) -> None:
    """'--environment prod' with ENTUR_TOKEN_URL & co. set uses the custom environment, and
    warns 'did you mean production?' when the name is one edit from a built-in one or a
    usual abbreviation; other custom names get no warning."""
    result = run("--environment", name, "token", "--no-cache", env=fake_env)
    assert result.returncode == 0, result.stderr
    assert entur_fake.token_count == 1  # the custom environment was used
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    if meant is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert f"did you mean {meant}?" in warnings[0]
        assert f"--environment {meant}" in warnings[0]


def test_token_cache_file_option(fake_env: dict[str, str], tmp_path: Path) -> None:
    """--cache-file puts the cache where the user says."""
    path = tmp_path / "elsewhere" / "t.json"
    assert run("token", "--cache-file", str(path), env=fake_env).returncode == 0
    assert path.exists()


def test_client_secret_file_replaces_the_variable(
    fake_env: dict[str, str], entur_fake: FakeEntur, tmp_path: Path
) -> None:
    """--client-secret-file reads the secret from a file (ENTUR_CLIENT_SECRET unset)."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(entur_fake.client_secret + "\n")
    secret_file.chmod(0o600)
    env = {k: v for k, v in fake_env.items() if k != "ENTUR_CLIENT_SECRET"}
    result = run("token", "--no-cache", "--client-secret-file", str(secret_file), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert entur_fake.token_requests[0].json()["client_secret"] == entur_fake.client_secret


def test_token_verbose_logs_only_fingerprints(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """--verbose logs the fetch at DEBUG to stderr, without the token or the secret."""
    result = run("--verbose", "token", "--no-cache", env=fake_env)
    assert result.returncode == 0
    assert "DEBUG" in result.stderr
    assert "fetched token" in result.stderr
    assert_nothing_secret(entur_fake, result.stderr)


# -- check -------------------------------------------------------------------------------


def test_check_describes_the_token_without_printing_it(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """check shows environment, client, audience, expiry, scopes, permissions and the API's
    verdict on the token, and never the token or the secret."""
    result = run("check", "--path", "/personalisation/v1/programs/1", "--verbose", env=fake_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "environment: fake",
        f"audience:    {entur_fake.audience}",
        "client id:   fake-client-id",
        "client name: acme-cli",
        "scopes:      test:read",
        "permissions: test:read",
        "(in 23 h 59 min)",
        "HTTP 200 OK: the API accepts the token",
    ):
        assert expected in out
    assert re.search(r"expires: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", out)
    assert_nothing_secret(entur_fake, result.stdout, result.stderr)


def test_check_fetches_a_fresh_token_despite_the_cache(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """check proves the credentials work now: it never answers from the token cache."""
    assert run("token", env=fake_env).returncode == 0
    assert run("check", env=fake_env).returncode == 0
    assert entur_fake.token_count == 2


def test_check_reports_a_forbidden_path_as_api_error(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """A 403 on --path exits 5 and says the client lacks permission."""
    result = run("check", "--path", "/forbidden/x", env=fake_env)
    assert result.returncode == 5
    assert "403 Forbidden" in result.stderr
    assert "next:" in result.stderr
    assert_nothing_secret(entur_fake, result.stdout, result.stderr)


# -- request -----------------------------------------------------------------------------


def test_request_sends_json_and_headers_and_pretty_prints(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """request sends the body, extra headers and the bearer; prints pretty JSON and status."""
    result = run(
        "request",
        "post",
        "/sales/v1/offers",
        "--json",
        '{"travellers": [1, 2]}',
        "--header",
        "Entur-POS: acme-web",
        "--header",
        "X-Correlation-Id:abc",
        env=fake_env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "path": "/sales/v1/offers",
        "client_name": "acme-cli",
        "authenticated": True,
    }
    assert result.stdout.startswith('{\n  "path"')  # indented
    assert result.stderr.startswith("HTTP 200 OK")
    (call,) = entur_fake.api_requests
    assert call.method == "POST"
    assert call.json() == {"travellers": [1, 2]}
    assert call.headers["entur-pos"] == "acme-web"
    assert call.headers["x-correlation-id"] == "abc"
    assert call.headers["authorization"].startswith("Bearer ")
    assert_nothing_secret(entur_fake, result.stderr)


def test_request_body_from_a_file_and_from_stdin(
    fake_env: dict[str, str], entur_fake: FakeEntur, tmp_path: Path
) -> None:
    """--json @FILE and --json - read the body from a file and from stdin."""
    body = tmp_path / "body.json"
    body.write_text('{"from": "file"}')
    assert run("request", "PUT", "/x", "--json", f"@{body}", env=fake_env).returncode == 0
    assert (
        run(
            "request", "PUT", "/x", "--json", "-", env=fake_env, stdin='{"from": "stdin"}'
        ).returncode
        == 0
    )
    assert [r.json() for r in entur_fake.api_requests] == [{"from": "file"}, {"from": "stdin"}]


def test_request_error_status_prints_the_body_and_exits_5(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """A 4xx/5xx answer is printed and exits 5; a 403 is named ForbiddenError's way."""
    entur_fake.fail_api(ScriptedResponse(503, json={"message": "down for maintenance"}))
    result = run("request", "GET", "/x", env=fake_env)
    assert result.returncode == 5
    assert "down for maintenance" in result.stdout
    assert "HTTP 503" in result.stderr
    forbidden = run("request", "GET", "/forbidden/x", env=fake_env)
    assert forbidden.returncode == 5
    assert "Token lacks permission" in forbidden.stdout
    assert "lacks permission for this endpoint" in forbidden.stderr
    assert_nothing_secret(entur_fake, result.stderr, forbidden.stdout, forbidden.stderr)


def test_request_without_credentials_is_an_open_api_call(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """Without ENTUR_CLIENT_ID/SECRET: no token request, no Authorization, a note on stderr."""
    env = {k: v for k, v in fake_env.items() if k not in {"ENTUR_CLIENT_ID", "ENTUR_CLIENT_SECRET"}}
    result = run("request", "GET", "/geocoder/v1/autocomplete?text=Oslo", env=env)
    assert result.returncode == 0, result.stderr
    assert "open API" in result.stderr
    assert entur_fake.token_count == 0
    (call,) = entur_fake.api_requests
    assert call.params == {"text": "Oslo"}
    assert "authorization" not in call.headers
    assert call.headers["et-client-name"] == "acme-cli"


# -- exit codes ----------------------------------------------------------------------------


CREDENTIALS_HINT = "next: Set ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET"
NAME_WAYS = "next: --client-name works too."
SECRET_WAYS = "next: --client-secret-file reads the secret from a file"


@pytest.mark.parametrize(
    ("args", "drop", "add", "expected", "hint"),
    [
        (["token"], {"ENTUR_CLIENT_NAME"}, {}, "set ENTUR_CLIENT_NAME to '<company>-", NAME_WAYS),
        (["check"], {"ENTUR_CLIENT_ID"}, {}, "ENTUR_CLIENT_ID", SECRET_WAYS),
        (
            ["token", "--environment", "nowhere"],
            CUSTOM,
            {},
            "--environment 'nowhere' is not one of Entur's environments (production, staging, "
            "dev). Set it to one of those, or set ENTUR_TOKEN_URL, ENTUR_AUDIENCE and "
            "ENTUR_API_BASE_URL",
            "",  # the message names both ways out: no next: line to repeat it
        ),
        (
            ["token"],
            {"ENTUR_TOKEN_URL"},
            {},
            "needs ENTUR_TOKEN_URL",
            "next: Set ENTUR_TOKEN_URL as well, or use --environment production|staging|dev",
        ),
        (
            ["token"],
            set(),
            {"ENTUR_TOKEN_URL": "http://auth.example.com/oauth/token"},
            "uses http://",
            "next: Give ENTUR_TOKEN_URL and ENTUR_API_BASE_URL as full https:// URLs",
        ),
        (
            ["token", "--client-secret-file", "/nonexistent/secret"],
            set(),
            {},
            "secret file",
            "next: Put only the client secret in the file",
        ),
        (
            ["token", "--client-secret-file", "/dev/null"],
            set(),
            {},
            "is empty",
            "next: Put only the client secret in the file",
        ),
        (["request", "GET", "/x", "--json", "{oops"], set(), {}, "not valid JSON", "next:"),
        (["request", "GET", "/x", "--header", "no-colon"], set(), {}, "'Name: value'", "next:"),
        (
            ["--client-name", "bad name", "token"],
            set(),
            {},
            "whitespace",
            "next: Set ENTUR_CLIENT_NAME (or --client-name) to '<company>-<application>'",
        ),
        (["demo", "--calls", "0"], set(), {}, "--calls", "next:"),
    ],
)
def test_configuration_errors_exit_2_and_say_what_to_do(
    fake_env: dict[str, str],
    entur_fake: FakeEntur,
    args: list[str],
    drop: set[str],
    add: dict[str, str],
    expected: str,
    hint: str,
) -> None:
    """Each configuration error exits 2, names the problem and the next step that fits its
    cause (a next: line only where it adds to the message, never repeating it), calls
    nobody."""
    env = {**{k: v for k, v in fake_env.items() if k not in drop}, **add}
    result = run(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert hint in result.stderr
    assert CREDENTIALS_HINT not in result.stderr
    _assert_next_adds_something(result.stderr, has_next=bool(hint))
    assert "Pass an Environment(" not in result.stderr
    assert result.stdout == ""
    assert entur_fake.token_count == 0


def _assert_next_adds_something(stderr: str, *, has_next: bool = True) -> None:
    """The next: line (if any) is no repeat of the error line above it."""
    lines = [line.removeprefix("entur-oauth: ") for line in stderr.splitlines()]
    hints = [line.removeprefix("next: ") for line in lines if line.startswith("next: ")]
    assert len(hints) == int(has_next), stderr
    if hints:
        error = lines[lines.index("next: " + hints[0]) - 1]
        assert hints[0] not in error
        # No clause of the hint says again what the message says.
        for clause in hints[0].rstrip(".").split(";"):
            assert clause.strip().lower() not in error.lower(), (clause, error)


def test_an_open_api_request_without_a_client_name_asks_for_the_name_only(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """'request' without credentials is an open-API call: with ENTUR_CLIENT_NAME missing
    too, it asks for that variable, not for a client id and secret."""
    env = {
        k: v
        for k, v in fake_env.items()
        if k not in {"ENTUR_CLIENT_ID", "ENTUR_CLIENT_SECRET", "ENTUR_CLIENT_NAME"}
    }
    result = run("request", "GET", "/geocoder/v1/autocomplete", env=env)
    assert result.returncode == 2, result.stderr
    assert "ENTUR_CLIENT_NAME" in result.stderr
    assert "ENTUR_CLIENT_ID" not in result.stderr
    assert "ENTUR_CLIENT_SECRET" not in result.stderr
    assert "--client-secret-file" not in result.stderr
    assert NAME_WAYS in result.stderr
    _assert_next_adds_something(result.stderr)
    assert entur_fake.token_count == 0


@pytest.mark.slow
def test_no_command_prints_usage_and_exits_2(base_env: dict[str, str]) -> None:
    """Bare 'entur-oauth': a short usage pointing at the demo and --help, exit 2."""
    result = run(env=base_env)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: entur-oauth")
    assert "entur-oauth demo" in result.stderr
    assert "entur-oauth --help" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("environment", ["staging", "Dev"])
def test_builtin_environment_wins_over_custom_variables_with_a_warning(
    fake_env: dict[str, str], entur_fake: FakeEntur, environment: str
) -> None:
    """--environment naming a built-in uses Entur's URLs for it, not ENTUR_TOKEN_URL & co.,
    and says so in one line; nothing reaches the fake the variables point at."""
    env = {**fake_env, "HTTPS_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9"}
    env.pop("ENTUR_CLIENT_NAME")  # stop at the configuration check: no network needed
    result = run("check", "--environment", environment, env=env)
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning == [
        f"entur-oauth: warning: --environment {environment} uses Entur's "
        f"{environment.lower()} URLs; ignoring ENTUR_TOKEN_URL, ENTUR_AUDIENCE, "
        "ENTUR_API_BASE_URL."
    ]
    assert result.returncode == 2
    assert entur_fake.token_count == 0


def test_builtin_environment_is_used_instead_of_custom_variables() -> None:
    """The settings the CLI builds for --environment staging are Entur staging's."""
    import argparse

    from entur_oauth._cli._output import Redactor as _Redactor
    from entur_oauth._cli._settings import load as _settings

    args = argparse.Namespace(environment="staging", client_name=None, client_secret_file=None)
    custom = {
        "ENTUR_CLIENT_ID": "id",
        "ENTUR_CLIENT_SECRET": "s",
        "ENTUR_CLIENT_NAME": "acme-app",
        "ENTUR_ENVIRONMENT": "fake",
        "ENTUR_TOKEN_URL": "http://127.0.0.1:1/oauth/token",
        "ENTUR_AUDIENCE": "https://api.entur.test",
        "ENTUR_API_BASE_URL": "http://127.0.0.1:1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in custom.items():
            mp.setenv(name, value)
        settings = _settings(args, _Redactor())
    assert not isinstance(settings.environment, str)
    assert settings.environment.name == "staging"
    assert settings.environment.token_url == "https://partner.staging.entur.org/oauth/token"


def test_rejected_credentials_exit_3(
    fake_env: dict[str, str], entur_fake: FakeEntur, tmp_path: Path
) -> None:
    """A wrong secret (here from a file) exits 3 with what to check; the secret is not shown."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("wrong-secret-5d1f")
    for command in (["token"], ["check"], ["request", "GET", "/x"]):
        result = run(*command, "--client-secret-file", str(secret_file), env=fake_env)
        assert result.returncode == 3, result.stderr
        assert "credentials rejected" in result.stderr
        assert "ENTUR_CLIENT_SECRET" in result.stderr
        assert "wrong-secret-5d1f" not in result.stderr + result.stdout
    assert "readable by other users" in result.stderr  # the file was created 0644


def test_token_endpoint_failure_exits_4(fake_env: dict[str, str], entur_fake: FakeEntur) -> None:
    """503 on every attempt: exit 4 after the client's retries, and the advice to retry."""
    entur_fake.fail_token(503, times=3)
    result = run("token", "--no-cache", env=fake_env)
    assert result.returncode == 4
    assert "token request failed" in result.stderr
    assert "next: Try again" in result.stderr
    assert entur_fake.token_count == 3


@pytest.mark.slow
def test_unreachable_token_endpoint_exits_4(base_env: dict[str, str]) -> None:
    """Nothing listening at the token URL: exit 4 with network advice."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        env = {
            **base_env,
            **FakeEntur().env(f"http://127.0.0.1:{port}"),
        }
        result = run("check", env=env)
    assert result.returncode == 4
    assert "check the network" in result.stderr


def test_unreachable_api_exits_4(fake_env: dict[str, str]) -> None:
    """A transport error on the API call itself (an open-API request) also exits 4."""
    env = {k: v for k, v in fake_env.items() if k not in {"ENTUR_CLIENT_ID", "ENTUR_CLIENT_SECRET"}}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        env["ENTUR_API_BASE_URL"] = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = run("request", "GET", "/geocoder/v1/autocomplete", env=env)
    assert result.returncode == 4
    assert "network error" in result.stderr


# -- demo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "server"), [("asyncio", "uvicorn"), ("trio", "builtin")])
@pytest.mark.slow
def test_demo_without_credentials_shows_the_whole_story(
    base_env: dict[str, str], backend: str, server: str
) -> None:
    """The demo runs the real client against the embedded fake and shows one fetch for many
    calls, reuse, renewal, one re-fetch after 401s, and ForbiddenError; nothing secret."""
    result = run("demo", "--backend", backend, "--server", server, "--calls", "50", env=base_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"event loop: {backend}; server: {server}" in out
    assert "1. 50 concurrent first calls\n   -> 50 x 200 OK; token requests: 1" in out
    assert "2. 50 more calls\n   -> 50 x 200 OK; token requests: 0" in out
    assert "-> 1 x 200 OK; token requests: 1 (renewed before it expired: no 401 seen)" in out
    assert (
        "-> 50 x 401 Unauthorized, retried with a new token: 50 x 200 OK; token requests: 1" in out
    )
    assert "raised ForbiddenError (HTTP 403)" in out
    assert "In all: 202 API requests, 3 token requests, 3 distinct tokens" in out
    assert "ET-Client-Name on every request, token requests included: yes" in out
    assert not JWT.search(out + result.stderr)
    assert not FAKE_SECRET.search(out + result.stderr)


def test_demo_with_environment_uses_the_configured_entur(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """--environment switches to the real-Entur path: here a custom environment pointing
    at the loopback fake, so the path is tested without leaving the machine."""
    result = run("demo", "--environment", "fake", "--path", "/forbidden/x", env=fake_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "against Entur 'fake'" in out
    assert "50 concurrent get_access_token() calls\n   -> token requests: 1" in out
    assert "the cached token was reused" in out
    assert "one re-fetch for all" in out
    assert "raised ForbiddenError (HTTP 403)" in out
    assert entur_fake.token_count == 2
    assert_nothing_secret(entur_fake, out, result.stderr)


def test_demo_with_environment_exits_5_when_the_path_fails(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """A non-2xx answer (not 403) to --path: exit 5 with what failed and what to do next."""
    entur_fake.fail_api(404)
    result = run("demo", "--environment", "fake", "--path", "/nothing/here", env=fake_env)
    assert result.returncode == 5, result.stderr
    assert "-> HTTP 404 Not Found" in result.stdout
    assert "entur-oauth: API: GET /nothing/here -> HTTP 404 Not Found." in result.stderr
    assert "entur-oauth: next: " in result.stderr
    assert_nothing_secret(entur_fake, result.stdout, result.stderr)


@pytest.mark.slow
def test_demo_for_staging_without_credentials_exits_2_before_any_network(
    base_env: dict[str, str],
) -> None:
    """--environment staging needs ENTUR_* credentials; without them: exit 2, no request."""
    env = {**base_env, "HTTPS_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9"}
    result = run("demo", "--environment", "staging", env=env)
    assert result.returncode == 2
    assert "ENTUR_CLIENT_ID" in result.stderr


def test_demo_warns_that_credentials_are_unused_without_environment(
    fake_env: dict[str, str], entur_fake: FakeEntur
) -> None:
    """ENTUR_* set but no --environment: the demo still uses its own fake, and says so."""
    result = run("demo", "--calls", "5", env=fake_env)
    assert result.returncode == 0
    assert "not used" in result.stderr
    assert entur_fake.token_count == 0


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="runs the hint in a POSIX shell")
@pytest.mark.parametrize("how", ["script-on-path", "script-off-path", "nox-demo"])
def test_demo_next_hint_is_a_command_the_shell_runs(base_env: dict[str, str], how: str) -> None:
    """The demo's closing "Next:" command runs as printed, from the same folder, in the
    user's shell: the console script when the user's PATH finds this installation's, else
    this interpreter with -m. ``nox -s demo`` puts the session's bin folder on the PATH of
    what it runs (and sets NOX_CURRENT_SESSION), not on the user's. Without credentials the
    command gets as far as asking for them (exit 2), before any network."""
    bin_dir = Path(sys.executable).absolute().parent
    users_path = (
        f"{bin_dir}{os.pathsep}/usr/bin:/bin" if how == "script-on-path" else "/usr/bin:/bin"
    )
    users_env = {**base_env, **NO_NETWORK, "PATH": users_path}
    users_env.pop("NOX_CURRENT_SESSION", None)
    demo_env = dict(users_env)
    if how == "nox-demo":
        demo_env.update(PATH=f"{bin_dir}{os.pathsep}{users_path}", NOX_CURRENT_SESSION="demo")
    cwd = bin_dir.parents[1]  # the folder holding the environment, as a clone holds .nox
    demo = subprocess.run(
        [sys.executable, "-m", "entur_oauth", "demo", "--calls", "3", "--server", "builtin"],
        cwd=cwd,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Next:"))
    hint = lines[start + 2].strip()
    assert hint.endswith(" demo --environment staging"), hint
    if how == "script-on-path":
        assert hint.startswith("entur-oauth demo")
    else:
        assert hint.startswith(f"{bin_dir.relative_to(cwd)}/python -m entur_oauth demo"), hint
    ran = subprocess.run(
        ["/bin/sh", "-c", hint],
        cwd=cwd,
        env=users_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 2, ran.stderr
    assert "ENTUR_CLIENT_ID" in ran.stderr


# -- fake-server ---------------------------------------------------------------------------


class ServerProcess:
    """``entur-oauth fake-server`` in a subprocess, with its stdout read in the background."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [str(SCRIPT), "fake-server", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def variables(self, timeout: float = 20) -> dict[str, str]:
        """Wait for the banner and return the exported variables."""
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                found[name] = value
            if "Ctrl+C" in line:
                return found

    def stop(self) -> tuple[int, str]:
        """SIGTERM it; return its exit code and stderr."""
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=20)
        return self.process.returncode, stderr


@pytest.fixture
def server_process() -> Iterator[list[ServerProcess]]:
    """Fake servers started by a test, killed if the test did not stop them."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.communicate()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
@pytest.mark.parametrize("server", ["uvicorn", "builtin"])
@pytest.mark.slow
def test_fake_server_serves_the_commands_and_stops_cleanly(
    base_env: dict[str, str], server_process: list[ServerProcess], server: str
) -> None:
    """fake-server prints the variables; token and request work against it; SIGTERM stops
    it with exit 0; its access log names each request."""
    proc = ServerProcess("--port", "0", "--server", server, "--expires-in", "600", env=base_env)
    server_process.append(proc)
    variables = proc.variables()
    assert set(variables) == {
        "ENTUR_API_BASE_URL",
        "ENTUR_AUDIENCE",
        "ENTUR_CLIENT_ID",
        "ENTUR_CLIENT_NAME",
        "ENTUR_CLIENT_SECRET",
        "ENTUR_ENVIRONMENT",
        "ENTUR_TOKEN_URL",
    }
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", variables["ENTUR_API_BASE_URL"])
    env = {**base_env, **variables}
    token = run("token", env=env)
    assert token.returncode == 0, token.stderr
    trip = run(
        "request",
        "POST",
        "/journey-planner/v3/graphql",
        "--json",
        '{"query": "{ trip { tripPatterns { duration } } }"}',
        env=env,
    )
    assert trip.returncode == 0, trip.stderr
    assert json.loads(trip.stdout)["data"]["trip"]["tripPatterns"][0]["duration"] > 0
    check = run("check", env=env)
    assert re.search(r"\(in (9|10) min", check.stdout), check.stdout  # --expires-in 600
    code, stderr = proc.stop()
    assert code == 0
    assert "POST /oauth/token -> 200" in stderr
    assert "POST /journey-planner/v3/graphql -> 200" in stderr
    assert "Fake Entur stopped." in stderr
    assert token.stdout.strip() not in stderr


@pytest.mark.slow
def test_fake_server_on_a_taken_port_exits_2(base_env: dict[str, str]) -> None:
    """A port in use: exit 2 and the advice to pick another."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        result = run("fake-server", "--port", str(sock.getsockname()[1]), env=base_env)
    assert result.returncode == 2
    assert "--port" in result.stderr


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "http"])
@pytest.mark.slow
def test_fake_server_rejects_an_impossible_port(base_env: dict[str, str], port: str) -> None:
    """A port outside 0..65535: exit 2 with argparse's message, no traceback."""
    result = run("fake-server", f"--port={port}", env=base_env)
    assert result.returncode == 2
    assert "is not a port number: give 0 to 65535" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_fake_server_refuses_a_non_loopback_host(base_env: dict[str, str]) -> None:
    """The fake never listens beyond loopback, and refuses before it binds: with the port
    taken on 127.0.0.1, binding 0.0.0.0 would fail as "in use"; the refusal names the host."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = str(sock.getsockname()[1])
        result = run("fake-server", "--host", "0.0.0.0", "--port", port, env=base_env)
    assert result.returncode == 2
    assert "'0.0.0.0' is not a loopback address" in result.stderr
    assert "Use 127.0.0.1 or ::1" in result.stderr
    assert "cannot listen" not in result.stderr


@pytest.fixture
def no_binding(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every address a socket of this process is bound to (and refuse it)."""
    bound: list[object] = []

    def bind(self: socket.socket, address: object) -> None:
        bound.append(address)
        raise AssertionError(f"bound {address!r}")

    monkeypatch.setattr(socket.socket, "bind", bind)
    return bound


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org", "[::]"])
def test_fake_server_refuses_a_non_loopback_host_before_binding(
    host: str, no_binding: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process: the refusal comes from the argument parser; no socket was ever bound."""
    from entur_oauth._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fake-server", "--host", host, "--port", "0"])
    assert exit_info.value.code == 2
    assert f"{host!r} is not a loopback address" in capsys.readouterr().err
    assert no_binding == []


@pytest.mark.parametrize(
    ("argv", "option", "why"),
    [
        (["fake-server", "--environment", "staging"], "--environment", "ENTUR_ENVIRONMENT=fake"),
        (["--environment", "staging", "fake-server"], "--environment", "ENTUR_ENVIRONMENT=fake"),
        (["fake-server", "--backend", "trio"], "--backend", "--server"),
        (["--backend", "asyncio", "fake-server"], "--backend", "--server"),
        (["fake-server", "--client-secret-file", "s.txt"], "--client-secret-file", "its own"),
        (["--client-secret-file", "s.txt", "fake-server"], "--client-secret-file", "its own"),
    ],
)
def test_fake_server_refuses_options_that_do_not_apply(
    argv: list[str],
    option: str,
    why: str,
    no_binding: list[object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Client options, before or after the command name: exit 2 naming the option and why,
    before anything is bound (it used to take them silently and print ENTUR_ENVIRONMENT=fake)."""
    from entur_oauth._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--port", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"fake-server does not take {option}:" in err
    assert why in err
    assert "Traceback" not in err
    assert no_binding == []


def test_fake_server_help_lists_only_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    """``fake-server --help`` shows --client-name and --verbose, not the client's options;
    the other commands still list them, and --backend still defaults to asyncio there."""
    from entur_oauth._cli import build_parser, main

    with pytest.raises(SystemExit):
        main(["fake-server", "--help"])
    out = capsys.readouterr().out
    assert "--client-name" in out
    assert "--verbose" in out
    for option in ("--environment", "--backend", "--client-secret-file"):
        assert option not in out
    with pytest.raises(SystemExit):
        main(["token", "--help"])
    assert "--backend" in capsys.readouterr().out
    assert build_parser(["token"]).parse_args(["token"]).backend == "asyncio"
    assert build_parser(["token"]).parse_args(["--backend", "trio", "token"]).backend == "trio"
    assert build_parser(["token"]).parse_args(["token", "--backend", "trio"]).backend == "trio"


# -- in-process (the same code paths, measured by coverage) ------------------------------


@pytest.mark.slow
def test_main_in_process_runs_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """main() returns the exit code instead of exiting; the demo runs in-process too."""
    from entur_oauth._cli import main

    assert main(["demo", "--calls", "3", "--server", "builtin"]) == 0
    out = capsys.readouterr().out
    assert "3 concurrent first calls\n   -> 3 x 200 OK; token requests: 1" in out
    assert not JWT.search(out)


def test_main_in_process_commands_and_exit_codes(
    entur_fake: FakeEntur,
    entur_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """token, check and request in-process, and each exit code from 0 to 5."""
    from entur_oauth._cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["token", "--header"]) == 0
    assert capsys.readouterr().out.startswith("Authorization: Bearer ey")
    assert main(["check", "--path", "/x", "--verbose"]) == 0
    assert main(["request", "GET", "/x", "--header", "A: b"]) == 0
    entur_fake.fail_api(404)
    assert main(["check", "--path", "/x"]) == 5  # not refused, but not found either
    assert main(["request", "GET", "/forbidden/x"]) == 5
    entur_fake.fail_token(503, times=3)
    assert main(["check"]) == 4
    monkeypatch.setenv("ENTUR_CLIENT_SECRET", "nope")
    assert main(["check"]) == 3
    monkeypatch.delenv("ENTUR_CLIENT_NAME")
    assert main(["token"]) == 2
    captured = capsys.readouterr()
    assert_nothing_secret(entur_fake, captured.err)
    assert "nope" not in captured.err


def test_redactor_removes_secrets_bearer_tokens_and_jwts() -> None:
    """The --verbose filter and error printer redact what must never be shown."""
    from entur_oauth._cli._output import Redactor as _Redactor

    redactor = _Redactor()
    redactor.add("s3cret-value")
    text = redactor.redact(
        "secret=s3cret-value auth='Bearer abc.def-ghi' jwt=eyJhbGciOi.eyJzdWIiOi.sig end"
    )
    assert text == ("secret=[redacted] auth='Bearer [redacted]' jwt=[redacted] end")


def test_environment_is_resolved_once_per_call(
    entur_fake: FakeEntur,
    entur_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """One CLI call looks the environment up once: the settings hand the client an
    Environment, not a name to look up again (in-process, counting the look-ups)."""
    import entur_oauth._environments
    import entur_oauth._settings
    from entur_oauth._cli import main

    looked_up: list[str] = []
    real = entur_oauth._environments.get_environment

    def counting(name: str) -> entur_oauth._environments.Environment:
        looked_up.append(name)
        return real(name)

    monkeypatch.setattr(entur_oauth._settings, "get_environment", counting)
    monkeypatch.setattr(entur_oauth._environments, "get_environment", counting)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for argv in (["token", "--no-cache"], ["token"], ["check"], ["request", "GET", "/x"]):
        looked_up.clear()
        assert main(argv) == 0, capsys.readouterr().err
        assert looked_up == ["fake"], argv
    looked_up.clear()
    monkeypatch.delenv("ENTUR_CLIENT_NAME")  # stop before the network
    assert main(["--environment", "staging", "token"]) == 2
    assert looked_up == ["staging"]


def test_client_name_warning_is_shown_once(fake_env: dict[str, str], entur_fake: FakeEntur) -> None:
    """A client name of the wrong form is checked once per call: one warning line, and
    the command still works."""
    result = run("--client-name", "AcmeApp", "token", "--no-cache", env=fake_env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "'AcmeApp' is not of the form '<company>-<application>'" in warnings[0]


@pytest.mark.slow
def test_version_option_reads_the_metadata(base_env: dict[str, str]) -> None:
    """--version prints the installed version (read only when asked)."""
    from importlib.metadata import version

    result = run("--version", env=base_env)
    assert result.returncode == 0
    assert result.stdout == f"entur-oauth {version('entur-oauth')}\n"


@pytest.mark.slow
def test_unknown_environment_suggests_the_builtin_one(base_env: dict[str, str]) -> None:
    """'--environment prod' without custom variables is an unknown environment (exit 2),
    and the message suggests production."""
    # (A one-letter secret would blank that letter everywhere in the message.)
    env = {**base_env, "ENTUR_CLIENT_ID": "id", "ENTUR_CLIENT_SECRET": "s3cret-value"}
    result = run("--environment", "prod", "token", env={**env, "ENTUR_CLIENT_NAME": "a-b"})
    assert result.returncode == 2
    assert "--environment 'prod' is not one of Entur's environments" in result.stderr
    assert "did you mean production?" in result.stderr


class _EchoingAPI(BaseHTTPRequestHandler):
    """An API that quotes the Authorization it got, in a header and the body: 403 on
    /forbid, 500 elsewhere."""

    def do_GET(self) -> None:
        sent = self.headers.get("Authorization", "")
        body = json.dumps({"message": f"you sent {sent}"}).encode()
        self.send_response(403 if self.path.startswith("/forbid") else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Echo", sent)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("path", ["/forbid", "/broken"])
def test_request_prints_an_api_error_echoing_the_token_redacted(
    fake_env: dict[str, str], entur_fake: FakeEntur, path: str, backend: str
) -> None:
    """An API answering 403 (ForbiddenError) or 500 with the bearer it got quoted in the
    body: ``request`` prints the body with ``[redacted]`` in its place, and the token
    nowhere."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**fake_env, "ENTUR_API_BASE_URL": f"http://127.0.0.1:{server.server_port}"}
        result = run("request", "GET", path, "--backend", backend, env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 5
    assert "you sent Bearer [redacted]" in result.stdout
    assert entur_fake.all_issued_tokens
    assert_nothing_secret(entur_fake, result.stdout, result.stderr)
