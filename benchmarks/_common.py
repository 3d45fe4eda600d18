"""What every benchmark shares: contenders, transports, a loopback server, statistics, rows.

Rules the figures follow (see README.md): each number is a ratio against a baseline
measured in the same run; contenders are interleaved (A B C, C A B, ...: a fresh random
order each round, so drift hits them all alike and no contender always follows the same
neighbour); every measurement is repeated and the median is reported.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable

CLIENT_ID = "bench-client-id"
CLIENT_SECRET = "bench-client-secret"
CLIENT_NAME = "bench-app"
AUDIENCE = "https://api.entur.test"
TOKEN_PATH = "/oauth/token"
API_PATH = "/journey-planner/v3/graphql"
IN_PROCESS_BASE = "https://api.entur.test"
API_BODY = b'{"data":{"trip":{"tripPatterns":[]}}}'
_JSON = [(b"content-type", b"application/json")]

#: The three contenders, in the order of the table's columns.
ENTUR, BARE, AUTHLIB = "entur_oauth", "bare httpx2", "raw authlib"
CONTENDERS = (ENTUR, BARE, AUTHLIB)
#: A second bare httpx2 client, measured like the others: its ratio to the first (ideally
#: 1.000x) shows how much noise the machine adds to every ratio in the same figure.
CONTROL = "bare httpx2 (A/A control)"
BACKENDS = ("asyncio", "trio")


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table."""

    figure: str
    this: str
    bare: str = "-"
    authlib: str = "-"
    ratio: str = "-"
    target: str = "-"
    verdict: str = "-"


@dataclass(slots=True)
class FigureResult:
    """What a figure script returns: its rows, and raw samples for the chart (if any)."""

    rows: list[Row]
    #: (backend, contender) -> seconds per request, one value per round.
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)


HEADER = ("figure", "this library", "bare httpx2", "raw authlib", "ratio", "target", "pass/fail")


def table(rows: Sequence[Row]) -> str:
    """Render rows as one GitHub markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = (row.figure, row.this, row.bare, row.authlib, row.ratio, row.target, row.verdict)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    """The pass/fail cell."""
    return "pass" if ok else "**FAIL**"


def us(seconds: float) -> str:
    """Seconds as microseconds, for a cell."""
    return f"{seconds * 1e6:.1f} us"


def ms(seconds: float) -> str:
    """Seconds as milliseconds, for a cell."""
    return f"{seconds * 1e3:.2f} ms"


def x(ratio: float) -> str:
    """A ratio, for a cell."""
    return f"{ratio:.3f}x"


def log(message: str) -> None:
    """Progress goes to stderr so stdout carries only the table."""
    print(message, file=sys.stderr, flush=True)


# -- statistics ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median (the figures' one summary statistic)."""
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank: a latency some request really had."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def interleave(
    contenders: Mapping[str, Callable[[], Awaitable[float]]],
    *,
    rounds: int,
    warmup: int = 1,
    seed: int = 20261128,
) -> dict[str, list[float]]:
    """Run each contender's measurement once per round, in a fresh random order each round.

    A random (seeded, so reproducible) order rather than a rotation: with a rotation each
    contender always runs right after the same neighbour, and whatever that neighbour
    leaves behind (warm caches, a connection being torn down) never cancels. A full
    garbage collection runs before each measurement so no contender pays for garbage
    another one left.

    Returns:
        Contender name -> one measurement per (non-warm-up) round.
    """
    names = list(contenders)
    order = random.Random(seed)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(warmup + rounds):
        order.shuffle(names)
        for name in names:
            gc.collect()
            value = await contenders[name]()
            if round_no >= warmup:
                results[name].append(value)
    return results


def paired_ratios(results: Mapping[str, list[float]], name: str, baseline: str) -> list[float]:
    """Per-round ratios ``name / baseline``: drift within a round cancels."""
    return [a / b for a, b in zip(results[name], results[baseline], strict=True)]


def pooled(results: Mapping[str, list[float]], baselines: Sequence[str]) -> list[float]:
    """Per-round mean of several identical baselines (bare httpx2 and its A/A control)."""
    columns = [results[name] for name in baselines]
    return [statistics.fmean(values) for values in zip(*columns, strict=True)]


def pooled_ratios(
    results: Mapping[str, list[float]], name: str, baselines: Sequence[str]
) -> list[float]:
    """Per-round ratios ``name / mean(baselines)``.

    Two identical bare clients differ by a percent or two from noise alone (the A/A
    control shows how much); measuring against their mean, rather than picking one,
    keeps that choice from deciding a verdict.
    """
    return [a / b for a, b in zip(results[name], pooled(results, baselines), strict=True)]


# -- tokens and in-process transport ---------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwt(lifetime: float = 86400.0) -> str:
    """A JWT-shaped access token (the size of a real Entur token) with a matching ``exp``."""
    claims = {
        "iss": "https://partner.entur.test/",
        "sub": f"{CLIENT_ID}@clients",
        "aud": AUDIENCE,
        "iat": int(time.time()),
        "exp": int(time.time() + lifetime),
        "scope": "bench:read",
        "permissions": ["bench:read"],
    }
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(os.urandom(256))}"


