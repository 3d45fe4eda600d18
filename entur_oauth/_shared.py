"""The shared token store as the manager sees it: sealed tokens in, sealed tokens out.

:class:`SharedStore` reads and writes one key of a :class:`TokenStore` through the codec,
holds the store's lock around a fetch, replaces a token the API rejected under that lock
(or deletes it, only while the store still holds it, when no new one could be fetched), and
remembers which tokens the API rejected. A store fault never fails a request: the process
goes on with its own token, fetched once and shared by every client on the same store
object (its fallback), and logs one warning per outage (until a store call works again).
"""

from __future__ import annotations

import logging
import random
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

from . import _telemetry as telemetry
from ._clock import Clock
from ._codec import TokenCodec
from ._policy import RefreshPolicy
from ._stores import MemoryTokenStore, TokenStore
from ._token import Token

__all__ = ["SharedStore"]

logger = logging.getLogger("entur_oauth")

#: How far apart two hosts' wall clocks may be for a stored token to be trusted.
_STORE_CLOCK_SKEW = 60.0


class _Fallback:
    """What the clients on one store object share while that store fails: the token this
    process fetched on its own, and whether the outage has been warned about."""

    def __init__(self) -> None:
        self.tokens = MemoryTokenStore()
        self._failing = False
        self._guard = threading.Lock()  # clients in other threads may share the store

    def failed(self) -> bool:
        """Mark the store failing; ``True`` for the first fault of an outage."""
        with self._guard:
            first, self._failing = not self._failing, True
        return first

    def worked(self) -> bool:
        """Mark the store working; ``True`` if that ends an outage."""
        with self._guard:
            ended, self._failing = self._failing, False
        return ended


# Keyed by the store object, weakly: every client on one store object shares its fallback
# (one token request per process per outage, not one per client), and it goes with it.
_FALLBACKS: weakref.WeakKeyDictionary[TokenStore, _Fallback] = weakref.WeakKeyDictionary()
_FALLBACKS_GUARD = threading.Lock()


def _fallback_for(store: TokenStore) -> _Fallback:
    with _FALLBACKS_GUARD:
        try:
            fallback = _FALLBACKS.get(store)
            if fallback is None:
                fallback = _FALLBACKS[store] = _Fallback()
        except TypeError:  # a store that is unhashable or has no weak references
            return _Fallback()  # this client's own
    return fallback


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
        self._fallback = _fallback_for(store)

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
            self._fault("lock", exc)
            return await self._fetch_alone(fetch, replacing=replacing, force=force)
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
                self._fault("unlock", exc)

    async def load(self, replacing: Token | None) -> Token | None:
        """Return the stored token if it is worth using instead of fetching one."""
        try:
            raw = await self._store.get(self.key)
        except Exception as exc:
            self._fault("read", exc)
            # The token another client on this store object fetched alone, if any (not
            # shared-store traffic: no lookup event, the round's found stays unreachable).
            return await self._load_from(self._fallback.tokens, replacing, lookup=False)
        if self._fallback.worked():
            logger.info("token store %s works again", type(self._store).__name__)
        return self._take(raw, replacing)

    async def _load_from(
        self, store: TokenStore, replacing: Token | None, *, lookup: bool = True
    ) -> Token | None:
        return self._take(await store.get(self.key), replacing, lookup=lookup)

    def _take(
        self, raw: bytes | None, replacing: Token | None, *, lookup: bool = True
    ) -> Token | None:
        token = self._decode(raw) if raw is not None else None
        if token is None:
            if raw is not None:
                logger.debug(
                    "stored token unusable (expired, corrupt or another secret); ignoring it"
                )
            if lookup:
                telemetry.store_lookup("none" if raw is None else "unusable")
            return None
        if not self._usable(token, replacing):
            return None
        logger.debug("token %s taken from the shared store", token.fingerprint)
        if lookup:
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
            self._fault("write", exc)

    async def _fetch_alone(
        self, fetch: Callable[[], Awaitable[Token]], *, replacing: Token | None, force: bool
    ) -> Token:
        """Fetch without the store, once for this process: the clients on this store object
        wait for one another's fetch and share its token (in memory) while the store fails."""
        local = self._fallback.tokens
        async with local.lock(self.key):
            token = None if force else await self._load_from(local, replacing, lookup=False)
            if token is not None:
                return token
            token = await fetch()
            ttl = max(token.expires_at - self._clock.monotonic(), 1.0)
            await local.set(self.key, self._codec.encode(token), ttl=ttl)
            return token

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
        # Nor in this process's fallback (which cannot fail).
        local = await self._fallback.tokens.get(self.key)
        held = self._decode(local) if local is not None else None
        if held is not None and held.fingerprint in self._rejected:
            await self._fallback.tokens.delete(self.key, expected=local)
        try:
            # Compared by fingerprint, then compare-and-delete on the raw bytes: another
            # process (without this lock, after a store fault) may have stored a new one.
            raw = await self._store.get(self.key)
            stored = self._decode(raw) if raw is not None else None
            if stored is not None and stored.fingerprint in self._rejected:
                await self._store.delete(self.key, expected=raw)
        except Exception as exc:  # a store fault must not fail the request
            self._fault("delete", exc)

    def _fault(self, what: str, exc: Exception) -> None:
        # A warning for the first fault of an outage, DEBUG for the rest: a client per call
        # during an outage would otherwise log a warning (or two) per call.
        first = self._fallback.failed()
        _store_warning(what, exc, logging.WARNING if first else logging.DEBUG)

    def _decode(self, raw: bytes) -> Token | None:
        return self._codec.decode(
            raw, now_monotonic=self._clock.monotonic(), now_wall=self._clock.time()
        )


def _store_warning(what: str, exc: Exception, level: int = logging.WARNING) -> None:
    # Event "store_fallback" (a WARNING once per outage, DEBUG after) with only the
    # exception type and message: store errors never carry token text.
    telemetry.store_fallback(what, exc, level)
