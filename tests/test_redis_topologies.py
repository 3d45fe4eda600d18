"""RedisTokenStore on Redis Cluster and Sentinel: real servers on loopback; asyncio and trio."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
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
            client = fake.client(token_store=store)
            await client.__aenter__()

            async def run(client: EnturClient = client) -> None:
                try:
                    for _ in range(3):
                        statuses.append(await call(client))
                finally:
                    await client.__aexit__(None, None, None)

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
    assert token_key.startswith("entur-oauth:{") and lease_key == f"{token_key}:lease"
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
