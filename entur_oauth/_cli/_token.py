"""``entur-oauth token``: print a valid access token, from the cache file while it is fresh.

Shell scripts call this in loops, so a valid cached token is read, unsealed and printed
without importing the HTTP stack (httpx2, authlib, anyio): only the file store and the
codec. Anything else (no cache, a token near its refresh window, an unreadable file) takes
the client's path, which fetches and caches as usual.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import TYPE_CHECKING

from .._codec import TokenCodec, store_key
from .._errors import ConfigurationError
from .._file_store import FileTokenStore
from .._policy import RefreshPolicy
from .._secrets import fingerprint
from ._output import EXIT_OK, Redactor
from ._settings import Settings, load, make_client, run_async, token_cache

if TYPE_CHECKING:
    from .._stores import TokenStore

__all__ = ["run"]


class _Latest(random.Random):
    """A random source that always draws the largest value: the earliest refresh window."""

    def uniform(self, a: float, b: float) -> float:
        return max(a, b)


def cached_token(settings: Settings, store: FileTokenStore) -> str | None:
    """The cached token, if the client would use it as is (outside every refresh window)."""
    env = settings.environment
    if settings.client_id is None or settings.client_secret is None:
        return None
    key = store_key(env.token_url, env.audience, settings.client_id)
    try:
        raw = store._get_sync(key)
    except (ConfigurationError, OSError):
        return None  # the client's path reports it, or works around it
    if raw is None:
        return None
    now = time.time()
    token = TokenCodec(settings.client_secret, key).decode(
        raw, now_monotonic=time.monotonic(), now_wall=now
    )
    if token is None:
        return None
    # The earliest the client could start renewing it, with the default policy's jitter.
    advisory, _ = RefreshPolicy().windows(token.lifetime, _Latest())
    return token.access_token if token.expires_at_wall - now > advisory else None


def _fetch(args: argparse.Namespace, settings: Settings, store: TokenStore) -> str:
    token = ""

    async def fetch() -> int:
        nonlocal token
        async with make_client(settings, token_store=store) as client:
            token = await client.get_access_token()
        return EXIT_OK

    run_async(args, fetch)
    return token


def run(args: argparse.Namespace, redactor: Redactor) -> int:
    """Print the token (or the whole ``Authorization`` line with ``--header``)."""
    settings = load(args, redactor)
    store = token_cache(args)
    token = cached_token(settings, store) if isinstance(store, FileTokenStore) else None
    if token is None:
        token = _fetch(args, settings, store)
    elif args.verbose:
        import logging  # loaded already by --verbose

        logging.getLogger("entur_oauth").debug(
            "token %s read from %s: fresh, no request made", fingerprint(token), store
        )
    print(f"Authorization: Bearer {token}" if args.header else token)
    return EXIT_OK
