"""What ``async with client`` holds besides httpx2's connections, and what leaving asks.

An ``httpx2.AsyncClient`` may be entered in one task and left in another, and several may
be closed in any order. An anyio task group may not: it must be left by the task that
entered it, in nesting order, or anyio (asyncio) raises and trio corrupts its own state.
So a client holds a task group only where its user asked for a structured lifetime:

* default settings: none. Shared token fetches run in the task of the caller that started
  them; a cancelled caller hands the fetch on to one of its waiters (see ``_manager.py``).
* ``task_group=``: the user's group runs the fetches (and the background refresher); the
  client holds no cancel scope of its own, so it may be left anywhere, in any order.
* ``RefreshPolicy(background=True)`` without ``task_group=``: the refresher needs a task
  group, and the client opens one on entry. Leaving it in another task or out of order
  raises :class:`LifetimeError` before the group is touched.

The checks use anyio's public task identity (``anyio.get_current_task``) and a context
variable of the groups this package opened in the current task, innermost last. A cancel
scope of someone else's, opened after the client and still open, is not seen.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from contextvars import ContextVar
from typing import TYPE_CHECKING

import anyio

from ._errors import LifetimeError

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._manager import TokenManager

__all__ = ["Lifetime", "closed_error"]

#: The lifetimes holding a task group of their own that the current task entered and has
#: not left, innermost last. A context variable: every task has its own (a task started
#: inside one sees a copy, and the task check below tells the two apart).
_held: ContextVar[tuple[Lifetime, ...]] = ContextVar("entur_oauth_held_lifetimes", default=())


def closed_error() -> LifetimeError:
    """The error for a client used (or entered again) after it was closed."""
    return LifetimeError(
        "This EnturClient is closed; create a new one (an httpx2 client cannot be reopened), "
        "or keep using it inside `async with` and close it when you are done with it."
    )


class Lifetime:
    """One ``async with client``: starts the token manager's tasks where the settings say,
    and stops them on :meth:`exit`, refusing an exit that would corrupt a held task group."""

    __slots__ = ("_manager", "_stack", "_task_id")

    def __init__(self, manager: TokenManager) -> None:
        self._manager = manager
        #: Closes the client's own task group; ``None`` when it holds none.
        self._stack: AsyncExitStack | None = None
        self._task_id: int | None = None

    @property
    def holds_task_group(self) -> bool:
        """Whether this lifetime holds a task group of its own (and so a place to leave)."""
        return self._stack is not None

    @classmethod
    async def enter(cls, manager: TokenManager, task_group: TaskGroup | None) -> Lifetime:
        """Start ``manager``'s tasks: in ``task_group`` if given, else in a task group of the
        client's own only if the background refresher needs one, else nowhere.

        If starting fails or is cancelled, all of it is undone first: a task group left
        open would corrupt the caller's cancel scopes.
        """
        lifetime = cls(manager)
        if task_group is not None:
            try:
                await manager.start(task_group)
            except BaseException:
                manager.stop()
                raise
        elif manager.refresh.background:
            async with AsyncExitStack() as stack:
                own = await stack.enter_async_context(anyio.create_task_group())
                # Stop the manager's tasks first on exit: the group waits for its tasks.
                stack.callback(manager.stop)
                await manager.start(own)
                lifetime._stack = stack.pop_all()
            lifetime._task_id = anyio.get_current_task().id
            _held.set((*_held.get(), lifetime))
        return lifetime

    def misplaced(self) -> str | None:
        """Why leaving now would corrupt the held task group, or ``None`` if it would not."""
        if self._stack is None:
            return None
        if anyio.get_current_task().id != self._task_id:
            return "in another task than the one that entered it"
        held = _held.get()
        if not held or held[-1] is not self:
            return "before a client entered after it in the same task (out of nesting order)"
        return None

    async def exit(self) -> None:
        """Stop the manager's tasks and close the held task group, if any.

        Raises:
            LifetimeError: The group is held and this task may not leave it now (see
                :meth:`misplaced`). The manager's tasks are stopped all the same (that is
                safe from any task); the group stays open, so a later exit from the right
                place still closes it.
        """
        self._manager.stop()
        where = self.misplaced()
        if where is not None:
            raise LifetimeError(
                f"This EnturClient was left {where}. With RefreshPolicy(background=True) it "
                "holds a task group of its own, which must be left by the task that entered "
                "it, innermost first: leave `async with client` in the task that entered it, "
                "or pass your own task group (EnturClient(..., task_group=tg)); then the "
                "client may be closed anywhere, in any order. Its connections are closed."
            )
        stack, self._stack = self._stack, None
        if stack is not None:
            held = _held.get()
            _held.set(held[:-1])
            await stack.aclose()
