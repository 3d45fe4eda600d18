"""A fleet of real worker processes, each a real EnturClient making one authenticated call.

Both ends of one protocol live here: :func:`main` is the worker program, run as
``python tests/fleet_worker.py CONFIG``; :class:`Worker`, :func:`run_fleet` and
:class:`HoldFirstTokenRequest` are what the tests use to run and observe it. CONFIG is a
JSON object:

    base_url, audience, client_id, client_secret   where the fake Entur listens, and who we are
    backend          "asyncio" or "trio"
    store            "memory", "file", "redis", "cluster" or "sentinel"; target: the file
                     path, the Redis URL or the URL of one cluster node
    sentinels        for "sentinel": [[host, port], ...] of the sentinels; service: its name;
                     name: the Redis client name (optional)
    lease_ttl        Redis lease, seconds (optional); wait_timeout likewise
    fsize_limit      RLIMIT_FSIZE in bytes (optional): any larger write fails, as on a full disk
    otel             a file path (optional): the worker sets OpenTelemetry's global meter
                     provider (the SDK, an in-memory reader) and writes its metrics there
                     as JSON when it is done

Protocol: the worker imports everything and builds its client, prints ``ready``, waits for
one line on stdin (so a whole fleet starts at the same instant), makes its call, prints one
JSON line (status, fetches, times, warnings logged) and exits.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from entur_oauth import EnturClient, Environment, FileTokenStore, TokenStore

if TYPE_CHECKING:
    from entur_oauth.testing import FakeEntur


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _store(config: dict[str, Any]) -> TokenStore | None:
    kind = config["store"]
    if kind == "memory":
        return None  # the client's default: this process's memory
    if kind == "file":
        return FileTokenStore(config["target"])
    from entur_oauth import RedisTokenStore

    options = {
        "lease_ttl": config.get("lease_ttl", 15.0),
        "wait_timeout": config.get("wait_timeout"),
    }
    if kind in ("redis", "cluster"):
        return RedisTokenStore(config["target"], cluster=kind == "cluster", **options)
    if kind == "sentinel":
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry
        from redis.sentinel import Sentinel

        # As the README shows it: short timeouts and one immediate retry, so a dead primary
        # costs a fast error (the store then waits or fetches) rather than a slow backoff.
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [tuple(address) for address in config["sentinels"]], socket_timeout=0.5
        )
        primary = sentinel.master_for(  # type: ignore[no-untyped-call]
            config["service"],
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
            client_name=config.get("name", "fleet-worker"),
        )
        return RedisTokenStore(primary, **options)
    raise ValueError(kind)


async def _run(config: dict[str, Any], collected: _Collect) -> dict[str, Any]:
    base = config["base_url"]
    environment = Environment(
        name="fleet",
        token_url=f"{base}/oauth/token",
        audience=config["audience"],
        api_base_url=base,
    )
    async with EnturClient(
        config["client_id"],
        config["client_secret"],
        client_name="test-fleet",
        environment=environment,
        token_store=_store(config),
    ) as client:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        started = time.time()
        response = await client.get("/fleet")
        done = time.time()
        manager = client._manager
        assert manager is not None
        return {
            "status": response.status_code,
            "fetches": manager.fetches,
            "started": started,
            "done": done,
            "warnings": collected.messages,
        }


def main() -> None:
    """Run one worker with the JSON config in ``sys.argv[1]``."""
    config = json.loads(sys.argv[1])
    if config.get("fsize_limit") is not None:
        # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, like ENOSPC.
        limit = int(config["fsize_limit"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    collected = _Collect()
    logging.getLogger("entur_oauth").addHandler(collected)
    export = _export_metrics(config["otel"]) if config.get("otel") else None
    result = anyio.run(_run, config, collected, backend=config["backend"])
    if export is not None:
        export()
    print(json.dumps(result), flush=True)


def _export_metrics(path: str) -> Callable[[], None]:
    """Set the process's meter provider, as an application does; return what writes the
    metrics it collected to ``path``."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    def export() -> None:
        data = reader.get_metrics_data()
        Path(path).write_text(data.to_json() if data is not None else "{}")

    return export


