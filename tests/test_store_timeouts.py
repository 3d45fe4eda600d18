"""No store call outlives its caller's timeout (issue 19 item 1); asyncio and trio.

A Redis that accepts connections and never answers (a partition, a frozen VM) and a token
file whose lock another thread never releases: a call under ``anyio.fail_after(2)`` raises
``TimeoutError`` within 3 s (a loose bound on a hang, not a timing), and the store works
again once the fault is gone. The worker threads such a call leaves behind must not leave
a lease, a lock or an old token after them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import filelock
import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from entur_oauth import ConfigurationError, FileTokenStore, RedisTokenStore
from entur_oauth._codec import store_key
from entur_oauth._redis_store import slot_keys
from entur_oauth.testing import FakeEntur

from ._faults import eventually
from .conftest import closed_after_test
from .silent_server import SilentServer

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites its asserts
    from .redis_fixture import Cluster, RedisServer, SentinelGroup

pytest_plugins = ["tests.redis_fixture"]
pytestmark = pytest.mark.anyio

#: Longer than the caller's timeout: without cancellation, every call would hang this long.
SOCKET_TIMEOUT = 5.0


def key_of(fake: FakeEntur) -> str:
    """The store key the fake's in-process client uses."""
    env = fake.environment()
    return store_key(env.token_url, env.audience, fake.client_id)


async def times_out(call: Callable[[], Awaitable[object]]) -> float:
    """Run ``call`` under ``fail_after(2)``: it must raise TimeoutError; the seconds taken."""
    started = time.monotonic()
    with pytest.raises(TimeoutError), anyio.fail_after(2):
        await call()
    return time.monotonic() - started


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    """A loopback server that accepts and never answers, until healed."""
    with SilentServer() as server:
        yield server


async def operation(name: str, store: RedisTokenStore | FileTokenStore) -> None:
    """One store call of each kind."""
    if name == "get":
        await store.get("k")
    elif name == "set":
        await store.set("k", b"sealed", ttl=60)
    elif name == "delete":
        await store.delete("k", expected=b"sealed")
    else:
        async with store.lock("k"):
            pass


# -- Redis: plain, Cluster and Sentinel ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["get", "set", "delete", "lease"])
async def test_a_redis_that_never_answers_cannot_outlast_the_callers_timeout(
    name: str, silent: SilentServer, redis_url: str, redis_server: RedisServer
) -> None:
    """Each store call on a client whose own timeout is longer than the caller's returns
    on the caller's timeout; once the partition heals, the same store works."""
    client = closed_after_test(redis.Redis.from_url(silent.url, socket_timeout=SOCKET_TIMEOUT))
    store = RedisTokenStore(client, wait_timeout=60)
    elapsed = await times_out(lambda: operation(name, store))
    assert elapsed < 3.0
    assert silent.silent_connections >= 1  # it did reach the silent server
    silent.heal(redis_server.port)
    with anyio.fail_after(2 * SOCKET_TIMEOUT):
        await store.set("k", b"sealed", ttl=60)
        assert await store.get("k") == b"sealed"
        async with store.lock("k"):
            pass


def sentinel_client(port: int) -> redis.Redis:
    """A Sentinel-managed primary through one sentinel on ``port``, as the README makes it
    but with timeouts longer than the caller's."""
    sentinel = closed_after_test(
        Sentinel([("127.0.0.1", port)], socket_timeout=SOCKET_TIMEOUT)  # type: ignore[no-untyped-call]
    )
    primary: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        "entur", socket_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 1)
    )
    return closed_after_test(primary)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["redis", "cluster", "sentinel"])
