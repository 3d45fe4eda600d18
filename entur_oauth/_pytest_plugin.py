"""pytest fixtures for testing code that uses entur_oauth, registered through ``pytest11``.

Every fixture is synchronous, so it serves tests run by anyio's plugin, pytest-asyncio or
pytest-trio alike. See :mod:`entur_oauth.testing` for what the fake can do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from entur_oauth import EnturClient
    from entur_oauth.testing import FakeClock, FakeEntur

# entur_oauth is imported inside the fixtures: this module is loaded by every pytest run
# in an environment where entur-oauth is installed, and most of those never use it.


@pytest.fixture
def entur_clock() -> FakeClock:
    """A fake clock for the fake Entur and the client: ``entur_clock.advance(86400)``
    expires every token without sleeping; retry back-offs pass at once (``autojump``). It
    starts at the real time and moves only when told to (or when the client sleeps on it).
    """
    from entur_oauth.testing import FakeClock

    # Start at the real time, so a client on the real clock (from_env, a subprocess) and
    # the fake agree on what a token's ``exp`` means.
    return FakeClock(autojump=True)


@pytest.fixture
def entur_fake(entur_clock: FakeClock) -> FakeEntur:
    """A fresh fake Entur on ``entur_clock``: count token requests, read the headers of
    each call, script failures, revoke tokens. Use it in-process (``entur_client``,
    ``entur_fake.client()``) or on a loopback port (``entur_fake_url``, ``entur_env``).
    """
    from entur_oauth.testing import FakeEntur

    return FakeEntur(clock=entur_clock)


@pytest.fixture
def entur_client(entur_fake: FakeEntur, entur_clock: FakeClock) -> EnturClient:
    """An ``EnturClient`` with the fake's credentials, wired to ``entur_fake`` in-process
    (no sockets) and on ``entur_clock``. Use it as is, or in ``async with``.
    """
    return entur_fake.client(clock=entur_clock)


@pytest.fixture
def entur_fake_url(entur_fake: FakeEntur) -> Iterator[str]:
    """``entur_fake`` served on a real loopback port for this test; its base URL."""
    with entur_fake.serve() as url:
        yield url


@pytest.fixture
def entur_env(
    entur_fake: FakeEntur, entur_fake_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Point the ``ENTUR_*`` variables at ``entur_fake_url`` for this test, so code that
    calls ``EnturClient.from_env()`` (or a subprocess given ``os.environ``) talks to the fake.
    Returns the variables that were set.
    """
    variables = entur_fake.env(entur_fake_url)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables
