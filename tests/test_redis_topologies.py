"""RedisTokenStore on Redis Cluster and Sentinel: real servers on loopback; asyncio and trio."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from entur_oauth import ConfigurationError, EnturClient, RedisTokenStore
from entur_oauth._codec import store_key
from entur_oauth._redis_store import slot_keys
from entur_oauth.testing import FakeEntur

from .conftest import closed_after_test

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites its asserts
    from .redis_fixture import Cluster, SentinelGroup

pytest_plugins = ["tests.redis_fixture"]
pytestmark = pytest.mark.anyio


def key_of(fake: FakeEntur) -> str:
    """The store key the fake's in-process client uses."""
    env = fake.environment()
    return store_key(env.token_url, env.audience, fake.client_id)


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings entur_oauth logged."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "entur_oauth" and r.levelno == logging.WARNING
    ]


async def call(client: EnturClient) -> int:
    """One authenticated API call; its status."""
    return (await client.get("/x")).status_code


async def share_one_fetch(fake: FakeEntur, *stores: RedisTokenStore) -> None:
    """Clients on ``stores`` (one per client) each make 3 concurrent calls: one fetch."""
    statuses: list[int] = []
    async with anyio.create_task_group() as tg:
        for store in stores:
            # Entered and left in the task that uses it: `async with client` opens a task
            # group (for shared fetches), which belongs to one task.
            async def run(store: RedisTokenStore = store) -> None:
                async with fake.client(token_store=store) as client:
                    for _ in range(3):
                        statuses.append(await call(client))

            tg.start_soon(run)
    assert statuses == [200] * 3 * len(stores)
    assert fake.token_count == 1


# -- Redis Cluster -------------------------------------------------------------------------


def test_token_and_lease_keys_share_a_hash_slot() -> None:
    """The token key and its lease key hash to one slot (a cluster runs each script on one
    node), and still start with ``entur-oauth:`` for ACL key patterns."""
    from redis.crc import key_slot

    key = store_key("https://auth.example/oauth/token", "https://api.example", "client")
    token_key, lease_key = slot_keys(key)
    assert token_key.startswith("entur-oauth:{")
    assert lease_key == f"{token_key}:lease"
    assert key_slot(token_key.encode()) == key_slot(lease_key.encode())
    assert key_slot(token_key.encode()) == key_slot(key.removeprefix("entur-oauth:").encode())


async def test_cluster_client_and_cluster_url_share_one_fetch(
    fake: FakeEntur, redis_cluster: Cluster
) -> None:
    """A RedisCluster client and a redis:// URL with cluster=True, on one cluster: the
    clients share one token request, and the token lands on the node of its slot."""
    cluster_client = redis_cluster.client()
    try:
        await share_one_fetch(
            fake,
            RedisTokenStore(cluster_client),
            RedisTokenStore(redis_cluster.url, cluster=True),
            RedisTokenStore(redis_cluster.url, cluster=True),
        )
    finally:
        cluster_client.close()
    token_key, lease_key = slot_keys(key_of(fake))
    with redis_cluster.node_for(token_key).client() as node:
        assert node.exists(token_key) == 1
        assert node.exists(lease_key) == 0


def test_cluster_configuration_errors_and_repr(redis_cluster: Cluster) -> None:
    """cluster=True needs a TCP URL to database 0; repr names the cluster, not the password."""
    with pytest.raises(ConfigurationError, match="database 0"):
        RedisTokenStore("redis://127.0.0.1:7000/3", cluster=True)
    with pytest.raises(ConfigurationError, match="database 0"):
        RedisTokenStore("unix:///tmp/redis.sock", cluster=True)
    with pytest.raises(ConfigurationError, match="applies to a URL"):
        RedisTokenStore(redis.Redis(), cluster=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisTokenStore("redis://127.0.0.1:7000?decode_responses=True", cluster=True)
    store = RedisTokenStore("redis://:hunter2@127.0.0.1:7000", cluster=True)
    assert repr(store) == "RedisTokenStore(cluster 127.0.0.1:7000)"
    client = redis_cluster.client()
    try:
        assert repr(RedisTokenStore(client)).startswith("RedisTokenStore(cluster 127.0.0.1:")
    finally:
        client.close()


def move_slot(cluster: Cluster, key: str, *, finish: bool) -> None:
    """Migrate ``key``'s slot (and the keys in it) to another node, as a resharding does.

    Unfinished, the old node answers ASK for keys already moved; finished, every node
    names the new owner and the old one answers MOVED.
    """
    from redis.crc import key_slot

    slot = key_slot(key.encode())
    source = cluster.node_for(key)
    target = next(n for n in cluster.nodes if n is not source)
    with source.client() as src, target.client() as dst:
        source_id, target_id = src.cluster("myid"), dst.cluster("myid")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
        if keys:
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        if finish:
            for node in cluster.nodes:
                with node.client() as client:
                    client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)


