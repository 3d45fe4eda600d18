"""The smallest complete program on trio: the same client, the same call, another event loop.

``EnturClient`` runs on anyio, so it works under trio unchanged; only ``trio.run`` differs
from ``asyncio_basic.py``. Concurrent calls share one token fetch.

Run it against Entur (staging here) with a client from Entur Partner (``pip install trio``)::

    export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-example
    export ENTUR_ENVIRONMENT=staging
    python trio_basic.py /personalisation/v1/programs/1

or against the local fake: run ``entur-oauth fake-server`` in another shell and paste the
variables it prints. Run it in this file's folder (or wherever you copied it).
"""

from __future__ import annotations

import sys

import trio

from entur_oauth import ConfigurationError, EnturClient


async def main(path: str) -> None:
    async with EnturClient.from_env() as entur:
        statuses: list[int] = []

        async def call() -> None:
            statuses.append((await entur.get(path)).status_code)

        # Three calls at once: the first one fetches the token, the others wait for it.
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        print(f"statuses: {sorted(statuses)}")
        print((await entur.get(path)).json())


if __name__ == "__main__":
    try:
        trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "/personalisation/v1/programs/1")
    except ConfigurationError as exc:  # a missing or wrong ENTUR_* variable: say which
        sys.exit(f"trio_basic.py: {exc}")
