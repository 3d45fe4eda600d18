"""Several worker processes sharing one token through a FileTokenStore (one host).

Each worker is its own process with its own EnturClient, as uvicorn/gunicorn workers are.
With the shared store they make one token request between them instead of one each: the
first takes the store's lock and fetches, the others wait for it and reuse its token. For
workers on many hosts, swap FileTokenStore for RedisTokenStore(REDIS_URL) (needs
``pip install 'entur-oauth[redis]'``); see the README's "Running many workers".

Run it against Entur (staging here) with a client from Entur Partner::

    export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-example
    export ENTUR_ENVIRONMENT=staging
    python examples/many_workers.py 8 /personalisation/v1/programs/1

or against the local fake: run ``entur-oauth fake-server`` in another shell and paste the
variables it prints. Each worker prints its status and how many tokens it fetched itself.
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
from pathlib import Path

import anyio

from entur_oauth import EnturClient, FileTokenStore


async def work(store_path: str, path: str) -> tuple[int, int]:
    """One worker: one authenticated call; returns (status, tokens this worker fetched)."""
    # ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET, ENTUR_CLIENT_NAME, ENTUR_ENVIRONMENT
    async with EnturClient.from_env(token_store=FileTokenStore(store_path)) as entur:
        response = await entur.get(path)
        fetched = entur.token_fetches
    return response.status_code, fetched


def worker(store_path: str, path: str, number: int) -> None:
    """Entry point of one worker process."""
    status, fetched = anyio.run(work, store_path, path)
    print(f"worker {number}: HTTP {status}, tokens fetched by this worker: {fetched}")


def main(workers: int, path: str) -> None:
    """Start ``workers`` processes at once, all sharing one token file."""
    with tempfile.TemporaryDirectory() as tmp:
        store_path = str(Path(tmp) / "tokens.json")
        context = multiprocessing.get_context("spawn")  # fresh processes, like real workers
        processes = [
            context.Process(target=worker, args=(store_path, path, n)) for n in range(workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [p for p in processes if p.exitcode != 0]
        if failed:
            sys.exit(f"{len(failed)} worker(s) failed")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    main(count, sys.argv[2] if len(sys.argv) > 2 else "/personalisation/v1/programs/1")
