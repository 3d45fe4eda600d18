"""The background refresher: renews the token at the start of each advisory window.

It asks the manager two things only: how long until the next renewal is due
(``due``), and to run (or join) a renewal round (``renew``). It never fetches the first
token: that stays lazy, so opening a client makes no network call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from ._clock import Clock

__all__ = ["Refresher"]


class Refresher:
    """Sleeps until a renewal is due, renews, and starts over, until stopped.

    Args:
        clock: What it sleeps on.
        due: Seconds until the next renewal is due (<= 0: now), ``None`` while there is
            no token to renew.
        renew: Run or join one renewal round; a failure is the manager's to log and back
            off (it must not raise).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        due: Callable[[], float | None],
        renew: Callable[[], Awaitable[None]],
    ) -> None:
        self._clock = clock
        self._due = due
        self._renew = renew
        # Its whole scope (to stop it) and its current nap (to wake it when the token
        # changes under it).
        self._scope: anyio.CancelScope | None = None
        self._nap_scope: anyio.CancelScope | None = None
        self.running = False

    def __repr__(self) -> str:
        return f"<Refresher running={self.running}>"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew at each due time until :meth:`stop` or cancellation; nothing else ends it."""
        if self._scope is not None:
            raise RuntimeError("this token manager already has a background refresher")
        scope = self._scope = anyio.CancelScope()
        self.running = True
        try:
            with scope:
                task_status.started()
                while True:
                    await self._once()
        finally:
            self.running = False
            self._scope = None

    def stop(self) -> None:
        """Stop the refresher, if it runs (from the same event loop)."""
        if self._scope is not None:
            self._scope.cancel()

    def wake(self) -> None:
        """Look again now: a new token may be due sooner than the refresher planned."""
        nap = self._nap_scope
        if nap is not None:
            nap.cancel()

    async def _once(self) -> None:
        delay = self._due()
        if delay is None:
            await self._nap(None)  # until a request fetches the first token
        elif delay > 0:
            await self._nap(delay)  # then look again: the token may have been replaced
        else:
            await self._renew()

    async def _nap(self, seconds: float | None) -> None:
        """Sleep on the clock (``None``: until woken), waking early on :meth:`wake`."""
        with anyio.CancelScope() as nap:
            self._nap_scope = nap
            try:
                if seconds is None:
                    await anyio.sleep_forever()
                else:
                    await self._clock.sleep(seconds)
            finally:
                self._nap_scope = None
