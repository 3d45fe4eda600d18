"""A small HTTP/1.1 server for an ASGI app: the fake's server when uvicorn is not installed."""

from __future__ import annotations

from collections.abc import MutableMapping
from contextlib import suppress
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from ._asgi import ASGIApp, Scope

__all__ = ["serve_builtin"]


async def serve_builtin(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP/1.1 on ``host:port`` until cancelled (the built-in server).

    Enough HTTP for the fake and for clients such as httpx, curl and browsers: keep-alive,
    ``Content-Length`` and chunked request bodies, ``Expect: 100-continue``. Responses are
    buffered and sent with ``Content-Length``. Reports the bound port through
    ``task_status``.
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
        task_status.started(int(bound))
        await listener.serve(partial(_http_connection, app))


_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024


class _BadRequest(Exception):
    """The client sent something this server cannot parse."""


async def _http_connection(
    app: ASGIApp,
    stream: anyio.abc.SocketStream,
) -> None:
    reader = BufferedByteReceiveStream(stream)
    local = stream.extra(anyio.abc.SocketAttribute.local_address)  # noqa: S610 - not Django
    remote = stream.extra(anyio.abc.SocketAttribute.remote_address)  # noqa: S610
    async with stream:
        while True:
            try:
                head = await reader.receive_until(b"\r\n\r\n", _MAX_HEAD)
                method, target, version, headers = _parse_head(head)
                body = await _read_body(reader, stream, headers)
            except _BadRequest as exc:
                await _send_simple(stream, 400, str(exc))
                return
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                return
            except anyio.DelimiterNotFound:
                await _send_simple(stream, 431, "Request head too large")
                return
            connection = _header(headers, "connection").lower()
            keep_alive = "close" not in connection and (
                version == "HTTP/1.1" or "keep-alive" in connection
            )
            path, _, query = target.partition("?")
            scope: Scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": version.removeprefix("HTTP/"),
                "method": method,
                "scheme": "http",
                "path": unquote(path),
                "raw_path": path.encode("latin-1"),
                "query_string": query.encode("latin-1"),
                "root_path": "",
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                "client": (str(remote[0]), int(remote[1])) if isinstance(remote, tuple) else None,
                "server": (str(local[0]), int(local[1])) if isinstance(local, tuple) else None,
            }
            status, response_headers, payload = await _call_app(app, scope, body, reader)
            try:
                await stream.send(_format_response(status, response_headers, payload, keep_alive))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            if not keep_alive:
                return


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1]:
        raise _BadRequest("Malformed request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest("Malformed header line")
        headers.append((name.lower(), value.strip()))
    return parts[0], parts[1], parts[2], headers


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k == name), "")


async def _read_body(
    reader: BufferedByteReceiveStream,
    stream: anyio.abc.SocketStream,
    headers: list[tuple[str, str]],
) -> bytes:
    chunked = "chunked" in _header(headers, "transfer-encoding").lower()
    length_text = _header(headers, "content-length")
    if not chunked and not length_text:
        return b""
    if _header(headers, "expect").lower() == "100-continue":
        await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    if not chunked:
        if not length_text.isdigit() or int(length_text) > _MAX_BODY:
            raise _BadRequest("Bad Content-Length")
        return await reader.receive_exactly(int(length_text)) if int(length_text) else b""
    body = bytearray()
    while True:
        size_line = (await reader.receive_until(b"\r\n", 1024)).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _BadRequest("Bad chunk size") from None
        if size == 0:
            while await reader.receive_until(b"\r\n", _MAX_HEAD):
                pass  # trailers, ignored
            return bytes(body)
        if len(body) + size > _MAX_BODY:
            raise _BadRequest("Body too large")
        body += await reader.receive_exactly(size)
        await reader.receive_exactly(2)


async def _call_app(
    app: ASGIApp, scope: Scope, body: bytes, reader: BufferedByteReceiveStream
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    payload = bytearray()
    started = finished = False
    delivered = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        # The app waits for the client to go away (a scripted hang): tell it when it does.
        try:
            while await reader.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, headers, started, finished
        if message["type"] == "http.response.start":
            status, headers, started = int(message["status"]), list(message["headers"]), True
        elif message["type"] == "http.response.body":
            payload.extend(message.get("body", b""))
            finished = not message.get("more_body", False)

    try:
        await app(scope, receive, send)
    except Exception:  # an app error is a 500 for this client, not a crash of the server
        return 500, [], b"Internal Server Error"
    if not (started and finished):
        return 500, [], b"Internal Server Error"
    return status, headers, bytes(payload)


def _format_response(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool
) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}".encode("latin-1")]
    lines += [
        name + b": " + value
        for name, value in headers
        if name.lower() not in (b"content-length", b"connection", b"transfer-encoding")
    ]
    lines.append(b"content-length: " + str(len(body)).encode())
    lines.append(b"connection: " + (b"keep-alive" if keep_alive else b"close"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _send_simple(stream: anyio.abc.SocketStream, status: int, text: str) -> None:
    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(_format_response(status, [], text.encode(), keep_alive=False))
