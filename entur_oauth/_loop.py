"""Which event loop is running: a client belongs to the first one it is used in."""

from __future__ import annotations

import asyncio
import sys

__all__ = ["current_loop"]


def current_loop() -> object:
    """Return an object that identifies the running event loop (asyncio or trio).

    Cheaper than ``anyio.lowlevel.current_token()`` (it runs on every request): asyncio's
    ``_get_running_loop`` returns ``None`` instead of raising, and trio is only consulted
    when it is imported and no asyncio loop runs.
    """
    # asyncio._get_running_loop is the documented fast C accessor behind get_running_loop.
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
