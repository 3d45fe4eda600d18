"""Integration: the real client over a real loopback socket."""

from __future__ import annotations

import anyio
import pytest

from entur_oauth import EnturClient
from entur_oauth.testing import FakeEntur

pytestmark = pytest.mark.anyio


async def test_two_hundred_concurrent_first_requests_make_one_token_request(
    loopback_fake: tuple[FakeEntur, str],
) -> None:
    """200 concurrent first calls over a real socket share one token fetch."""
    fake, url = loopback_fake
    async with EnturClient(
        fake.client_id,
        fake.client_secret,
        client_name="test-app",
        environment=fake.environment(url),
    ) as client:
        statuses: list[int] = []

        async def call() -> None:
            statuses.append((await client.get("/x")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(call)
    assert statuses == [200] * 200
    assert fake.token_count == 1
