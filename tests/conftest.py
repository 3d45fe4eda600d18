"""Shared fixtures: both event loops, a clean environment, the fake Entur in-process and on
a real loopback socket."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import uvicorn

from entur_oauth._stores import default_memory_store
from entur_oauth.testing import FakeEntur

#: Fixtures that start a server or a process. A test that uses one, directly or through
#: another fixture, is marked ``slow`` at collection: nox runs those once per ``nox`` (on the
#: newest Python, and in ``lowest``), the in-process rest on every Python.
SLOW_FIXTURES = frozenset(
    {
        "entur_fake_url",  # the pytest plugin's fake on a loopback port (entur_env uses it)
        "loopback_fake",
        "redis_server",
        "redis_cluster_session",
        "fresh_redis_cluster",
        "redis_sentinel_session",
        "redis_sentinel",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that uses a server or process fixture."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


class UnmarkedSlowTestError(RuntimeError):
    """Raised when a test not marked ``slow`` starts a process or a listening socket."""


class _Guard:
    """Refuses processes and listening sockets to tests not marked ``slow``, so that a
    server-starting test cannot slip into the part of the suite run on every Python.

    Processes are seen through the interpreter's audit hook (every ``subprocess`` call);
    servers through ``socket.listen`` (uvicorn, the built-in server, anyio and trio all
    listen through it). Both are process-wide, so threads a test starts are seen too.
    """

    def __init__(self) -> None:
        self.test: str | None = None  # the unmarked test running now, if any
        self.caught: list[str] = []
        self._listen = socket.socket.listen

    def install(self) -> None:
        if socket.socket.listen is not self._listen:
            return
        sys.addaudithook(self._audit)
        guard, listen = self, self._listen

        def guarded_listen(sock: socket.socket, *args: int) -> None:
            guard.refuse(f"listens on {sock.getsockname()!r}")
            listen(sock, *args)

        socket.socket.listen = guarded_listen  # type: ignore[method-assign, assignment]

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event in {"subprocess.Popen", "os.posix_spawn", "os.fork"}:
            self.refuse(f"starts a process ({event} {args[0]!r})")

    def refuse(self, what: str) -> None:
        if self.test is not None:
            message = (
                f"{self.test} {what} without @pytest.mark.slow: mark it (or add the fixture "
                "that starts the server to SLOW_FIXTURES in tests/conftest.py)"
            )
            self.caught.append(message)
            raise UnmarkedSlowTestError(message)


GUARD = _Guard()


def pytest_configure(config: pytest.Config) -> None:
    """Install the guard (once: an audit hook cannot be removed)."""
    # trio is imported before the guard watches: some releases (0.25, the floor `lowest`
    # tests) run ldconfig on import (ctypes.util.find_library), which is no test's process.
    with contextlib.suppress(ImportError):
        import trio  # noqa: F401
    GUARD.install()


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether the test failed already (its report then names the refusal)."""
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _no_processes_unless_slow(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that starts a process or a server without the ``slow`` mark (also when
    the test caught the refusal)."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    GUARD.test, GUARD.caught = request.node.nodeid, []
    try:
        yield
    finally:
        GUARD.test = None
    if GUARD.caught and not request.node.stash.get(_FAILED, False):
        pytest.fail(GUARD.caught[0], pytrace=False)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every async test under asyncio and under trio."""
    return str(request.param)


#: For subprocesses: anything but loopback goes to a dead proxy, so an example or a README
#: command can never reach the real Entur. Both spellings, as urllib prefers the lowercase one.
NO_NETWORK = {
    name: value
    for upper, value in {
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost,::1",
    }.items()
    for name in (upper, upper.lower())
}


def _is_proxy_setting(name: str) -> bool:
    return name.lower() in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ENTUR_* variable of the developer's shell, no token from another test, and no proxy
    setting of the CI machine (httpx honours them even for 127.0.0.1, so a proxy would catch
    every loopback request the tests make)."""
    import os

    for name in list(os.environ):
        if name.startswith("ENTUR_") or _is_proxy_setting(name):
            monkeypatch.delenv(name)
    default_memory_store().clear()
    yield
    default_memory_store().clear()


@pytest.fixture
def fake() -> FakeEntur:
    """A fresh fake Entur, used in-process through ``fake.client()``."""
    return FakeEntur()


_REDIS_CLIENTS: list[Any] = []
_C = TypeVar("_C")


def closed_after_test(client: _C) -> _C:
    """Close a Redis client (or a ``Sentinel``'s clients) that a test made, when it ends.

    A test that hands the store its own client owns it, and redis-py 5 keeps a
    connection's socket in a reference cycle: left to the garbage collector, it is closed
    later, in some other test, with a ResourceWarning (an error here).
    """
    _REDIS_CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_redis_clients() -> Iterator[None]:
    yield
    while _REDIS_CLIENTS:
        client = _REDIS_CLIENTS.pop()
        for each in getattr(client, "sentinels", None) or [client]:  # a Sentinel: its own
            each.close()
            # close() leaves a pool it was handed (master_for's) open: disconnect it too.
            pool = getattr(each, "connection_pool", None)
            if pool is not None:
                pool.disconnect()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackServer:
    """A real uvicorn server on 127.0.0.1 serving an ASGI app, in a thread of its own."""

    def __init__(self, app: Any) -> None:
        # Bound here and handed to uvicorn: no window in which another process could take
        # a port picked as free (as free_port() would leave).
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self._socket.close()
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@pytest.fixture
def loopback_fake(fake: FakeEntur) -> Iterator[tuple[FakeEntur, str]]:
    """The fake Entur served by uvicorn on a real loopback port: (fake, base URL)."""
    with LoopbackServer(fake) as server:
        yield fake, server.url
