"""The token store contract, one suite over every store: memory, file, Redis, Redis Cluster.

Each backend gives new store objects on one shared place (for the memory store, the one
object every client in a process shares), as separate processes would have them; the
client behaviours below must hold for each. What only one backend does (file permissions,
Redis leases and failovers) is tested in that backend's own file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from entur_oauth import (
    EnturClient,
    FileTokenStore,
    MemoryTokenStore,
    RedisTokenStore,
    RetryPolicy,
    TokenRequestError,
    TokenStore,
    UnauthorizedError,
)
from entur_oauth.testing import FakeClock, FakeEntur

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites its asserts
    from .redis_fixture import Cluster

pytest_plugins = ["tests.redis_fixture"]
pytestmark = pytest.mark.anyio


@dataclass
class Backend:
    """One kind of store: ``make`` opens it again, ``dump`` is every byte it holds."""

    make: Callable[[], TokenStore]
    dump: Callable[[], list[bytes]]


def _memory() -> Backend:
    store = MemoryTokenStore()
    return Backend(
        make=lambda: store,
        dump=lambda: [k.encode() + v for k, (v, _) in store._values.items()],
    )


def _file(path: Path) -> Backend:
    def dump() -> list[bytes]:
        raw = path.read_bytes()
        entries = json.loads(raw)["tokens"].values()
        return [raw, *(base64.b64decode(e["value"]) for e in entries)]

    # In a directory that does not exist yet: the first write creates it.
    return Backend(make=lambda: FileTokenStore(path), dump=dump)


def _redis(url: str) -> Backend:
    import redis

    def dump() -> list[bytes]:
        with redis.Redis.from_url(url) as raw:
            return [k + (raw.get(k) or b"") for k in raw.keys("*")]

    return Backend(make=lambda: RedisTokenStore(url), dump=dump)


def _cluster(cluster: Cluster) -> Backend:
    def dump() -> list[bytes]:
        blobs = []
        for node in cluster.nodes:
            with node.client() as raw:
                blobs += [k + (raw.get(k) or b"") for k in raw.keys("*")]
        return blobs

    return Backend(make=lambda: RedisTokenStore(cluster.url, cluster=True), dump=dump)


@pytest.fixture(
    params=[
        "memory",
        "file",
        pytest.param("redis", marks=pytest.mark.slow),
        pytest.param("cluster", marks=pytest.mark.slow),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store implementation in turn, empty."""
    kind = request.param
    if kind == "memory":
        yield _memory()
    elif kind == "file":
        yield _file(tmp_path / "new-dir" / "tokens.json")
    elif kind == "redis":
        yield _redis(request.getfixturevalue("redis_url"))
    else:
        yield _cluster(request.getfixturevalue("redis_cluster"))


async def call(client: EnturClient) -> int:
    """One authenticated API call; its status."""
    return (await client.get("/x")).status_code


async def calls(*clients: EnturClient, each: int = 1) -> list[int]:
    """``each`` concurrent calls per client; their statuses."""
    statuses: list[int] = []

    async def run(client: EnturClient) -> None:
        statuses.append(await call(client))

    async with anyio.create_task_group() as tg:
        for _ in range(each):
            for client in clients:
                tg.start_soon(run, client)
    return statuses


# -- the store -----------------------------------------------------------------------------


async def test_get_set_delete_and_compare_and_delete(backend: Backend) -> None:
    """Values per key; delete with ``expected`` removes only that very value; a value is
    not served after its TTL."""
    store = backend.make()
    assert await store.get("k1") is None
    await store.set("k1", b"\x00one\xff", ttl=60)
    await store.set("k2", b"two", ttl=60)
    await store.delete("k1", expected=b"not-one")
    assert await store.get("k1") == b"\x00one\xff"
    await store.delete("k1", expected=b"\x00one\xff")
    assert await store.get("k1") is None
    assert await backend.make().get("k2") == b"two"  # seen by another store object
    await store.delete("k2")
    assert await store.get("k2") is None
    await store.set("k3", b"short", ttl=0.05)
    await anyio.sleep(0.2)
    assert await store.get("k3") is None


