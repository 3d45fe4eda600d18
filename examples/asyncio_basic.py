"""The smallest complete program: one authenticated call to an Entur partner API, on asyncio.

It shows ``EnturClient.from_env()`` and one ``GET`` relative to the environment's API
base; the token is fetched on first use and reused behind the scenes.

Run it against Entur (staging here) with a client from Entur Partner::

    export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-example
    export ENTUR_ENVIRONMENT=staging
    python asyncio_basic.py /personalisation/v1/programs/1

or against the local fake: run ``entur-oauth fake-server`` in another shell and paste the
variables it prints. Run it in this file's folder (or wherever you copied it).
"""

from __future__ import annotations

import asyncio
import sys

from entur_oauth import ConfigurationError, EnturClient


async def main(path: str) -> None:
    # ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET, ENTUR_CLIENT_NAME, ENTUR_ENVIRONMENT
    async with EnturClient.from_env() as entur:
        response = await entur.get(path)  # relative to the API base
        response.raise_for_status()
        print(response.json())


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "/personalisation/v1/programs/1"))
    except ConfigurationError as exc:  # a missing or wrong ENTUR_* variable: say which
        sys.exit(f"asyncio_basic.py: {exc}")
