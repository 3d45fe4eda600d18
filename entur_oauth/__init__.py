"""Typed async client for Entur's APIs: OAuth2 client credentials, token caching and
``ET-Client-Name``, on asyncio and trio.
"""

# Every public name is imported on first use (module __getattr__), not here: the pytest
# plugin and the CLI's cached ``token`` path import this package, and must not pay for
# authlib, httpx2 and cryptography when they never use them. Type checkers read the
# imports below instead.

import importlib
import importlib.util
import typing

if typing.TYPE_CHECKING:
    from ._api_errors import APIError, ForbiddenError, SessionTimeoutError, UnauthorizedError
    from ._client import EnturClient
    from ._environments import Environment, get_environment
    from ._errors import (
        ConfigurationError,
        EnturError,
        EventLoopError,
        InvalidCredentialsError,
        TokenRequestError,
        UnsupportedOperationError,
    )
    from ._file_store import FileTokenStore
    from ._policy import RefreshPolicy, RetryPolicy
    from ._redis_store import RedisTokenStore
    from ._secrets import Secret
    from ._settings import ClientNameWarning
    from ._stores import MemoryTokenStore, TokenStore

    __version__: str

#: Public name -> the private module that defines it.
_LAZY = {
    "APIError": "_api_errors",
    "ClientNameWarning": "_settings",
    "ConfigurationError": "_errors",
    "EnturClient": "_client",
    "EnturError": "_errors",
    "Environment": "_environments",
    "EventLoopError": "_errors",
    "FileTokenStore": "_file_store",
    "ForbiddenError": "_api_errors",
    "InvalidCredentialsError": "_errors",
    "MemoryTokenStore": "_stores",
    "RedisTokenStore": "_redis_store",
    "RefreshPolicy": "_policy",
    "RetryPolicy": "_policy",
    "Secret": "_secrets",
    "SessionTimeoutError": "_api_errors",
    "TokenRequestError": "_errors",
    "TokenStore": "_stores",
    "UnauthorizedError": "_api_errors",
    "UnsupportedOperationError": "_errors",
    "get_environment": "_environments",
}

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
    "RefreshPolicy",
    "RetryPolicy",
    "Secret",
    "SessionTimeoutError",
    "TokenRequestError",
    "TokenStore",
    "UnauthorizedError",
    "UnsupportedOperationError",
    "get_environment",
]


def _redis_installed() -> bool:
    try:
        return importlib.util.find_spec("redis") is not None
    except ValueError:
        # A redis module without __spec__ is already in sys.modules: it is installed.
        return True


# Listed only when the redis extra is installed: `from entur_oauth import *` and
# inspect.getmembers() import every listed name, and must not fail on an optional extra.
if _redis_installed():
    __all__ += ["RedisTokenStore"]
    __all__.sort()


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        return version("entur-oauth")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # For RedisTokenStore without the extra this raises ImportError naming the
    # entur-oauth[redis] extra. An ImportError, not an AttributeError (which would make
    # hasattr() return False): `from entur_oauth import RedisTokenStore` turns an
    # AttributeError into a bare "cannot import name" and the hint would be lost. Check for
    # the extra with "RedisTokenStore" in entur_oauth.__all__ instead.
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next look-up is a plain attribute read
    return value


def __dir__() -> list[str]:
    # List the lazy names too, so dir() and tools that read it see the whole public API;
    # __all__ holds RedisTokenStore exactly when its extra is installed.
    return sorted({*globals(), *__all__})
