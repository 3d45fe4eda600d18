"""The fake's ASGI plumbing and values: scripted and recorded requests, responses."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio

__all__ = [
    "ASGIApp",
    "Answer",
    "Receive",
    "RecordedRequest",
    "RouteHandler",
    "Scope",
    "ScriptedResponse",
    "Send",
    "client_left_within",
    "fixed",
    "read_request",
    "respond",
    "respond_scripted",
    "script",
    "serve_lifespan",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    """A response the fake gives instead of its normal answer.

    Args:
        status: HTTP status; ``None`` gives the normal answer (after ``delay``).
        json: A JSON body (``None`` for none, unless ``body`` is given).
        body: Raw body bytes (overrides ``json``).
        headers: Extra response headers, e.g. ``{"retry-after": "3"}``.
        delay: Seconds to wait before answering: on the fake's clock when it has one and
            is used in-process (a ``FakeClock`` moves past it, or jumps with
            ``autojump``), else real time (use with a client timeout).
        hang: Never answer; the request ends when the client gives up and disconnects.
    """

    status: int | None = 500
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def params(self) -> dict[str, str]:
        """The query parameters (the last value of a repeated one)."""
        return dict(parse_qsl(self.query, keep_blank_values=True))


#: A route's answer: fixed, or computed from the request.
RouteHandler = Callable[[RecordedRequest], ScriptedResponse]
#: What the fake's own handlers return: (status, JSON payload, headers) or a script.
Answer = tuple[int, Any, dict[str, str]] | ScriptedResponse


async def client_left_within(
    receive: Receive, seconds: float, sleep: Callable[[float], Awaitable[None]] = anyio.sleep
) -> bool:
    """Wait ``seconds`` (or forever) with ``sleep``; return ``True`` at once if the client
    disconnects."""
    left = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        if seconds == float("inf"):
            await anyio.sleep_forever()  # a hang: not on any clock
        else:
            await sleep(seconds)
        tg.cancel_scope.cancel()
    return left


def fixed(response: ScriptedResponse) -> RouteHandler:
    def handler(request: RecordedRequest) -> ScriptedResponse:
        return response

    return handler


def script(response: ScriptedResponse | int, retry_after: float | None) -> ScriptedResponse:
    scripted = response if isinstance(response, ScriptedResponse) else ScriptedResponse(response)
    if retry_after is not None:
        value = f"{retry_after:g}"
        scripted = dataclasses.replace(scripted, headers={**scripted.headers, "retry-after": value})
    return scripted


async def respond_scripted(send: Send, script: ScriptedResponse) -> None:
    if script.body is not None:
        body, content_type = script.body, script.headers.get("content-type", "text/html")
    elif script.json is not None:
        body, content_type = json.dumps(script.json).encode(), "application/json"
    else:
        body, content_type = b"", "text/plain"
    await respond(send, script.status or 200, body, content_type, script.headers)


async def respond(
    send: Send, status: int, body: bytes, content_type: str, extra: Mapping[str, str]
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [
        (k.lower().encode(), v.encode()) for k, v in extra.items() if k.lower() != "content-type"
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI lifespan's startup and shutdown (the fake has nothing to set up)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_request(scope: Scope, receive: Receive) -> RecordedRequest:
    """Read one HTTP request's body and record it."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    query = scope.get("query_string", b"").decode("latin-1")
    return RecordedRequest(scope["method"], scope["path"], headers, body, query)
