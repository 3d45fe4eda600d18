"""See where the token quota goes: OpenTelemetry metrics of the token lifecycle.

The program configures the OpenTelemetry SDK (as your application would; the library only
uses the API) and makes three bursts of concurrent calls: a cold start, a renewal in the
token's advisory window, and a 401. It prints the token requests and waits per burst,
then every entur_oauth metric through the SDK's console exporter; with ``--chart PATH``
it also draws them (PNG or SVG; needs ``pip install 'entur-oauth[chart]'``).

To show a renewal in a short run, the client runs on a clock the program moves forward
(your program leaves ``clock=`` out); the 401 comes from a token Entur never issued.

Needs ``pip install 'entur-oauth[otel]' opentelemetry-sdk``. Run it against Entur (staging
here) with a client from Entur Partner::

    export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-example
    export ENTUR_ENVIRONMENT=staging
    python observability.py /personalisation/v1/programs/1
    python observability.py /personalisation/v1/programs/1 --chart observability.png

or against the local fake: run ``entur-oauth fake-server`` in another shell and paste the
variables it prints. Run it in this file's folder (or wherever you copied it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio

from entur_oauth import ConfigurationError, EnturClient, MemoryTokenStore
from entur_oauth.testing import FakeClock

BURST = 100  # concurrent calls per burst


@dataclass
class Burst:
    """What one burst cost: token requests (by reason) and callers that waited."""

    name: str
    requests: dict[str, int]
    waited: int


def _points(reader: Any, name: str) -> Iterator[tuple[dict[str, Any], float]]:
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = point.count if hasattr(point, "count") else point.value
                        yield dict(point.attributes or {}), value


def _totals(reader: Any) -> tuple[dict[str, int], int]:
    """Token requests by reason, and callers that waited, so far (cumulative)."""
    requests: dict[str, int] = {}
    for attributes, value in _points(reader, "entur_oauth.token.requests"):
        reason = str(attributes["entur_oauth.reason"])
        requests[reason] = requests.get(reason, 0) + int(value)
    waited = sum(int(value) for _, value in _points(reader, "entur_oauth.token.wait.duration"))
    return requests, waited


async def _burst(client: EnturClient, path: str) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(BURST):
            tg.start_soon(client.get, path)


async def run(path: str, reader: Any) -> list[Burst]:
    """The three bursts; returns what each cost."""
    clock = FakeClock()
    store = MemoryTokenStore()
    bursts: list[Burst] = []
    seen: tuple[dict[str, int], int] = ({}, 0)

    def measure(name: str) -> None:
        nonlocal seen
        requests, waited = _totals(reader)
        delta = {r: n - seen[0].get(r, 0) for r, n in requests.items() if n > seen[0].get(r, 0)}
        bursts.append(Burst(name, delta, waited - seen[1]))
        seen = (requests, waited)

    # ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET, ENTUR_CLIENT_NAME, ENTUR_ENVIRONMENT
    async with EnturClient.from_env(clock=clock, token_store=store) as entur:
        await _burst(entur, path)
        measure("cold start")
        # Into the token's advisory window (the last 10 % of its life): one call renews,
        # the others go on with the current token.
        token = entur.token
        assert token is not None  # the cold start fetched one
        lifetime = token["expires_in"]
        clock.advance(lifetime * 0.95)
        await _burst(entur, path)
        measure("renewal")
        # Entur revoked the token: simulated with a token it never issued, which the API
        # answers with 401, and a store that has forgotten the good one.
        store.clear()
        entur.token = {"access_token": "revoked", "token_type": "Bearer", "expires_in": 3600}
        await _burst(entur, path)
        measure("401")
    return bursts


def chart(bursts: list[Burst], path: str) -> bool:
    """Draw token requests and waits per burst to ``path``; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [b.name for b in bursts]
    requests = [sum(b.requests.values()) for b in bursts]
    waited = [b.waited for b in bursts]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    xs = range(len(bursts))
    ax.bar([x - 0.2 for x in xs], requests, 0.4, label="token requests", color="#c0392b")
    ax.bar([x + 0.2 for x in xs], waited, 0.4, label="callers that waited", color="#2e86c1")
    for x, burst, count in zip(xs, bursts, requests, strict=True):
        why = ", ".join(burst.requests) or "none"
        ax.annotate(f"{count}\n{why}", (x - 0.2, count), ha="center", va="bottom", fontsize=8)
        ax.annotate(str(burst.waited), (x + 0.2, burst.waited), ha="center", va="bottom")
    ax.set_ylim(0, BURST * 1.25)
    ax.set_xticks(list(xs), [f"{n}\n({BURST} concurrent calls)" for n in names])
    ax.set_ylabel("count")
    ax.set_title("entur_oauth: token requests and waits per burst")
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", nargs="?", default="/personalisation/v1/programs/1")
    parser.add_argument("--chart", metavar="PATH", help="draw the bursts (PNG or SVG)")
    args = parser.parse_args()
    try:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            InMemoryMetricReader,
            PeriodicExportingMetricReader,
        )
    except ImportError:
        sys.exit("observability.py: needs pip install 'entur-oauth[otel]' opentelemetry-sdk")
    # Your application's part: the SDK, a reader and an exporter. The console exporter
    # prints once, when the provider shuts down; the in-memory reader is for the table.
    reader = InMemoryMetricReader()
    console = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=3.6e6)
    provider = MeterProvider(metric_readers=[reader, console])
    metrics.set_meter_provider(provider)
    try:
        bursts = anyio.run(run, args.path, reader)
    except ConfigurationError as exc:  # a missing or wrong ENTUR_* variable: say which
        sys.exit(f"observability.py: {exc}")
    for burst in bursts:
        reasons = ", ".join(f"{n} {r}" for r, n in burst.requests.items()) or "0"
        print(f"{burst.name:>10}: token requests: {reasons}; callers that waited: {burst.waited}")
    print("-- the SDK's console exporter --", flush=True)
    provider.shutdown()
    if args.chart:
        if chart(bursts, args.chart):
            print(f"chart written to {args.chart}")
        else:
            print("chart skipped: pip install 'entur-oauth[chart]' (matplotlib)")


if __name__ == "__main__":
    main()
