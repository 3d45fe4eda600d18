"""A real redis-server on a free loopback port, for the Redis store tests.

Use it with ``pytest_plugins = ["tests.redis_fixture"]``. Without the ``redis-server``
binary the tests that need it fail when ``CI`` is set (CI must test Redis) and are skipped
otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from .conftest import free_port

__all__ = ["RedisServer", "redis_server", "redis_url"]


class RedisServer:
    """A ``redis-server`` subprocess: no persistence, loopback only."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        # No persistence (--save '', no AOF): nothing is written to disk, nothing outlives it.
        args = "--bind 127.0.0.1 --appendonly no --protected-mode yes --loglevel warning"
        # Its log goes to a temporary file, not a pipe nobody drains.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--save", "", "--logfile", "", *args.split()],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        if self._process.poll() is None:
                            self._process.kill()
                            self._process.wait()
                        self._log.seek(0)
                        output = self._log.read().decode(errors="replace")
                        self.stop()
                        raise RuntimeError(f"redis-server did not start: {output}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def client(self) -> redis.Redis:
        """Return a new synchronous client for this server."""
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def stop(self) -> None:
        """Stop the server and wait for it."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (it starts in milliseconds, but why repeat it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = (
            "redis-server is not installed (Debian: apt-get install redis-server); "
            "the Redis store tests need a real server."
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer(binary)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of an empty Redis database (flushed before and after each test)."""
    client = redis_server.client()
    try:
        client.flushall()
        yield redis_server.url
        client.flushall()
    finally:
        client.close()
