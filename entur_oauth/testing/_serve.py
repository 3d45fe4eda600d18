"""Serving an ASGI app (the fake) on a loopback port from a background thread."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Literal

import anyio.from_thread

from ._asgi import ASGIApp
from ._http11 import serve_builtin

__all__ = ["ServerChoice", "pick_server", "serving"]

#: Which HTTP server :meth:`FakeEntur.serve` uses: uvicorn when installed, else the built-in one.
ServerChoice = Literal["auto", "uvicorn", "builtin"]


def pick_server(server: str) -> Literal["uvicorn", "builtin"]:
    """Resolve ``"auto"`` to ``"uvicorn"`` when it is installed, else ``"builtin"``.

    Raises:
        ModuleNotFoundError: ``"uvicorn"`` was asked for and is not installed.
        ValueError: An unknown choice.
    """
    has_uvicorn = importlib.util.find_spec("uvicorn") is not None
    if server == "auto":
        return "uvicorn" if has_uvicorn else "builtin"
    if server == "uvicorn":
        if not has_uvicorn:
            raise ModuleNotFoundError(
                "uvicorn is not installed: run 'pip install uvicorn', or use the built-in "
                "server (server='builtin', or --server builtin on the command line).",
                name="uvicorn",
            )
        return "uvicorn"
    if server == "builtin":
        return "builtin"
    raise ValueError(f"server must be 'auto', 'uvicorn' or 'builtin', not {server!r}.")


@contextmanager
def serving(app: ASGIApp, *, host: str, port: int, server: ServerChoice) -> Iterator[int]:
    """Serve any ASGI ``app`` on ``host:port`` from a background thread; yield the port."""
    runner = _uvicorn_thread if pick_server(server) == "uvicorn" else _builtin_thread
    with runner(app, host, port) as bound:
        yield bound


@contextmanager
def _uvicorn_thread(app: ASGIApp, host: str, port: int) -> Iterator[int]:
    import uvicorn

    # Bind first, so port 0 works and the port is known before the thread starts.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            # A scripted hang whose client never disconnects must not block shutdown.
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="entur-fake-uvicorn", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError("The fake Entur server (uvicorn) did not start.")
            time.sleep(0.005)
        try:
            yield int(sock.getsockname()[1])
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    finally:
        sock.close()


@contextmanager
def _builtin_thread(app: ASGIApp, host: str, port: int) -> Iterator[int]:
    # The server gets an event loop of its own in a thread, so it serves the same whether
    # the caller runs asyncio, trio or no loop at all.
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        future, bound = portal.start_task(partial(serve_builtin, app, host, port))
        try:
            yield bound
        finally:
            future.cancel()
