"""A fake clock for tests: time moves only when told to."""

from __future__ import annotations

import time

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

    def next_deadline(self) -> float | None:
        """The monotonic time the earliest sleeper wakes at, or ``None`` if none sleeps.

        A test that simulates hours of traffic advances to this, instead of in fixed steps.
        """
        return min((deadline for deadline, _ in self._sleepers), default=None)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has moved ``seconds`` forward."""
        if self.autojump:
            self.advance(seconds)
            await anyio.lowlevel.checkpoint()
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

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._now:.3f})"
