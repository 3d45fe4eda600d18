"""Concurrency: single-flight fetches under load, shared failures, cancellation, hangs and
a second event loop (asyncio and trio)."""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest

from entur_oauth import (
    EnturClient,
    EventLoopError,
    MemoryTokenStore,
    RefreshPolicy,
    RetryPolicy,
    TokenRequestError,
)
from entur_oauth._manager import TokenManager
from entur_oauth._token import Token
from entur_oauth.testing import FakeClock, FakeEntur, ScriptedResponse

from ._faults import TokenGate, eventually
from .conftest import LoopbackServer

pytestmark = pytest.mark.anyio

DAY = 86400.0


@pytest.fixture
def gate(entur_fake: FakeEntur) -> TokenGate:
    """The fake behind a gate that can hold token requests in flight."""
    return TokenGate(entur_fake)


@asynccontextmanager
async def _client(
    entur_fake: FakeEntur,
    entur_clock: FakeClock,
    gate: TokenGate | None = None,
    *,
    entered: bool = True,
    **kwargs: Any,
) -> AsyncIterator[tuple[EnturClient, TokenManager, MemoryTokenStore]]:
    """The client in ``async with`` (``entered``), or used without it and closed after."""
    store = MemoryTokenStore()
    transport = httpx2.ASGITransport(app=gate) if gate is not None else entur_fake.transport()
    client = entur_fake.client(transport=transport, clock=entur_clock, token_store=store, **kwargs)
    async with client if entered else aclosing(client):
        manager = client._manager
        assert manager is not None
        yield client, manager, store


@asynccontextmanager
async def _holding(kind: str, clock: FakeClock) -> AsyncIterator[dict[str, Any]]:
    """The client arguments that make it hold a task group: the user's own
    (``task_group=``, open around the test) or its own (a background refresher)."""
    if kind == "background":
        clock.autojump = False  # else the refresher's sleep jumps to the next renewal
        yield {"refresh": RefreshPolicy(background=True)}
        return
    async with anyio.create_task_group() as tg:
        yield {"task_group": tg}


HOLDERS = ["task_group", "background"]


async def _assert_nothing_held(manager: TokenManager, store: MemoryTokenStore) -> None:
    assert manager._flight is None
    assert manager._shared is not None
    with anyio.fail_after(5):
        async with store.lock(manager._shared.key):
            pass


async def _gather(n: int, call: Callable[[], object]) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(call)  # type: ignore[arg-type]


# -- single flight -------------------------------------------------------------------------


async def test_two_hundred_concurrent_first_requests_make_one_fetch(
    entur_fake: FakeEntur, entur_clock: FakeClock
) -> None:
    """200 concurrent first requests: one token request, 200 successes; every request
    waited (there was no token yet), none while a valid token existed."""
    statuses: list[int] = []
    async with _client(entur_fake, entur_clock) as (client, manager, _):

        async def call() -> None:
            statuses.append((await client.get("/x")).status_code)

        await _gather(200, call)
        assert (manager.rounds, manager.waits, manager.valid_waits) == (1, 200, 0)
    assert statuses == [200] * 200
    assert entur_fake.token_count == 1


