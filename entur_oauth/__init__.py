"""Typed async client for Entur's APIs: OAuth2 client credentials, token caching and
``ET-Client-Name``, on asyncio and trio.
"""

import typing

from ._client import EnturClient
from ._config import ClientNameWarning
from ._environments import Environment, get_environment
from ._errors import (
    APIError,
    ConfigurationError,
    EnturError,
    EventLoopError,
    ForbiddenError,
    InvalidCredentialsError,
    SessionTimeoutError,
    TokenRequestError,
    UnauthorizedError,
)
from ._file_store import FileTokenStore
from ._policy import RefreshPolicy, RetryPolicy
from ._secrets import Secret
from ._stores import MemoryTokenStore, TokenStore

if typing.TYPE_CHECKING:
    # Imported lazily (see __getattr__) so that entur_oauth works without the redis extra.
    from ._redis_store import RedisTokenStore

__all__ = [
    "APIError",
    "ClientNameWarning",
    "ConfigurationError",
    "EnturClient",
    "EnturError",
    "Environment",
    "EventLoopError",
    "FileTokenStore",
    "ForbiddenError",
    "InvalidCredentialsError",
    "MemoryTokenStore",
    "RedisTokenStore",
    "RefreshPolicy",
    "RetryPolicy",
    "Secret",
    "SessionTimeoutError",
    "TokenRequestError",
    "TokenStore",
    "UnauthorizedError",
    "get_environment",
]


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        return version("entur-oauth")
    if name == "RedisTokenStore":
        # Raises ImportError naming the entur-oauth[redis] extra when redis is missing.
        from ._redis_store import RedisTokenStore

        return RedisTokenStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # List the lazy name too, so dir() and tools that read it see the whole public API.
    return sorted({*globals(), "RedisTokenStore"})
