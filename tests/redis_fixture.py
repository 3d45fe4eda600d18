"""Real Redis servers on free loopback ports, for the Redis store tests.

A single server, a 3-primary Redis Cluster (``redis-cli --cluster create``) and a primary
with a replica and 3 sentinels (``redis-server --sentinel``), all from the Debian binaries.
Use them with ``pytest_plugins = ["tests.redis_fixture"]``. Without ``redis-server`` or
``redis-cli`` the tests that need them fail when ``CI`` is set (CI must test Redis) and are
skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from .conftest import free_port

__all__ = [
    "Cluster",
    "RedisServer",
    "SentinelGroup",
    "fresh_redis_cluster",
    "own_redis_server",
    "redis_cluster",
    "redis_cluster_session",
    "redis_cluster_with_replicas",
    "redis_sentinel",
    "redis_sentinel_session",
    "redis_sentinel_shared",
    "redis_server",
    "redis_url",
]


class RedisServer:
    """A ``redis-server`` subprocess: no persistence, loopback only.

    ``args`` are extra command-line options (cluster mode, ``--replicaof``, a sentinel's
    config file with ``--sentinel``). :meth:`kill` and :meth:`restart` keep the port.
    """

    def __init__(self, binary: str, *args: str, sentinel: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._binary = binary
        self._args = args
        self._sentinel = sentinel
        # Its log goes to a temporary file, not a pipe nobody drains.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._start()

    def _start(self) -> None:
        # A sentinel takes its config file (which it rewrites) first.
        argv = [self._binary, *([str(self._sentinel), "--sentinel"] if self._sentinel else [])]
        argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--loglevel", "warning"]
        if self._sentinel is None:
            # No persistence (--save '', no AOF): nothing written to disk, nothing outlives it.
            argv += ["--save", "", "--appendonly", "no", "--protected-mode", "yes", *self._args]
        self._process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
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

    def kill(self) -> None:
        """SIGKILL the server (it saves nothing, says goodbye to nobody) and reap it."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it holds its sockets but answers nothing."""
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Start the server again on the same port with the same options."""
        self.kill()
        self._start()

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


def _binary(name: str) -> str:
    """The path of a Redis binary; fail in CI without it (CI must test Redis), else skip."""
    binary = shutil.which(name)
    if binary is None:
        message = (
            f"{name} is not installed (Debian: apt-get install redis-server redis-tools); "
            "the Redis store tests need a real server."
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def wait_until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Poll ``check`` (Redis errors count as "not yet") until it holds."""
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (it starts in milliseconds, but why repeat it)."""
    server = RedisServer(_binary("redis-server"))
    yield server
    server.stop()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to freeze (:meth:`RedisServer.pause`) or kill."""
    server = RedisServer(_binary("redis-server"))
    yield server
    server.resume()
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


# -- Redis Cluster -------------------------------------------------------------------------


