"""When to refresh a token and how to retry the token endpoint, with their defaults."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

from ._errors import ConfigurationError

__all__ = ["RefreshPolicy", "RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshPolicy:
    """When a cached token is renewed.

    A token's life ends in two windows. In the **advisory** window one task renews it
    while every other request goes on with the still-valid token; in the **mandatory**
    window requests wait for the new token. Entur's tokens live 24 h, so by default the
    advisory window is the last 2.4 h (at most a further 25% earlier, at random, so a fleet
    spreads out) and the mandatory window the last 60 s.

    Args:
        advisory_fraction: Advisory window as a share of the token's lifetime.
        advisory_min: ... but at least this many seconds (never more than half the life).
        mandatory: Mandatory window in seconds (never more than a quarter of the life).
        jitter: Up to this share of the advisory window is added to it, at random.
        failure_backoff_min: After a failed refresh in the advisory window, wait at least
            this long (seconds) before trying again; the old token keeps serving.
        failure_backoff_max: ... doubling each time up to this.
        background: Renew from a background task, so no request ever waits for a renewal.
            The task starts only when the client is entered with ``async with client``;
            ``task_group=`` chooses where it runs but does not start it. Without
            ``async with`` nothing renews in the background (a warning is logged at the
            first fetch) and requests renew the token as with ``background=False``.
    """

    advisory_fraction: float = 0.1
    advisory_min: float = 300.0
    mandatory: float = 60.0
    jitter: float = 0.25
    failure_backoff_min: float = 30.0
    failure_backoff_max: float = 600.0
    background: bool = False

    def __post_init__(self) -> None:
        _require_finite(self)
        if not 0 <= self.advisory_fraction < 1 or not 0 <= self.jitter <= 1:
            raise ConfigurationError(
                "RefreshPolicy: advisory_fraction must be in [0, 1) and jitter in [0, 1]."
            )
        if min(self.advisory_min, self.mandatory, self.failure_backoff_min) < 0 or (
            self.failure_backoff_max < self.failure_backoff_min
        ):
            raise ConfigurationError(
                "RefreshPolicy: windows and backoffs must be >= 0 seconds, and "
                "failure_backoff_max >= failure_backoff_min."
            )

    def windows(self, lifetime: float, rng: random.Random) -> tuple[float, float]:
        """Return (advisory, mandatory): seconds before expiry where each window starts."""
        mandatory = min(self.mandatory, lifetime / 4)
        advisory = min(max(self.advisory_min, lifetime * self.advisory_fraction), lifetime / 2)
        advisory = max(advisory, mandatory)
        advisory += rng.uniform(0, self.jitter * advisory)
        return min(advisory, lifetime * 0.75), mandatory

    def failure_backoff(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th failed advisory refresh in a row."""
        # The exponent is capped: a refresher failing for days must not overflow a float.
        doubling = 2.0 ** min(max(failures - 1, 0), 40)
        base = min(self.failure_backoff_min * doubling, self.failure_backoff_max)
        return base * rng.uniform(1.0, 1.2)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How one token fetch retries the token endpoint.

    Retried: HTTP 408, 429, 500, 502, 503, 504, connection errors, timeouts and the OAuth
    errors ``server_error``/``temporarily_unavailable``. Never retried: a rejected client
    (:class:`InvalidCredentialsError`, also any 401 from the token endpoint) and other 4xx
    answers, which are instead remembered for ``credentials_error_ttl`` seconds so a
    misconfigured fleet does not hammer the endpoint. A fetch that gives up after a 429/503
    with ``Retry-After`` (or ``x-ratelimit-reset``) is remembered until that time (capped by
    the larger of ``backoff_max`` and ``total``): no call asks the endpoint before then.

    Args:
        attempts: Requests per fetch, the first included.
        backoff_base: First delay in seconds; doubles per attempt ("full jitter").
        backoff_max: Cap on one delay.
        total: Give up when the next delay would pass this many seconds since the start.
        credentials_error_ttl: Seconds a rejected-credentials error (or another 4xx from the
            token endpoint) is answered from memory.
        timeout: Seconds one token request may take (connect, read, write, pool).
    """

    attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    total: float = 30.0
    credentials_error_ttl: float = 30.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        _require_finite(self)
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigurationError("RetryPolicy: attempts must be a whole number.")
        if self.attempts < 1:
            raise ConfigurationError("RetryPolicy: attempts must be at least 1.")
        if min(self.backoff_base, self.backoff_max, self.total, self.credentials_error_ttl) < 0 or (
            self.timeout <= 0
        ):
            raise ConfigurationError("RetryPolicy: delays must be >= 0 and timeout > 0 seconds.")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed ``attempt`` (1-based), honouring ``retry_after``."""
        doubling = 2.0 ** min(max(attempt - 1, 0), 40)
        delay = rng.uniform(0, min(self.backoff_base * doubling, self.backoff_max))
        if retry_after is not None:
            # The server knows best when it will answer again; the cap still bounds it.
            delay = max(delay, self.retry_after_cap(retry_after))
        return delay

    def retry_after_cap(self, retry_after: float) -> float:
        """``retry_after`` bounded by the larger of ``backoff_max`` and ``total``.

        A server asking for a day must not stall the client for a day; this bounds both
        the wait before a retry and how long a fetch that gave up is answered from memory.
        """
        return min(retry_after, max(self.backoff_max, self.total))


def _require_finite(policy: RefreshPolicy | RetryPolicy) -> None:
    # NaN slips through every comparison below it, and an infinite delay is a hang.
    for f in fields(policy):
        value = getattr(policy, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(
                f"{type(policy).__name__}: {f.name} must be a finite number, not {value!r}."
            )
