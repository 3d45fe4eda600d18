"""Opening and closing like ``httpx2.AsyncClient`` (issue 17 item 1), on asyncio and trio.

Default settings hold no task group: a client may be entered in one task and left in
another (a pytest-asyncio fixture, an aiohttp-style startup and cleanup hook), and several
may be closed in any order. ``task_group=`` lends the client the user's group, which keeps
that freedom; ``RefreshPolicy(background=True)`` alone makes the client hold a group of its
own, and leaving that wrongly raises :class:`LifetimeError` before anyio or trio is touched.
A client used after it was closed says so.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import pytest
import pytest_asyncio

from entur_oauth import (
    EnturClient,
    EnturError,
    LifetimeError,
    MemoryTokenStore,
    RefreshPolicy,
    RetryPolicy,
)
from entur_oauth.testing import FakeClock, FakeEntur

from ._faults import TokenGate, eventually

CLOSED = "This EnturClient is closed"


def _client(fake: FakeEntur, **kwargs: Any) -> EnturClient:
    kwargs.setdefault("token_store", MemoryTokenStore())
    return fake.client(**kwargs)


# -- a real pytest-asyncio fixture -----------------------------------------------------------

_fake = FakeEntur()


@pytest_asyncio.fixture
async def entur() -> AsyncIterator[EnturClient]:
    """The fixture most projects write for an HTTP client. pytest-asyncio runs its setup
    and its teardown in two different tasks: checked here, so the test below exercises a
    cross-task exit (the setup task is kept, so its id cannot be reused meanwhile)."""
    async with _client(_fake) as client:
        setup = asyncio.current_task()
        yield client
        teardown = asyncio.current_task()
        assert setup is not None
        assert teardown is not None
        assert setup is not teardown
    assert client.is_closed


@pytest.mark.asyncio
async def test_a_pytest_asyncio_fixture_enters_and_leaves_in_two_tasks(
    entur: EnturClient,
) -> None:
    """The issue's fixture runs for real under pytest-asyncio: requests work in the test,
    and the teardown, in another task than the setup, closes the client without "exit
    cancel scope in a different task" (an error there fails this test)."""
    assert (await entur.get("/x")).status_code == 200
    assert entur.token_fetches == 1


# -- the same on both loops ------------------------------------------------------------------


@pytest.mark.anyio
async def test_startup_and_cleanup_hooks_in_two_tasks(fake: FakeEntur) -> None:
    """An aiohttp-style app: the startup hook enters the client in one task, requests use
    it in others, the cleanup hook leaves it in yet another task."""
    app: dict[str, Any] = {}
    started, shutdown = anyio.Event(), anyio.Event()

    async def startup() -> None:
        app["entur"] = await _client(fake).__aenter__()
        app["startup_task"] = anyio.get_current_task().id
        started.set()
        await shutdown.wait()  # alive meanwhile, so the two task ids cannot coincide

    async def handle() -> None:
        app.setdefault("statuses", []).append((await app["entur"].get("/x")).status_code)

    async def cleanup() -> None:
        app["cleanup_task"] = anyio.get_current_task().id
        await app["entur"].__aexit__(None, None, None)

    async with anyio.create_task_group() as server:
        server.start_soon(startup)
        await started.wait()
        for hook in (handle, handle, cleanup):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hook)
        shutdown.set()
    assert app["startup_task"] != app["cleanup_task"]
    assert app["statuses"] == [200, 200]
    assert app["entur"].is_closed
    assert fake.token_count == 1


@pytest.mark.anyio
async def test_two_clients_entered_by_hand_close_in_the_order_they_opened(
    fake: FakeEntur,
) -> None:
    """``a`` and ``b`` entered by hand, then ``a`` left before ``b`` (not nesting order),
    as two httpx2 clients allow; the loop is fine afterwards (a task group still works)."""
    a, b = _client(fake), _client(fake)
    await a.__aenter__()
    await b.__aenter__()
    assert (await a.get("/x")).status_code == (await b.get("/x")).status_code == 200
    await a.__aexit__(None, None, None)
    await b.__aexit__(None, None, None)
    assert a.is_closed
    assert b.is_closed
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0)