async def test_a_client_call_on_a_silent_redis_returns_on_the_callers_timeout(
    form: str, fake: FakeEntur, silent: SilentServer, request: pytest.FixtureRequest
) -> None:
    """An EnturClient call, and leaving ``async with``, whose store reaches a Redis that
    never answers (a single Redis, a cluster's start-up node, the only sentinel) raise
    TimeoutError on the caller's timeout; once healed, the same store shares tokens
    through Redis again."""
    heal_to: int
    store: RedisTokenStore
    if form == "redis":
        request.getfixturevalue("redis_url")
        heal_to = request.getfixturevalue("redis_server").port
        store = RedisTokenStore(silent.url, socket_timeout=SOCKET_TIMEOUT)
    elif form == "cluster":
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        heal_to = cluster.nodes[0].port
        store = RedisTokenStore(
            silent.url.removesuffix("/0"), cluster=True, socket_timeout=SOCKET_TIMEOUT
        )
    else:
        group: SentinelGroup = request.getfixturevalue("redis_sentinel_shared")
        heal_to = group.sentinels[0].port
        store = RedisTokenStore(sentinel_client(silent.port))

    async def call_then_leave() -> None:
        async with fake.client(token_store=store) as client:
            await client.get("/x")

    elapsed = await times_out(call_then_leave)
    assert elapsed < 3.0
    silent.heal(heal_to)
    fetched = fake.token_count
    # The call cut off in the middle held the connect (cluster) or a connection: the
    # next one waits at most for that to time out, then goes through Redis.
    with anyio.fail_after(3 * SOCKET_TIMEOUT):
        async with fake.client(token_store=store) as client:
            assert (await client.get("/x")).status_code == 200
    async with fake.client(token_store=store) as other:
        assert (await other.get("/x")).status_code == 200
    assert fake.token_count == fetched + 1  # the second client took the first one's token


@pytest.mark.slow
async def test_the_shielded_lease_release_does_not_hang_a_cancelled_caller(
    own_redis_server: RedisServer,
) -> None:
    """Redis freezes while this store holds the lease; the caller's timeout fires: the
    release (shielded, so that a cancelled holder hands the lease back) waits only a
    moment, and goes on in its thread, which releases the lease once Redis thaws."""
    client = closed_after_test(
        redis.Redis.from_url(own_redis_server.url, socket_timeout=SOCKET_TIMEOUT)
    )
    store = RedisTokenStore(client, lease_ttl=60)
    lease_key = slot_keys("k")[1]

    async def hold_while_redis_freezes() -> None:
        async with store.lock("k"):
            own_redis_server.pause()
            await anyio.sleep_forever()

    elapsed = await times_out(hold_while_redis_freezes)
    assert elapsed < 3.0
    own_redis_server.resume()
    with own_redis_server.client() as raw:
        await eventually(lambda: raw.exists(lease_key) == 0, within=2 * SOCKET_TIMEOUT)
    with anyio.fail_after(2):
        async with store.lock("k"):  # taken at once: no lease left for lease_ttl
            pass


