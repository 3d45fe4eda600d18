"""The shared token store as the manager sees it: sealed tokens in, sealed tokens out.

:class:`SharedStore` reads and writes one key of a :class:`TokenStore` through the codec,
holds the store's lock around a fetch, deletes a rejected token only while the store still
holds it, and remembers which tokens the API rejected. A store fault never fails a
request: it is logged and the process goes on with its own token.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable

from ._clock import Clock
from ._codec import TokenCodec
from ._policy import RefreshPolicy
from ._stores import TokenStore
from ._token import Token

__all__ = ["SharedStore"]

logger = logging.getLogger("entur_oauth")

#: How far apart two hosts' wall clocks may be for a stored token to be trusted.
_STORE_CLOCK_SKEW = 60.0


class SharedStore:
    """One key of a token store, sealed with the client's codec."""

    def __init__(
        self,
        store: TokenStore,
        key: str,
        codec: TokenCodec,
        *,
        clock: Clock,
        refresh: RefreshPolicy,
        rng: random.Random,
    ) -> None:
        self._store = store
        self.key = key
        self._codec = codec
        self._clock = clock
        self._refresh = refresh
        self._rng = rng
        #: Fingerprints of tokens the API rejected (the last few): never taken from the store.
        self._rejected: deque[str] = deque(maxlen=8)

    def __repr__(self) -> str:
        return f"<SharedStore {type(self._store).__name__} key={self.key!r}>"

    async def fetch_through(
        self, fetch: Callable[[], Awaitable[Token]], *, replacing: Token | None, force: bool
    ) -> Token:
        """Return a token from the store, else from ``fetch`` under the store's lock, saved.

        ``replacing`` (the token being renewed) is never taken back; ``force`` skips the
        store and always fetches.
        """
        token = None if force else await self.load(replacing)
        if token is not None:
            return token
        try:
            lock = self._store.lock(self.key)
            await lock.__aenter__()
        except Exception as exc:  # a store fault must not fail the request
            _store_warning("lock", exc)
            return await fetch()
        try:
            # Another process may have fetched while we waited for the lock.
            token = None if force else await self.load(replacing)
            if token is not None:
                return token
            token = await fetch()
            await self.save(token)
            return token
        finally:
            try:
                await lock.__aexit__(None, None, None)
            except Exception as exc:
                _store_warning("unlock", exc)

    async def load(self, replacing: Token | None) -> Token | None:
        """Return the stored token if it is worth using instead of fetching one."""
        try:
            raw = await self._store.get(self.key)
        except Exception as exc:
            _store_warning("read", exc)
            return None
        token = self._decode(raw) if raw is not None else None
        if token is None:
            if raw is not None:
                logger.debug(
                    "stored token unusable (expired, corrupt or another secret); ignoring it"
                )
            return None
        if not self._usable(token, replacing):
            return None
        logger.debug("token %s taken from the shared store", token.fingerprint)
        return token

    def _usable(self, token: Token, replacing: Token | None) -> bool:
        now = self._clock.monotonic()
        if token.expires_at - now > token.lifetime + _STORE_CLOCK_SKEW:
            # Stores carry expiry as wall-clock time. More life left than the token ever
            # had means this wall clock went back since it was stored (or another host's
            # is far off): its real expiry is unknown, so fetch rather than trust it.
            logger.debug(
                "stored token %s claims more life than it was issued with; the wall clock "
                "moved; ignoring it",
                token.fingerprint,
            )
            return False
        advisory, _ = self._refresh.windows(token.lifetime, self._rng)
        if token.expires_at - advisory <= now:
            return False  # in its own refresh window: fetch a fresh one instead
        if replacing is not None and token.fingerprint == replacing.fingerprint:
            return False
        if token.fingerprint in self._rejected:
            logger.debug("stored token %s was rejected by the API; ignoring it", token.fingerprint)
            return False
        return True

    async def save(self, token: Token) -> None:
        """Store ``token`` (sealed) until it expires."""
        try:
            await self._store.set(
                self.key,
                self._codec.encode(token),
                ttl=max(token.expires_at - self._clock.monotonic(), 1.0),
            )
        except Exception as exc:
            _store_warning("write", exc)

    def reject(self, token: Token) -> None:
        """Never take ``token`` from the store again (the API rejected it).

        Called before the first await of a discard: a task that fetches meanwhile must not
        take this very token back from the store before it is deleted there.
        """
        self._rejected.append(token.fingerprint)

    async def discard(self, token: Token) -> None:
        """Delete ``token`` from the store, only while the store still holds it."""
        try:
            # Compared by fingerprint, then compare-and-delete on the raw bytes: another
            # process may already have stored its replacement.
            raw = await self._store.get(self.key)
            stored = self._decode(raw) if raw is not None else None
            if stored is not None and stored.fingerprint == token.fingerprint:
                await self._store.delete(self.key, expected=raw)
        except Exception as exc:  # a store fault must not fail the request
            _store_warning("delete", exc)

    def _decode(self, raw: bytes) -> Token | None:
        return self._codec.decode(
            raw, now_monotonic=self._clock.monotonic(), now_wall=self._clock.time()
        )


def _store_warning(what: str, exc: Exception) -> None:
    # Only the exception type and message: store errors never carry token text.
    logger.warning(
        "token store %s failed (%s: %s); continuing with this process's own token",
        what,
        type(exc).__name__,
        exc,
    )
