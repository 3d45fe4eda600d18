"""A fake clock for tests: time moves only when told to."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when told to (``advance``), or by itself on ``sleep``
    with ``autojump=True``. Pass the same one to the client and to :class:`FakeEntur`.

    Args:
        start: The wall-clock time (epoch seconds) at monotonic time 0.
        autojump: Every ``sleep`` moves the clock forward by its own length at once, so
            retry back-offs pass without waiting. Leave it off with a background
            refresher, whose hours-long sleeps would otherwise race the clock ahead.
    """

    def __init__(self, *, start: float | None = None, autojump: bool = False) -> None:
        # Default: the real time now, so JWT ``exp`` claims a fake issues on this clock stay
        # meaningful to code reading the real wall clock (a fixed epoch would expire them);
        # whole seconds, as ``exp`` is, so lifetimes computed from it come out exact.
        self._wall_offset = float(int(time.time())) if start is None else start
        self._now = 0.0
        self.autojump = autojump
        self._sleepers: list[tuple[float, anyio.Event]] = []
        # The cut-offs of fail_after: cancelled when the clock reaches them.
        self._cutoffs: list[tuple[float, anyio.CancelScope]] = []

    def monotonic(self) -> float:
        """Seconds since the clock was made."""
        return self._now

    def time(self) -> float:
        """The fake wall clock (epoch seconds)."""
        return self._wall_offset + self._now

    def jump_wall_clock(self, seconds: float) -> None:
        """Move only the wall clock, as NTP or a user would; monotonic time is unchanged."""
        self._wall_offset += seconds

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        self._now += max(seconds, 0.0)
        due = [event for deadline, event in self._sleepers if deadline <= self._now]
        self._sleepers = [(d, e) for d, e in self._sleepers if d > self._now]
        for event in due:
            event.set()
        for deadline, scope in self._cutoffs:
            if deadline <= self._now:
                scope.cancel()

    def next_deadline(self) -> float | None:
        """The monotonic time the earliest sleeper wakes at, or ``None`` if none sleeps.

        A test that simulates hours of traffic advances to this, instead of in fixed steps.
        """
        return min((deadline for deadline, _ in self._sleepers), default=None)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has moved ``seconds`` forward."""
        if self.autojump:
            # Jump to the wake-up time, or first to a fail_after cut-off that comes sooner
            # (as real time would reach it first): a sleeper inside that block is then
            # cancelled here, with the clock at the cut-off, not an hour past it.
            wake = self._now + max(seconds, 0.0)
            cutoff = min((d for d, s in self._cutoffs if not s.cancel_called), default=wake)
            self.advance(min(wake, cutoff) - self._now)
            await anyio.lowlevel.checkpoint()
            if self._now < wake:
                await self.sleep(wake - self._now)
            return
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        entry = (self._now + seconds, anyio.Event())
        self._sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            # A cancelled sleeper must not linger: it would hold its event and count as a
            # deadline in next_deadline().
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    @contextmanager
    def fail_after(self, seconds: float) -> Iterator[anyio.CancelScope]:
        """Like :func:`anyio.fail_after`, once this clock has moved ``seconds`` forward.

        The same ``seconds`` of real time end it too: a test that never moves the clock
        (or cannot, while a request hangs) is cut off as with the real clock, not hung.

        Raises:
            TimeoutError: The block did not finish in time.
        """
        real_deadline = anyio.current_time() + seconds if math.isfinite(seconds) else math.inf
        entry = (self._now + seconds, anyio.CancelScope(deadline=real_deadline))
        if entry[0] <= self._now:
            entry[1].cancel()
        self._cutoffs.append(entry)
        try:
            with entry[1] as scope:
                yield scope
        finally:
            self._cutoffs.remove(entry)
        if scope.cancelled_caught:
            raise TimeoutError

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._now:.3f})"
