"""Typed async client for Entur's APIs: OAuth2 client credentials, token caching and
``ET-Client-Name``, on asyncio and trio.
"""

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
from ._policy import RefreshPolicy, RetryPolicy
from ._secrets import Secret
from ._stores import MemoryTokenStore, TokenStore

__all__ = [
    "APIError",
    "ClientNameWarning",
    "ConfigurationError",
    "EnturClient",
    "EnturError",
    "Environment",
    "EventLoopError",
    "ForbiddenError",
    "InvalidCredentialsError",
    "MemoryTokenStore",
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
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
