"""Throw-away Redis topologies on free loopback ports, from the Debian binaries.

A single server, a 3-primary Redis Cluster (``redis-cli --cluster create``) and a primary
with a replica and 3 sentinels (``redis-server --sentinel``). No persistence; everything
stops when its ``with`` block ends.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from _common import free_port

#: The name the sentinels monitor.
SERVICE = "entur"


def missing() -> str | None:
    """Why these topologies cannot run here, or ``None`` when they can."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return "n/a (redis package missing)"
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"n/a ({binary} not installed)"
    return None


def _wait(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    import redis

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


@dataclass
class Node:
    """One redis-server (or sentinel) process."""

    port: int
    process: subprocess.Popen[bytes]

    def ping(self) -> bool:
        """True once it answers."""
        import redis

        with redis.Redis(port=self.port, socket_timeout=1) as client:
            return bool(client.ping())


@contextmanager
def _node(*args: str, sentinel: Path | None = None) -> Iterator[Node]:
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    argv = [binary, *([str(sentinel), "--sentinel"] if sentinel else [])]
    argv += ["--port", str(port), "--bind", "127.0.0.1"]
    if sentinel is None:
        argv += ["--save", "", "--appendonly", "no", *args]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    node = Node(port, process)
    try:
        _wait(node.ping, "redis-server to start", within=10)
        yield node
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=10)


@contextmanager
def redis_server() -> Iterator[str]:
    """A single server; yields its URL."""
    with _node() as node:
        yield f"redis://127.0.0.1:{node.port}/0"


@contextmanager
def redis_cluster() -> Iterator[str]:
    """Three primaries joined into a cluster; yields one node's URL."""
    import redis

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        nodes = [
            stack.enter_context(
                _node(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{i}.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",  # the default (port + 10000) may not exist
                    str(free_port()),
                    "--dir",
                    tmp,
                )
            )
            for i in range(3)
        ]
        cli = shutil.which("redis-cli")
        assert cli is not None
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )

        def ok() -> bool:
            for node in nodes:
                with redis.Redis(port=node.port) as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
            return True

        _wait(ok, "cluster_state:ok")
        yield f"redis://127.0.0.1:{nodes[0].port}"


@dataclass
class SentinelGroup:
    """A primary, a replica and 3 sentinels (quorum 2, failing over in about 2 s)."""

    primary: Node
    replica: Node
    sentinels: list[Node]

    @property
    def target(self) -> str:
        """The sentinels as ``host:port,...``."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def wait_for_failover(self) -> None:
        """Wait until a client asking the sentinels (as redis-py does) finds the replica
        promoted."""
        from redis.sentinel import Sentinel

        addresses = [("127.0.0.1", s.port) for s in self.sentinels]
        # Any: redis-py annotates Sentinel only in its newest releases (an ignore for the
        # older ones is an unused ignore with the newer).
        sentinel = cast(Any, Sentinel)(addresses, socket_timeout=0.5)

        def promoted() -> bool:
            host_port = sentinel.discover_master(SERVICE)
            return bool(host_port[1] == self.replica.port)

        _wait(promoted, "the failover")


@contextmanager
def sentinel_group() -> Iterator[SentinelGroup]:
    """A primary, its replica and 3 sentinels that know both and each other."""
    import redis

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        # A replica saves the snapshot its primary sends it: into tmp, not the cwd.
        primary = stack.enter_context(_node("--dir", tmp))
        replica = stack.enter_context(
            _node("--dir", tmp, "--replicaof", "127.0.0.1", str(primary.port))
        )
        sentinels = []
        for i in range(3):
            conf = Path(tmp) / f"sentinel-{i}.conf"
            conf.write_text(
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 400\n"
                f"sentinel failover-timeout {SERVICE} 2000\n"
                f"dir {tmp}\n"
            )
            sentinels.append(stack.enter_context(_node(sentinel=conf)))

        def ready() -> bool:
            for sentinel in sentinels:
                with redis.Redis(port=sentinel.port) as client:
                    state = client.sentinel_master(SERVICE)
                    if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                        return False
            return True

        _wait(ready, "the sentinels")
        yield SentinelGroup(primary, replica, sentinels)
