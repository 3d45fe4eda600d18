"""Redaction cost: parsing one token response with a 64- and a 200,000-character secret.

The parser is handed the client secret so that it can blank an echo of it in an error. On
a successful response nothing needs quoting, so nothing should be redacted: the figure is
the whole parse (JSON, checks, the Token), with the secret the grant passes. Beside it, for
the record, an OAuth error whose ``error_description`` echoes the secret (the redactor's
real work: it follows the echo to its end). Each parse gets a secret of its own, as the
first response after start-up does: no cache (``re``'s, or ours) carries work from one parse
to the next. Timed in-process (``time.process_time``, so other processes on the machine do
not count), medians of repeated calls; the peak of memory allocated during one parse by
``tracemalloc``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import secrets
import sys
import time
import tracemalloc
from collections.abc import Callable

from _common import FigureResult, Row, fake_jwt, log, median, ms, table, verdict

from entur_oauth import TokenRequestError
from entur_oauth._token import parse_token_response

#: (secret length, time target in seconds, memory target in bytes or None)
CASES = ((64, 1e-3, None), (200_000, 0.1, 50 * 1024 * 1024))
_HEADERS = {"content-type": "application/json"}


def _ok_body() -> bytes:
    payload = {"access_token": fake_jwt(), "token_type": "Bearer", "expires_in": 86400}
    return json.dumps(payload).encode()


def _echo_body(secret: str) -> bytes:
    payload = {"error": "invalid_client", "error_description": f"unknown secret {secret}"}
    return json.dumps(payload).encode()


def _parse(status: int, body: bytes, secret: str) -> None:
    with contextlib.suppress(TokenRequestError):
        parse_token_response(
            status, _HEADERS, body, sent_monotonic=0.0, sent_wall=0.0, redact=(secret,)
        )


def _timed(call: Callable[[str], None], length: int, rounds: int) -> tuple[float, int]:
    """Median CPU seconds of ``rounds`` calls, and the allocation peak of one more, each
    with a new secret of ``length`` characters."""
    samples = []
    call(_secret(length))  # warm-up: lazy imports
    for _ in range(rounds):
        secret = _secret(length)
        gc.collect()
        started = time.process_time()
        call(secret)
        samples.append(time.process_time() - started)
    secret = _secret(length)
    gc.collect()
    tracemalloc.start()
    try:
        call(secret)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return median(samples), peak


def _secret(length: int) -> str:
    return secrets.token_urlsafe(length)[:length]


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.2f} MiB"


def run(quick: bool = False, lengths: tuple[int, ...] | None = None) -> FigureResult:
    """Parse a token response (and an echoing error) per secret length; report medians."""
    rows = []
    ok = _ok_body()
    for length, limit, memory in CASES if lengths is None else [(n, 1e-3, None) for n in lengths]:
        rounds = 3 if length > 10_000 else 5 if quick else 50
        log(f"redaction: {length:,}-character secret, {rounds} parses")
        seconds, peak = _timed(lambda secret: _parse(200, ok, secret), length, rounds)
        target = f"<= {ms(limit)}" + (f" and <= {_mib(memory)}" if memory else "")
        passed = seconds <= limit and (memory is None or peak <= memory)
        rows.append(
            Row(
                figure=f"token response parse, 200 OK, {length:,}-character client secret",
                this=f"{ms(seconds)}, peak {_mib(peak)}",
                target=target,
                verdict=verdict(passed),
            )
        )
        seconds, peak = _timed(
            lambda secret: _parse(400, _echo_body(secret), secret), length, min(rounds, 20)
        )
        rows.append(
            Row(
                figure=f"token error response, error_description echoing a {length:,}-character "
                "client secret",
                this=f"{ms(seconds)}, peak {_mib(peak)}",
                target="report",
            )
        )
    return FigureResult(rows=rows)


if __name__ == "__main__":
    # --lengths 64,16000 measures other secret lengths (to compare with older code).
    given = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--lengths=")), None)
    chosen = tuple(int(n) for n in given.split(",")) if given else None
    print(table(run(quick="--quick" in sys.argv, lengths=chosen).rows))
