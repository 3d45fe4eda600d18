"""When to refresh a token and how to retry the token endpoint, with their defaults."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

from ._errors import ConfigurationError

__all__ = ["MAX_SECONDS", "RefreshPolicy", "RetryPolicy", "check_clock", "check_seconds"]


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
        _check_types(self)
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
        _check_types(self)
        if not 1 <= self.attempts <= _MAX_ATTEMPTS:
            raise ConfigurationError(f"RetryPolicy: attempts must be from 1 to {_MAX_ATTEMPTS}.")
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


#: The largest number of seconds any setting may hold (about 31 years): a larger one is a
#: mistake, and would overflow the clock arithmetic (``now + delay``) at the first use.
MAX_SECONDS = 1e9
_MAX_ATTEMPTS = 1000


def _check_types(policy: RefreshPolicy | RetryPolicy) -> None:
    """Refuse a field of the wrong type, or a number that is not finite or is absurdly large.

    Checked here, when the policy is built: a string or ``None`` would otherwise fail (or,
    for a flag, a truthy string silently count as ``True``) only at the first token fetch.
    """
    for f in fields(policy):
        value = getattr(policy, f.name)
        where = f"{type(policy).__name__}: {f.name}"
        if f.type == "bool":
            if not isinstance(value, bool):
                raise ConfigurationError(f"{where} must be True or False, not {value!r}.")
            continue
        if f.type == "int":
            # bool is an int to Python, but attempts=True is a slip, not a number.
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigurationError(f"{where} must be a whole number, not {value!r}.")
            continue
        object.__setattr__(policy, f.name, check_seconds(where, value))


def check_seconds(where: str, value: object) -> float:
    """Return ``value`` as a float if it is a real, finite number of at most MAX_SECONDS.

    ``where`` starts the message (``"RetryPolicy: timeout"``). Signs are for the caller to
    check. Raises ConfigurationError otherwise: a string, ``None`` or a bool (jitter=True
    is a slip) would fail only at first use, NaN slips through every comparison, and an
    infinite or huge delay is a hang or an OverflowError at the first request.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{where} must be a number, not {type(value).__name__}.")
    if abs(value) > MAX_SECONDS or not math.isfinite(value):  # abs() first: 10**400
        # (A huge int is not shown: its repr may be thousands of digits, or refused.)
        shown = repr(value) if isinstance(value, float) else "a larger number"
        raise ConfigurationError(
            f"{where} must be a finite number of at most {MAX_SECONDS:,.0f} seconds, not {shown}."
        )
    return float(value)


def check_positive_seconds(where: str, value: object) -> float:
    """Return ``value`` as seconds, as :func:`check_seconds` does, and also refuse zero or
    less (a store's lock timeout or poll interval); checked when the store is built."""
    seconds = check_seconds(where, value)
    if seconds <= 0:
        raise ConfigurationError(f"{where} must be a positive number of seconds, not {value!r}.")
    return seconds


def check_clock(where: str, clock: object) -> None:
    """Refuse a ``clock`` without ``monotonic()``, ``time()`` and ``sleep()`` when a store
    is built, not at its first wait."""
    if clock is not None and not all(
        callable(getattr(clock, method, None)) for method in ("monotonic", "time", "sleep")
    ):
        raise ConfigurationError(
            f"{where}: clock must have monotonic(), time() and async sleep() (see "
            f"entur_oauth.Clock), not {type(clock).__name__}."
        )