class Cluster:
    """Three cluster-enabled ``redis-server`` primaries joined by ``redis-cli --cluster create``,
    each with ``replicas`` replicas that take over when it dies."""

    def __init__(self, server: str, cli: str, workdir: str, replicas: int = 0) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for i in range(3 * (1 + replicas)):
                self.nodes.append(
                    RedisServer(
                        server,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{i}.conf",
                        "--cluster-node-timeout",
                        "1000",
                        # The bus port is the client port + 10000 unless given: too high
                        # for many of the free ports the OS hands out.
                        "--cluster-port",
                        str(free_port()),
                        "--dir",
                        workdir,
                    )
                )
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
            if replicas:
                # A replica that never synced would never take over (its data is too old).
                wait_until(self._replicas_synced, "the replicas to sync")
        except BaseException:
            self.stop()
            raise
        self.url = self.nodes[0].url.removesuffix("/0")

    def _replicas_synced(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                info = client.info("replication")
                if info["role"] == "slave" and info["master_link_status"] != "up":
                    return False
        return True

    def wait_ok(self, *, dead: tuple[RedisServer, ...] = ()) -> None:
        """Wait until every node (but the ``dead``) reports the cluster up (all 16384 slots
        served)."""

        def ok() -> bool:
            for node in self.nodes:
                if node in dead:
                    continue
                with node.client() as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
            return True

        wait_until(ok, "cluster_state:ok")

    def client(self) -> RedisCluster:
        """Return a new cluster client (it follows MOVED and ASK on its own)."""
        return RedisCluster.from_url(self.url, socket_timeout=2)

    def node_for(self, key: str) -> RedisServer:
        """The node that serves ``key``'s hash slot."""
        with self.client() as client:
            node = client.get_node_from_key(key)
        return next(n for n in self.nodes if n.port == node.port)

    def wait_for_failover(self, dead: RedisServer) -> None:
        """Wait until a replica has taken over from the ``dead`` primary and the cluster is
        up again. (Until the others mark it failed, they still report the cluster up.)"""
        wait_until(lambda: len(self.primaries(dead=(dead,))) == 3, "a replica to take over")
        self.wait_ok(dead=(dead,))

    def primaries(self, *, dead: tuple[RedisServer, ...] = ()) -> list[RedisServer]:
        """The nodes (but the ``dead``) that are primaries now."""
        result = []
        for node in self.nodes:
            if node in dead:
                continue
            with node.client() as client:
                if client.role()[0] in (b"master", "master"):
                    result.append(node)
        return result

    def flushall(self) -> None:
        """Empty every node."""
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


def _cluster(tmp: Path, replicas: int = 0) -> Iterator[Cluster]:
    cluster = Cluster(_binary("redis-server"), _binary("redis-cli"), str(tmp), replicas)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 3-primary cluster for the session; use :func:`redis_cluster` in tests."""
    yield from _cluster(tmp_path_factory.mktemp("cluster"))


@pytest.fixture
def redis_cluster(redis_cluster_session: Cluster) -> Iterator[Cluster]:
    """The session's cluster, emptied before and after each test."""
    redis_cluster_session.flushall()
    yield redis_cluster_session
    redis_cluster_session.flushall()


@pytest.fixture
def fresh_redis_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own, for tests that stop nodes or move slots."""
    yield from _cluster(tmp_path)


@pytest.fixture
def redis_cluster_with_replicas(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own whose 3 primaries each have a replica (6 nodes), for
    tests that kill a primary and let its replica take over."""
    yield from _cluster(tmp_path, replicas=1)


# -- Sentinel ------------------------------------------------------------------------------

SERVICE = "entur"


class SentinelGroup:
    """A primary, a replica and 3 sentinels (quorum 2) that fail over in about a second."""

    def __init__(self, server: str, workdir: Path) -> None:
        # A replica saves the snapshot its primary sends it: into workdir, not the cwd.
        where = ("--dir", str(workdir))
        self.primary = RedisServer(server, *where)
        self.servers = [self.primary]
        self.sentinels: list[RedisServer] = []
        try:
            self.replica = RedisServer(
                server, *where, "--replicaof", "127.0.0.1", str(self.primary.port)
            )
            self.servers.append(self.replica)
            for i in range(3):
                conf = workdir / f"sentinel-{i}.conf"
                conf.write_text(
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                    f"sentinel down-after-milliseconds {SERVICE} 400\n"
                    f"sentinel failover-timeout {SERVICE} 2000\n"
                    f"dir {workdir}\n"
                )
                self.sentinels.append(RedisServer(server, sentinel=conf))
            wait_until(self._ready, "sentinels that know the replica and each other")
        except BaseException:
            self.stop()
            raise

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each sentinel, as ``redis.sentinel.Sentinel`` takes them."""
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def _ready(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(SERVICE)
                if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                    return False
        with self.replica.client() as client:
            return bool(client.info("replication")["master_link_status"] == "up")

    def wait_for_failover(self) -> None:
        """Wait until a client asking the sentinels (as redis-py does) finds the replica
        promoted: the sentinels name it, and see it up and reporting itself primary."""
        sentinel = Sentinel(self.addresses, socket_timeout=0.5)  # type: ignore[no-untyped-call]

        def promoted() -> bool:
            host_port = sentinel.discover_master(SERVICE)  # type: ignore[no-untyped-call]
            return bool(host_port[1] == self.replica.port)

        try:
            wait_until(promoted, "the failover")
        finally:
            for client in sentinel.sentinels:
                client.close()

    def stop(self) -> None:
        """Stop the sentinels, then the servers."""
        for node in [*self.sentinels, *self.servers]:
            node.stop()


@pytest.fixture(scope="session")
def redis_sentinel_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One Sentinel group for the session; use :func:`redis_sentinel_shared` in tests."""
    group = SentinelGroup(_binary("redis-server"), tmp_path_factory.mktemp("sentinel"))
    yield group
    group.stop()


@pytest.fixture
def redis_sentinel_shared(redis_sentinel_session: SentinelGroup) -> Iterator[SentinelGroup]:
    """The session's Sentinel group, emptied before and after, for tests that kill nothing."""
    with redis_sentinel_session.primary.client() as client:
        client.flushall()
        yield redis_sentinel_session
        client.flushall()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A fresh primary, replica and 3 sentinels for one test (the tests kill primaries)."""
    group = SentinelGroup(_binary("redis-server"), tmp_path)
    yield group
    group.stop()
