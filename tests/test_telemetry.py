"""Telemetry of the token lifecycle: OpenTelemetry metrics and spans, and the log events.

Each test gets OpenTelemetry SDK providers of its own (an in-memory metric reader and span
exporter), handed to the library the way it looks them up on every event
(``metrics.get_meter_provider()``, ``trace.get_tracer_provider()``): the process's global
providers, which OpenTelemetry lets a process set once, are never touched.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from entur_oauth import (
    ForbiddenError,
    InvalidCredentialsError,
    RefreshPolicy,
    RetryPolicy,
    TokenRequestError,
    UnauthorizedError,
)
from entur_oauth.testing import FakeClock, FakeEntur

from .conftest import LoopbackServer
from .fleet_worker import run_fleet

pytestmark = pytest.mark.anyio


class Telemetry:
    """One test's OpenTelemetry SDK: what the library recorded, read back."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of every data point of the metric ``name``."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "entur_oauth"
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
        return found

    def total(self, name: str, **attributes: Any) -> float:
        """Sum (counters) or count (histograms) over the points matching ``attributes``."""
        wanted = {key.replace("__", "."): value for key, value in attributes.items()}
        total = 0
        for attrs, point in self.points(name):
            if all(attrs.get(k) == v for k, v in wanted.items()):
                total += point.count if hasattr(point, "count") else point.value
        return total

    def spans(self, name: str) -> list[ReadableSpan]:
        """The finished spans called ``name``."""
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    """This test's OpenTelemetry SDK, looked up by the library as the current providers."""
    sdk = Telemetry()
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: sdk.meter_provider)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: sdk.tracer_provider)
    yield sdk
    sdk.meter_provider.shutdown()
    sdk.tracer_provider.shutdown()


TOKEN_REQUESTS = "entur_oauth.token.requests"
WAITS = "entur_oauth.token.wait.duration"


async def test_a_cold_start_of_500_callers_is_one_token_request_and_499_waits(
    fake: FakeEntur, otel: Telemetry
) -> None:
    """500 concurrent first requests: 1 token request (reason first), 499 callers joined
    its round and 1 led it; one round span with one token-request span under it."""
    async with fake.client() as client, anyio.create_task_group() as tg:
        for _ in range(500):
            tg.start_soon(client.get, "/x")
    assert fake.token_count == 1
    assert otel.total(TOKEN_REQUESTS) == 1
    assert otel.total(TOKEN_REQUESTS, entur_oauth__reason="first", entur_oauth__outcome="ok") == 1
    assert otel.total(WAITS, entur_oauth__wait__role="joined") == 499
    assert otel.total(WAITS, entur_oauth__wait__role="led") == 1
    [round_span] = otel.spans("entur_oauth.token")
    [request_span] = otel.spans("entur_oauth.token_request")
    assert request_span.parent is not None
    assert request_span.parent.span_id == round_span.context.span_id
    assert round_span.attributes is not None
    assert round_span.attributes["entur_oauth.environment"] == "fake"
    assert round_span.attributes["entur_oauth.outcome"] == "ok"
    assert request_span.attributes is not None
    assert request_span.attributes["server.address"] == "partner.entur.test"
    assert request_span.status.is_ok


async def test_a_401_makes_a_token_request_with_reason_after_401(
    fake: FakeEntur, otel: Telemetry
) -> None:
    """A token the API rejects is replaced by a token request whose reason is after_401,
    and the store shows that the token it held had been rejected."""
    async with fake.client() as client:
        await client.get("/x")
        fake.revoke_all()
        assert (await client.get("/x")).status_code == 200
    assert otel.total(TOKEN_REQUESTS, entur_oauth__reason="after_401") == 1
    assert otel.total(TOKEN_REQUESTS) == 2
    assert otel.total("entur_oauth.store.lookups", entur_oauth__store__found="rejected") >= 1
    # Retried and answered: no API error was raised.
    assert otel.total("entur_oauth.api.errors") == 0