async def test_token_expiring_under_load_is_renewed_once(
    entur_fake: FakeEntur, entur_clock: FakeClock, gate: TokenGate
) -> None:
    """The token expires while 200 requests arrive; its renewal is held in flight so all
    of them pile up behind it: still exactly one more token request."""
    statuses: list[int] = []
    async with _client(entur_fake, entur_clock, gate) as (client, manager, _):
        await client.get("/x")
        entur_clock.advance(DAY + 1)
        gate.close()

        async def call() -> None:
            statuses.append((await client.get("/x")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(call)
            await eventually(lambda: manager.waits == 201)
            gate.open()
    assert statuses == [200] * 200
    assert entur_fake.token_count == 2


async def test_fifty_waiters_on_a_failing_endpoint_share_one_round(
    entur_fake: FakeEntur, entur_clock: FakeClock, gate: TokenGate
) -> None:
    """50 requests wait on one fetch whose three attempts all fail: each gets the same
    error (type, message, status), from ONE round of three token requests; the client
    then works."""
    errors: list[TokenRequestError] = []
    entur_fake.fail_token(503, times=3)
    async with _client(entur_fake, entur_clock, gate) as (client, manager, store):

        async def call() -> None:
            try:
                await client.get("/x")
            except TokenRequestError as exc:
                errors.append(exc)

        gate.close()
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(call)
            await eventually(lambda: manager.waits == 50)
            gate.open()
        assert len(errors) == 50
        assert len({(type(e), str(e), e.status_code, e.retryable) for e in errors}) == 1
        assert errors[0].status_code == 503
        assert (entur_fake.token_count, manager.rounds) == (3, 1)
        await _assert_nothing_held(manager, store)
        assert (await client.get("/x")).status_code == 200


# -- cancellation --------------------------------------------------------------------------


@pytest.mark.parametrize("run", range(3))
@pytest.mark.parametrize("holder", HOLDERS)
async def test_cancelled_callers_do_not_throw_away_the_shared_fetch(
    entur_fake: FakeEntur, entur_clock: FakeClock, gate: TokenGate, run: int, holder: str
) -> None:
    """With a held task group (``task_group=`` or a background refresher): 100 concurrent
    first calls, every other one cancelled while the token request is held in flight:
    exactly 1 token request and 50 successes. Whichever caller leads (trio starts tasks
    in random order; run 3 times) may be cancelled: the fetch runs in the held task group
    and goes on."""
    statuses: list[int] = []
    scopes = [anyio.CancelScope() for _ in range(100)]
    async with (
        _holding(holder, entur_clock) as held,
        _client(entur_fake, entur_clock, gate, **held) as (client, manager, store),
    ):

        async def call(index: int) -> None:
            with scopes[index]:
                statuses.append((await client.get("/x")).status_code)

        gate.close()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for index in range(100):
                    tg.start_soon(call, index)
                await eventually(lambda: gate.arrived == 1 and manager.waits == 100)
                for scope in scopes[::2]:
                    scope.cancel()
                gate.open()
        assert statuses == [200] * 50
        assert [scope.cancelled_caught for scope in scopes].count(True) == 50
        assert (gate.arrived, entur_fake.token_count, manager.rounds) == (1, 1, 1)
        await _assert_nothing_held(manager, store)


@pytest.mark.parametrize("holder", HOLDERS)
async def test_a_fetch_whose_callers_all_left_still_installs_its_token(
    entur_fake: FakeEntur, entur_clock: FakeClock, gate: TokenGate, holder: str
) -> None:
    """With a held task group, every caller of a fetch is cancelled while it hangs: the
    fetch still completes in that task group, and the next call uses its token without
    another request."""
    async with (
        _holding(holder, entur_clock) as held,
        _client(entur_fake, entur_clock, gate, **held) as (client, manager, store),
    ):
        gate.close()
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(client.get, "/x")
                await eventually(lambda: gate.arrived == 1 and manager.waits == 10)
                tg.cancel_scope.cancel()
        assert manager._flight is not None  # nobody waits on it, and it goes on
        gate.open()
        await eventually(lambda: manager.current is not None)
        assert (await client.get("/x")).status_code == 200
        assert entur_fake.token_count == 1
        await _assert_nothing_held(manager, store)


@pytest.mark.parametrize("holder", HOLDERS)
async def test_leaving_async_with_stops_a_hanging_shared_fetch(
    entur_fake: FakeEntur, entur_clock: FakeClock, gate: TokenGate, holder: str
) -> None:
    """With a held task group, a shared fetch still hanging when the client is closed
    (its caller gave up) is stopped: leaving ``async with`` does not wait for it (nor
    does the user's task group), and nothing stays held."""
    with anyio.fail_after(5):
        async with (
            _holding(holder, entur_clock) as held,
            _client(entur_fake, entur_clock, gate, **held) as (client, manager, store),
        ):
            gate.close()
            with anyio.move_on_after(0.05):
                await client.get("/x")
            assert manager._flight is not None
    assert manager.current is None
    await _assert_nothing_held(manager, store)


def _fetch_counting(fetched: list[int]) -> Callable[[], Awaitable[Token]]:
    async def fetch() -> Token:
        fetched.append(1)
        await anyio.lowlevel.checkpoint()
        return Token(
            access_token=f"t{len(fetched)}", expires_at=DAY, expires_at_wall=DAY, lifetime=DAY
        )

    return fetch


async def test_fetches_go_back_to_the_callers_when_the_task_group_is_cancelled(
    entur_clock: FakeClock,
) -> None:
    """The task group given to start() is cancelled (the user shuts down) while a caller
    outside it still needs a token: the fetch cancelled there is made again in the
    caller's own task, which gets its token; it does not spin or hang."""
    fetched: list[int] = []
    manager = TokenManager(
        _fetch_counting(fetched), clock=entur_clock, refresh=RefreshPolicy(), retry=RetryPolicy()
    )
    release = anyio.Event()
    got: list[Token] = []

    async def hold_open() -> None:
        with anyio.CancelScope(shield=True):
            await release.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_open)
            await manager.start(tg)
            tg.cancel_scope.cancel()
            async with anyio.create_task_group() as outside:
                outside.cancel_scope.shield = True

                async def caller() -> None:
                    try:
                        with anyio.fail_after(5):  # inside the shield, so it can fire
                            got.append(await manager.token())
                    finally:
                        release.set()

                outside.start_soon(caller)
    # The cancelled round may have reached its first request before its cancellation
    # landed (trio runs a new task up to its first checkpoint); the caller's own round
    # made the token it got.
    assert 1 <= len(fetched) <= 2
    assert [t.access_token for t in got] == [f"t{len(fetched)}"]


async def test_fetches_run_in_the_callers_task_once_the_task_group_has_closed(
    entur_clock: FakeClock,
) -> None:
    """start() was given a task group that has since closed (no stop()): the next fetch
    runs in the caller's task instead of failing."""
    fetched: list[int] = []
    manager = TokenManager(
        _fetch_counting(fetched), clock=entur_clock, refresh=RefreshPolicy(), retry=RetryPolicy()
    )
    async with anyio.create_task_group() as tg:
        await manager.start(tg)
    assert (await manager.token()).access_token == "t1"
    assert manager._flight is None


async def test_cancelling_the_fetching_task_hands_the_fetch_to_a_waiter(
    entur_fake: FakeEntur, entur_clock: FakeClock, gate: TokenGate
) -> None:
    """Outside ``async with``, the task that fetches is cancelled (anyio cancel scope,
    which is a trio cancel scope on trio) while its request hangs: the 10 waiters are not
    failed with its cancellation; one of them fetches, all succeed, nothing stays held."""
    statuses: list[int] = []
    async with _client(entur_fake, entur_clock, gate, entered=False) as (client, manager, store):
        gate.close()
        leader_scope = anyio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                await client.get("/x")

        async def waiter() -> None:
            statuses.append((await client.get("/x")).status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            await eventually(lambda: gate.arrived == 1)
            for _ in range(10):
                tg.start_soon(waiter)
            await eventually(lambda: manager.waits == 11)
            leader_scope.cancel()
            await eventually(lambda: gate.arrived == 2)  # a waiter took over the fetch
            gate.open()
        assert leader_scope.cancelled_caught
        assert statuses == [200] * 10
        assert entur_fake.token_count == 1  # the cancelled request never reached Entur
        await _assert_nothing_held(manager, store)


async def test_cancelling_waiters_leaves_the_fetch_and_the_client_alone(
    entur_fake: FakeEntur, entur_clock: FakeClock, gate: TokenGate
) -> None:
    """Waiters that give up (move_on_after) do not disturb the fetch they waited on."""
    async with _client(entur_fake, entur_clock, gate) as (client, manager, store):
        gate.close()
        gave_up: list[bool] = []

        async def impatient() -> None:
            with anyio.move_on_after(0.05) as scope:
                await client.get("/x")
            gave_up.append(scope.cancelled_caught)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, "/x")
            await eventually(lambda: gate.arrived == 1)
            for _ in range(10):
                tg.start_soon(impatient)
            await eventually(lambda: len(gave_up) == 10)
            assert manager._flight is not None
            gate.open()
        assert gave_up == [True] * 10
        assert entur_fake.token_count == 1
        await _assert_nothing_held(manager, store)
        assert (await client.get("/x")).status_code == 200


async def test_native_cancellation_of_the_fetching_task(
    entur_fake: FakeEntur, entur_clock: FakeClock, gate: TokenGate, anyio_backend: str
) -> None:
    """Outside ``async with``: asyncio's Task.cancel() on asyncio, trio's own CancelScope
    on trio: the fetch is abandoned cleanly and the next request fetches."""
    async with _client(entur_fake, entur_clock, gate, entered=False) as (client, manager, store):
        gate.close()
        if anyio_backend == "asyncio":
            task = asyncio.get_running_loop().create_task(client.get("/x"))
            await eventually(lambda: gate.arrived == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            import trio

            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def fetch() -> None:
                    with scope:
                        await client.get("/x")

                nursery.start_soon(fetch)
                await eventually(lambda: gate.arrived == 1)
                scope.cancel()
            assert scope.cancelled_caught
        await _assert_nothing_held(manager, store)
        gate.open()
        assert (await client.get("/x")).status_code == 200
        assert entur_fake.token_count == 1


# -- hangs ---------------------------------------------------------------------------------


async def test_silent_token_endpoint_times_out_for_every_waiter(
    entur_fake: FakeEntur, entur_clock: FakeClock
) -> None:
    """A token endpoint that never answers (in-process, where no HTTP timeout applies):
    each attempt is cut at 1.5 x RetryPolicy.timeout + 1 s on the client's clock (a fake
    one here, moved by the test: 2 x 16 s of it pass at once), and all 20 waiters get a
    retryable TokenRequestError instead of hanging; the client works afterwards."""
    entur_fake.fail_token(ScriptedResponse(hang=True), times=2)
    errors: list[TokenRequestError] = []
    limit = 10.0 * 1.5 + 1.0
    async with _client(entur_fake, entur_clock, retry=RetryPolicy(timeout=10.0, attempts=2)) as (
        client,
        manager,
        store,
    ):

        async def call() -> None:
            try:
                await client.get("/x")
            except TokenRequestError as exc:
                errors.append(exc)

        with anyio.fail_after(5):  # the real-time cut-off would take 32 s
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(call)
                for attempt in (1, 2):
                    await eventually(lambda n=attempt: entur_fake.token_count == n)
                    entur_clock.advance(limit)
        assert len(errors) == 20
        assert all(e.retryable and "did not answer" in str(e) for e in errors)
        assert entur_fake.token_count == 2
        await _assert_nothing_held(manager, store)
        assert (await client.get("/x")).status_code == 200


@pytest.mark.slow
async def test_silent_token_endpoint_on_a_real_socket_times_out(entur_clock: FakeClock) -> None:
    """A TCP server that accepts and never answers: the HTTP read timeout fires, the
    waiters get a TokenRequestError that says it timed out, nothing hangs."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def silent(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    fake = FakeEntur(clock=entur_clock)
    errors: list[TokenRequestError] = []
    async with anyio.create_task_group() as server:
        server.start_soon(listener.serve, silent)
        client = EnturClient(
            fake.client_id,
            fake.client_secret,
            client_name="test-app",
            environment=fake.environment(f"http://127.0.0.1:{port}"),
            clock=entur_clock,
            retry=RetryPolicy(timeout=0.2, attempts=1),
        )
        async with client:

            async def call() -> None:
                try:
                    await client.get("/x")
                except TokenRequestError as exc:
                    errors.append(exc)

            with anyio.fail_after(5):
                await _gather(10, call)
        server.cancel_scope.cancel()
    await listener.aclose()
    assert len(errors) == 10
    assert all(e.retryable and "timed out" in str(e) for e in errors)


# -- a second event loop -------------------------------------------------------------------

PAIRS = [("asyncio", "asyncio"), ("asyncio", "trio"), ("trio", "asyncio"), ("trio", "trio")]


async def _use(client: EnturClient) -> int:
    await client.get_access_token()
    return (await client.get("/x")).status_code


async def _use_and_close(client: EnturClient) -> int:
    async with client:
        return await _use(client)


def _second_run(
    client: EnturClient, first: str, second: str, *, close: bool = False
) -> BaseException | int:
    assert anyio.run(_use_and_close if close else _use, client, backend=first) == 200
    try:
        return anyio.run(_use, client, backend=second)
    except Exception as exc:
        return exc


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_second_event_loop_gets_a_clear_error(first: str, second: str) -> None:
    """One client used from a second anyio.run (new loop, or the other backend) raises
    EventLoopError that says what to do, never a deep 'bound to a different event loop'."""
    fake = FakeEntur()
    outcome = _second_run(fake.client(token_store=MemoryTokenStore()), first, second)
    assert isinstance(outcome, EventLoopError), repr(outcome)
    assert "one event loop" in str(outcome)
    assert "different event loop" not in str(outcome)


async def test_replaced_async_generator_hooks_are_still_the_same_loop(
    entur_fake: FakeEntur,
) -> None:
    """Async-generator hooks that change within one run (a library installing its own, or
    none at all) change nothing: the per-request loop check is exact, and finds the same
    loop, so requests go on."""
    saved = sys.get_asyncgen_hooks()

    def other_firstiter(agen: object) -> None:
        if saved.firstiter is not None:
            saved.firstiter(agen)

    async with entur_fake.client() as client:
        statuses = [(await client.get("/x")).status_code]
        try:
            sys.set_asyncgen_hooks(firstiter=other_firstiter, finalizer=saved.finalizer)
            statuses.append((await client.get("/x")).status_code)
            sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
            statuses += [(await client.get("/x")).status_code for _ in range(2)]
        finally:
            sys.set_asyncgen_hooks(*saved)
        statuses.append((await client.get("/x")).status_code)
    assert statuses == [200] * 5
    assert entur_fake.token_count == 1


def test_one_asyncio_loop_run_several_times_is_one_loop() -> None:
    """An asyncio loop installs new hooks each time it runs (run_until_complete); the same
    loop run again is still the client's loop. (asyncio only: trio has no such call.)"""
    fake = FakeEntur()
    client = fake.client(token_store=MemoryTokenStore())
    loop = asyncio.new_event_loop()
    try:
        first = loop.run_until_complete(_use(client))
        second = loop.run_until_complete(_use(client))
        loop.run_until_complete(client.aclose())
    finally:
        loop.close()
    assert (first, second) == (200, 200)
    assert fake.token_count == 1


@pytest.mark.parametrize(("first", "second"), PAIRS)
@pytest.mark.slow
def test_second_event_loop_with_pooled_sockets_gets_a_clear_error(first: str, second: str) -> None:
    """The same over real sockets (httpcore2's pool, closed with the first loop's
    ``async with``: an asyncio transport cannot even be closed from another loop)."""
    fake = FakeEntur()
    with LoopbackServer(fake) as server:

        def new_client() -> EnturClient:
            return EnturClient(
                fake.client_id,
                fake.client_secret,
                client_name="test-app",
                environment=fake.environment(server.url),
                token_store=MemoryTokenStore(),
            )

        client = new_client()
        outcome = _second_run(client, first, second, close=True)
        assert isinstance(outcome, EventLoopError), repr(outcome)
        # Closed from the second loop: the first one's pooled sockets cannot be closed
        # there, so the same clear error instead of one from deep inside httpcore2.
        client = new_client()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert anyio.run(_use, client, backend=first) == 200
            with pytest.raises(EventLoopError, match="Close it in the event loop that used it"):
                anyio.run(client.aclose, backend=second)
            with pytest.raises(EventLoopError, match="Close it in the event loop"):
                anyio.run(client.__aexit__, backend=second)
            # The sockets the first run left open are reclaimed here, not in a later test.
            del client
            gc.collect()
    # Only what the first run left behind by not closing the client: no "Event loop is
    # closed" or other error from a half-done close.
    assert {w.category for w in caught} <= {ResourceWarning}, [str(w.message) for w in caught]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_client_built_outside_any_loop_works_in_the_loop_that_uses_it(backend: str) -> None:
    """A client created at import time (no loop yet) belongs to the first loop using it."""
    fake = FakeEntur()
    client = fake.client(token_store=MemoryTokenStore())
    assert anyio.run(_use, client, backend=backend) == 200
