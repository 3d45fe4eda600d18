"""The ``entur-oauth`` command line (filled in by the CLI work)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    print("entur-oauth: no commands yet", file=sys.stderr)
    return 2