async def test_slot_migration_ask_and_moved_are_followed(
    fake: FakeEntur, fresh_redis_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A store whose slot map is stale follows ASK (mid-migration) and MOVED (after it):
    it reads the migrated token, and takes the lease, fetches and writes on the new node,
    with no warning and no extra token request."""
    cluster = fresh_redis_cluster
    token_key = slot_keys(key_of(fake))[0]
    store = RedisTokenStore(cluster.url, cluster=True)  # its slot map: the slot's old node
    async with fake.client(token_store=store) as client:
        assert await call(client) == 200
    move_slot(cluster, token_key, finish=False)
    async with fake.client(token_store=store) as client:
        assert await call(client) == 200  # ASK: the token is on the importing node
    assert fake.token_count == 1
    move_slot(cluster, token_key, finish=True)
    with cluster.client() as raw:
        raw.delete(token_key)
    async with fake.client(token_store=store) as client:
        assert await call(client) == 200  # MOVED: lease, fetch, write, release
    assert fake.token_count == 2
    new_home = cluster.node_for(token_key)
    with new_home.client() as node:
        assert node.exists(token_key) == 1
        assert node.exists(slot_keys(key_of(fake))[1]) == 0
    assert store_warnings(caplog) == []


async def test_cluster_node_that_stops_costs_a_warning_and_an_own_fetch(
    fake: FakeEntur, fresh_redis_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The node serving the token's slot is SIGKILLed: clients log warnings and fetch on
    their own, quickly; none fails. Once the node is back, the store is used again."""
    cluster = fresh_redis_cluster
    token_key = slot_keys(key_of(fake))[0]
    home = cluster.node_for(token_key)
    alive = next(n for n in cluster.nodes if n is not home)
    url = alive.url.removesuffix("/0")
    async with fake.client(token_store=RedisTokenStore(url, cluster=True)) as client:
        assert await call(client) == 200
    home.kill()
    started = anyio.current_time()
    for _ in range(2):  # a new store (slot map read from a live node), then the same again
        async with fake.client(token_store=RedisTokenStore(url, cluster=True)) as client:
            assert await call(client) == 200
    elapsed = anyio.current_time() - started
    assert fake.token_count == 3
    assert store_warnings(caplog)
    assert fake.client_secret not in caplog.text
    assert elapsed < 10  # a few refused connections and retries, not a hang
    home.restart()
    cluster.wait_ok()
    caplog.clear()
    async with fake.client(token_store=RedisTokenStore(url, cluster=True)) as client:
        assert await call(client) == 200
    async with fake.client(token_store=RedisTokenStore(url, cluster=True)) as client:
        assert await call(client) == 200
    assert fake.token_count == 4  # stored again, and taken by the last client
    print(f"\ncluster node down: 2 clients served in {elapsed:.2f} s")


# -- Sentinel ------------------------------------------------------------------------------


def sentinel_store(group: SentinelGroup) -> RedisTokenStore:
    """A store on the primary that the sentinels name, as the README shows it."""
    from .redis_fixture import SERVICE

    sentinel = Sentinel(group.addresses, socket_timeout=0.5)  # type: ignore[no-untyped-call]
    primary = sentinel.master_for(  # type: ignore[no-untyped-call]
        SERVICE,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[redis.exceptions.ConnectionError],
        client_name="entur-oauth",
    )
    return RedisTokenStore(closed_after_test(primary))


async def test_sentinel_primary_shares_one_fetch(
    fake: FakeEntur, redis_sentinel_shared: SentinelGroup
) -> None:
    """Stores on ``Sentinel(...).master_for(name)`` clients share one token request; the
    repr names the service, not an address that a failover changes."""
    stores = [sentinel_store(redis_sentinel_shared) for _ in range(3)]
    assert repr(stores[0]) == "RedisTokenStore(sentinel entur)"
    await share_one_fetch(fake, *stores)
    with redis_sentinel_shared.primary.client() as primary:
        assert primary.exists(slot_keys(key_of(fake))[0]) == 1


async def test_after_a_failover_the_replicated_token_is_still_used(
    fake: FakeEntur, redis_sentinel: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    """The stored token reached the replica; the primary is SIGKILLed and the sentinels
    promote the replica: the same store follows them and a new client takes the token."""
    group = redis_sentinel
    store = sentinel_store(group)
    async with fake.client(token_store=store) as client:
        assert await call(client) == 200
    with group.primary.client() as primary:
        assert primary.wait(1, 2000) == 1  # the replica has the token
    killed = time.monotonic()
    group.primary.kill()
    await anyio.to_thread.run_sync(group.wait_for_failover)
    failover = time.monotonic() - killed
    async with fake.client(token_store=store) as client:
        assert await call(client) == 200
    assert store_warnings(caplog) == []
    assert fake.token_count == 1
    print(f"\nsentinel failover took {failover:.2f} s")


async def test_after_a_failover_a_token_the_replica_never_got_is_fetched_once(
    fake: FakeEntur, redis_sentinel: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    """The token was written to the primary but never reached the replica (frozen with
    SIGSTOP, its replication link cut); the primary dies and the replica is promoted: the
    next client misses the token and fetches exactly once, then it is shared again."""
    group = redis_sentinel
    store = sentinel_store(group)
    group.replica.pause()
    with group.primary.client() as primary:
        primary.execute_command("CLIENT KILL", "TYPE", "replica")
    try:
        async with fake.client(token_store=store) as client:
            assert await call(client) == 200
        group.primary.kill()
    finally:
        group.replica.resume()
    await anyio.to_thread.run_sync(group.wait_for_failover)
    for _ in range(2):
        async with fake.client(token_store=store) as client:
            assert await call(client) == 200
    assert store_warnings(caplog) == []
    assert fake.token_count == 2  # the lost token's, then one for everyone after


# -- the README's ACL lines ----------------------------------------------------------------

#: The README's "Running many workers" in depth: where the ACL lines are.
README = Path(__file__).resolve().parents[1] / "docs" / "many-workers.md"
ACL_USER, ACL_PASSWORD = "entur-oauth", "long-random-password"


def readme_acl(topology: str) -> list[str]:
    """The ``ACL SETUSER`` line of docs/many-workers.md's section on ``topology``."""
    heading = {"redis": "Many hosts", "cluster": "Redis Cluster", "sentinel": "Redis Sentinel"}
    section = ""
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.startswith("redis> ACL SETUSER") and section.startswith(heading[topology]):
            words = line.removeprefix("redis> ").split()
            assert words[2:5] == [ACL_USER, "on", f">{ACL_PASSWORD}"]
            return words
    raise AssertionError(f"no ACL line for {topology} in {README.name}")


def acl_store(topology: str, request: pytest.FixtureRequest) -> RedisTokenStore:
    """A store that logs in as the README's ACL user, on ``topology``'s real servers, with
    a lease that needs renewing during a slow fetch."""
    if topology == "cluster":
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        servers = cluster.nodes
    elif topology == "sentinel":
        group: SentinelGroup = request.getfixturevalue("redis_sentinel_shared")
        servers = group.servers
    else:
        request.getfixturevalue("redis_url")  # empty
        servers = [request.getfixturevalue("redis_server")]
    for server in servers:
        with server.client() as admin:
            admin.execute_command(*readme_acl(topology))
        request.addfinalizer(functools.partial(drop_acl_user, server.port))
    url = f"redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{servers[0].port}"
    client: redis.Redis | RedisCluster
    if topology == "cluster":
        client = RedisCluster.from_url(url, socket_timeout=1)
    elif topology == "sentinel":
        sentinel = closed_after_test(Sentinel(group.addresses, socket_timeout=0.5))  # type: ignore[no-untyped-call]
        client = sentinel.master_for(  # type: ignore[no-untyped-call]
            "entur", username=ACL_USER, password=ACL_PASSWORD, socket_timeout=0.5
        )
    else:
        client = redis.Redis.from_url(url, socket_timeout=1)
    return RedisTokenStore(
        closed_after_test(client), lease_ttl=0.3, wait_timeout=10, poll_interval=0.02
    )


def drop_acl_user(port: int) -> None:
    """Remove the README's ACL user from the server on ``port``."""
    with redis.Redis(port=port) as admin:
        admin.acl_deluser(ACL_USER)


@pytest.mark.parametrize("topology", ["redis", "cluster", "sentinel"])
@pytest.mark.slow
async def test_readme_acl_lets_the_store_do_everything(
    topology: str,
    fake: FakeEntur,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As the README's ACL user, the store does all it does: takes, renews (a fetch three
    times its lease) and releases the lease, reads and writes the token, and deletes a
    rejected one; no command is refused (a refused renewal would let a second fetch in)."""
    fake.delay_token(1.0)
    first, second = acl_store(topology, request), acl_store(topology, request)
    async with fake.client(token_store=first) as a, fake.client(token_store=second) as b:
        statuses: list[int] = []

        async def run(client: EnturClient) -> None:
            statuses.append(await call(client))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, a)
            await anyio.sleep(0.2)
            tg.start_soon(run, b)
        assert fake.token_count == 1  # the lease was renewed, so b waited for a's token
        fake.revoke_all()
        assert [await call(a), await call(b)] == [200, 200]
    assert statuses == [200, 200]
    assert fake.token_count == 2  # the rejected token was replaced once, for both
    assert store_warnings(caplog) == []


def test_several_cluster_urls_are_checked_and_named() -> None:
    """Several URLs name a cluster's start-up nodes: cluster=True is needed, the URLs may
    differ only in host and port, and the repr counts them without a password."""
    first, second = "redis://:hunter2@127.0.0.1:7000", "redis://:hunter2@127.0.0.1:7001"
    with pytest.raises(ConfigurationError, match="pass cluster=True"):
        RedisTokenStore([first, second])
    with pytest.raises(ConfigurationError, match="differ in more than host and port"):
        RedisTokenStore([first, "redis://:other@127.0.0.1:7001"], cluster=True)
    with pytest.raises(ConfigurationError, match="database 0"):
        RedisTokenStore([first, "redis://127.0.0.1:7001/2"], cluster=True)
    store = RedisTokenStore((first, second), cluster=True)
    assert repr(store) == "RedisTokenStore(cluster 127.0.0.1:7000 (+1 start-up nodes))"
