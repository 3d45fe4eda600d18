"""RedisTokenStore against a real redis-server on a loopback port; asyncio and trio."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import pytest
import redis

from entur_oauth import ConfigurationError, EnturClient, MemoryTokenStore, RedisTokenStore
from entur_oauth._codec import TokenCodec, store_key
from entur_oauth._redis_store import slot_keys
from entur_oauth._secrets import Secret
from entur_oauth.testing import FakeClock, FakeEntur

from ._faults import eventually
from .conftest import LoopbackServer, free_port
from .fleet_worker import HoldFirstTokenRequest, Worker

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites its asserts
    from .redis_fixture import RedisServer

pytest_plugins = ["tests.redis_fixture"]
pytestmark = pytest.mark.anyio


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test database, to look at what the store wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


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


async def sealed_token_from_another_client(fake: FakeEntur, key: str) -> bytes:
    """A token fetched by a client outside the store, sealed as the holder would write it."""
    async with fake.client(token_store=MemoryTokenStore()) as other:
        await call(other)
        assert other._manager is not None
        token = other._manager.current
    assert token is not None
    return TokenCodec(Secret(fake.client_secret), key).encode(token)


# -- the store -----------------------------------------------------------------------------


async def test_get_set_delete_and_compare_and_delete(redis_url: str, raw: redis.Redis) -> None:
    """Values are bytes with a Redis TTL; delete with ``expected`` removes only that value."""
    store = RedisTokenStore(redis_url)
    assert await store.get("k") is None
    await store.set("k", b"\x00sealed\xff", ttl=60)
    assert await store.get("k") == b"\x00sealed\xff"
    assert 0 < raw.pttl("{k}") <= 60_000
    await store.delete("k", expected=b"another value")
    assert await store.get("k") == b"\x00sealed\xff"
    await store.delete("k", expected=b"\x00sealed\xff")
    assert await store.get("k") is None
    await store.set("k", b"v", ttl=60)
    await store.delete("k")
    assert raw.exists("{k}") == 0


async def test_lease_is_exclusive_and_released_only_by_its_owner(
    redis_url: str, raw: redis.Redis
) -> None:
    """One holder at a time; a holder whose lease expired never deletes its successor's."""
    clock = FakeClock(autojump=True)  # the waits for a held lease take no real time
    store = RedisTokenStore(redis_url, lease_ttl=30, clock=clock)
    lease = store.lock("k")
    await lease.__aenter__()
    owner = raw.get("{k}:lease")
    assert owner is not None
    assert 0 < raw.pttl("{k}:lease") <= 30_000
    with pytest.raises(TimeoutError):
        async with store.lock("k"):
            pytest.fail("took a lease that was held")
    # The lease "expires" and another process takes it; the first holder then exits.
    raw.delete("{k}:lease")
    raw.set("{k}:lease", b"successor", px=30_000)
    await lease.__aexit__(None, None, None)
    assert raw.get("{k}:lease") == b"successor"
    raw.delete("{k}:lease")
    async with store.lock("k"):
        assert raw.get("{k}:lease") not in (None, owner)
    assert raw.exists("{k}:lease") == 0


