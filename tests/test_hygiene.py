"""No secret in any repr or message; no noise from failed or closed clients."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import traceback

import pytest

import entur_oauth
from entur_oauth import (
    EnturClient,
    InvalidCredentialsError,
    RetryPolicy,
    Secret,
    TokenRequestError,
)
from entur_oauth.testing import FakeEntur, ScriptedResponse

pytestmark = pytest.mark.anyio

SENTINEL_SECRET = "SENTINEL-SECRET-7f3a"


@pytest.mark.slow
async def test_repr_shows_environment_and_client_id_only() -> None:
    """repr(client) names the environment and client id, never the secret or token."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    async with fake.client() as client:
        token = await client.get_access_token()
        texts = [repr(client), str(client), repr(client._manager.current), repr(vars(client))]  # type: ignore[union-attr]
    assert "environment='fake'" in texts[0]
    assert "client_id='fake-client-id'" in texts[0]
    for text in texts:
        assert SENTINEL_SECRET not in text
        assert token not in text


def test_secret_is_redacted_everywhere() -> None:
    """Secret hides its value from repr, str, format and pickling."""
    secret = Secret(SENTINEL_SECRET)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret):  # noqa: UP031
        assert SENTINEL_SECRET not in text
    assert secret.reveal() == SENTINEL_SECRET
    with pytest.raises(TypeError):
        pickle.dumps(secret)


#: -X dev turns on asyncio's debug mode, which logs a WARNING for any step that takes over
#: 100 ms: on a loaded CI machine a first import or TLS context does, and that line is the
#: machine's noise, not ours. Its ERRORs (a task destroyed while pending, an exception never
#: retrieved) still show.
_QUIET_SLOW_STEPS = 'import logging; logging.getLogger("asyncio").setLevel(logging.ERROR)\n'


def _run(code: str) -> subprocess.CompletedProcess[str]:
    source = _QUIET_SLOW_STEPS + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", source],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_failed_construction_leaves_no_noise() -> None:
    """A client whose construction fails prints no 'Exception ignored' and no warning."""
    result = _run(
        """
        import gc
        from entur_oauth import EnturClient, ConfigurationError
        for kwargs in ({"client_name": ""}, {"client_name": "a-b", "environment": "nope"},
                       {"client_name": "a-b", "timout": 1}):
            try:
                EnturClient("id", "secret", **kwargs)
            except ConfigurationError:
                pass
        gc.collect()
        print("done")
        """
    )
    assert result.stdout.strip() == "done"
    assert result.stderr == ""


@pytest.mark.slow
def test_closed_and_dropped_clients_leave_no_noise() -> None:
    """Used, closed and garbage-collected clients leave nothing on stderr."""
    result = _run(
        """
        import gc, anyio
        from entur_oauth.testing import FakeEntur
        async def main():
            fake = FakeEntur()
            async with fake.client() as client:
                await client.get("/x")
            unused = fake.client()
            del unused
        anyio.run(main)
        anyio.run(main, backend="trio")
        gc.collect()
        print("done")
        """
    )
    assert result.stdout.strip() == "done"
    assert result.stderr == ""


def test_client_secret_attribute_is_not_plain_text() -> None:
    """authlib's client_secret attribute holds a Secret, not the bare string."""
    client = EnturClient("id", SENTINEL_SECRET, client_name="acme-app")
    assert isinstance(client.client_secret, Secret)
    assert SENTINEL_SECRET not in repr(vars(client))


def _entur_frame_locals(error: BaseException) -> str:
    """Return the locals of entur_oauth's frames on the traceback of ``error`` and of every
    exception chained to it, as a tool that captures locals (Sentry, ``pytest -l``) shows
    them, plus each exception's message."""
    package = os.path.dirname(entur_oauth.__file__) + os.sep
    texts: list[str] = []
    pending: list[traceback.TracebackException | None] = [
        traceback.TracebackException(type(error), error, error.__traceback__, capture_locals=True)
    ]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts.append("".join(current.format_exception_only()))
        frames = [f for f in current.stack if f.filename.startswith(package)]
        texts += [f"{f.name}: {f.locals}" for f in frames]
        pending += [current.__cause__, current.__context__]
    return "\n".join(texts)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (None, InvalidCredentialsError),  # the fake rejects the (wrong) secret: 401
        (ScriptedResponse(500, body=b"Internal Server Error"), TokenRequestError),
    ],
)
async def test_secret_is_not_in_captured_frame_locals(
    script: ScriptedResponse | None, expected: type[TokenRequestError]
) -> None:
    """A failed token request leaves the secret in no local of our frames on its traceback."""
    fake = FakeEntur()
    if script is not None:
        fake.fail_token(script)
    async with fake.client(client_secret=SENTINEL_SECRET, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(expected) as info:
            await client.get("/x")
    text = _entur_frame_locals(info.value)
    # The token path's boundary, the frame the error is raised from, is looked at (the
    # parser's frames, which held the raw body, are no longer on the traceback at all).
    assert "<Grant client_credentials" in text
    assert SENTINEL_SECRET not in text


async def test_secret_echoed_by_the_token_endpoint_is_still_redacted() -> None:
    """The wrapped secret is still found and blanked in the error_description an error
    quotes (the only part of a body that is quoted), escaped or not."""
    described = f"bad request {SENTINEL_SECRET}, q={SENTINEL_SECRET}%2F"
    echo = json.dumps({"error": "invalid_request", "error_description": described})
    fake = FakeEntur()
    fake.fail_token(
        ScriptedResponse(500, body=echo.encode(), headers={"content-type": "application/json"})
    )
    async with fake.client(client_secret=SENTINEL_SECRET, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(TokenRequestError, match="redacted") as info:
            await client.get("/x")
    assert SENTINEL_SECRET not in str(info.value)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_license_file_is_mit_and_packaged() -> None:
    """The repository has the MIT LICENSE that pyproject.toml declares and ships."""
    import tomllib

    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as file:
        text = file.read()
    assert text.startswith("MIT License")
    assert "WITHOUT WARRANTY OF ANY KIND" in text
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        project = tomllib.load(file)["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]


def test_version_is_written_in_one_place() -> None:
    """pyproject.toml holds the version; the package reads it from the metadata and no
    module of entur_oauth spells a version of its own."""
    import re
    import tomllib
    from importlib.metadata import version

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        declared = tomllib.load(file)["project"]["version"]
    assert entur_oauth.__version__ == version("entur-oauth") == declared
    package = os.path.dirname(entur_oauth.__file__)
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as file:
                    source = file.read()
                assert not re.search(r"__version__\s*=\s*['\"]", source), name
                assert declared not in source, name