async def test_a_408_makes_a_token_request_with_reason_after_408(
    fake: FakeEntur, otel: Telemetry
) -> None:
    """A 408 (the token expired mid-request) renews with reason after_408."""
    async with fake.client() as client:
        await client.get("/x")
        fake.fail_api(408)
        assert (await client.get("/x")).status_code == 200
    assert otel.total(TOKEN_REQUESTS, entur_oauth__reason="after_408") == 1


async def test_fetch_token_and_the_refresh_windows_say_why(
    fake: FakeEntur, otel: Telemetry
) -> None:
    """fetch_token() is reason forced; a request in the advisory window renews with reason
    advisory, in the mandatory window with reason mandatory; the gauge shows the seconds
    left on the token."""
    clock = FakeClock()
    fake.clock = clock
    refresh = RefreshPolicy(jitter=0.0)  # advisory window: the last 8,640 s of 86,400
    async with fake.client(clock=clock, refresh=refresh) as client:
        await client.get("/x")
        [(attributes, point)] = otel.points("entur_oauth.token.remaining")
        assert point.value == pytest.approx(86400)
        assert attributes["entur_oauth.client_id"] == fake.client_id
        await client.fetch_token()
        clock.advance(86400 - 8000)
        await client.get("/x")
        clock.advance(86400 - 30)
        await client.get("/x")
    assert [
        otel.total(TOKEN_REQUESTS, entur_oauth__reason=reason)
        for reason in ("first", "forced", "advisory", "mandatory")
    ] == [1, 1, 1, 1]


