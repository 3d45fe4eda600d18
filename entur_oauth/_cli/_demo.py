"""``entur-oauth demo``: the real client against a fake Entur (or a real one), step by step.

Only the client's public surface is used (``get``, ``get_access_token``,
``token_fetches``), so the demo shows what a user's code would see.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx2

from .._api_errors import ForbiddenError
from .._client import EnturClient
from .._secrets import fingerprint
from .._stores import MemoryTokenStore
from ._demo_real import demo_real
from ._output import EXIT_CONFIG, EXIT_OK, CommandError, Redactor, duration, out
from ._settings import load, run_async

if TYPE_CHECKING:
    # The test kit (and uvicorn, if installed) is imported when the demo runs the fake.
    from ..testing import FakeClock, FakeEntur

__all__ = ["run"]

DEMO_CLIENT_NAME = "entur-oauth-demo"


def run(args: argparse.Namespace, redactor: Redactor) -> int:
    """The demo: against a fake Entur, or with ``--environment`` against that environment."""
    if args.calls < 1:
        raise CommandError(EXIT_CONFIG, "--calls must be at least 1.", "For example: --calls 50")
    if getattr(args, "environment", None):
        settings = load(args, redactor)
        return run_async(args, partial(demo_real, settings, args.calls, args.path))
    if os.environ.get("ENTUR_CLIENT_ID"):
        print(
            "entur-oauth: ENTUR_* credentials are set but not used: the demo runs against a "
            "fake Entur unless you pass --environment (e.g. --environment staging).",
            file=sys.stderr,
        )
    from ..testing import FakeClock, FakeEntur
    from ..testing._serve import pick_server

    try:
        server = pick_server(args.server)
    except ModuleNotFoundError as exc:
        raise CommandError(
            EXIT_CONFIG, str(exc), "pip install uvicorn, or --server builtin"
        ) from None
    clock = FakeClock()
    fake = FakeEntur(clock=clock)
    redactor.add(fake.client_secret)
    name = (
        getattr(args, "client_name", None)
        or os.environ.get("ENTUR_CLIENT_NAME")
        or DEMO_CLIENT_NAME
    )
    with fake.serve(server=server) as url:
        return run_async(
            args,
            partial(
                _demo_fake,
                fake=fake,
                clock=clock,
                url=url,
                name=name,
                calls=args.calls,
                backend=args.backend,
                server=server,
            ),
        )


def _tally(statuses: Sequence[int]) -> str:
    counts = Counter(statuses)
    return ", ".join(
        f"{n} x {code} {httpx2.codes.get_reason_phrase(code)}" for code, n in sorted(counts.items())
    )


async def _demo_fake(
    *, fake: FakeEntur, clock: FakeClock, url: str, name: str, calls: int, backend: str, server: str
) -> int:
    seen: list[int] = []

    async def record(response: httpx2.Response) -> None:
        seen.append(response.status_code)

    out(f"entur-oauth demo: the real EnturClient against a fake Entur at {url}")
    out(f"(no credentials needed; event loop: {backend}; server: {server}; ET-Client-Name: {name})")
    out()
    client = EnturClient(
        fake.client_id,
        fake.client_secret,
        client_name=name,
        environment=fake.environment(url),
        clock=clock,
        token_store=MemoryTokenStore(),
        event_hooks={"response": [record]},
    )
    async with client:

        async def burst(n: int, path: str = "/personalisation/v1/programs/1") -> list[int]:
            results: list[int] = []

            async def one() -> None:
                results.append((await client.get(path)).status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)
            return results

        def step(title: str, result: str, before: int, note: str) -> int:
            fetched = fake.token_count - before
            out(f"{title}")
            out(f"   -> {result}; token requests: {fetched} ({note})")
            return fake.token_count

        count = step(
            f"1. {calls} concurrent first calls",
            _tally(await burst(calls)),
            0,
            "one fetch, shared by every call",
        )
        count = step(
            f"2. {calls} more calls",
            _tally(await burst(calls)),
            count,
            "the cached token was reused",
        )
        lifetime = float(fake.expires_in or 86400)
        clock.advance(lifetime - 30)
        seen.clear()
        results = await burst(1)
        count = step(
            f"3. {duration(lifetime - 30)} later (on a fake clock), 30 s before expiry, one call",
            _tally(results),
            count,
            "renewed before it expired: no 401 seen" if 401 not in seen else "renewed after a 401",
        )
        fake.revoke_all()
        seen.clear()
        results = await burst(calls)
        rejected = seen.count(401)
        count = step(
            f"4. the fake revokes every token; {calls} concurrent calls",
            f"{rejected} x 401 Unauthorized, retried with a new token: {_tally(results)}",
            count,
            "one re-fetch for all of them",
        )
        out("5. GET /forbidden/reports (the fake's 403 path)")
        try:
            await client.get("/forbidden/reports")
        except ForbiddenError as exc:
            # The message's first sentence after the URL: Entur's meaning of 403.
            reason = str(exc).split(": ", 1)[-1].split(". ", 1)[0]
            out(f"   -> raised ForbiddenError (HTTP {exc.status_code}): {reason}.")
        else:  # pragma: no cover - the fake always answers 403 there
            raise CommandError(1, "the fake did not answer 403", "")
        fingerprints = {
            fingerprint(r.headers["authorization"].partition(" ")[2])
            for r in fake.api_requests
            if "authorization" in r.headers
        }
        named = all(
            r.headers.get("et-client-name") == name for r in fake.token_requests + fake.api_requests
        )
    out()
    out(
        f"In all: {len(fake.api_requests)} API requests, {fake.token_count} token requests, "
        f"{len(fingerprints)} distinct tokens (shown here by fingerprint only: "
        f"{', '.join(sorted(fingerprints))})."
    )
    out(f"ET-Client-Name on every request, token requests included: {'yes' if named else 'NO'}.")
    out()
    out("Next: the same against Entur staging, with your client from Entur Partner:")
    out("  export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-app")
    out(f"  {_entur_oauth_command()} demo --environment staging")
    return EXIT_OK


def _entur_oauth_command() -> str:
    """How the user's shell runs this installation's ``entur-oauth``.

    The console script when the ``PATH`` finds this installation's; else this interpreter
    with ``-m entur_oauth``. Under nox (``nox -s demo``) the script is in ``.nox/demo/bin``,
    which nox puts on the ``PATH`` of the commands it runs but which is not on the user's.
    The interpreter is named relative to the working directory when it lies under it
    (``.nox/demo/bin/python``), as the user's shell is usually there too.
    """
    bin_dir = Path(sys.executable).absolute().parent
    script = shutil.which("entur-oauth")
    on_users_path = "NOX_CURRENT_SESSION" not in os.environ
    if on_users_path and script is not None and Path(script).absolute().parent == bin_dir:
        return "entur-oauth"
    python = Path(sys.executable).absolute()
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    shown = str(python) if os.sep in str(python) else os.path.join(os.curdir, python)
    return f"{shlex.quote(shown)} -m entur_oauth"