async def test_a_lease_whose_set_reply_was_lost_is_released(
    redis_url: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease's SET reaches Redis but its reply is lost (a timeout): the poll releases
    the lease it may hold, so the fleet is not left waiting out lease_ttl for a lease that
    nobody holds; another process takes it at once (issue 19 item 4)."""
    store = RedisTokenStore(redis_url, lease_ttl=60)
    try_lease = store._try_lease

    def reply_lost(key: str, owner: str) -> tuple[bool, bytes | None]:
        try_lease(key, owner)
        raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(store, "_try_lease", reply_lost)
    with pytest.raises(redis.TimeoutError):
        async with store.lock("k"):
            pytest.fail("took a lease whose reply was lost")
    assert raw.exists("{k}:lease") == 0
    other = RedisTokenStore(redis_url, lease_ttl=60, wait_timeout=1)
    async with other.lock("k"):
        assert raw.exists("{k}:lease") == 1


async def test_waiter_picks_up_the_token_the_holder_writes(
    fake: FakeEntur, redis_url: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the lease is held, a waiter takes the token the holder stores: no second fetch."""
    store = RedisTokenStore(redis_url, poll_interval=0.01)
    # Count the waiter's polls of the lease: the waiter compares what later polls read with
    # its first, so the "holder" must write only after that first poll.
    waiting_polls = 0
    try_lease = store._try_lease

    def counting_try_lease(key: str, owner: str) -> tuple[bool, bytes | None]:
        nonlocal waiting_polls
        acquired, value = try_lease(key, owner)
        waiting_polls += not acquired
        return acquired, value

    monkeypatch.setattr(store, "_try_lease", counting_try_lease)
    key = key_of(fake)
    sealed = await sealed_token_from_another_client(fake, key)
    results: list[int] = []
    done = anyio.Event()
    async with store.lock(key), fake.client(token_store=store) as client:

        async def waiter() -> None:
            results.append(await call(client))
            done.set()

        async with anyio.create_task_group() as tg:
            # This process holds the lease, so the client must wait...
            tg.start_soon(waiter)
            await eventually(lambda: waiting_polls >= 2)
            assert not done.is_set()
            # ...until the "holder" writes the token, which the waiter then uses at once.
            await store.set(key, sealed, ttl=60)
            with anyio.fail_after(2):
                await done.wait()
            assert raw.exists(slot_keys(key)[1]) == 1  # still held: the waiter did not need it
    assert results == [200]
    assert fake.token_count == 1  # only the other client's fetch
    assert client._manager is not None
    assert client._manager.fetches == 0


async def test_waiter_keeps_waiting_through_redis_errors_then_takes_the_token(
    fake: FakeEntur,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis fails while a client waits for another process's fetch (a failover): the
    client keeps polling, logs one warning, and takes the holder's token when Redis is
    back, instead of fetching its own."""
    store = RedisTokenStore(redis_url, poll_interval=0.01)
    key = key_of(fake)
    sealed = await sealed_token_from_another_client(fake, key)
    polls = 0
    try_lease = store._try_lease

    def failing_try_lease(key: str, owner: str) -> tuple[bool, bytes | None]:
        nonlocal polls
        polls += 1
        if 2 <= polls <= 6:  # after the client's first poll found the lease held
            raise redis.ConnectionError("Connection refused")
        return try_lease(key, owner)

    statuses: list[int] = []
    async with store.lock(key), fake.client(token_store=store) as client:
        # Failing from here: the holder (this test) has its lease.
        monkeypatch.setattr(store, "_try_lease", failing_try_lease)

        async def waiter() -> None:
            statuses.append(await call(client))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await eventually(lambda: polls > 6)
            await store.set(key, sealed, ttl=60)
    assert statuses == [200]
    assert fake.token_count == 1  # only the other client's fetch
    (warning,) = store_warnings(caplog)
    assert "still waiting" in warning


async def test_lease_is_renewed_during_a_fetch_longer_than_its_ttl(
    fake: FakeEntur, redis_url: str, raw: redis.Redis
) -> None:
    """A token request three times as long as the lease: the holder keeps renewing its
    lease, so the other client waits for its token instead of fetching a second one."""
    fake.delay_token(1.5)
    statuses: list[int] = []

    def store() -> RedisTokenStore:
        # wait_timeout well past the fetch: only an expired lease could let the waiter in.
        return RedisTokenStore(redis_url, lease_ttl=0.5, wait_timeout=10, poll_interval=0.02)

    async with (
        fake.client(token_store=store()) as first,
        fake.client(token_store=store()) as second,
    ):

        async def run(client: EnturClient) -> None:
            statuses.append(await call(client))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, first)
            await eventually(lambda: fake.token_count == 1)
            tg.start_soon(run, second)
    assert statuses == [200, 200]
    assert fake.token_count == 1
    assert raw.exists(slot_keys(key_of(fake))[1]) == 0  # released, and not renewed after that


async def test_waiter_takes_a_token_written_before_its_first_poll(
    fake: FakeEntur,
    redis_url: str,
    raw: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The holder writes the token between the client's read of the store and its first
    poll of the lease: the client takes that token at once, without waiting for the lease
    (in a fleet, such waiters would otherwise take the lease one after the other)."""
    store = RedisTokenStore(redis_url, poll_interval=0.01, wait_timeout=2)
    key = key_of(fake)
    sealed = await sealed_token_from_another_client(fake, key)
    get = store.get

    async def get_then_holder_writes(k: str) -> bytes | None:
        value = await get(k)
        if value is None:
            # The "holder" writes right after this read.
            raw.set(slot_keys(key)[0], sealed, px=60_000)
        return value

    monkeypatch.setattr(store, "get", get_then_holder_writes)
    async with store.lock(key), fake.client(token_store=store) as client:
        with anyio.fail_after(1):  # well before wait_timeout
            assert await call(client) == 200
        assert raw.exists(slot_keys(key)[1]) == 1  # still held: the client did not need it
    assert fake.token_count == 1  # only the other client's fetch
    assert client._manager is not None
    assert client._manager.fetches == 0
    assert store_warnings(caplog) == []


async def test_old_holders_renewal_never_extends_a_successors_lease(
    redis_url: str, raw: redis.Redis
) -> None:
    """The lease expired under a holder and another process took it: the old holder's
    renewal (an owner-checked PEXPIRE) must leave the successor's lease to expire on time."""
    store = RedisTokenStore(redis_url, lease_ttl=0.3, wait_timeout=30)
    lease_key = slot_keys("k")[1]
    async with store.lock("k"):
        # The holder renews every 0.1 s. Its lease "expires" and a successor takes it for
        # 0.2 s: an unchecked PEXPIRE would keep pushing that to 0.3 s, so it never expired.
        raw.delete(lease_key)
        raw.set(lease_key, b"successor", px=200)
        await eventually(lambda: raw.exists(lease_key) == 0, within=1.5)
        await anyio.sleep(0.3)  # three more renewal intervals: still nothing to extend
        assert raw.exists(lease_key) == 0


async def test_a_hung_holder_stops_renewing_after_wait_timeout(
    redis_url: str, raw: redis.Redis
) -> None:
    """A holder that never finishes renews its lease only until wait_timeout; then the
    lease expires, so it cannot hold up the fleet forever."""
    store = RedisTokenStore(redis_url, lease_ttl=0.3, wait_timeout=0.6)
    async with store.lock("k"):
        await anyio.sleep(0.5)
        assert raw.exists("{k}:lease") == 1  # renewed past its 0.3 s TTL
        await eventually(lambda: raw.exists("{k}:lease") == 0, within=3)


def test_configuration_errors_and_repr(redis_server: RedisServer) -> None:
    """Bad URLs, asyncio or decoding clients are refused; repr shows no password."""
    with pytest.raises(ConfigurationError, match="not a Redis URL") as info:
        RedisTokenStore("http://user:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigurationError, match="asyncio"):
        RedisTokenStore(redis.asyncio.Redis())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisTokenStore(redis.Redis(decode_responses=True))
    with pytest.raises(ConfigurationError, match="positive"):
        RedisTokenStore(redis_server.url, lease_ttl=0)
    store = RedisTokenStore("redis://:hunter2@127.0.0.1:6390/3")
    assert repr(store) == "RedisTokenStore(127.0.0.1:6390, db=3)"
    client = redis_server.client()
    assert "RedisTokenStore(127.0.0.1:" in repr(RedisTokenStore(client))
    client.close()


@pytest.mark.slow
def test_import_without_redis_names_the_extra() -> None:
    """Without redis installed, entur_oauth imports (also with *), leaves RedisTokenStore
    out of __all__ and dir(), and an explicit import of it names the extra."""
    code = textwrap.dedent(
        """
        import inspect
        import sys
        sys.modules["redis"] = None  # as if the package were not installed
        import entur_oauth
        from entur_oauth import *
        assert FileTokenStore is entur_oauth.FileTokenStore
        assert "RedisTokenStore" not in entur_oauth.__all__
        assert "RedisTokenStore" not in dir(entur_oauth)
        inspect.getmembers(entur_oauth)
        for attempt in (
            lambda: entur_oauth.RedisTokenStore,
            lambda: exec("from entur_oauth import RedisTokenStore", {}),
        ):
            try:
                attempt()
            except ImportError as exc:
                print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stderr == ""
    assert result.stdout.count("pip install 'entur-oauth[redis]'") == 2


def test_redis_store_is_public_with_redis_installed() -> None:
    """With the extra installed, RedisTokenStore is in __all__ and dir()."""
    import entur_oauth

    assert "RedisTokenStore" in entur_oauth.__all__
    assert "RedisTokenStore" in dir(entur_oauth)


# -- the client with a Redis store ---------------------------------------------------------


async def test_redis_holds_neither_token_nor_secret_and_a_rotated_secret_misses(
    fake: FakeEntur, redis_url: str, raw: redis.Redis
) -> None:
    """Keys and values hold no token, secret or client id; another secret refetches."""
    async with fake.client(token_store=RedisTokenStore(redis_url)) as client:
        token = await client.get_access_token()
    keys = raw.keys("*")
    assert keys == [slot_keys(key_of(fake))[0].encode()]  # the lease is gone, the token stays
    for blob in (*keys, *(raw.get(k) or b"" for k in keys)):
        assert token.encode() not in blob
        assert token.split(".")[1].encode() not in blob
        assert fake.client_secret.encode() not in blob
        assert fake.client_id.encode() not in blob
    fake.client_secret = "rotated-secret"
    async with fake.client(token_store=RedisTokenStore(redis_url)) as client:
        assert await call(client) == 200
        assert await client.get_access_token() != token
    assert fake.token_count == 2


async def test_corrupt_entry_is_refetched_and_overwritten(
    fake: FakeEntur, redis_url: str, raw: redis.Redis
) -> None:
    """Garbage under the key: the client fetches and stores a good token in its place."""
    raw.set(slot_keys(key_of(fake))[0], b"\x00garbage")
    async with fake.client(token_store=RedisTokenStore(redis_url)) as client:
        assert await call(client) == 200
    assert fake.token_count == 1
    assert raw.get(slot_keys(key_of(fake))[0]) != b"\x00garbage"
    async with fake.client(token_store=RedisTokenStore(redis_url)) as client:
        assert await call(client) == 200
    assert fake.token_count == 1


async def test_redis_down_the_client_fetches_its_own_token(
    fake: FakeEntur, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on the port: warnings, no crash, quickly, one fetch."""
    store = RedisTokenStore(f"redis://127.0.0.1:{free_port()}/0")
    async with fake.client(token_store=store) as client:
        started = anyio.current_time()
        assert await call(client) == 200
        assert await call(client) == 200
        elapsed = anyio.current_time() - started
    assert elapsed < 3.0  # refused connections fail at once
    assert fake.token_count == 1
    warnings = store_warnings(caplog)
    assert warnings
    assert all("Connection refused" in w or "connecting" in w for w in warnings)
    assert fake.client_secret not in caplog.text


async def test_clients_of_one_process_share_one_fallback_token_while_redis_is_down(
    fake: FakeEntur, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis is down; clients of one process share one RedisTokenStore, a new client per
    call (20 one after the other, then 10 at once): one token request between them, and
    one warning for the outage, not one or two per client."""
    store = RedisTokenStore(f"redis://127.0.0.1:{free_port()}/0")
    for _ in range(20):
        async with fake.client(token_store=store) as client:
            assert await call(client) == 200
    clients = [fake.client(token_store=store) for _ in range(10)]
    statuses: list[int] = []

    async def run(client: EnturClient) -> None:
        async with client:
            statuses.append(await call(client))

    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(run, client)
    assert statuses == [200] * 10
    assert fake.token_count == 1
    (warning,) = store_warnings(caplog)
    assert "Connection refused" in warning or "connecting" in warning
    # Another store object (as in another process) has a fallback of its own.
    async with fake.client(token_store=RedisTokenStore(store_url(store))) as client:
        assert await call(client) == 200
    assert fake.token_count == 2


def store_url(store: RedisTokenStore) -> str:
    """The redis:// URL of a store made from one (host, port and database from its repr)."""
    where = repr(store).removeprefix("RedisTokenStore(").removesuffix(")")
    address, _, db = where.partition(", db=")
    return f"redis://{address}/{db}"


@pytest.mark.slow
async def test_each_redis_outage_logs_one_warning_and_costs_one_token_request(
    fake: FakeEntur, own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis goes down, comes back, goes down again: one warning per outage, and a token
    request only when none is at hand (the fallback token of the first outage still serves
    in the second); while Redis is up, clients share its token again."""
    store = RedisTokenStore(own_redis_server.url)

    async def new_clients(count: int) -> None:
        for _ in range(count):
            async with fake.client(token_store=store) as client:
                assert await call(client) == 200

    own_redis_server.kill()
    await new_clients(5)
    assert (fake.token_count, len(store_warnings(caplog))) == (1, 1)
    own_redis_server.restart()  # empty: it kept nothing
    await new_clients(5)
    assert (fake.token_count, len(store_warnings(caplog))) == (2, 1)
    own_redis_server.kill()
    await new_clients(5)
    assert (fake.token_count, len(store_warnings(caplog))) == (2, 2)


@pytest.mark.slow
async def test_redis_slow_the_client_fetches_its_own_token(
    fake: FakeEntur, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that accepts but never answers: socket timeouts, warnings, one fetch."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        store = RedisTokenStore(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2)
        async with fake.client(token_store=store) as client:
            started = anyio.current_time()
            assert await call(client) == 200
            elapsed = anyio.current_time() - started
    assert elapsed < 5.0  # a few 0.2 s socket timeouts, not the 30 s wait_timeout
    assert fake.token_count == 1
    warnings = store_warnings(caplog)
    assert warnings
    assert all("Timeout" in w for w in warnings)


async def test_lease_held_too_long_falls_back_to_own_fetch(
    fake: FakeEntur, redis_url: str, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A lease another process never releases: after wait_timeout (the default 30 s, on the
    client's fake clock, so no real waiting) this client fetches alone."""
    raw.set(slot_keys(key_of(fake))[1], b"someone-else", px=60_000)
    clock = FakeClock(autojump=True)
    store = RedisTokenStore(redis_url, clock=clock)
    async with fake.client(token_store=store, clock=clock) as client:
        assert await call(client) == 200
    # Gave up once its clock passed wait_timeout (the last sleep adds at most 0.075 s).
    assert 30 <= clock.monotonic() < 31
    assert fake.token_count == 1
    (warning,) = store_warnings(caplog)
    assert "lock failed (TimeoutError" in warning
    assert raw.get(slot_keys(key_of(fake))[1]) == b"someone-else"


# -- a lease holder killed mid-fetch -------------------------------------------------------

LEASE_TTL = 2.0


@pytest.mark.slow
def test_lease_holder_killed_mid_fetch_others_recover_within_the_lease_ttl(
    fake: FakeEntur, redis_url: str, raw: redis.Redis
) -> None:
    """SIGKILL the lease holder during its token request: its lease renewal dies with it, and
    once the lease expires, exactly one waiter fetches and the rest take its token."""
    app = HoldFirstTokenRequest(fake)
    waiting = 4
    with LoopbackServer(app) as server:
        config = {
            "base_url": server.url,
            "audience": fake.audience,
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "backend": "asyncio",
            "store": "redis",
            "target": f"{redis_url}?client_name=fleet-worker",  # to tell them apart below
            "lease_ttl": LEASE_TTL,
        }
        holder = Worker(config, measured=False)
        waiters = [
            Worker({**config, "backend": "trio" if i % 2 else "asyncio"}) for i in range(waiting)
        ]
        try:
            for worker in (holder, *waiters):
                worker.wait_ready()
            holder.go()
            deadline = time.monotonic() + 10
            while app.held_at is None:
                assert time.monotonic() < deadline, "the holder never asked for a token"
                time.sleep(0.01)
            for worker in waiters:
                worker.go()
            # Wait until every waiter has talked to Redis (it is then polling the lease).
            while sum(c["name"] == "fleet-worker" for c in raw.client_list()) < 1 + waiting:
                assert time.monotonic() < deadline, "the waiters never reached Redis"
                time.sleep(0.01)
            killed_at = time.time()
            holder.kill()
            reports = [worker.result() for worker in waiters]
        finally:
            for worker in (holder, *waiters):
                worker.kill()
    assert app.held_at is not None
    done = max(r["done"] for r in reports)
    recovery, since_lease = done - killed_at, done - app.held_at
    assert [r["status"] for r in reports] == [200] * waiting
    assert fake.token_count == 1  # exactly one more fetch than the killed holder's
    assert sorted(r["fetches"] for r in reports) == [0] * (waiting - 1) + [1]
    # The waiters did wait for the lease to expire, and recovered right after (plus a fetch).
    # The holder renews its lease every LEASE_TTL / 3 until it dies, so the lease expires
    # within LEASE_TTL of the kill (and never before LEASE_TTL after it was taken).
    assert since_lease > LEASE_TTL - 0.5
    assert recovery < LEASE_TTL + 1.5
    assert all(r["warnings"] == [] for r in reports)
    print(
        f"\nredis store: lease TTL {LEASE_TTL} s; all {waiting} waiters done {recovery:.3f} s "
        f"after the kill, {since_lease:.3f} s after the holder took the lease"
    )


# -- constructor settings are checked when the store is built (#11 item 2) ---------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lease_ttl", "15"),
        ("lease_ttl", None),
        ("lease_ttl", True),
        ("lease_ttl", 0),
        ("wait_timeout", "30"),
        ("wait_timeout", float("nan")),
        ("poll_interval", -1),
        ("poll_interval", [0.1]),
        ("socket_timeout", 10**400),
        ("socket_timeout", float("inf")),
        ("socket_timeout", 2e9),
        ("cluster", "yes"),
        ("cluster", "no"),
        ("cluster", 1),
    ],
)
def test_bad_options_are_configuration_errors_naming_them(option: str, value: object) -> None:
    """Each bad option raises ConfigurationError naming it when the store is built, not
    TypeError or OverflowError; a truthy string never selects cluster mode."""
    with pytest.raises(ConfigurationError, match=option):
        RedisTokenStore("redis://127.0.0.1:1", **{option: value})  # type: ignore[arg-type]


def test_a_long_lease_keeps_its_default_wait_within_the_limit() -> None:
    """wait_timeout defaults to twice lease_ttl, capped at the limit a setting may have."""
    store = RedisTokenStore("redis://127.0.0.1:1", lease_ttl=10**9)
    assert (store.lease_ttl, store.wait_timeout) == (1e9, 1e9)


def test_a_database_that_is_not_a_number_is_refused() -> None:
    """redis://host/abc is refused naming the database, not quietly read as database 0."""
    with pytest.raises(ConfigurationError, match="database in the URL must be a number"):
        RedisTokenStore("redis://127.0.0.1:1/abc")
    assert "db=3" in repr(RedisTokenStore("redis://127.0.0.1:1/3"))


def _connections(raw: redis.Redis, name: str) -> int:
    """How many connections named ``name`` Redis has open."""
    return sum(1 for c in raw.client_list() if c.get("name") == name)


@pytest.mark.slow
async def test_a_store_closes_the_client_it_made_when_collected_not_one_handed_in(
    redis_url: str, raw: redis.Redis
) -> None:
    """A store made from a URL closes its own client's connections once it is collected;
    a client handed in is the caller's and stays open."""
    import gc

    own = RedisTokenStore(f"{redis_url}?client_name=own-store")
    handed = redis.Redis.from_url(redis_url, socket_timeout=1, client_name="handed-in")
    other = RedisTokenStore(handed)
    for store in (own, other):
        await store.set("k", b"sealed", ttl=60)
    assert _connections(raw, "own-store") == 1
    assert _connections(raw, "handed-in") == 1
    del own, other, store
    gc.collect()
    await eventually(lambda: _connections(raw, "own-store") == 0, within=5)
    assert _connections(raw, "handed-in") == 1
    handed.close()