async def test_lock_is_exclusive(backend: Backend) -> None:
    """While one store object holds the fetch lock, another does not get it."""
    first, second = backend.make(), backend.make()
    held, release = anyio.Event(), anyio.Event()

    async def hold() -> None:
        async with first.lock("k"):
            held.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await held.wait()
        with anyio.move_on_after(0.3) as scope:
            async with second.lock("k"):
                pytest.fail("took a lock that was held")
        assert scope.cancelled_caught
        release.set()
    with anyio.fail_after(2):
        async with second.lock("k"):
            pass


async def test_cancelled_waiter_and_holder_leave_no_lock(backend: Backend) -> None:
    """Cancelling a task waiting for, or holding, the fetch lock never leaves it taken."""
    store = backend.make()
    async with anyio.create_task_group() as tg:
        held, release = anyio.Event(), anyio.Event()

        async def hold() -> None:
            async with store.lock("k"):
                held.set()
                await release.wait()

        tg.start_soon(hold)
        await held.wait()
        with anyio.move_on_after(0.1) as scope:
            async with backend.make().lock("k"):
                pytest.fail("took a lock that was held")
        assert scope.cancelled_caught
        release.set()
    with anyio.move_on_after(0.05):
        async with store.lock("k"):
            await anyio.sleep_forever()
    with anyio.fail_after(2):
        async with backend.make().lock("k"):
            pass


# -- the client on a store -----------------------------------------------------------------


async def test_clients_sharing_a_store_make_one_fetch(fake: FakeEntur, backend: Backend) -> None:
    """Clients with their own store objects on one store share a fetch; a client started
    later takes the token from the store."""
    async with (
        fake.client(token_store=backend.make()) as first,
        fake.client(token_store=backend.make()) as second,
    ):
        assert await calls(first, second, each=3) == [200] * 6
    assert fake.token_count == 1
    async with fake.client(token_store=backend.make()) as third:
        assert await call(third) == 200
    assert fake.token_count == 1


async def test_store_holds_neither_token_nor_secret_and_a_rotated_secret_misses(
    fake: FakeEntur, backend: Backend
) -> None:
    """Stored bytes hold no token (not even its JWT payload), secret or client id; after a
    secret rotation the old entry cannot be decrypted, so the new client fetches."""
    async with fake.client(token_store=backend.make()) as client:
        token = await client.get_access_token()
    blobs = backend.dump()
    assert blobs
    for blob in blobs:
        assert token.encode() not in blob
        assert token.split(".")[1].encode() not in blob
        assert fake.client_secret.encode() not in blob
        assert fake.client_id.encode() not in blob
    fake.client_secret = "rotated-secret"
    async with fake.client(token_store=backend.make()) as client:
        assert await call(client) == 200
        assert await client.get_access_token() != token
    assert fake.token_count == 2


async def test_rejected_token_is_replaced_once_for_everyone(
    fake: FakeEntur, backend: Backend
) -> None:
    """The API rejects the shared token (401): one new fetch serves both clients."""
    async with (
        fake.client(token_store=backend.make()) as first,
        fake.client(token_store=backend.make()) as second,
    ):
        assert [await call(first), await call(second)] == [200, 200]
        assert fake.token_count == 1
        fake.revoke_all()
        assert await calls(first, second) == [200, 200]
    assert fake.token_count == 2


async def test_rejected_token_is_deleted_even_when_its_replacement_fails(
    fake: FakeEntur, backend: Backend
) -> None:
    """The API rejects the stored token (401) and the replacement fetch fails: the store
    must not hand the rejected token to the next client."""
    once = RetryPolicy(attempts=1)  # the scripted failure is not retried away
    async with fake.client(token_store=backend.make(), retry=once) as first:
        assert await call(first) == 200
        (revoked,) = fake.issued_tokens
        fake.revoke_all()
        fake.fail_token(500)
        with pytest.raises(TokenRequestError):
            await call(first)
    sent_before = len(fake.api_requests)
    async with fake.client(token_store=backend.make(), retry=once) as fresh:
        assert await call(fresh) == 200
    sent = [r.headers.get("authorization", "") for r in fake.api_requests[sent_before:]]
    assert sent
    assert not any(revoked in header for header in sent)
    assert fake.token_count == 3  # the first fetch, the failed one, the fresh client's


