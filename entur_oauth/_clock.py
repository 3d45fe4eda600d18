"""Time, injectable: a monotonic clock for expiry, a wall clock for JWT ``exp``, sleep, and
the cut-off of one token request."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Protocol

import anyio

__all__ = ["Clock", "SystemClock", "fail_after"]


class Clock(Protocol):
    """What the client needs from time (``EnturClient(clock=...)``): three methods.

    Tests pass a fake (``entur_oauth.testing.FakeClock``) to skip real waiting: expiry,
    refresh windows, retry back-offs and the background refresher all run on it.

    A clock may also have ``fail_after(seconds)``, a context manager like
    :func:`anyio.fail_after` on its own time; the backstop cut-off of each token request
    uses it (``FakeClock`` has one). Without it that cut-off runs on real time, so a clock
    that never moves can never leave a request hanging.
    """

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

    fail_after = staticmethod(anyio.fail_after)

    def __repr__(self) -> str:
        return "SystemClock()"


def fail_after(clock: Clock, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
    """``anyio.fail_after(seconds)`` on ``clock``'s time if it has a ``fail_after`` of its
    own, else on real time (see :class:`Clock`)."""
    own = getattr(clock, "fail_after", None)
    if own is None:
        return anyio.fail_after(seconds)
    scope: AbstractContextManager[anyio.CancelScope] = own(seconds)
    return scope
