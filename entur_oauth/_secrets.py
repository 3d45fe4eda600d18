"""Values that must never be printed: a redacting wrapper and a short fingerprint."""

from __future__ import annotations

import hashlib
from typing import Final, final

__all__ = ["Secret", "fingerprint"]


def fingerprint(value: str) -> str:
    """Return a short, stable, non-reversible tag for ``value``, safe for logs."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]


@final
class Secret:
    """A string that shows as ``Secret('**********')`` in every ``repr``, ``str`` and log line.

    Call :meth:`reveal` at the one place the plain text is needed (the token request body,
    the ``Authorization`` header).
    """

    __slots__ = ("_value",)
    _MASK: Final = "**********"

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the plain text."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._MASK!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        # Refuse pickling so a secret cannot leak through a cache or a process pool.
        raise TypeError("Secret values cannot be pickled.")