@pytest.mark.anyio
async def test_clients_in_async_exit_stacks_close_in_any_order(fake: FakeEntur) -> None:
    """Each client in its own ``AsyncExitStack``, the stacks closed first-in first-out."""
    stacks = [AsyncExitStack() for _ in range(3)]
    clients = [await stack.enter_async_context(_client(fake)) for stack in stacks]
    for client in clients:
        assert (await client.get("/x")).status_code == 200
    for stack in stacks:
        await stack.aclose()
    assert all(client.is_closed for client in clients)


@pytest.mark.anyio
async def test_a_hundred_clients_close_in_random_order(fake: FakeEntur) -> None:
    """100 clients entered one after the other and left in a random order: all close."""
    clients = [await _client(fake).__aenter__() for _ in range(100)]
    for client in clients[::10]:
        assert (await client.get("/x")).status_code == 200
    order = list(range(100))
    random.Random(17).shuffle(order)
    assert order != sorted(order, reverse=True)  # not nesting order
    for index in order:
        await clients[index].__aexit__(None, None, None)
    assert all(client.is_closed for client in clients)


@pytest.mark.anyio
async def test_a_user_task_group_lets_the_client_close_anywhere(fake: FakeEntur) -> None:
    """With ``task_group=`` (and a background refresher in it) the client holds no cancel
    scope of its own: left in another task and out of order, it closes, and the
    refresher stops, so the user's task group ends."""
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            policy = RefreshPolicy(background=True)
            a = await _client(fake, task_group=tg, refresh=policy).__aenter__()
            b = await _client(fake, task_group=tg, refresh=policy).__aenter__()
            assert (await a.get("/x")).status_code == 200
            await a.__aexit__(None, None, None)  # out of nesting order
            async with anyio.create_task_group() as other:
                other.start_soon(b.__aexit__, None, None, None)  # another task
    assert a.is_closed
    assert b.is_closed


# -- a held task group of the client's own ---------------------------------------------------


@pytest.mark.anyio
async def test_leaving_a_held_task_group_in_another_task_is_refused(fake: FakeEntur) -> None:
    """``RefreshPolicy(background=True)`` without ``task_group=``: leaving from another task
    raises LifetimeError, saying what to do, with the connections closed and the
    refresher stopped; nothing is corrupted, and the entering task then leaves cleanly."""
    clock = FakeClock()
    client = _client(fake, refresh=RefreshPolicy(background=True), clock=clock)
    errors: list[BaseException] = []

    async def leave_elsewhere() -> None:
        try:
            await client.__aexit__(None, None, None)
        except LifetimeError as exc:
            errors.append(exc)

    await client.__aenter__()
    assert (await client.get("/x")).status_code == 200
    async with anyio.create_task_group() as tg:
        tg.start_soon(leave_elsewhere)
    [error] = errors
    assert isinstance(error, EnturError)
    assert isinstance(error, RuntimeError)
    message = str(error)
    assert "in another task" in message
    assert "task_group=" in message
    assert "the task that entered it" in message
    assert client.is_closed
    await eventually(lambda: not client._manager.background_running)  # type: ignore[union-attr]
    await client.__aexit__(None, None, None)  # from the right task: closes the group
    with pytest.raises(LifetimeError, match=CLOSED):
        await client.get("/x")


@pytest.mark.anyio
async def test_leaving_held_task_groups_out_of_order_is_refused(fake: FakeEntur) -> None:
    """Two clients with a background refresher, entered by hand: leaving the outer one
    first raises LifetimeError (out of nesting order) before anyio or trio sees a wrong
    exit; in nesting order afterwards both close and the loop is fine."""
    policy = RefreshPolicy(background=True)
    a = await _client(fake, refresh=policy, clock=FakeClock()).__aenter__()
    b = await _client(fake, refresh=policy, clock=FakeClock()).__aenter__()
    with pytest.raises(LifetimeError, match="out of nesting order"):
        await a.__aexit__(None, None, None)
    assert a.is_closed  # its connections, all the same
    assert not b.is_closed
    assert (await b.get("/x")).status_code == 200
    await b.__aexit__(None, None, None)
    await a.__aexit__(None, None, None)
    assert b.is_closed
    async with anyio.create_task_group() as tg:  # neither loop was corrupted
        tg.start_soon(anyio.sleep, 0)