async def test_a_failing_token_endpoint_shows_the_retries_and_the_typed_error(
    fake: FakeEntur, otel: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """Two 503s then a token: two requests retried (with the status and error type), one
    ok. Then three 503s: two retried, one failed, the TokenRequestError raised."""
    clock = FakeClock(autojump=True)
    async with fake.client(clock=clock, retry=RetryPolicy(attempts=3)) as client:
        fake.fail_token(503, times=2)
        await client.get("/x")
        assert otel.total(TOKEN_REQUESTS, entur_oauth__outcome="retried") == 2
        assert (
            otel.total(
                TOKEN_REQUESTS,
                entur_oauth__outcome="retried",
                error__type="TokenRequestError",
                http__response__status_code=503,
            )
            == 2
        )
        assert otel.total(TOKEN_REQUESTS, entur_oauth__outcome="ok") == 1
        fake.fail_token(503, times=3)
        with pytest.raises(TokenRequestError):
            await client.fetch_token()
    assert otel.total(TOKEN_REQUESTS, entur_oauth__outcome="retried") == 4
    assert (
        otel.total(TOKEN_REQUESTS, entur_oauth__outcome="failed", error__type="TokenRequestError")
        == 1
    )
    failed = [s for s in otel.spans("entur_oauth.token_request") if not s.status.is_ok]
    assert len(failed) == 5
    assert all(s.attributes and s.attributes["http.response.status_code"] == 503 for s in failed)
    rounds = otel.spans("entur_oauth.token")
    assert [s.attributes and s.attributes["entur_oauth.outcome"] for s in rounds] == [
        "ok",
        "failed",
    ]
    # A forced renewal that failed is for the operator to see.
    [warning] = [r for r in caplog.records if getattr(r, "event", None) == "token_round_failed"]
    assert warning.levelno == logging.WARNING


async def test_rejected_credentials_are_one_failed_request(
    fake: FakeEntur, otel: Telemetry
) -> None:
    """A wrong client secret: one token request, failed with InvalidCredentialsError."""
    async with fake.client(client_secret="wrong") as client:
        with pytest.raises(InvalidCredentialsError):
            await client.get("/x")
    assert otel.total(TOKEN_REQUESTS) == 1
    assert (
        otel.total(
            TOKEN_REQUESTS, entur_oauth__outcome="failed", error__type="InvalidCredentialsError"
        )
        == 1
    )


async def test_api_errors_and_the_storm_guard_are_counted(fake: FakeEntur, otel: Telemetry) -> None:
    """A 403 is one API error (ForbiddenError). An API that rejects every token: the
    first call's 401 gets one new token (after_401), rejected too (UnauthorizedError); the
    second call's 401 is kept by the storm guard (no token request) and raised."""
    async with fake.client() as client:
        with pytest.raises(ForbiddenError):
            await client.get("/forbidden/x")
        fake.route("/always-401", status=401)
        for _ in range(2):
            with pytest.raises(UnauthorizedError):
                await client.get("/always-401")
    assert otel.total("entur_oauth.api.errors", error__type="ForbiddenError") == 1
    assert (
        otel.total(
            "entur_oauth.api.errors",
            error__type="UnauthorizedError",
            http__response__status_code=401,
            server__address="api.entur.test",
        )
        == 2
    )
    assert otel.total("entur_oauth.storm_guard.kept", http__response__status_code=401) == 1
    assert otel.total(TOKEN_REQUESTS, entur_oauth__reason="after_401") == 1
    assert otel.total(TOKEN_REQUESTS) == 2


async def test_api_requests_record_nothing_per_request(fake: FakeEntur, otel: Telemetry) -> None:
    """With a valid token, 200 API requests add no data point, no count and no span: the
    per-request path records nothing (only a 401/403/408 does)."""

    def recorded() -> list[tuple[str, float]]:
        names = [
            TOKEN_REQUESTS,
            WAITS,
            "entur_oauth.token.request.duration",
            "entur_oauth.store.lookups",
            "entur_oauth.store.leases",
            "entur_oauth.api.errors",
        ]
        return [(name, otel.total(name)) for name in names]

    async with fake.client() as client:
        await client.get("/x")
        before, spans = recorded(), len(otel.exporter.get_finished_spans())
        for _ in range(200):
            await client.get("/x")
        assert recorded() == before
        assert len(otel.exporter.get_finished_spans()) == spans


class _Unreachable:
    """A token store whose every operation fails, as a store that is down does."""

    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("store down")

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        raise ConnectionError("store down")

    async def delete(self, key: str, *, expected: bytes | None = None) -> None:
        raise ConnectionError("store down")

    def lock(self, key: str) -> Any:
        raise ConnectionError("store down")


async def test_an_unreachable_store_is_a_fallback_and_a_warning(
    fake: FakeEntur, otel: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that is down: the read and the lock fall back (counted by operation, logged
    as WARNING store_fallback events) and the token request says the store was
    unreachable. One WARNING per outage: the second fault of the same outage is DEBUG."""
    caplog.set_level(logging.DEBUG, logger="entur_oauth")
    async with fake.client(token_store=_Unreachable()) as client:
        assert (await client.get("/x")).status_code == 200
    kind = {"entur_oauth__store__kind": "_Unreachable"}
    assert (
        otel.total("entur_oauth.store.fallbacks", entur_oauth__store__operation="read", **kind) == 1
    )
    assert (
        otel.total("entur_oauth.store.fallbacks", entur_oauth__store__operation="lock", **kind) == 1
    )
    assert otel.total(TOKEN_REQUESTS, entur_oauth__store__found="unreachable") == 1
    fallbacks = [r for r in caplog.records if getattr(r, "event", None) == "store_fallback"]
    assert [r.levelno for r in fallbacks] == [logging.WARNING, logging.DEBUG]


async def test_no_secret_or_token_in_any_attribute_or_log_record(
    fake: FakeEntur, otel: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the client secret nor any issued token appears in a metric attribute, a
    span attribute or a log record (message or extra) of a run with a 401 and a 403."""
    caplog.set_level(logging.DEBUG, logger="entur_oauth")
    async with fake.client() as client:
        await client.get("/x")
        fake.revoke_all()
        await client.get("/x")
        with pytest.raises(ForbiddenError):
            await client.get("/forbidden/x")
    data = otel.reader.get_metrics_data()
    assert data is not None
    seen = data.to_json()
    seen += "".join(s.to_json() for s in otel.exporter.get_finished_spans())
    seen += "".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert len(fake.all_issued_tokens) == 2
    for secret in [fake.client_secret, *fake.all_issued_tokens]:
        assert secret not in seen


async def test_log_events_without_opentelemetry_providers(
    fake: FakeEntur, caplog: pytest.LogCaptureFixture
) -> None:
    """The events are log records on ``entur_oauth`` with stable names and attributes,
    whatever OpenTelemetry is doing: a cold start of 3, a 401 and a 403."""
    caplog.set_level(logging.DEBUG, logger="entur_oauth")
    async with fake.client() as client:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(client.get, "/x")
        fake.revoke_all()
        await client.get("/x")
        with pytest.raises(ForbiddenError):
            await client.get("/forbidden/x")
    events = [(r.event, r.levelno, r.__dict__) for r in caplog.records if hasattr(r, "event")]
    names = [name for name, _, _ in events]
    assert names.count("token_request") == 2
    assert names.count("token_round") == 2
    assert names.count("token_wait") == 4  # 3 at the cold start, 1 after the 401
    assert names.count("api_error") == 1
    requests = [attrs for name, _, attrs in events if name == "token_request"]
    assert [a["entur_oauth.reason"] for a in requests] == ["first", "after_401"]
    assert all(a["entur_oauth.outcome"] == "ok" for a in requests)
    assert {level for _, level, _ in events} == {logging.DEBUG}


@pytest.mark.slow
def test_the_library_runs_and_logs_without_opentelemetry(tmp_path: Path) -> None:
    """In a process where opentelemetry cannot be imported, a client fetches its token and
    logs the events; and ``import entur_oauth`` never imports opentelemetry."""
    script = textwrap.dedent(
        """
        import json, logging, sys
        import entur_oauth
        assert not [m for m in sys.modules if m.startswith("opentelemetry")]
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        import anyio
        from entur_oauth.testing import FakeEntur

        events = []
        class Collect(logging.Handler):
            def emit(self, record):
                events.append(getattr(record, "event", None))
        logger = logging.getLogger("entur_oauth")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(Collect())

        async def main():
            async with FakeEntur().client() as client:
                return (await client.get("/x")).status_code
        status = anyio.run(main)
        print(json.dumps({"status": status, "events": [e for e in events if e]}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(done.stdout)
    assert report["status"] == 200
    assert "token_request" in report["events"]
    assert "token_round" in report["events"]


@pytest.mark.slow
def test_a_fleet_of_16_processes_on_a_file_store_makes_1_request_and_15_store_hits(
    fake: FakeEntur, tmp_path: Path
) -> None:
    """16 processes (half asyncio, half trio) sharing a FileTokenStore, each exporting its
    metrics to a file: 1 token request (reason first) and 15 store hits between them."""
    from .test_fleet import fleet_configs

    with LoopbackServer(fake) as server:
        configs = fleet_configs(fake, server.url, "file", str(tmp_path / "tokens.json"))
        for i, config in enumerate(configs):
            config["otel"] = str(tmp_path / f"metrics-{i}.json")
        reports, _ = run_fleet(configs)
    assert [r["status"] for r in reports] == [200] * 16
    assert fake.token_count == 1

    def total(name: str, **attributes: Any) -> int:
        count = 0
        for config in configs:
            for point in _points(Path(config["otel"]), name):
                if all(point["attributes"].get(k) == v for k, v in attributes.items()):
                    count += point.get("value", point.get("count", 0))
        return count

    assert total(TOKEN_REQUESTS) == 1
    assert total(TOKEN_REQUESTS, **{"entur_oauth.reason": "first"}) == 1
    assert total("entur_oauth.store.lookups", **{"entur_oauth.store.result": "hit"}) == 15
    assert total("entur_oauth.store.leases", **{"entur_oauth.store.result": "won"}) == 1


def _points(path: Path, name: str) -> list[dict[str, Any]]:
    """The data points of metric ``name`` in a file a fleet worker exported."""
    data = json.loads(path.read_text())
    return [
        point
        for resource in data["resource_metrics"]
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
        if metric["name"] == name
        for point in metric["data"]["data_points"]
    ]
