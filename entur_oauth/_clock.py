"""Time, injectable: a monotonic clock for expiry, a wall clock for JWT ``exp``, and sleep."""

from __future__ import annotations

import time
from typing import Protocol

import anyio

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """What the token manager needs from time. Tests pass a fake to skip real waiting."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; used for every expiry decision."""
        ...

    def time(self) -> float:
        """Seconds since the epoch; used only to read JWT ``exp`` and HTTP dates."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...


class SystemClock:
    """The real clocks: :func:`time.monotonic`, :func:`time.time` and :func:`anyio.sleep`."""

    # Bound at class level so the hot path pays one attribute lookup, not a wrapper call.
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running event loop."""
        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"
