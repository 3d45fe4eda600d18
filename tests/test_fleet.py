"""One token fetch per fleet: 16 real processes against the fake Entur on a loopback port.

Each worker (tests/fleet_worker.py) is a separate Python process with a real EnturClient;
half run on asyncio and half on trio, so every store is exercised on both event loops in
the same fleet. They are released at one instant, after all have started.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from entur_oauth import EnturClient
from entur_oauth._codec import store_key
from entur_oauth._redis_store import slot_keys
from entur_oauth.testing import FakeEntur

from .conftest import LoopbackServer
from .fleet_worker import MEASURED, GateTokenRequests, Worker, run_fleet

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites its asserts
    from .redis_fixture import Cluster, SentinelGroup

pytest_plugins = ["tests.redis_fixture"]

FLEET = 16


def fleet_configs(
    fake: FakeEntur, url: str, store: str, target: str | list[str] = ""
) -> list[dict[str, Any]]:
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
    [("memory", FLEET), ("file", 1), ("redis", 1), ("cluster", 1)],
)
def test_sixteen_processes_starting_at_once(
    store: str,
    expected_fetches: int,
    fake: FakeEntur,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """16 processes: 16 token requests with per-process memory, exactly 1 with a shared store
    (a file, a Redis, a 3-primary Redis Cluster)."""
    target = {
        "memory": "",
        "file": str(tmp_path / "tokens.json"),
        "redis": request.getfixturevalue("redis_url") if store == "redis" else "",
        "cluster": request.getfixturevalue("redis_cluster").url if store == "cluster" else "",
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


@pytest.mark.slow
@pytest.mark.parametrize(("named", "expected_fetches"), [("dead", FLEET), ("dead+live", 1)])
def test_a_new_cluster_fleet_whose_first_named_node_is_dead(
    named: str,
    expected_fetches: int,
    fake: FakeEntur,
    redis_cluster_with_replicas: Cluster,
) -> None:
    """A cluster primary dies and its replica takes over; a new fleet of 16 then starts
    with the dead node named first. Named alone, every process finds the cluster down and
    fetches its own token (16); with a live node named after it, redis-py reads the slot
    map from that one and the fleet makes 1 token request."""
    cluster = redis_cluster_with_replicas
    dead = cluster.primaries()[0]
    live = next(n for n in cluster.primaries() if n is not dead)
    dead.kill()
    cluster.wait_for_failover(dead)
    urls = [dead.url.removesuffix("/0")]
    if named == "dead+live":
        urls.append(live.url.removesuffix("/0"))
    with LoopbackServer(fake) as server:
        reports, seconds = run_fleet(fleet_configs(fake, server.url, "cluster", urls))
    assert [r["status"] for r in reports] == [200] * FLEET
    assert fake.token_count == expected_fetches, reports[0]["warnings"]
    warned = sum(bool(r["warnings"]) for r in reports)
    assert warned == (FLEET if named == "dead" else 0)
    print(
        f"\ncluster, first named node dead ({named}): {fake.token_count} token requests "
        f"for {FLEET} processes in {seconds:.2f} s"
    )


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


#: The Sentinel fleet's lease: short, so that a lease lost with the primary expires soon.
LEASE_TTL = 2.0
#: Longer than a failover (about 2 s with these sentinels), or waiters would give up on
#: the lease mid-failover and each fetch alone.
WAIT_TIMEOUT = 15.0


def sentinel_configs(fake: FakeEntur, url: str, group: SentinelGroup) -> list[dict[str, Any]]:
    """Fleet configs for stores on the primary that ``group``'s sentinels name."""
    from .redis_fixture import SERVICE

    extra = {
        "sentinels": group.addresses,
        "service": SERVICE,
        "lease_ttl": LEASE_TTL,
        "wait_timeout": WAIT_TIMEOUT,
    }
    return [
        {**config, **extra, "name": f"fleet-worker-{i}"}
        for i, config in enumerate(fleet_configs(fake, url, "sentinel"))
    ]


def workers_on(group: SentinelGroup) -> int:
    """How many fleet workers are connected to the primary."""
    with group.primary.client() as client:
        return len({c["name"] for c in client.client_list() if c["name"].startswith("fleet")})


@pytest.mark.slow
def test_sentinel_primary_killed_mid_fetch_then_a_new_fleet(
    fake: FakeEntur, redis_sentinel: SentinelGroup
) -> None:
    """16 processes wait on one token request when the Sentinel primary is SIGKILLed: no
    call fails, at most 2 token requests (a lease held only on the lost primary may be
    lost with it). After the failover a new fleet of 16 takes the stored token: 0 token
    requests if it reached the new primary, else 1."""
    group = redis_sentinel
    gate = GateTokenRequests(fake)
    with LoopbackServer(gate) as server:
        configs = sentinel_configs(fake, server.url, group)
        workers = [Worker(config, measured=i < MEASURED) for i, config in enumerate(configs)]
        try:
            for worker in workers:
                worker.wait_ready()
            for worker in workers:
                worker.go()
            deadline = time.monotonic() + 30
            # The lease holder's token request is in flight and every process polls Redis
            # (a process connects for its first read, and polls the lease right after it).
            while not gate.arrivals or workers_on(group) < FLEET:
                assert time.monotonic() < deadline, "the fleet never reached Redis"
                time.sleep(0.01)
            time.sleep(0.3)
            killed_at = time.time()
            group.primary.kill()
            gate.open()
            reports = [worker.result() for worker in workers]
        finally:
            for worker in workers:
                worker.kill()
        served = max(r["done"] for r in reports) - killed_at
        first = fake.token_count
        assert [r["status"] for r in reports] == [200] * FLEET
        assert 1 <= first <= 2, [r["warnings"] for r in reports if r["fetches"]]  # why, if not
        assert sum(r["fetches"] for r in reports) == first
        # Served once the failover is over (about 2 s here) and the lost holder's lease
        # has expired (within LEASE_TTL of the kill, meanwhile): well before WAIT_TIMEOUT.
        assert served < 8.0
        group.wait_for_failover()
        # The workers' key: their environment names the loopback server's token URL.
        token_url = f"{server.url}/oauth/token"
        token_key = slot_keys(store_key(token_url, fake.audience, fake.client_id))[0]
        with group.replica.client() as promoted:
            stored = promoted.exists(token_key) == 1
        again, seconds = run_fleet(sentinel_configs(fake, server.url, group))
    assert [r["status"] for r in again] == [200] * FLEET
    assert fake.token_count - first == (0 if stored else 1)
    print(
        f"\nsentinel: primary killed mid-fetch: {first} token requests for {FLEET} processes, "
        f"all served {served:.2f} s after the kill; new fleet: {fake.token_count - first} "
        f"token requests (token on the new primary: {stored}), {seconds:.2f} s"
    )
