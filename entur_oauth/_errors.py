"""Exceptions raised by entur_oauth.

The hierarchy::

    EnturError
    ├── ConfigurationError (also ValueError)   bad settings, raised at construction
    ├── EventLoopError                         a client used from a second event loop
    ├── UnsupportedOperationError              an authlib method that has no Entur meaning
    ├── TokenRequestError                      the token endpoint failed
    │   └── InvalidCredentialsError            the token endpoint rejected the client
    └── APIError (also httpx2.HTTPStatusError) an Entur API refused a request
        ├── UnauthorizedError                  401, after one retry with a new token
        ├── ForbiddenError                     403
        └── SessionTimeoutError                408, after one retry with a new token

No message, attribute or ``repr`` here ever holds a client secret or an access token.
"""

from __future__ import annotations

import httpx2

__all__ = [
    "APIError",
    "ConfigurationError",
    "EnturError",
    "EventLoopError",
    "ForbiddenError",
    "InvalidCredentialsError",
    "SessionTimeoutError",
    "TokenRequestError",
    "UnauthorizedError",
    "UnsupportedOperationError",
]


class EnturError(Exception):
    """Base class of every error raised by entur_oauth."""


class ConfigurationError(EnturError, ValueError):
    """Raised when a setting is missing or invalid; the message names it and the fix."""


class EventLoopError(EnturError, RuntimeError):
    """Raised when a client is used from an event loop other than the one it started in."""


class UnsupportedOperationError(EnturError, NotImplementedError):
    """Raised when an inherited authlib method does not apply to Entur's client-credentials
    clients (``refresh_token``, ``revoke_token``, ...); the message says what to use instead."""


class TokenRequestError(EnturError):
    """Raised when the token endpoint did not give a usable access token.

    Attributes:
        status_code: The HTTP status of the token response, or ``None`` when no response
            came (timeout, connection error).
        error: The OAuth ``error`` code from the response body, when present.
        error_description: The OAuth ``error_description``, when present.
        retry_after: Seconds the endpoint asked us to wait (``Retry-After`` or Auth0's
            ``x-ratelimit-reset``), when sent.
        retryable: Whether trying again may help (timeouts, 5xx, 429); credentials errors
            are never retryable.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.error_description = error_description
        self.retry_after = retry_after
        self.retryable = retryable

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self)!r}, status_code={self.status_code!r}, "
            f"error={self.error!r})"
        )


class InvalidCredentialsError(TokenRequestError):
    """Raised when the token endpoint rejected the client id, secret or audience."""


class APIError(EnturError, httpx2.HTTPStatusError):
    """Raised when an Entur API answered 401, 403 or 408; carries ``request`` and ``response``.

    The request is the one we sent to the API, never the token request, so it holds no
    client secret; its ``Authorization`` header is removed before it is attached here.
    """

    def __init__(self, message: str, *, request: httpx2.Request, response: httpx2.Response) -> None:
        super().__init__(message, request=request, response=response)

    @property
    def status_code(self) -> int:
        """The HTTP status the API answered."""
        return self.response.status_code


class UnauthorizedError(APIError):
    """Raised when the API answered 401 even after one retry with a freshly fetched token."""


class ForbiddenError(APIError):
    """Raised when the API answered 403: the token is valid but lacks a permission."""


class SessionTimeoutError(APIError):
    """Raised when the API answered 408 even after one retry with a freshly fetched token."""