class CannedTransport(httpx2.AsyncBaseTransport):
    """Answers at once from memory, so only client CPU is measured: a token on the token
    path, a small JSON body everywhere else. Every contender gets the same one.
    """

    def __init__(self, lifetime: float = 86400.0) -> None:
        self.token = fake_jwt(lifetime)
        self._token_body = json.dumps(
            {"access_token": self.token, "token_type": "Bearer", "expires_in": lifetime}
        ).encode()
        self.token_requests = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Return the canned answer for ``request``."""
        if request.url.path == TOKEN_PATH:
            self.token_requests += 1
            return httpx2.Response(200, headers=_JSON, content=self._token_body)
        return httpx2.Response(200, headers=_JSON, content=API_BODY)


def environment(base_url: str = IN_PROCESS_BASE) -> Any:
    """The Entur environment of the benchmarks: token endpoint and API at ``base_url``."""
    from entur_oauth import Environment

    return Environment(
        name="bench", token_url=base_url + TOKEN_PATH, audience=AUDIENCE, api_base_url=base_url
    )


def make_client(
    contender: str, *, transport: httpx2.AsyncBaseTransport, token: str, base_url: str, **kw: Any
) -> httpx2.AsyncClient:
    """Build one contender, configured alike: same transport, ``ET-Client-Name`` and token.

    * ``entur_oauth``: an ``EnturClient``; it fetches its token on the first request.
    * ``bare httpx2``: ``httpx2.AsyncClient`` with a static ``Authorization`` header, the
      cheapest way to send a bearer token (and no token lifecycle at all).
    * ``raw authlib``: ``AsyncOAuth2Client`` given a cached ``token`` so it never fetches.
    """
    if contender == ENTUR:
        from entur_oauth import EnturClient

        return EnturClient(
            CLIENT_ID,
            CLIENT_SECRET,
            client_name=CLIENT_NAME,
            environment=environment(base_url),
            transport=transport,
            **kw,
        )
    if contender in (BARE, CONTROL):
        return httpx2.AsyncClient(
            transport=transport,
            headers={"ET-Client-Name": CLIENT_NAME, "Authorization": f"Bearer {token}"},
            **kw,
        )
    if contender == AUTHLIB:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        client: httpx2.AsyncClient = AsyncOAuth2Client(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token={
                "access_token": token,
                "token_type": "Bearer",
                "expires_at": int(time.time() + 86400),
            },
            grant_type="client_credentials",
            token_endpoint=base_url + TOKEN_PATH,
            transport=transport,
            headers={"ET-Client-Name": CLIENT_NAME},
            **kw,
        )
        return client
    raise ValueError(contender)


async def sequential(
    client: httpx2.AsyncClient, url: str, n: int, *, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Send ``n`` GETs one after another; return seconds per request on ``clock``.

    With ``clock=time.thread_time`` (the in-process figures, where the client's CPU is all
    there is) time the machine spent on other processes is not counted, which keeps the
    figure steady on a busy machine.
    """
    get = client.get
    start = clock()
    for _ in range(n):
        response = await get(url)
    elapsed = clock() - start
    # Outside the timed loop: a contender that failed must not look fast.
    if response.status_code != 200:
        raise RuntimeError(f"{type(client).__name__} got HTTP {response.status_code}")
    return elapsed / n


# -- processes and the loopback server -------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; ``psutil`` elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        return int(psutil.Process().memory_info().rss)


@dataclass
class Server:
    """A uvicorn process serving ``_server.py`` on a loopback port."""

    url: str
    process: subprocess.Popen[bytes]

    def stats(self) -> dict[str, int]:
        """The server's counters (token and API requests)."""
        with httpx2.Client() as client:
            data: dict[str, int] = client.get(self.url + "/_bench/stats").json()
            return data

    def reset(self) -> None:
        """Zero the counters."""
        with httpx2.Client() as client:
            client.post(self.url + "/_bench/reset")


@contextmanager
def serve(*, token_delay: float = 0.0, validate: bool = False) -> Iterator[Server]:
    """Run the benchmark server in a separate process (its CPU is not the client's).

    Args:
        token_delay: Seconds the token endpoint waits before answering.
        validate: Check bearer tokens on API calls (the fake Entur); otherwise API calls
            get a canned answer, so the server costs as little as it can.
    """
    port = free_port()
    args = [PYTHON, str(HERE / "_server.py"), "--port", str(port)]
    args += ["--token-delay", str(token_delay)] + (["--validate"] if validate else [])
    process = subprocess.Popen(args)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError("the benchmark server exited at start")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.05)
        yield Server(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fetch_token(base_url: str) -> str:
    """Get a token from the benchmark server the way Entur documents (JSON body)."""
    with httpx2.Client() as client:
        response = client.post(
            base_url + TOKEN_PATH,
            json={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "audience": AUDIENCE,
            },
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token