# -- the parent side ---------------------------------------------------------------------


#: How many workers of a fleet run under coverage (when the tests do): the first few, both
#: event loops among them. The others run the same code, and coverage's tracing would
#: make each of them several times slower on a two-core machine.
MEASURED = 4


class Worker:
    """One worker subprocess; ``prefix`` runs it under a wrapper such as ``setpriv``."""

    def __init__(
        self, config: dict[str, Any], *, prefix: Sequence[str] = (), measured: bool = True
    ) -> None:
        env = dict(os.environ)
        if not measured:
            # A process that will be SIGKILLed must not run coverage: it would leave a
            # half-written data file that 'coverage combine' then complains about.
            env.pop("COVERAGE_PROCESS_CONFIG", None)
            env.pop("COVERAGE_PROCESS_START", None)
        self.process = subprocess.Popen(
            [*prefix, sys.executable, str(Path(__file__)), json.dumps(config)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the worker has built its client and waits for the start signal."""
        line = _readline(self.process, timeout)
        if line.strip() != "ready":
            # Its stderr says why; read before kill() closes the pipes.
            if self.process.poll() is None:
                self.process.kill()
            _, stderr = self.process.communicate()
            self.kill()
            raise RuntimeError(f"worker not ready within {timeout:.0f} s: {line!r} {stderr}")

    def go(self) -> None:
        """Let the worker make its call."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the worker to finish and return what it reported."""
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if self.process.returncode != 0:
            raise RuntimeError(f"worker exited with {self.process.returncode}: {stderr}")
        report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return report

    def kill(self) -> None:
        """SIGKILL the worker (no clean-up of any kind runs in it) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def run_fleet(
    configs: Sequence[dict[str, Any]], *, timeout: float = 60.0
) -> tuple[list[dict[str, Any]], float]:
    """Start one worker per config, release them at one instant, return (reports, seconds)."""
    workers = [Worker(config, measured=i < MEASURED) for i, config in enumerate(configs)]
    try:
        for worker in workers:
            worker.wait_ready(timeout)
        started = time.monotonic()
        for worker in workers:
            worker.go()
        reports = [worker.result(timeout) for worker in workers]
        return reports, time.monotonic() - started
    finally:
        for worker in workers:
            worker.kill()


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    # A thread, because a pipe's readline() has no timeout of its own.
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


class GateTokenRequests:
    """ASGI wrapper: token requests wait at a gate until :meth:`open`; the rest go through.

    Lets a test act (kill a Redis primary) while a fleet's token request is in flight.
    """

    def __init__(self, fake: FakeEntur) -> None:
        self.fake = fake
        self._open = threading.Event()
        #: Wall times at which token requests arrived.
        self.arrivals: list[float] = []

    def open(self) -> None:
        """Let every held and later token request through."""
        self._open.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection."""
        if scope["type"] == "http" and scope["path"] == self.fake.TOKEN_PATH:
            self.arrivals.append(time.time())
            # A threading.Event: the test opens the gate from its own thread.
            await anyio.to_thread.run_sync(self._open.wait)
        await self.fake(scope, receive, send)


class HoldFirstTokenRequest:
    """ASGI wrapper: the first token request never gets an answer; the rest go to the fake.

    The held request ends only when its client goes away (SIGKILL closes the socket), so a
    lease holder can be killed mid-fetch and the server still shuts down at once.
    """

    def __init__(self, fake: FakeEntur) -> None:
        self.fake = fake
        #: Wall time at which the first token request arrived (its sender holds the lock).
        self.held_at: float | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection."""
        if (
            scope["type"] == "http"
            and scope["path"] == self.fake.TOKEN_PATH
            and self.held_at is None
        ):
            self.held_at = time.time()
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await self.fake(scope, receive, send)


if __name__ == "__main__":
    main()
