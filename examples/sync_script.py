"""Calling Entur from synchronous code: a script, a Django view, a Celery task.

``EnturClient`` is async. From synchronous code, run each call with ``asyncio.run`` and
make the client inside it: a client belongs to the event loop it was first used in, so one
client kept (at module level, say) across two ``asyncio.run`` calls raises
``EventLoopError``. The token is not fetched again: clients share it through the default
token store (in memory, one per process), so only the first call of a process asks for a
token. Across processes (gunicorn workers, cron jobs) pass a shared ``token_store=``.

In a synchronous Django view, call ``entur_get`` as below. In an ``async def`` view, or
anywhere an event loop already runs, ``await`` the client instead (``asyncio.run`` refuses
to run inside a running loop).

Run it against Entur (staging here) with a client from Entur Partner::

    export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-example
    export ENTUR_ENVIRONMENT=staging
    python sync_script.py /personalisation/v1/programs/1

or against the local fake: run ``entur-oauth fake-server`` in another shell and paste the
variables it prints. Run it in this file's folder (or wherever you copied it). It makes
the call twice and prints how many tokens each call fetched: 1, then 0.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from entur_oauth import ConfigurationError, EnturClient


async def _get(path: str) -> tuple[Any, int]:
    # A new client for this event loop; its token comes from the process's default store.
    async with EnturClient.from_env() as entur:
        response = await entur.get(path)
        response.raise_for_status()
        return response.json(), entur.token_fetches


def entur_get(path: str) -> tuple[Any, int]:
    """GET an Entur API path from synchronous code.

    Returns:
        The JSON body, and how many tokens this call fetched (1 for the first call of a
        process, then 0 until the token needs renewing).
    """
    return asyncio.run(_get(path))


def main(path: str) -> None:
    for call in (1, 2):
        body, fetched = entur_get(path)
        print(f"call {call}: {body}; tokens fetched by this call: {fetched}")


if __name__ == "__main__":
    try:
        main(sys.argv[1] if len(sys.argv) > 1 else "/personalisation/v1/programs/1")
    except ConfigurationError as exc:  # a missing or wrong ENTUR_* variable: say which
        sys.exit(f"sync_script.py: {exc}")
