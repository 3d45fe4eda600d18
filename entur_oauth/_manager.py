"""Token acquisition: one fetch at a time, two refresh windows, retries and shared stores.

The fast path (a valid token outside its advisory window) is a field read and one clock
read, with no lock and no await, so the client can inline it. Everything else comes here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from ._clock import Clock
from ._codec import TokenCodec
from ._errors import EnturError, InvalidCredentialsError, TokenRequestError
from ._policy import RefreshPolicy, RetryPolicy
from ._stores import TokenStore
from ._token import Token

__all__ = ["TokenManager"]

logger = logging.getLogger("entur_oauth")

#: Performs one token request (no retries) and returns the parsed token.
FetchOnce = Callable[[], Awaitable[Token]]


@dataclass(eq=False)
class _Flight:
    """One token fetch in progress; every task that needs a token meanwhile waits on it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    token: Token | None = None
    error: BaseException | None = None


class TokenManager:
    """Keeps one valid token for one client and renews it as :class:`RefreshPolicy` says."""

    def __init__(
        self,
        fetch_once: FetchOnce,
        *,
        clock: Clock,
        refresh: RefreshPolicy,
        retry: RetryPolicy,
        store: TokenStore | None = None,
        store_key: str = "",
        codec: TokenCodec | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._fetch_once = fetch_once
        self.clock = clock
        self.refresh = refresh
        self.retry = retry
        self._store = store
        self._store_key = store_key
        self._codec = codec
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        #: The current token; read without a lock by the client's fast path.
        self.token: Token | None = None
        #: Monotonic time at which the advisory window of ``token`` starts.
        self.advisory_at: float = float("-inf")
        self._mandatory_at: float = float("-inf")
        self._flight: _Flight | None = None
        self._next_try_at: float = float("-inf")
        self._failures = 0
        self._credentials_error: InvalidCredentialsError | None = None
        self._credentials_error_until = float("-inf")
        self._changed: anyio.Event | None = None  # made by the refresher, in its loop
        self.background_running = False
        #: Counters, for tests, benchmarks and the CLI: what this manager actually did.
        self.fetches = 0
        self.waits = 0

    # -- the paths a request takes -------------------------------------------------------

    async def get(self) -> Token:
        """Return a token that is valid now, renewing it if the policy says so.

        Raises:
            TokenRequestError: No valid token exists and none could be fetched.
        """
        while True:
            now = self.clock.monotonic()
            token = self.token
            if token is not None and now < self._mandatory_at:
                if now < self.advisory_at:
                    return token
                # Advisory window: the token still serves; at most one task renews it.
                if (
                    self._flight is None
                    and now >= self._next_try_at
                    and not self.background_running
                ):
                    try:
                        return await self._lead(advisory=True)
                    except TokenRequestError:
                        return token
                return token
            flight = self._flight
            if flight is None:
                return await self._lead(advisory=False)
            self.waits += 1
            await flight.done.wait()
            if flight.token is not None:
                return flight.token
            if flight.error is not None:
                raise flight.error
            # The fetching task was cancelled before it finished: go round, and this task
            # (or another waiter) starts a new fetch.

    async def invalidate(self, token: Token) -> None:
        """Drop ``token`` after the API rejected it, unless another task already replaced it."""
        if self.token is not token:
            return
        logger.debug("token %s rejected by the API; discarding it", token.fingerprint)
        self.token = None
        self.advisory_at = self._mandatory_at = float("-inf")
        if self._store is not None and self._codec is not None:
            try:
                # Delete only while the store still holds this very token (compared by
                # fingerprint, then compare-and-delete on the raw bytes): another process
                # may already have stored its replacement.
                raw = await self._store.get(self._store_key)
                stored = self._decode(raw) if raw is not None else None
                if stored is not None and stored.fingerprint == token.fingerprint:
                    await self._store.delete(self._store_key, expected=raw)
            except Exception as exc:  # noqa: BLE001 - a store fault must not fail the request
                _store_warning("delete", exc)

    # -- fetching ------------------------------------------------------------------------

    async def _lead(self, *, advisory: bool) -> Token:
        flight = self._flight = _Flight()
        try:
            token = await self._acquire(replacing=self.token if advisory else None)
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                flight.error = exc
                if advisory and isinstance(exc, TokenRequestError):
                    self._advisory_failed(exc)
            raise
        else:
            flight.token = token
            self._install(token)
            return token
        finally:
            self._flight = None
            flight.done.set()

    def _install(self, token: Token) -> None:
        advisory, mandatory = self.refresh.windows(token.lifetime, self._rng)
        self.token = token
        self._mandatory_at = token.expires_at - mandatory
        self.advisory_at = token.expires_at - advisory
        self._failures = 0
        self._next_try_at = float("-inf")
        logger.debug(
            "token %s valid for %.0f s; refresh from %.0f s before expiry",
            token.fingerprint,
            token.expires_at - self.clock.monotonic(),
            advisory,
        )
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    def _advisory_failed(self, exc: TokenRequestError) -> None:
        self._failures += 1
        delay = self.refresh.failure_backoff(self._failures, self._rng)
        self._next_try_at = self.clock.monotonic() + delay
        log = logger.warning if self._failures == 1 else logger.debug
        log(
            "token refresh failed (%s); the current token keeps serving, next try in %.0f s",
            exc,
            delay,
        )

    async def _acquire(self, *, replacing: Token | None) -> Token:
        if self._store is None:
            return await self._fetch_with_retries()
        token = await self._from_store(replacing)
        if token is not None:
            return token
        try:
            lock = self._store.lock(self._store_key)
            await lock.__aenter__()
        except Exception as exc:  # noqa: BLE001 - a store fault must not fail the request
            _store_warning("lock", exc)
            return await self._fetch_with_retries()
        try:
            # Another process may have fetched while we waited for the lock.
            token = await self._from_store(replacing)
            if token is not None:
                return token
            token = await self._fetch_with_retries()
            await self._to_store(token)
            return token
        finally:
            try:
                await lock.__aexit__(None, None, None)
            except Exception as exc:  # noqa: BLE001
                _store_warning("unlock", exc)

    def _decode(self, raw: bytes) -> Token | None:
        assert self._codec is not None
        return self._codec.decode(
            raw, now_monotonic=self.clock.monotonic(), now_wall=self.clock.time()
        )

    async def _from_store(self, replacing: Token | None) -> Token | None:
        assert self._store is not None
        try:
            raw = await self._store.get(self._store_key)
        except Exception as exc:  # noqa: BLE001
            _store_warning("read", exc)
            return None
        if raw is None or self._codec is None:
            return None
        token = self._decode(raw)
        if token is None:
            logger.debug("stored token unusable (expired, corrupt or another secret); ignoring it")
            return None
        advisory, _ = self.refresh.windows(token.lifetime, self._rng)
        if token.expires_at - advisory <= self.clock.monotonic():
            return None  # in its own refresh window: fetch a fresh one instead
        if replacing is not None and token.fingerprint == replacing.fingerprint:
            return None
        logger.debug("token %s taken from the shared store", token.fingerprint)
        return token

    async def _to_store(self, token: Token) -> None:
        assert self._store is not None and self._codec is not None
        try:
            await self._store.set(
                self._store_key,
                self._codec.encode(token),
                ttl=max(token.expires_at - self.clock.monotonic(), 1.0),
            )
        except Exception as exc:  # noqa: BLE001
            _store_warning("write", exc)

    async def _fetch_with_retries(self) -> Token:
        now = self.clock.monotonic()
        if self._credentials_error is not None and now < self._credentials_error_until:
            logger.debug(
                "credentials were rejected %.0f s ago; not asking again yet",
                now - (self._credentials_error_until - self.retry.credentials_error_ttl),
            )
            raise self._credentials_error
        deadline = now + self.retry.total
        attempt = 0
        while True:
            attempt += 1
            self.fetches += 1
            logger.debug("fetching a token (attempt %d of %d)", attempt, self.retry.attempts)
            try:
                with anyio.fail_after(self.retry.timeout * 1.5):
                    token = await self._fetch_once()
            except InvalidCredentialsError as exc:
                self._credentials_error = exc
                self._credentials_error_until = self.clock.monotonic() + (
                    self.retry.credentials_error_ttl
                )
                raise
            except TimeoutError:
                # The HTTP timeout should have fired first; this guards transports that
                # ignore it, so waiters can never hang on a silent endpoint.
                exc = TokenRequestError(
                    f"The token endpoint did not answer within {self.retry.timeout * 1.5:.0f} s; "
                    "check network access to it.",
                    retryable=True,
                )
                if not self._may_retry(exc, attempt, deadline):
                    raise exc from None
                await self._backoff(exc, attempt)
                continue
            except TokenRequestError as exc:
                if not self._may_retry(exc, attempt, deadline):
                    raise
                await self._backoff(exc, attempt)
                continue
            logger.debug("fetched token %s", token.fingerprint)
            return token

    def _may_retry(self, exc: TokenRequestError, attempt: int, deadline: float) -> bool:
        if not exc.retryable or attempt >= self.retry.attempts:
            logger.debug("token fetch failed, not retrying: %s", exc)
            return False
        delay = self.retry.delay(attempt, exc.retry_after, self._rng)
        if self.clock.monotonic() + delay > deadline:
            logger.debug("token fetch failed; a retry in %.1f s would pass the deadline", delay)
            return False
        exc.__dict__["_entur_delay"] = delay
        return True

    async def _backoff(self, exc: TokenRequestError, attempt: int) -> None:
        delay: float = exc.__dict__.pop("_entur_delay")
        logger.debug("token fetch failed (%s); retry %d in %.2f s", exc, attempt + 1, delay)
        await self.clock.sleep(delay)

    # -- background refresh --------------------------------------------------------------

    async def run_refresher(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Renew the token at the start of each advisory window until cancelled.

        It never fetches the first token (that stays lazy, so opening a client makes no
        network call); it renews tokens that requests caused to be fetched.
        """
        if self._changed is None:
            self._changed = anyio.Event()
        self.background_running = True
        task_status.started()
        try:
            while True:
                token = self.token
                if token is None:
                    await self._changed.wait()
                    continue
                wake = max(self.advisory_at, self._next_try_at)
                delay = wake - self.clock.monotonic()
                if delay > 0:
                    await self.clock.sleep(delay)
                    continue  # re-read: the token may have been replaced while we slept
                if self._flight is not None:
                    await self._flight.done.wait()
                    continue
                try:
                    await self._lead(advisory=True)
                except EnturError:
                    pass  # logged and backed off in _lead; the old token keeps serving
        finally:
            self.background_running = False


def _store_warning(what: str, exc: Exception) -> None:
    # Only the exception type and message: store errors never carry token text.
    logger.warning(
        "token store %s failed (%s: %s); continuing with this process's own token",
        what,
        type(exc).__name__,
        exc,
    )
