"""What telemetry costs per request: without OpenTelemetry, with the API only, with the SDK.

Whether OpenTelemetry can be imported is a property of the process, so each variant runs
in processes of its own, which measure the per-request figure of ``bench_per_request``
(in-process transport, client CPU, entur_oauth against the mean of two bare httpx2
clients, interleaved):

* ``none``: ``opentelemetry`` cannot be imported (as without the ``otel`` extra); and
  ``none_control``, the same again: its ratio to ``none`` (ideally 1.000x) is the noise of
  comparing separate processes;
* ``api``: ``opentelemetry-api`` and no SDK configured (the API's no-op providers);
* ``sdk``: the SDK's meter and tracer providers set globally, with an in-memory metric
  reader and span exporter; the process also checks that the measured requests recorded
  nothing (no count, no data point, no span: only a token request or a 401/403/408 does).

The processes of the four variants take turns (six each, in a seeded random order), so
a machine that slows down hits all alike; each variant's figure is the median of its
per-round ratios to bare httpx2, and the table compares ``api`` and ``sdk`` with ``none``.
Target: ``api`` <= 1.01x ``none`` (issue 20).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from _common import (
    BACKENDS,
    BARE,
    CONTROL,
    ENTUR,
    IN_PROCESS_BASE,
    PYTHON,
    CannedTransport,
    FigureResult,
    Row,
    interleave,
    log,
    make_client,
    median,
    pooled,
    pooled_ratios,
    us,
    verdict,
    x,
)

#: ``none_control`` is ``none`` again: the A/A control of comparing separate processes.
VARIANTS = ("none", "none_control", "api", "sdk")
TARGET = 1.01
URL = IN_PROCESS_BASE + "/journey-planner/v3/graphql"


def _setup(variant: str) -> Any:
    """Make this process the variant; return the SDK's reader and exporter for ``sdk``."""
    if variant in ("none", "none_control"):
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
        return None
    if variant == "api":
        import opentelemetry.metrics  # noqa: F401 - installed, and nothing configured

        return None
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    return reader, exporter


def _recorded(sdk: Any) -> tuple[str, int]:
    """What the SDK holds: counts and data points (the gauge left out: it is observed at
    each collection), and the number of finished spans."""
    reader, exporter = sdk
    data = reader.get_metrics_data()
    points = []
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "entur_oauth.token.remaining":
                    for point in metric.data.data_points:
                        value = getattr(point, "count", getattr(point, "value", None))
                        points.append(f"{metric.name}{sorted(point.attributes.items())}={value}")
    return ";".join(sorted(points)), len(exporter.get_finished_spans())


async def _measure(rounds: int, batch: int, sdk: Any) -> dict[str, Any]:
    transport = CannedTransport()
    names = (ENTUR, BARE, CONTROL)
    clients = {
        name: make_client(
            name, transport=transport, token=transport.token, base_url=IN_PROCESS_BASE
        )
        for name in names
    }
    try:
        await clients[ENTUR].get(URL)  # the token request, before anything is measured
        before = _recorded(sdk) if sdk is not None else None
        samples = await interleave(
            {name: partial(_sequential, client, batch) for name, client in clients.items()},
            rounds=rounds,
            warmup=2,
        )
        after = _recorded(sdk) if sdk is not None else None
    finally:
        for client in clients.values():
            await client.aclose()
    return {"samples": samples, "recorded_per_request": before != after}


async def _sequential(client: Any, batch: int) -> float:
    from _common import sequential

    return await sequential(client, URL, batch, clock=time.thread_time)


def child(variant: str, rounds: int, batch: int) -> None:
    """One process of one variant: print its samples per backend as JSON."""
    sdk = _setup(variant)
    out: dict[str, Any] = {}
    for backend in BACKENDS:
        out[backend] = anyio.run(partial(_measure, rounds, batch, sdk), backend=backend)
    loaded = "opentelemetry.metrics" in sys.modules
    print(json.dumps({"variant": variant, "otel_loaded": loaded, **out}))


def run(quick: bool = False) -> FigureResult:
    """Run the variants' processes in turns; compare api and sdk with none, per backend."""
    # More processes and fewer rounds each: what differs between two processes (where
    # their memory landed) moves a process's ratio by about 1 %, more than rounds do.
    reps, rounds, batch = (2, 5, 300) if quick else (6, 10, 400)
    # One hash seed for every process: str hashing is one difference fewer between them.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    ratios: dict[tuple[str, str], list[float]] = {}
    costs: dict[tuple[str, str], list[float]] = {}
    recorded = False
    order = random.Random(20261204)
    for rep in range(reps):
        variants = list(VARIANTS)
        order.shuffle(variants)
        for variant in variants:
            log(f"telemetry: {variant} ({rep + 1}/{reps}), {rounds} rounds x {batch} requests")
            done = subprocess.run(
                [PYTHON, str(Path(__file__)), variant, str(rounds), str(batch)],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
                env=env,
            )
            report = json.loads(done.stdout.strip().splitlines()[-1])
            if report["otel_loaded"] != (variant in ("api", "sdk")):
                raise RuntimeError(f"{variant}: opentelemetry loaded = {report['otel_loaded']}")
            for backend in BACKENDS:
                measured = report[backend]
                samples = measured["samples"]
                recorded = recorded or measured["recorded_per_request"]
                key = (backend, variant)
                ratios.setdefault(key, []).extend(pooled_ratios(samples, ENTUR, (BARE, CONTROL)))
                costs.setdefault(key, []).extend(samples[ENTUR])
                costs.setdefault((backend, "bare"), []).extend(pooled(samples, (BARE, CONTROL)))
    result = FigureResult(rows=[])
    for backend in BACKENDS:
        base = median(ratios[(backend, "none")])
        control = median(ratios[(backend, "none_control")]) / base
        for variant, what in (("api", "API only, no SDK"), ("sdk", "SDK, in-memory reader")):
            ratio = median(ratios[(backend, variant)]) / base
            ok = ratio <= TARGET if variant == "api" else not recorded
            target = f"<= {TARGET:.2f}x" if variant == "api" else "nothing recorded per request"
            result.rows.append(
                Row(
                    figure=f"per request, OpenTelemetry {what} vs none, client CPU ({backend})",
                    this=f"{us(median(costs[(backend, variant)]))} "
                    f"({x(median(ratios[(backend, variant)]))} bare)",
                    bare=f"without OpenTelemetry: {us(median(costs[(backend, 'none')]))} "
                    f"({x(base)} bare; A/A control {x(control)})",
                    ratio=x(ratio),
                    target=target,
                    verdict=verdict(ok),
                )
            )
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in VARIANTS:
        child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    else:
        from _common import table

        print(table(run(quick="--quick" in sys.argv).rows))
