"""Which event loop is running: a client belongs to the first one it is used in."""

from __future__ import annotations

import sys

__all__ = ["current_loop"]


def current_loop() -> object:
    """Return an object that identifies the running event loop (asyncio or trio).

    Cheaper than ``anyio.lowlevel.current_token()`` (it runs on every request). Neither
    event loop library is imported here: a loop can only be running if its library is
    already imported, and importing asyncio eagerly would cost every user import time.
    """
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        # asyncio._get_running_loop is the fast C accessor behind get_running_loop(): it
        # returns None instead of raising when no loop runs.
        loop = asyncio._get_running_loop()
        if loop is not None:
            return loop
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_root_task()
        except RuntimeError:
            pass
    return None
