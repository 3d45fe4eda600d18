"""Several worker processes sharing one token through a FileTokenStore (one host).

Each worker is its own process with its own EnturClient, as uvicorn/gunicorn workers are.
With the shared store they make one token request between them instead of one each: the
first takes the store's lock and fetches, the others wait for it and reuse its token. For
workers on many hosts, swap FileTokenStore for RedisTokenStore(REDIS_URL) (needs
the ``redis`` extra); see the README's "Running many workers".

Run it against Entur (staging here) with a client from Entur Partner::

    export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-example
    export ENTUR_ENVIRONMENT=staging
    python many_workers.py 4 /personalisation/v1/programs/1

or against the local fake: run ``entur-oauth fake-server`` in another shell and paste the
variables it prints. Run it in this file's folder (or wherever you copied it). Each worker
prints its status and how many tokens it fetched itself.
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
from multiprocessing.queues import Queue
from pathlib import Path

import anyio

from entur_oauth import ConfigurationError, EnturClient, FileTokenStore


async def work(store_path: str, path: str) -> tuple[int, int]:
    """One worker: one authenticated call; returns (status, tokens this worker fetched)."""
    # ENTUR_CLIENT_ID, ENTUR_CLIENT_SECRET, ENTUR_CLIENT_NAME, ENTUR_ENVIRONMENT
    async with EnturClient.from_env(token_store=FileTokenStore(store_path)) as entur:
        response = await entur.get(path)
        fetched = entur.token_fetches
    return response.status_code, fetched


async def check_settings() -> None:
    """Read the ENTUR_* settings once here (no network call), so a missing variable is one
    clear message from the parent instead of a traceback from every worker."""
    async with EnturClient.from_env():
        pass


def worker(store_path: str, path: str, number: int, results: Queue[tuple[int, int, int]]) -> None:
    """Entry point of one worker process: reports (number, status, fetched) to the parent."""
    status, fetched = anyio.run(work, store_path, path)
    results.put((number, status, fetched))


def main(workers: int, path: str) -> None:
    """Start ``workers`` processes at once, all sharing one token file."""
    with tempfile.TemporaryDirectory() as tmp:
        store_path = str(Path(tmp) / "tokens.json")
        context = multiprocessing.get_context("spawn")  # fresh processes, like real workers
        # Workers report through a queue and only this process prints: lines that several
        # processes write to one pipe at once can interleave mid-line.
        results: Queue[tuple[int, int, int]] = context.Queue()
        processes = [
            context.Process(target=worker, args=(store_path, path, n, results))
            for n in range(workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [p for p in processes if p.exitcode != 0]
        if failed:
            sys.exit(f"{len(failed)} worker(s) failed")
        # Every worker exited 0, so each put its report before it ended.
        reports = sorted(results.get(timeout=10) for _ in processes)
    for number, status, fetched in reports:
        print(f"worker {number}: HTTP {status}, tokens fetched by this worker: {fetched}")
    print(f"token requests by all {workers} workers: {sum(r[2] for r in reports)}")


if __name__ == "__main__":
    try:
        anyio.run(check_settings)
    except ConfigurationError as exc:
        sys.exit(f"many_workers.py: {exc}")
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    main(count, sys.argv[2] if len(sys.argv) > 2 else "/personalisation/v1/programs/1")
