"""The errors an Entur API answer raises: ``APIError`` and its subclasses.

Apart from :mod:`entur_oauth._errors` because they subclass ``httpx2.HTTPStatusError``: code
that never talks to an API (the CLI's cached ``token`` path) must not import httpx2.
"""

from __future__ import annotations

from typing import Any

import httpx2

from ._errors import EnturError

__all__ = ["APIError", "ForbiddenError", "SessionTimeoutError", "UnauthorizedError"]


class APIError(EnturError, httpx2.HTTPStatusError):
    """Raised when an Entur API answered 401, 403 or 408; carries ``request`` and ``response``.

    The request is the one we sent to the API, never the token request, so it holds no
    client secret; its ``Authorization`` header is removed before it is attached here.
    """

    def __init__(self, message: str, *, request: httpx2.Request, response: httpx2.Response) -> None:
        super().__init__(message, request=request, response=response)

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException's pickle calls cls(*args), which lacks the keyword-only arguments.
        return (_rebuild, (type(self), str(self), self.request, self.response), self.__dict__)

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


def _rebuild(
    cls: type[APIError], message: str, request: httpx2.Request, response: httpx2.Response
) -> APIError:
    """Unpickle an APIError (see ``APIError.__reduce__``)."""
    return cls(message, request=request, response=response)
