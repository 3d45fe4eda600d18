"""Fleet: 16 processes start at once; how many token requests reach the token endpoint?

The fake Entur runs behind uvicorn in a process of its own (token endpoint 50 ms, API
calls checked); 16 worker processes (half asyncio, half trio) each build an
``EnturClient``, report ready, wait at a barrier, then send 3 requests. Once with the
default per-process memory store (the baseline: one fetch per process), once with a
shared ``FileTokenStore`` and once with a shared ``RedisTokenStore`` on a real
``redis-server``. Target: 1 token request for the whole fleet with a shared store.

Run as ``python bench_fleet.py --worker ...`` it is one of the workers.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    free_port,
    log,
    make_client,
    median,
    serve,
    table,
    verdict,
    x,
)

PROCESSES = 16
#: Fleets per store.
REPEATS = 3
REQUESTS_EACH = 3
TOKEN_DELAY = 0.05
STORES = ("memory", "file", "redis")


# -- the worker ---------------------------------------------------------------------------


def _store(kind: str, arg: str) -> Any:
    if kind == "file":
        from entur_oauth._file_store import FileTokenStore

        return FileTokenStore(arg)
    if kind == "redis":
        from entur_oauth._redis_store import RedisTokenStore

        return RedisTokenStore(arg)
    return None  # the default: this process's MemoryTokenStore


def worker(kind: str, store_arg: str, base_url: str, backend: str) -> None:
    """Build a client, say ready, wait for "go" on stdin, send a few requests."""

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
            for _ in range(REQUESTS_EACH):
                response = await client.get(base_url + API_PATH)
                if response.status_code != 200:
                    raise SystemExit(f"HTTP {response.status_code}")

    anyio.run(main, backend=backend)


# -- the fleet ----------------------------------------------------------------------------


def _fleet(kind: str, store_arg: str, server: Server) -> tuple[int, float]:
    """Start the fleet, release it at once; return (token requests, seconds to finish)."""
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
        for proc in procs:
            if proc.wait(timeout=120) != 0:
                raise RuntimeError(f"a {kind} worker failed")
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return server.stats()["token_requests"], elapsed


@contextmanager
def _redis_server() -> Iterator[str]:
    """A throw-away redis-server on a free loopback port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise LookupError("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _available(kind: str) -> str | None:
    """Why ``kind`` cannot run here, or ``None`` when it can."""
    module = {"file": "entur_oauth._file_store", "redis": "entur_oauth._redis_store"}.get(kind)
    try:
        if module is not None:
            importlib.import_module(module)  # the redis store also needs the redis package
    except ImportError:
        return "n/a (store missing)"
    if kind == "redis" and shutil.which("redis-server") is None:
        return "n/a (redis-server not installed)"
    return None


def run(quick: bool = False) -> FigureResult:
    """Run the fleet ``REPEATS`` times per store, each time with a fresh store.

    The count is exact, so there is nothing to average; repeating is for a race that
    would let two processes fetch only now and then. Every fleet must hit the target.
    """
    repeats = 1 if quick else REPEATS
    rows: list[Row] = []
    baseline: int | None = None
    with (
        serve(token_delay=TOKEN_DELAY, validate=True) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for kind in STORES:
            figure = f"fleet: token requests, {PROCESSES} processes at once ({kind} store)"
            target = f"= {PROCESSES} (one each)" if kind == "memory" else "= 1"
            missing = _available(kind)
            if missing is not None:
                rows.append(Row(figure=figure, this=missing, target=target, verdict="n/a"))
                continue
            log(f"fleet: {kind} store, {PROCESSES} processes")
            counts: list[int] = []
            times: list[float] = []
            for repeat in range(repeats):
                if kind == "redis":
                    with _redis_server() as url:  # a fresh, empty server each time
                        count, elapsed = _fleet(kind, url, server)
                else:
                    count, elapsed = _fleet(kind, str(Path(tmp) / f"tokens-{repeat}"), server)
                counts.append(count)
                times.append(elapsed)
            if kind == "memory":
                baseline = max(counts)
            wanted = PROCESSES if kind == "memory" else 1
            rows.append(
                Row(
                    figure=figure,
                    this=" / ".join(map(str, counts))
                    + f" (median {median(times):.2f} s after the barrier)",
                    ratio=f"{x(max(counts) / baseline)} of memory" if baseline else "-",
                    target=target + (" in each fleet" if repeats > 1 else ""),
                    verdict=verdict(all(count == wanted for count in counts)),
                )
            )
    return FigureResult(rows=rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:6])
    else:
        print(table(run(quick="--quick" in sys.argv).rows))
