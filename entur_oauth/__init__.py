"""Typed async client for Entur's APIs: OAuth2 client credentials, token caching and
``ET-Client-Name``, on asyncio and trio.
"""

import importlib.util
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
    from ._redis_store import RedisTokenStore as RedisTokenStore

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
    if name == "RedisTokenStore":
        # Raises ImportError naming the entur-oauth[redis] extra when redis is missing. An
        # ImportError, not an AttributeError (which would make hasattr() return False):
        # `from entur_oauth import RedisTokenStore` turns an AttributeError into a bare
        # "cannot import name" and the hint to install the extra would be lost. Check for
        # the extra with "RedisTokenStore" in entur_oauth.__all__ instead.
        from ._redis_store import RedisTokenStore as RedisTokenStore

        return RedisTokenStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # List the lazy name too (when its extra is installed), so dir() and tools that read
    # it see the whole public API; __all__ holds it exactly then.
    return sorted({*globals(), *__all__})
