"""Exceptions raised by entur_oauth.

The hierarchy::

    EnturError
    ├── ConfigurationError (also ValueError)   bad settings, raised at construction
    ├── EventLoopError                         a client used from a second event loop
    ├── LifetimeError (also RuntimeError)      a client used after closing, or left wrongly
    ├── UnsupportedOperationError              an authlib method that has no Entur meaning
    ├── TokenRequestError                      the token endpoint failed
    │   └── InvalidCredentialsError            the token endpoint rejected the client
    └── APIError (also httpx2.HTTPStatusError) an Entur API refused a request
        ├── UnauthorizedError                  401, after one retry with a new token
        ├── ForbiddenError                     403
        └── SessionTimeoutError                408, after one retry with a new token

No message, attribute or ``repr`` here ever holds a client secret or an access token.

``APIError`` and its subclasses live in :mod:`entur_oauth._api_errors`, as they subclass
``httpx2.HTTPStatusError``: importing this module must not import httpx2 (the CLI's cached
``token`` path and ``import entur_oauth`` stay free of the HTTP stack). That module imports
this one, never the reverse.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "EnturError",
    "EventLoopError",
    "InvalidCredentialsError",
    "LifetimeError",
    "TokenRequestError",
    "UnsupportedOperationError",
]


class EnturError(Exception):
    """Base class of every error raised by entur_oauth."""


class ConfigurationError(EnturError, ValueError):
    """Raised when a setting is missing or invalid; the message names it and the fix."""


class EventLoopError(EnturError, RuntimeError):
    """Raised when a client is used from an event loop other than the one it started in."""


class LifetimeError(EnturError, RuntimeError):
    """Raised when a client is used after it was closed, or is left (``__aexit__``) in
    another task than the one that entered it, or out of nesting order, while it holds a
    task group of its own (``RefreshPolicy(background=True)`` without ``task_group=``).

    A ``RuntimeError``, as httpx2's own error for a closed client is.
    """


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
