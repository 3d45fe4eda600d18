"""One token fetch per fleet: 16 real processes against the fake Entur on a loopback port.

Each worker (tests/fleet_worker.py) is a separate Python process with a real EnturClient;
half run on asyncio and half on trio, so every store is exercised on both event loops in
the same fleet. They are released at one instant, after all have started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from entur_oauth import EnturClient
from entur_oauth.testing import FakeEntur

from .conftest import LoopbackServer
from .fleet_worker import run_fleet

pytest_plugins = ["tests.redis_fixture"]

FLEET = 16


def fleet_configs(fake: FakeEntur, url: str, store: str, target: str = "") -> list[dict[str, Any]]:
    """Configs for FLEET workers sharing one store, alternating asyncio and trio."""
    return [
        {
            "base_url": url,
            "audience": fake.audience,
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "backend": "asyncio" if i % 2 == 0 else "trio",
            "store": store,
            "target": target,
        }
        for i in range(FLEET)
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("store", "expected_fetches"),
    [("memory", FLEET), ("file", 1), ("redis", 1)],
)
def test_sixteen_processes_starting_at_once(
    store: str,
    expected_fetches: int,
    fake: FakeEntur,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """16 processes: 16 token requests with per-process memory, exactly 1 with a shared store."""
    target = {
        "memory": "",
        "file": str(tmp_path / "tokens.json"),
        "redis": request.getfixturevalue("redis_url") if store == "redis" else "",
    }[store]
    with LoopbackServer(fake) as server:
        reports, seconds = run_fleet(fleet_configs(fake, server.url, store, target))
    assert [r["status"] for r in reports] == [200] * FLEET
    assert fake.token_count == expected_fetches
    assert sum(r["fetches"] for r in reports) == expected_fetches
    # Every process authenticated with the same token when the store is shared.
    tokens = {r.headers["authorization"] for r in fake.api_requests}
    assert len(tokens) == expected_fetches
    assert all(r["warnings"] == [] for r in reports)
    print(f"\n{store}: {fake.token_count} token requests for {FLEET} processes in {seconds:.2f} s")


@pytest.mark.anyio
async def test_two_clients_in_one_process_share_the_default_memory_store(
    fake: FakeEntur,
) -> None:
    """Two EnturClients with the same credentials and no store given make one fetch."""
    statuses: list[int] = []
    async with fake.client() as first, fake.client() as second:

        async def call(client: EnturClient) -> None:
            statuses.append((await client.get("/x")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call, first)
                tg.start_soon(call, second)
    assert statuses == [200] * 10
    assert fake.token_count == 1
    assert first._manager is not None
    assert second._manager is not None
    assert first._manager.fetches + second._manager.fetches == 1
