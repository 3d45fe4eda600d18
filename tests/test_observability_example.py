"""examples/observability.py runs against the fake Entur on a loopback port, prints what
each burst cost and the SDK's console export, and draws its chart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from entur_oauth.testing import FakeEntur

from .conftest import NO_NETWORK

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "observability.py"


@pytest.mark.slow
def test_the_example_prints_the_bursts_and_the_metrics_and_draws_the_chart(
    tmp_path: Path,
) -> None:
    """Three bursts of 100 calls cost 3 token requests (first, advisory, after_401); the
    console exporter prints every entur_oauth metric; the chart is a PNG."""
    pytest.importorskip("matplotlib")
    fake = FakeEntur()
    chart = tmp_path / "chart.png"
    with fake.serve() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENTUR_")}
        env.update(NO_NETWORK)
        env.update(fake.env(url, client_name="acme-examples"))
        done = subprocess.run(
            [sys.executable, "-W", "error", str(EXAMPLE), "--chart", str(chart)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert fake.token_count == 3
    lines = done.stdout.splitlines()
    assert lines[0] == "cold start: token requests: 1 first; callers that waited: 100"
    assert lines[1].startswith("   renewal: token requests: 1 advisory; callers that waited: ")
    assert lines[2].startswith("       401: token requests: 1 after_401; callers that waited: ")
    assert lines[3] == "-- the SDK's console exporter --"
    export = json.loads("\n".join(lines[4:-1]))
    [scope] = export["resource_metrics"][0]["scope_metrics"]
    assert scope["scope"]["name"] == "entur_oauth"
    names = {metric["name"] for metric in scope["metrics"]}
    assert {
        "entur_oauth.token.requests",
        "entur_oauth.token.wait.duration",
        "entur_oauth.store.lookups",
        "entur_oauth.token.remaining",
    } <= names
    assert lines[-1] == f"chart written to {chart}"
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert fake.client_secret not in done.stdout
