"""Live smoke test against the real Entur (staging by default).

Opt-in: set ENTUR_LIVE=1 and ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET, ENTUR_CLIENT_NAME (and
optionally ENTUR_ENVIRONMENT, default staging). Skipped otherwise, so no ordinary test run
ever reaches Entur.
"""

from __future__ import annotations

import os

import pytest

from entur_oauth import EnturClient

# Read at import: the autouse fixture clears ENTUR_* variables before each test runs.
LIVE = {
    name: os.environ.get(name, "")
    for name in (
        "ENTUR_LIVE",
        "ENTUR_CLIENT_ID",
        "ENTUR_CLIENT_SECRET",
        "ENTUR_CLIENT_NAME",
        "ENTUR_ENVIRONMENT",
    )
}

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.live,
    pytest.mark.skipif(
        LIVE["ENTUR_LIVE"] != "1"
        or not all(
            LIVE[k] for k in ("ENTUR_CLIENT_ID", "ENTUR_CLIENT_SECRET", "ENTUR_CLIENT_NAME")
        ),
        reason="live: set ENTUR_LIVE=1, ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET, ENTUR_CLIENT_NAME",
    ),
]


async def test_live_token_is_fetched_once_and_reused() -> None:
    """The real token endpoint issues a token with a life near 24 h, reused on the next call."""
    client = EnturClient(
        LIVE["ENTUR_CLIENT_ID"],
        LIVE["ENTUR_CLIENT_SECRET"],
        client_name=LIVE["ENTUR_CLIENT_NAME"],
        environment=LIVE["ENTUR_ENVIRONMENT"] or "staging",
    )
    async with client:
        first = await client.get_access_token()
        assert first == await client.get_access_token()
        manager = client._manager
        assert manager is not None
        assert manager.current is not None
        assert manager.current.lifetime > 3600
        assert manager.fetches == 1


async def test_live_open_api_call() -> None:
    """An open-API call (Geocoder) succeeds with ET-Client-Name only."""
    async with EnturClient(
        client_name=LIVE["ENTUR_CLIENT_NAME"], environment=LIVE["ENTUR_ENVIRONMENT"] or "staging"
    ) as client:
        response = await client.get(
            "/geocoder/v1/autocomplete", params={"text": "Oslo S", "size": 1}
        )
    assert response.status_code == 200
