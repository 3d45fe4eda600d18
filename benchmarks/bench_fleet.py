"""Fleet: 16 processes start at once; how many token requests reach the token endpoint?

The fake Entur runs behind uvicorn in a process of its own (token endpoint 50 ms, API
calls checked); 16 worker processes (half asyncio, half trio) each build an
``EnturClient``, report ready, wait at a barrier, then send 3 requests. Once with the
default per-process memory store (the baseline: one fetch per process), once with a
shared ``FileTokenStore``, once with a shared ``RedisTokenStore`` on a real
``redis-server`` and once on a 3-primary Redis Cluster. Target: 1 token request for the
whole fleet with a shared store.

Then Sentinel: a primary, a replica and 3 sentinels; the token endpoint takes 1 s, and
the primary is SIGKILLed in the middle of the fleet's fetch. Targets: no failed call, at
most 2 token requests; reported: the time from the kill until every process is served.
After the failover a new fleet of 16 starts: 0 token requests if the token reached the
new primary, else 1.

Run as ``python bench_fleet.py --worker ...`` it is one of the workers.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import httpx2
from _common import (
    API_PATH,
    BACKENDS,
    ENTUR,
    PYTHON,
    FigureResult,
    Row,
    Server,
    log,
    make_client,
    median,
    serve,
    table,
    verdict,
    x,
)
from _redis import SERVICE, missing, redis_cluster, redis_server, sentinel_group

PROCESSES = 16
#: Fleets per store.
REPEATS = 3
REQUESTS_EACH = 3
TOKEN_DELAY = 0.05
STORES = ("memory", "file", "redis", "cluster")
#: The Sentinel fleet: a token request that lasts long enough to kill the primary during
#: it, a short lease (a lease lost with the primary expires soon), and a wait longer
#: than the failover (about 2 s here), so that waiters wait through it.
FAILOVER_TOKEN_DELAY = 1.0
KILL_AFTER = 0.5
LEASE_TTL = 2.0
WAIT_TIMEOUT = 15.0


# -- the worker ---------------------------------------------------------------------------


def _store(kind: str, arg: str) -> Any:
    if kind == "file":
        from entur_oauth._file_store import FileTokenStore

        return FileTokenStore(arg)
    if kind in ("redis", "cluster"):
        from entur_oauth._redis_store import RedisTokenStore

        return RedisTokenStore(arg, cluster=kind == "cluster")
    if kind == "sentinel":
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry
        from redis.sentinel import Sentinel

        from entur_oauth._redis_store import RedisTokenStore

        sentinels = [(host, int(port)) for host, port in (a.split(":") for a in arg.split(","))]
        # Any: redis-py annotates Sentinel only in its newest releases.
        sentinel = cast(Any, Sentinel)(sentinels, socket_timeout=0.5)
        primary = sentinel.master_for(
            SERVICE,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],  # as docs/many-workers.md shows it
        )
        return RedisTokenStore(primary, lease_ttl=LEASE_TTL, wait_timeout=WAIT_TIMEOUT)
    return None  # the default: this process's MemoryTokenStore


def worker(kind: str, store_arg: str, base_url: str, backend: str) -> None:
    """Build a client, say ready, wait for "go" on stdin, send a few requests; print the
    wall time of the first answer."""

    async def main() -> None:
        client = make_client(
            ENTUR,
            transport=httpx2.AsyncHTTPTransport(),
            token="",
            base_url=base_url,
            token_store=_store(kind, store_arg),
        )
        async with client:
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            for i in range(REQUESTS_EACH):
                response = await client.get(base_url + API_PATH)
                if response.status_code != 200:
                    raise SystemExit(f"HTTP {response.status_code}")
                if i == 0:
                    print(f"served {time.time()}", flush=True)

    anyio.run(main, backend=backend)


# -- the fleet ----------------------------------------------------------------------------


@dataclass
class Fleet:
    """What one fleet did."""

    token_requests: int
    #: Seconds from the barrier until every process had finished.
    seconds: float
    #: Wall time at which each process got its first answer (those that did).
    served: list[float]
    #: Processes that exited with an error (a failed call).
    failed: int


def _fleet(
    kind: str, store_arg: str, server: Server, during: Callable[[], None] | None = None
) -> Fleet:
    """Start the fleet, release it at once, call ``during`` (if given); report it."""
    server.reset()
    procs = [
        subprocess.Popen(
            [PYTHON, __file__, "--worker", kind, store_arg, server.url, BACKENDS[i % 2]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for i in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"a {kind} worker failed to start")
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        if during is not None:
            during()
        served: list[float] = []
        failed = 0
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            failed += proc.returncode != 0
            served += [float(line.split()[1]) for line in out.split(b"\n") if line[:6] == b"served"]
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Fleet(server.stats()["token_requests"], elapsed, served, failed)


def _available(kind: str) -> str | None:
    """Why ``kind`` cannot run here, or ``None`` when it can."""
    module = {"file": "entur_oauth._file_store", "redis": "entur_oauth._redis_store"}.get(kind)
    try:
        if module is not None:
            importlib.import_module(module)  # the redis store also needs the redis package
    except ImportError:
        return "n/a (store missing)"
    if kind in ("redis", "cluster", "sentinel"):
        return missing()
    return None


def _shared_fleets(kind: str, server: Server, tmp: str, repeats: int) -> list[Fleet]:
    """``repeats`` fleets on ``kind``, each with a fresh, empty store."""
    fleets = []
    for repeat in range(repeats):
        if kind in ("redis", "cluster"):
            with (redis_server if kind == "redis" else redis_cluster)() as url:
                fleets.append(_fleet(kind, url, server))
        else:
            fleets.append(_fleet(kind, str(Path(tmp) / f"tokens-{repeat}"), server))
        if fleets[-1].failed:
            raise RuntimeError(f"a {kind} worker failed")
    return fleets


def _store_rows(server: Server, repeats: int) -> list[Row]:
    rows: list[Row] = []
    baseline: int | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for kind in STORES:
            name = "redis cluster" if kind == "cluster" else kind
            figure = f"fleet: token requests, {PROCESSES} processes at once ({name} store)"
            target = f"= {PROCESSES} (one each)" if kind == "memory" else "= 1"
            absent = _available(kind)
            if absent is not None:
                rows.append(Row(figure=figure, this=absent, target=target, verdict="n/a"))
                continue
            log(f"fleet: {kind} store, {PROCESSES} processes")
            fleets = _shared_fleets(kind, server, tmp, repeats)
            counts = [fleet.token_requests for fleet in fleets]
            if kind == "memory":
                baseline = max(counts)
            wanted = PROCESSES if kind == "memory" else 1
            rows.append(
                Row(
                    figure=figure,
                    this=" / ".join(map(str, counts))
                    + f" (median {median([f.seconds for f in fleets]):.2f} s after the barrier)",
                    ratio=f"{x(max(counts) / baseline)} of memory" if baseline else "-",
                    target=target + (" in each fleet" if repeats > 1 else ""),
                    verdict=verdict(all(count == wanted for count in counts)),
                )
            )
    return rows


def _failover_rows() -> list[Row]:
    """The Sentinel primary killed mid-fetch, then a new fleet after the failover."""
    killed = f"fleet: Sentinel primary SIGKILLed mid-fetch, {PROCESSES} processes"
    after = f"fleet: a new fleet of {PROCESSES} after that failover"
    absent = _available("sentinel")
    if absent is not None:
        return [Row(figure=f, this=absent, verdict="n/a") for f in (killed, after)]
    log(f"fleet: Sentinel failover, {PROCESSES} processes")
    import redis

    with sentinel_group() as group, serve(token_delay=FAILOVER_TOKEN_DELAY) as server:
        kill: list[float] = []

        def kill_primary() -> None:
            time.sleep(KILL_AFTER)  # the lease holder's token request is in flight
            kill.append(time.time())
            group.primary.process.kill()

        first = _fleet("sentinel", group.target, server, during=kill_primary)
        group.wait_for_failover()
        with redis.Redis(port=group.replica.port) as promoted:
            stored = bool(promoted.keys("entur-oauth:*"))
        second = _fleet("sentinel", group.target, server)
    served = max(first.served) - kill[0] if first.served else float("nan")
    expected = 0 if stored else 1
    return [
        Row(
            figure=killed,
            this=f"{first.token_requests} token requests, {first.failed} failed processes; "
            f"all served {served:.2f} s after the kill",
            target="<= 2 token requests, 0 failed",
            verdict=verdict(first.failed == 0 and first.token_requests <= 2),
        ),
        Row(
            figure=after,
            this=f"{second.token_requests} token requests "
            f"(token on the new primary: {'yes' if stored else 'no'}), {second.failed} failed",
            target="0 if the token reached the replica, else 1",
            verdict=verdict(second.failed == 0 and second.token_requests == expected),
        ),
    ]


def run(quick: bool = False) -> FigureResult:
    """Run the fleet ``REPEATS`` times per store, each time with a fresh store, then the
    Sentinel failover once.

    The count is exact, so there is nothing to average; repeating is for a race that
    would let two processes fetch only now and then. Every fleet must hit the target.
    """
    with serve(token_delay=TOKEN_DELAY, validate=True) as server:
        rows = _store_rows(server, 1 if quick else REPEATS)
    return FigureResult(rows=rows + _failover_rows())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:6])
    else:
        print(table(run(quick="--quick" in sys.argv).rows))
