"""``entur-oauth fake-server``: the fake Entur of :mod:`entur_oauth.testing` on loopback."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._output import EXIT_CONFIG, EXIT_OK, CommandError, Redactor

__all__ = ["FAKE_SERVER_CLIENT_ID", "FAKE_SERVER_CLIENT_NAME", "FAKE_SERVER_CLIENT_SECRET", "run"]

FAKE_SERVER_CLIENT_ID = "fake-client-id"
FAKE_SERVER_CLIENT_SECRET = "fake-client-secret"  # the fake server's, printed on purpose
FAKE_SERVER_CLIENT_NAME = "local-dev"


def run(args: argparse.Namespace, redactor: Redactor) -> int:
    """Serve the fake until Ctrl+C or SIGTERM; print the variables that point at it.

    The parser has refused a host beyond loopback already, before anything was bound.
    """
    from ..testing import FakeEntur
    from ..testing._serve import serving

    fake = FakeEntur(
        client_id=FAKE_SERVER_CLIENT_ID,
        client_secret=FAKE_SERVER_CLIENT_SECRET,
        expires_in=args.expires_in,
        samples=True,
    )
    try:
        with serving(_access_log(fake), host=args.host, port=args.port, server=args.server) as port:
            shown = f"[{args.host}]" if ":" in args.host else args.host
            url = f"http://{shown}:{port}"
            variables = fake.env(
                url, client_name=getattr(args, "client_name", None) or FAKE_SERVER_CLIENT_NAME
            )
            print(f"Fake Entur listening on {url} (token endpoint {url}{fake.TOKEN_PATH}).")
            print("Point a client (or entur-oauth itself) at it with these variables:")
            print()
            for name in sorted(variables):
                print(f"export {name}={variables[name]}")
            print()
            print(
                "Partner paths need the token; /geocoder and /journey-planner are open; "
                "/forbidden answers 403. Ctrl+C stops it.",
                flush=True,
            )
            _wait_for_stop_signal()
    except ModuleNotFoundError as exc:
        raise CommandError(
            EXIT_CONFIG, str(exc), "pip install uvicorn, or --server builtin"
        ) from None
    except OSError as exc:
        raise CommandError(
            EXIT_CONFIG,
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}).",
            "Pick another --port (0 picks a free one).",
        ) from None
    print("Fake Entur stopped.", file=sys.stderr)
    return EXIT_OK


def _access_log(app: Any) -> Any:
    """Wrap an ASGI app to print one line per request on stderr (no headers, no query)."""

    async def logged(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        status = 0

        async def watch(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await app(scope, receive, watch)
        if scope["type"] == "http":
            print(f"{scope['method']} {scope['path']} -> {status}", file=sys.stderr, flush=True)

    return logged


def _wait_for_stop_signal() -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    wanted = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    previous = {signum: signal.signal(signum, on_signal) for signum in wanted}
    try:
        # A timeout keeps the wait responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