@pytest.mark.slow
async def test_a_lease_taken_after_its_caller_left_is_released_by_the_thread(
    own_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller gives up while its lease request sits in a frozen Redis; Redis thaws and
    grants it to the abandoned thread, which releases it at once: the fleet does not wait
    out lease_ttl for a lease nobody holds."""
    client = closed_after_test(
        redis.Redis.from_url(own_redis_server.url, socket_timeout=SOCKET_TIMEOUT)
    )
    store = RedisTokenStore(client, lease_ttl=60)
    lease_key = slot_keys("k")[1]
    granted = threading.Event()
    try_lease = store._try_lease

    def recording_try_lease(key: str, owner: str) -> tuple[bool, bytes | None]:
        acquired, value = try_lease(key, owner)
        if acquired:
            granted.set()
        return acquired, value

    monkeypatch.setattr(store, "_try_lease", recording_try_lease)
    await store.get("k")  # connected before the freeze
    own_redis_server.pause()
    with anyio.move_on_after(0.5) as scope:
        async with store.lock("k"):
            pytest.fail("took a lease from a frozen Redis")
    assert scope.cancelled_caught
    own_redis_server.resume()
    await eventually(granted.is_set, within=2 * SOCKET_TIMEOUT)
    with own_redis_server.client() as raw:
        await eventually(lambda: raw.exists(lease_key) == 0, within=2)


# -- a client without socket_timeout is refused --------------------------------------------


def test_a_redis_client_without_socket_timeout_is_refused(
    redis_server: RedisServer, redis_cluster: Cluster
) -> None:
    """A redis.Redis, a Sentinel primary or a RedisCluster without socket_timeout would
    hang its calls for ever: refused, naming what to set; with one, accepted."""
    no_timeout = [
        redis.Redis.from_url(redis_server.url, socket_timeout=None),
        Sentinel([("127.0.0.1", 1)], socket_timeout=None).master_for(  # type: ignore[no-untyped-call]
            "entur", socket_timeout=None
        ),
        Sentinel([("127.0.0.1", 1)], socket_timeout=None).master_for(  # type: ignore[no-untyped-call]
            "entur", socket_timeout=1.0
        ),
        RedisCluster.from_url(redis_cluster.url, socket_timeout=None),
    ]
    for client in no_timeout:
        with pytest.raises(ConfigurationError, match=r"no socket_timeout.*socket_timeout=1\.0"):
            RedisTokenStore(client)
        client.close()
    sentinel = Sentinel([("127.0.0.1", 1)], socket_timeout=0.5)  # type: ignore[no-untyped-call]
    for client in [
        redis.Redis.from_url(redis_server.url, socket_timeout=1.0),
        sentinel.master_for("entur", socket_timeout=1.0),
        RedisCluster.from_url(redis_cluster.url, socket_timeout=1.0),
    ]:
        RedisTokenStore(client)
        client.close()


# -- FileTokenStore ------------------------------------------------------------------------


@pytest.fixture
def write_lock_held(tmp_path: Path) -> Iterator[filelock.BaseFileLock]:
    """The token file's write lock, held by this test (as another process would) until
    released."""
    lock = filelock.FileLock(str(tmp_path / "tokens.json.lock"), thread_local=False)
    lock.acquire()
    yield lock
    lock.release()


@pytest.mark.parametrize("name", ["set", "delete"])
async def test_a_file_write_lock_never_released_cannot_outlast_the_callers_timeout(
    name: str, tmp_path: Path, write_lock_held: filelock.BaseFileLock
) -> None:
    """Another holder never releases the write lock: the call returns on the caller's
    timeout (not after the 10 s the write waits), and the thread it leaves writes nothing
    once the lock is free, so no old token lands over a newer one; the store works on."""
    store = FileTokenStore(tmp_path / "tokens.json")
    elapsed = await times_out(lambda: operation(name, store))
    assert elapsed < 3.0
    write_lock_held.release()
    # The abandoned thread polls the lock every 5 ms: were it to write, it would by now.
    await anyio.sleep(0.3)
    assert await store.get("k") is None
    await store.set("k", b"newer", ttl=60)
    assert await store.get("k") == b"newer"


async def test_a_file_fetch_lock_never_released_cannot_outlast_the_callers_timeout(
    fake: FakeEntur, tmp_path: Path
) -> None:
    """Another holder never releases the fetch lock (lock_timeout 60 s): a client call, and
    leaving ``async with``, return on the caller's timeout; once the lock is free, a
    client works."""
    path = tmp_path / "tokens.json"
    holder = FileTokenStore(path).lock(key_of(fake))
    await holder.__aenter__()

    async def call_then_leave() -> None:
        async with fake.client(token_store=FileTokenStore(path)) as client:
            await client.get("/x")

    elapsed = await times_out(call_then_leave)
    assert elapsed < 3.0
    await holder.__aexit__(None, None, None)
    with anyio.fail_after(2):
        async with fake.client(token_store=FileTokenStore(path)) as client:
            assert (await client.get("/x")).status_code == 200
    assert fake.token_count == 1


async def test_a_client_call_whose_save_waits_on_a_held_write_lock_returns_on_time(
    fake: FakeEntur, tmp_path: Path, write_lock_held: filelock.BaseFileLock
) -> None:
    """The token is fetched, then its save waits for a write lock nobody releases: the
    call, and leaving ``async with``, return on the caller's timeout; once the lock is
    free, a client works and its token is shared through the file."""
    store = FileTokenStore(tmp_path / "tokens.json")

    async def call_then_leave() -> None:
        async with fake.client(token_store=store) as client:
            await client.get("/x")

    elapsed = await times_out(call_then_leave)
    assert elapsed < 3.0
    write_lock_held.release()
    fetched = fake.token_count
    with anyio.fail_after(2):
        for _ in range(2):
            async with fake.client(token_store=store) as client:
                assert (await client.get("/x")).status_code == 200
    assert fake.token_count == fetched + 1
