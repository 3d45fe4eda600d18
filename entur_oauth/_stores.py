"""Where tokens are shared: the store protocol and the in-process store.

A store only moves opaque bytes (the token sealed by :mod:`entur_oauth._codec`) and offers a
lock around the fetch, so one process (or one host, or one fleet) makes one fetch.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, runtime_checkable

import anyio

from ._loop import current_loop

__all__ = ["MemoryTokenStore", "TokenStore", "default_memory_store"]


@runtime_checkable
class TokenStore(Protocol):
    """A place where several clients share one token.

    Implementations must be safe to call from asyncio and trio. Values are already
    encrypted; keys hold no secret.
    """

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None``."""
        ...

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        """Store ``value`` under ``key`` for at most ``ttl`` seconds."""
        ...

    async def delete(self, key: str, *, expected: bytes | None = None) -> None:
        """Remove ``key``; with ``expected``, only while it still holds that value."""
        ...

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Return a lock that at most one fetcher of ``key`` holds at a time."""
        ...


class MemoryTokenStore:
    """Tokens shared by every client in this process that has the same credentials.

    The default store: two clients for the same client id, audience and token URL make one
    fetch between them. Values live in memory only and die with the process.
    """

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float]] = {}
        # A thread lock guards the dict: clients in different threads (each with its own
        # event loop) may share this store. Held only for dict operations, never across await.
        self._guard = threading.Lock()
        # anyio locks belong to one event loop; keep one set per running loop.
        self._locks: weakref.WeakKeyDictionary[object, dict[str, anyio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key`` unless it has expired."""
        with self._guard:
            entry = self._values.get(key)
            if entry is None:
                return None
            value, expires = entry
            if expires <= time.monotonic():
                del self._values[key]
                return None
            return value

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds."""
        with self._guard:
            self._values[key] = (value, time.monotonic() + ttl)

    async def delete(self, key: str, *, expected: bytes | None = None) -> None:
        """Remove ``key`` (only if it holds ``expected``, when given)."""
        with self._guard:
            entry = self._values.get(key)
            if entry is not None and (expected is None or entry[0] == expected):
                del self._values[key]

    @asynccontextmanager
    async def _lock(self, key: str) -> AsyncIterator[None]:
        loop = current_loop()
        with self._guard:
            lock = self._locks.setdefault(loop, {}).setdefault(key, anyio.Lock())
        async with lock:
            yield

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Return the in-process lock for ``key``."""
        return self._lock(key)

    def clear(self) -> None:
        """Forget every stored token (for tests)."""
        with self._guard:
            self._values.clear()

    def __repr__(self) -> str:
        return f"MemoryTokenStore(entries={len(self._values)})"


_DEFAULT = MemoryTokenStore()


def default_memory_store() -> MemoryTokenStore:
    """Return the process-wide store that clients use when given none."""
    return _DEFAULT
