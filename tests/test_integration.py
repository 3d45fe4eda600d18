"""Integration over real loopback sockets: uvicorn serving the fake Entur."""

from __future__ import annotations

import anyio
import pytest

from entur_oauth import EnturClient, ForbiddenError
from entur_oauth.testing import FakeEntur

from .conftest import LoopbackServer

pytestmark = pytest.mark.anyio


def _client(fake: FakeEntur, url: str, **kwargs: object) -> EnturClient:
    return EnturClient(
        fake.client_id,
        fake.client_secret,
        client_name="test-app",
        environment=fake.environment(url),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_200_concurrent_first_requests_make_one_token_request(
    loopback_fake: tuple[FakeEntur, str],
) -> None:
    """200 concurrent first calls over a real socket share one token fetch."""
    fake, url = loopback_fake
    statuses: list[int] = []
    # Half the calls queue for one of httpx's 100 pooled connections; 30 s rather than the
    # default 5 s pool timeout keeps a loaded CI machine from turning the queue into errors.
    async with _client(fake, url, timeout=30) as client:

        async def call() -> None:
            statuses.append((await client.get("/x")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(call)
    assert statuses == [200] * 200
    assert fake.token_count == 1


async def test_loopback_http_api_gets_the_token_and_other_ports_do_not(
    loopback_fake: tuple[FakeEntur, str],
) -> None:
    """The environment's own http:// loopback base gets the bearer; another port does not."""
    fake, url = loopback_fake
    other = FakeEntur()
    with LoopbackServer(other) as elsewhere:
        async with _client(fake, url) as client:
            assert (await client.get("/x")).json()["authenticated"] is True
            response = await client.get(f"{elsewhere.url}/x")
    assert response.status_code == 401  # the other server saw no token
    assert "authorization" not in other.api_requests[0].headers
    assert fake.api_requests[0].headers["authorization"].startswith("Bearer ")


async def test_refetch_and_errors_over_sockets(loopback_fake: tuple[FakeEntur, str]) -> None:
    """401 -> one new token and a retry; 403 -> ForbiddenError; streaming works too."""
    fake, url = loopback_fake
    async with _client(fake, url) as client:
        await client.get("/x")
        fake.revoke_all()
        async with client.stream("GET", "/x") as response:
            assert response.status_code == 200
            await response.aread()
        with pytest.raises(ForbiddenError):
            await client.get("/forbidden")
    assert fake.token_count == 2
