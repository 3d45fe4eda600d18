"""The shared token store as the manager sees it: sealed tokens in, sealed tokens out.

:class:`SharedStore` reads and writes one key of a :class:`TokenStore` through the codec,
holds the store's lock around a fetch, replaces a token the API rejected under that lock
(or deletes it, only while the store still holds it, when no new one could be fetched), and
remembers which tokens the API rejected. A store fault never fails a request: it is logged
and the process goes on with its own token.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable

from . import _telemetry as telemetry
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
            telemetry.lease(won=token is None)
            if token is not None:
                return token
            try:
                token = await fetch()
            except Exception:
                await self._delete_rejected()  # never left for the next client to take
                raise
            # Over a token the API rejected too, in this one lock hold: the store is never
            # empty meanwhile, so no client finds it so and fetches a token of its own (a
            # token that replaced nothing, which the 401-storm guard would not keep).
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
            telemetry.store_lookup("none" if raw is None else "unusable")
            return None
        if not self._usable(token, replacing):
            return None
        logger.debug("token %s taken from the shared store", token.fingerprint)
        telemetry.store_lookup(None)
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
            telemetry.store_lookup("stale")
            return False
        advisory, _ = self._refresh.windows(token.lifetime, self._rng)
        if token.expires_at - advisory <= now:
            telemetry.store_lookup("stale")
            return False  # in its own refresh window: fetch a fresh one instead
        if replacing is not None and token.fingerprint == replacing.fingerprint:
            telemetry.store_lookup("stale")
            return False
        if token.fingerprint in self._rejected:
            logger.debug("stored token %s was rejected by the API; ignoring it", token.fingerprint)
            telemetry.store_lookup("rejected")
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

        The store keeps it until the fetch of its replacement overwrites it, under the
        store's lock (or deletes it, if that fetch fails).
        """
        self._rejected.append(token.fingerprint)

    async def _delete_rejected(self) -> None:
        """Delete the stored token if the API rejected it, only while the store holds it."""
        if not self._rejected:
            return
        try:
            # Compared by fingerprint, then compare-and-delete on the raw bytes: another
            # process (without this lock, after a store fault) may have stored a new one.
            raw = await self._store.get(self.key)
            stored = self._decode(raw) if raw is not None else None
            if stored is not None and stored.fingerprint in self._rejected:
                await self._store.delete(self.key, expected=raw)
        except Exception as exc:  # a store fault must not fail the request
            _store_warning("delete", exc)

    def _decode(self, raw: bytes) -> Token | None:
        return self._codec.decode(
            raw, now_monotonic=self._clock.monotonic(), now_wall=self._clock.time()
        )


def _store_warning(what: str, exc: Exception) -> None:
    # A WARNING (event "store_fallback") with only the exception type and message: store
    # errors never carry token text.
    telemetry.store_fallback(what, exc)
