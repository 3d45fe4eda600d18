"""No secret in any repr or message; no noise from failed or closed clients."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest

from entur_oauth import EnturClient, Secret
from entur_oauth.testing import FakeEntur

pytestmark = pytest.mark.anyio

SENTINEL_SECRET = "SENTINEL-SECRET-7f3a"


async def test_repr_shows_environment_and_client_id_only() -> None:
    """repr(client) names the environment and client id, never the secret or token."""
    fake = FakeEntur(client_secret=SENTINEL_SECRET)
    async with fake.client() as client:
        token = await client.get_access_token()
        texts = [repr(client), str(client), repr(client._manager.token), repr(vars(client))]  # type: ignore[union-attr]
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


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
