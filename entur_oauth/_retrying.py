"""One token fetch with retries: backoff, Retry-After, and failures answered from memory.

:class:`RetryingFetch` turns the client's single token request into what
:class:`RetryPolicy` promises. It knows nothing of windows, stores or waiting tasks.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Awaitable, Callable

from . import _telemetry as telemetry
from ._clock import Clock, fail_after
from ._errors import InvalidCredentialsError, TokenRequestError
from ._policy import RetryPolicy
from ._token import Token

__all__ = ["FetchOnce", "RetryingFetch", "copy_error", "detached"]

logger = logging.getLogger("entur_oauth")

#: Performs one token request (no retries) and returns the parsed token.
FetchOnce = Callable[[], Awaitable[Token]]


class RetryingFetch:
    """Fetch a token as :class:`RetryPolicy` says; ``fetches`` counts the requests sent."""

    def __init__(
        self, fetch_once: FetchOnce, *, clock: Clock, retry: RetryPolicy, rng: random.Random
    ) -> None:
        self._fetch_once = fetch_once
        self._clock = clock
        self.retry = retry
        self._rng = rng
        #: Token requests sent (every attempt, failed ones included).
        self.fetches = 0
        # A failure answered from memory until ``_cached_error_until``: rejected credentials
        # and other 4xx (for credentials_error_ttl), or a fetch that gave up with a
        # Retry-After (until then). Without it every call would hit the endpoint again.
        self._cached_error: TokenRequestError | None = None
        self._cached_error_until = float("-inf")

    def __repr__(self) -> str:
        return f"<RetryingFetch fetches={self.fetches}>"

    async def __call__(self) -> Token:
        """Return a fresh token from the endpoint, retrying transient failures.

        Raises:
            TokenRequestError: Every attempt failed, the failure is not retryable, or a
                recent one is still answered from memory.
        """
        now = self._clock.monotonic()
        cached = self._cached_error
        if cached is not None and now < self._cached_error_until:
            logger.debug(
                "the token endpoint failed (HTTP %s) recently; not asking again for %.0f s",
                cached.status_code,
                self._cached_error_until - now,
            )
            raise copy_error(cached)
        deadline = now + self.retry.total
        attempt = 0
        while True:
            attempt += 1
            try:
                return await telemetry.token_request(self._attempt, attempt)
            except InvalidCredentialsError as exc:
                logger.debug("credentials rejected; not retrying")
                telemetry.token_request_failed(exc, retried=False)
                self._remember_failure(exc)
                raise
            except TokenRequestError as exc:
                failure = exc
            delay = self._retry_delay(failure, attempt, deadline)
            telemetry.token_request_failed(failure, retried=delay is not None)
            if delay is None:
                self._remember_failure(failure)
                raise detached(failure)
            await self._clock.sleep(delay)

    async def _attempt(self, attempt: int) -> Token:
        """Send one token request, cut off by a backstop timeout."""
        self.fetches += 1
        logger.debug("fetching a token (attempt %d of %d)", attempt, self.retry.attempts)
        # A backstop for transports with no timeout of their own (an in-process app that
        # never answers). The fixed second lets httpx's own timeout, which starts only once
        # the request is built and connected, fire first on a real socket. On the clock's
        # time, so a test with a fake clock reaches it without waiting.
        limit = self.retry.timeout * 1.5 + 1.0
        try:
            with fail_after(self._clock, limit):
                token = await self._fetch_once()
        except TimeoutError:
            # The HTTP timeout should have fired first; this guards transports that
            # ignore it (in-process ones do), so waiters never hang on a silent endpoint.
            failure = TokenRequestError(
                f"The token endpoint did not answer within {limit:.1f} s; it is retried "
                "automatically. Check network access to it.",
                retryable=True,
            )
        else:
            logger.debug("fetched token %s", token.fingerprint)
            return token
        raise failure  # outside the except block: no TimeoutError context to carry

    def _remember_failure(self, exc: TokenRequestError) -> None:
        """Answer ``exc`` from memory for a while, if asking again soon cannot help."""
        status = exc.status_code
        if isinstance(exc, InvalidCredentialsError) or (
            not exc.retryable and status is not None and 400 <= status < 500
        ):
            # A rejected client, a wrong token URL (404) or a WAF page (403) stays so until
            # someone fixes the settings; a fleet asking each call would hammer the endpoint.
            # A malformed 200 is not remembered: the next answer may well be fine.
            ttl = self.retry.credentials_error_ttl
        elif exc.retry_after is not None:
            # The server said when to come back (429/503): nobody asks before then, also
            # not the next call after this fetch gave up.
            ttl = self.retry.retry_after_cap(exc.retry_after)
        else:
            return
        self._cached_error = exc
        self._cached_error_until = self._clock.monotonic() + ttl
        logger.debug("token fetch failed (HTTP %s); answering from memory for %.0f s", status, ttl)

    def _retry_delay(self, exc: TokenRequestError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up with ``exc``."""
        if not exc.retryable:
            logger.debug("token fetch failed, not retryable: %s", exc)
            return None
        if attempt >= self.retry.attempts:
            logger.debug("token fetch failed %d times, giving up: %s", attempt, exc)
            return None
        delay = self.retry.delay(attempt, exc.retry_after, self._rng)
        if self._clock.monotonic() + delay > deadline:
            logger.debug(
                "token fetch failed; a retry in %.1f s would pass the %.0f s budget: %s",
                delay,
                self.retry.total,
                exc,
            )
            return None
        logger.debug(
            "token fetch failed (%s); retry %d in %.2f s%s",
            exc,
            attempt + 1,
            delay,
            " (as Retry-After asks)" if exc.retry_after is not None else "",
        )
        return delay


def detached(exc: TokenRequestError) -> TokenRequestError:
    """Drop the context an error was raised ``from None`` in.

    ``from None`` only hides the context from tracebacks; ``__context__`` still holds the
    httpx exception, whose ``request`` is the token request with the client secret in its
    body. An error tracker that walks the chain must not find it.
    """
    if exc.__suppress_context__:
        exc.__context__ = None
    return exc


def copy_error(exc: Exception) -> Exception:
    """Return a fresh copy of ``exc`` to raise in one more task.

    Raising one exception object again and again (every waiter of a failed round, every
    caller during the credentials-error cache) grows its traceback without bound and lets
    concurrent tasks rewrite it; each raise gets its own copy instead.
    """
    try:
        clone = copy.copy(exc)
    except Exception:  # an exotic exception that cannot copy: share it
        return exc
    clone.__traceback__ = None
    clone.__cause__ = exc.__cause__
    clone.__suppress_context__ = exc.__suppress_context__
    return clone