@pytest.mark.anyio
async def test_held_task_groups_in_nesting_order_close_quietly(fake: FakeEntur) -> None:
    """The structured use of a background refresher: nested ``async with``, and a default
    client interleaved with them, which holds nothing and may close in any order."""
    policy = RefreshPolicy(background=True)
    plain = await _client(fake).__aenter__()
    async with (
        _client(fake, refresh=policy, clock=FakeClock()) as outer,
        _client(fake, refresh=policy, clock=FakeClock()) as inner,
    ):
        assert outer._manager is not None
        assert outer._manager.background_running
        assert (await inner.get("/x")).status_code == 200
        await plain.__aexit__(None, None, None)
    assert outer._manager is not None
    assert not outer._manager.background_running


# -- the shared fetch without a task group ---------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("leader_cancelled", [True, False])
async def test_a_cancelled_fetcher_hands_the_fetch_on(
    fake: FakeEntur, leader_cancelled: bool
) -> None:
    """Default settings (no task group): 100 first calls, half of them cancelled while the
    first token request is in flight (the one running it among them, or not): at most
    2 token requests sent, 50 successes, and no caller that was not cancelled fails or is
    cancelled."""
    gate = TokenGate(fake)
    client = _client(fake, transport=httpx2.ASGITransport(app=gate))
    scopes = [anyio.CancelScope() for _ in range(100)]
    to_cancel = range(0, 100, 2) if leader_cancelled else range(1, 100, 2)
    statuses: list[int] = []
    failures: list[BaseException] = []

    async def call(index: int) -> None:
        with scopes[index]:
            try:
                statuses.append((await client.get("/x")).status_code)
            except Exception as exc:
                failures.append(exc)

    with anyio.fail_after(10):
        async with client, anyio.create_task_group() as tg:
            manager = client._manager
            assert manager is not None
            gate.close()
            tg.start_soon(call, 0)  # leads: its token request is held at the gate
            await eventually(lambda: gate.arrived == 1)
            for index in range(1, 100):
                tg.start_soon(call, index)
            await eventually(lambda: manager.waits == 100)
            for index in to_cancel:
                scopes[index].cancel()
            if leader_cancelled:
                await eventually(lambda: gate.arrived == 2)  # a waiter took the fetch on
            gate.open()
    assert failures == []
    assert statuses == [200] * 50
    assert [scope.cancelled_caught for scope in scopes].count(True) == 50
    assert gate.arrived == (2 if leader_cancelled else 1)  # token requests sent
    assert fake.token_count == 1  # the cancelled one never reached Entur
    assert manager._flight is None


# -- a closed client -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_closed_client_says_so_on_the_api_path(fake: FakeEntur) -> None:
    """After ``async with``: an API request (the token cached) raises LifetimeError, not
    httpx2's RuntimeError; so does entering it again."""
    async with _client(fake) as client:
        assert (await client.get("/x")).status_code == 200
    with pytest.raises(LifetimeError, match=CLOSED):
        await client.get("/x")
    with pytest.raises(LifetimeError, match=CLOSED):
        await client.request("GET", "/geocoder/v1/autocomplete", withhold_token=True)
    with pytest.raises(LifetimeError, match=CLOSED):
        await client.__aenter__()
    open_api = _client(fake, credentials=False)
    await open_api.aclose()
    with pytest.raises(LifetimeError, match=CLOSED):
        await open_api.get("/geocoder/v1/autocomplete")
    assert fake.token_count == 1


@pytest.mark.anyio
async def test_a_closed_client_says_so_on_the_token_path(fake: FakeEntur) -> None:
    """After ``aclose()``, before any token: every way to a token raises LifetimeError, and
    no token request is sent."""
    client = _client(fake)
    await client.aclose()
    for attempt in (client.get_access_token, client.fetch_token, lambda: client.get("/x")):
        with pytest.raises(LifetimeError, match=CLOSED):
            await attempt()
    assert fake.token_count == 0


@pytest.mark.anyio
async def test_a_client_closed_during_a_token_retry_says_so(fake: FakeEntur) -> None:
    """A token fetch is between two attempts (a 503, then a back-off on the clock) when
    another task closes the client: the caller gets LifetimeError ("closed"), not a
    token request that "failed (RuntimeError)"."""
    clock = FakeClock()
    fake.fail_token(503)
    client = _client(fake, clock=clock, retry=RetryPolicy(attempts=3))
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await client.get_access_token()
        except LifetimeError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await eventually(lambda: clock.next_deadline() is not None)  # backing off
            await client.aclose()
            clock.advance(60)
    [error] = errors
    assert CLOSED in str(error)
    assert fake.token_count == 1