# -- the 401-storm guard across clients on one store (issue 11 item 4) ----------------------


def most_in_any_window(times: list[float], width: float) -> int:
    """The most of ``times`` that fall in any half-open window ``width`` long."""
    return max((sum(1 for t in times if start <= t < start + width) for start in times), default=0)


async def test_always_401_api_across_clients_on_a_store_costs_two_token_requests_per_ttl(
    backend: Backend,
) -> None:
    """Ten clients, each with its own store object on one store (as ten processes), five of
    them holding the shared token, five new; then 1,000 calls spread over 90 s to an
    endpoint that answers 401 to any token: every call raises UnauthorizedError, and the
    fleet makes at most 2 token requests in any 30 s (credentials_error_ttl), 4 in all, as
    one client would. A replacement the API rejected is kept by every client that takes
    it from the store, also one that had no token before."""
    clock = FakeClock()
    fake = FakeEntur(clock=clock)
    fake.route("/denied", status=401)
    retry = RetryPolicy(credentials_error_ttl=30)
    clients = [fake.client(token_store=backend.make(), clock=clock, retry=retry) for _ in range(10)]
    fetched_at: list[float] = []
    for client in clients[:5]:
        assert await call(client) == 200
    assert fake.token_count == 1
    fetched_at.append(clock.monotonic())
    for i in range(1000):
        with pytest.raises(UnauthorizedError):
            await clients[i % 10].get("/denied")
        fetched_at += [clock.monotonic()] * (fake.token_count - len(fetched_at))
        clock.advance(0.09)
    for client in clients:
        await client.aclose()
    assert most_in_any_window(fetched_at, 30.0) == 2
    assert len(fetched_at) == 4, fetched_at  # at 0 s (the first and its replacement), 30, 60


async def test_single_revocation_across_clients_on_a_store_costs_one_refetch(
    backend: Backend,
) -> None:
    """Ten clients on one store, each with its own store object; every token is revoked
    once, then 100 concurrent calls: all succeed after exactly one re-fetch between them,
    and the replacement keeps serving (the 401-storm guard never holds a working token)."""
    fake = FakeEntur()
    clients = [fake.client(token_store=backend.make()) for _ in range(10)]
    assert await calls(*clients) == [200] * 10
    assert fake.token_count == 1
    fake.revoke_all()
    assert await calls(*clients, each=10) == [200] * 100
    assert await calls(*clients, each=10) == [200] * 100
    for client in clients:
        await client.aclose()
    assert fake.token_count == 2


async def test_concurrent_401_storm_across_clients_on_a_store_makes_two_token_requests(
    backend: Backend,
) -> None:
    """Ten new clients on one store, each with its own store object, in bursts of 1,000
    concurrent calls (100 per client) to an endpoint that answers 401 to any token: every
    call raises UnauthorizedError; the first burst makes 2 token requests between all ten
    (the first token and one replacement: no client finds the store empty while the
    rejected token is replaced, and fetches one of its own), a burst 29 s later none, one
    30 s after the replacement arrived exactly one more."""
    clock = FakeClock()
    fake = FakeEntur(clock=clock)
    fake.route("/denied", status=401)
    retry = RetryPolicy(credentials_error_ttl=30)
    clients = [fake.client(clock=clock, token_store=backend.make(), retry=retry) for _ in range(10)]
    failed: list[type[BaseException]] = []

    async def denied(client: EnturClient) -> None:
        try:
            await client.get("/denied")
        except Exception as exc:
            failed.append(type(exc))

    async def burst() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                for client in clients:
                    tg.start_soon(denied, client)

    async with AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        await burst()
        assert fake.token_count == 2
        clock.advance(29)
        await burst()
        assert fake.token_count == 2
        clock.advance(1)
        await burst()
        assert fake.token_count == 3
    assert failed == [UnauthorizedError] * 3000
