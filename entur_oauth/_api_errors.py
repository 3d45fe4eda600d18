"""The errors an Entur API answer raises (``APIError`` and its subclasses), their messages,
and the one function that builds them from a 401, 403 or 408.

Apart from :mod:`entur_oauth._errors` because they subclass ``httpx2.HTTPStatusError``: code
that never talks to an API (the CLI's cached ``token`` path) must not import httpx2. Only
this module imports the other, never the reverse.
"""

from __future__ import annotations

from typing import Any

import httpx2

from ._errors import EnturError

__all__ = [
    "ENTUR_STATUSES",
    "NOT_REPLAYABLE",
    "NO_TOKEN",
    "RETRIED",
    "STORM",
    "WITHHELD",
    "APIError",
    "ForbiddenError",
    "SessionTimeoutError",
    "UnauthorizedError",
    "api_error",
]


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


# What happened before the final answer, for the ``{detail}`` of a 401/408 message.
RETRIED = "even after one retry with a freshly fetched token"
NOT_REPLAYABLE = (
    "(not retried: the request body is a stream that cannot be sent twice; the token was "
    "dropped, so the next request gets a new one)"
)
STORM = (
    "(not retried: this token replaced a rejected one moments ago, so a new one would be "
    "refused too; no token was requested, to spare the client's token quota)"
)
NO_TOKEN = (
    "(this client has no credentials; partner APIs need ENTUR_CLIENT_ID and ENTUR_CLIENT_SECRET)"
)
WITHHELD = "(sent without the client's token, as asked)"

_MESSAGES: dict[int, tuple[type[APIError], str]] = {
    401: (
        UnauthorizedError,
        "Entur answered 401 Unauthorized for {url} {detail}: the token is missing, invalid "
        "or expired for this API. Check that the client belongs to this environment ({env}) "
        "and that the API accepts its audience.",
    ),
    403: (
        ForbiddenError,
        "Entur answered 403 Forbidden for {url}: the token is valid but the client lacks "
        "permission for this endpoint. Ask Entur (or your organisation's "
        "Brukeradministrator) to grant the client access to it.",
    ),
    408: (
        SessionTimeoutError,
        "Entur answered 408 Session timeout for {url} {detail}: the token expired while the "
        "request was processed. Try again; if it persists, check the system clock and the "
        "request's duration.",
    ),
}
#: The statuses an Entur API answer is raised for.
ENTUR_STATUSES = frozenset(_MESSAGES)


def api_error(
    request: httpx2.Request, response: httpx2.Response, *, environment: str, detail: str
) -> APIError:
    """Return the APIError an Entur API's 401, 403 or 408 ``response`` means.

    ``request`` (the one the caller sent) and ``response`` must hold no token any more.
    """
    error_class, template = _MESSAGES[response.status_code]
    url = request.url.copy_with(query=None)
    message = template.format(url=url, env=environment, detail=detail)
    return error_class(message, request=request, response=response)
