"""The benchmark server: the fake Entur's token endpoint behind uvicorn on 127.0.0.1.

Run by ``_common.serve`` in a process of its own. API calls get a canned answer (the
cheapest server, so the client's share of each request is as large as it can be), or with
``--validate`` the fake Entur's full checks. ``/_bench/stats`` and ``/_bench/reset``
expose the fake's counters to the benchmark.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import uvicorn
from _common import API_BODY, AUDIENCE, CLIENT_ID, CLIENT_SECRET, TOKEN_PATH

from entur_oauth.testing import FakeEntur

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BenchApp:
    """ASGI app: fake token endpoint, canned or validated API, and the counters."""

    def __init__(self, *, token_delay: float, validate: bool) -> None:
        self.fake = FakeEntur(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, audience=AUDIENCE)
        self.token_delay = token_delay
        self.validate = validate
        self.api_calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fake(scope, receive, send)
            return
        path = scope["path"]
        if path == "/_bench/stats":
            body = json.dumps(
                {"token_requests": self.fake.token_count, "api_requests": self.api_calls}
            ).encode()
            await _answer(send, body)
        elif path == "/_bench/reset":
            self.fake.token_requests.clear()
            self.api_calls = 0
            await _answer(send, b"{}")
        elif path == TOKEN_PATH:
            if self.token_delay:
                await anyio.sleep(self.token_delay)  # a real token endpoint takes a while
            await self.fake(scope, receive, send)
        else:
            self.api_calls += 1
            if self.validate:
                await self.fake(scope, receive, send)
                self.fake.api_requests.clear()  # its log would grow without bound here
            else:
                await _answer(send, API_BODY)


async def _answer(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve until terminated."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--validate", action="store_true")
    args = parser.parse_args()
    app = BenchApp(token_delay=args.token_delay, validate=args.validate)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=2048,
    )


if __name__ == "__main__":
    main()
