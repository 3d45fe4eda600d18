"""Token acquisition: one fetch at a time, two refresh windows, retries and shared stores.

The fast path (a valid token outside its advisory window) is a field read and one clock
read, with no lock and no await, so the client can inline it. Everything else comes here.

There is no lock: the one fetch in progress is a :class:`_Flight` that other tasks wait
on, so a task cancelled while it fetches or waits leaves nothing held; the waiters simply
look again and one of them fetches.
"""

from __future__ import annotations

import copy
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._clock import Clock
from ._codec import TokenCodec
from ._errors import InvalidCredentialsError, TokenRequestError
from ._policy import RefreshPolicy, RetryPolicy
from ._stores import TokenStore
from ._token import Token

__all__ = ["FetchOnce", "OnToken", "TokenManager"]

logger = logging.getLogger("entur_oauth")

#: How far apart two hosts' wall clocks may be for a stored token to be trusted.
_STORE_CLOCK_SKEW = 60.0

#: Performs one token request (no retries) and returns the parsed token.
FetchOnce = Callable[[], Awaitable[Token]]
#: Awaited with each new token the manager starts using (fetched or taken from the store).
OnToken = Callable[[Token], Awaitable[None]]


@dataclass(eq=False)
class _Flight:
    """One token fetch in progress; every task that needs a token meanwhile waits on it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    token: Token | None = None
    #: Set when the fetch failed; ``None`` with no token means the fetcher was cancelled.
    error: Exception | None = None
    #: Run in the manager's task group rather than by the caller that started it.
    shared: bool = False


class TokenManager:
    """Keeps one valid token for one client and renews it as :class:`RefreshPolicy` says.

    The counters say what the manager actually did, for tests, benchmarks and the CLI:

    * ``fetches``: token requests sent (every attempt, failed ones included);
    * ``rounds``: fetch rounds (one round makes up to ``RetryPolicy.attempts`` requests);
    * ``waits``: calls of :meth:`get` that waited for a round (as its leader or behind it);
    * ``valid_waits``: those of ``waits`` that began while a token that had not expired
      was cached: the waiting a refresh policy exists to avoid. With the background
      refresher it stays 0 as long as each renewal succeeds before the mandatory window.
    """

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
        on_token: OnToken | None = None,
    ) -> None:
        self._fetch_once = fetch_once
        self._on_token = on_token
        self._task_group: TaskGroup | None = None
        self.clock = clock
        self.refresh = refresh
        self.retry = retry
        self._store = store
        self._store_key = store_key
        self._codec = codec
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        #: The current token; read without a lock by the fast path of :meth:`token`.
        self.current: Token | None = None
        #: Monotonic time at which the advisory window of ``current`` starts.
        self.advisory_at: float = float("-inf")
        self._mandatory_at: float = float("-inf")
        self._flight: _Flight | None = None
        self._next_try_at: float = float("-inf")
        self._failures = 0
        # A failure answered from memory until ``_cached_error_until``: rejected credentials
        # and other 4xx (for credentials_error_ttl), or a fetch that gave up with a
        # Retry-After (until then). Without it every call would hit the endpoint again.
        self._cached_error: TokenRequestError | None = None
        self._cached_error_until = float("-inf")
        self._warned_no_refresher = False
        # The background refresher: its whole scope (to stop it) and its current nap (to
        # wake it when the token changes under it).
        self._refresher_scope: anyio.CancelScope | None = None
        self._refresher_nap: anyio.CancelScope | None = None
        self.background_running = False
        #: Fingerprints of tokens the API rejected (the last few): never taken from a store.
        self._rejected: deque[str] = deque(maxlen=8)
        self.fetches = 0
        self.rounds = 0
        self.waits = 0
        self.valid_waits = 0

    @property
    def mandatory_at(self) -> float:
        """Monotonic time at which the mandatory window of ``token`` starts."""
        return self._mandatory_at

    def __repr__(self) -> str:
        token = self.current
        shown = token.fingerprint if token is not None else None
        return (
            f"<TokenManager token={shown!r} fetches={self.fetches} rounds={self.rounds} "
            f"waits={self.waits} background={self.background_running}>"
        )

    # -- the paths a request takes -------------------------------------------------------

    async def token(self) -> Token:
        """Return a token that is valid now, renewing it if the policy says so.

        The one method the client calls per request. A valid token outside its advisory
        window is returned at once (no lock, no other await); otherwise this task joins or
        leads the single-flight fetch (the shared store first, then the endpoint).

        Raises:
            TokenRequestError: No token outside its mandatory window exists and none
                could be fetched (every waiter of a failed round gets a copy of its error).
        """
        token = self.current
        if token is not None and self.clock.monotonic() < self.advisory_at:
            return token
        return await self._slow_token()

    async def get(self) -> Token:
        """The name the client used before :meth:`token`; kept until it switches."""
        return await self.token()

    async def _slow_token(self) -> Token:
        counted = False
        while True:
            now = self.clock.monotonic()
            token = self.current
            if token is not None and now < self._mandatory_at:
                if (
                    now < self.advisory_at
                    or self._flight is not None
                    or now < self._next_try_at
                    or self.background_running
                ):
                    return token
                # Advisory window and nobody renewing: this task renews; every other
                # request goes on with the still-valid token meanwhile.
                self._count_wait(token, now)
                flight = await self._lead(advisory=True)
                renewed = await self._join(flight, advisory=True, led=True)
                return renewed if renewed is not None else token
            if not counted:
                counted = True
                self._count_wait(token, now)
            joined = self._flight
            flight = joined or await self._lead(advisory=False)
            result = await self._join(flight, advisory=False, led=joined is None)
            if result is not None:
                return result
            # The fetching task was cancelled before it finished: go round, and this task
            # (or another waiter) starts a new fetch.

    async def _join(self, flight: _Flight, *, advisory: bool, led: bool = False) -> Token | None:
        """Wait for ``flight``: its token, ``None`` if it was cancelled, or its error.

        The task that started the round (``led``) gets the error itself, every other one
        a copy. An advisory round that failed answers ``None`` too (it was logged and
        backed off; the old token keeps serving).
        """
        await flight.done.wait()
        if flight.token is not None:
            return flight.token
        if flight.error is not None and not advisory:
            raise flight.error if led else _copy_error(flight.error)
        task_group = self._task_group
        if flight.shared and task_group is not None and task_group.cancel_scope.cancel_called:
            # The task group itself is being cancelled: fetch in the callers' tasks again.
            self._task_group = None
        return None

    def _count_wait(self, token: Token | None, now: float) -> None:
        self.waits += 1
        if token is not None and now < token.expires_at:
            self.valid_waits += 1

    async def renew(self) -> Token:
        """Force a new token through the single flight (``await client.fetch_token()``).

        A fetch already in flight is joined only if it started after this call; the new
        token is installed, saved to the store and counted, and later calls get it.

        Raises:
            TokenRequestError: The token could not be fetched.
        """
        stale = self._flight
        while True:
            joined = self._flight
            if joined is not None and joined is stale:
                await joined.done.wait()
                continue
            flight = joined or await self._lead(advisory=False, force=True)
            result = await self._join(flight, advisory=False, led=joined is None)
            if result is not None:
                return result
            stale = None

    def seed(self, token: Token) -> None:
        """Install ``token`` as the current one, without any request (``token=``)."""
        self._install(token)

    async def invalidate(self, token: Token) -> bool:
        """Drop ``token`` after the API rejected it, unless another task already replaced it.

        Returns:
            True: the caller may retry once with :meth:`token`.
        """
        if self.current is not token:
            return True
        logger.debug("token %s rejected by the API; discarding it", token.fingerprint)
        # Remembered before the first await below: a task that fetches meanwhile must not
        # take this very token back from the store before it is deleted there.
        self._rejected.append(token.fingerprint)
        self.current = None
        self.advisory_at = self._mandatory_at = float("-inf")
        self._wake_refresher()
        if self._store is not None and self._codec is not None:
            try:
                # Delete only while the store still holds this very token (compared by
                # fingerprint, then compare-and-delete on the raw bytes): another process
                # may already have stored its replacement.
                raw = await self._store.get(self._store_key)
                stored = self._decode(raw) if raw is not None else None
                if stored is not None and stored.fingerprint == token.fingerprint:
                    await self._store.delete(self._store_key, expected=raw)
            except Exception as exc:  # a store fault must not fail the request
                _store_warning("delete", exc)
        return True

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, task_group: TaskGroup) -> None:
        """Run shared fetches (and the background refresher, if asked) in ``task_group``.

        A fetch started there goes on when the caller that started it is cancelled, for
        the callers still waiting on it (called by ``EnturClient.__aenter__``).
        """
        self._task_group = task_group
        if self.refresh.background:
            await task_group.start(self.run_refresher)

    def stop(self) -> None:
        """Stop the refresher and forget the task group (before it closes)."""
        self._task_group = None
        self.stop_refresher()

    # -- fetching ------------------------------------------------------------------------

    async def _lead(self, *, advisory: bool, force: bool = False) -> _Flight:
        """Run a fetch round: in the task group if there is one (returns at once), else here."""
        flight = self._flight = _Flight()
        self.rounds += 1
        if self.refresh.background and not self.background_running:
            self._warn_no_refresher()
        if advisory and self.current is not None:
            logger.debug("token %s is in its refresh window; renewing it", self.current.fingerprint)
        task_group = self._task_group
        if task_group is not None:
            flight.shared = True
            task_group.start_soon(self._fly, flight, advisory, force)
        else:
            await self._fly(flight, advisory, force)
        return flight

    async def _fly(self, flight: _Flight, advisory: bool, force: bool) -> None:
        try:
            # The token we hold is never its own replacement, whichever window we are in:
            # the store holds it too (we put it there).
            token = await self._acquire(replacing=self.current, force=force)
            self._install(token)
            await self._announce(token)
        except Exception as exc:
            # Cancellation (and other BaseExceptions) leave ``error`` unset: the waiters
            # then fetch again themselves instead of failing with someone else's cancel.
            flight.error = _detached(exc) if isinstance(exc, TokenRequestError) else exc
            if advisory:
                self._advisory_failed(exc)
        else:
            flight.token = token
        finally:
            if self._flight is flight:
                self._flight = None
            flight.done.set()

    async def _announce(self, token: Token) -> None:
        """Await ``on_token`` with a new token; its failure does not fail the fetch."""
        if self._on_token is None:
            return
        try:
            await self._on_token(token)
        except Exception as exc:
            # Only the type: a hook's message may quote the token it was handed.
            logger.warning(
                "the on_token/update_token hook failed (%s); the new token is used anyway",
                type(exc).__name__,
            )

    def _warn_no_refresher(self) -> None:
        # The refresher starts only in ``async with client`` (in the client's own task group
        # or the one passed as task_group=); without it background=True silently does
        # nothing and every renewal makes requests wait, so say so, once.
        if self._warned_no_refresher:
            return
        self._warned_no_refresher = True
        logger.warning(
            "RefreshPolicy(background=True), but no background refresher runs: it starts "
            "only inside `async with client` (also with task_group=). Until then tokens are "
            "renewed by requests, which may wait for them. Use `async with client`."
        )

    def _install(self, token: Token) -> None:
        advisory, mandatory = self.refresh.windows(token.lifetime, self._rng)
        self.current = token
        self._mandatory_at = token.expires_at - mandatory
        self.advisory_at = token.expires_at - advisory
        self._failures = 0
        self._next_try_at = float("-inf")
        logger.debug(
            "token %s valid for %.0f s; refresh from %.0f s before expiry, "
            "requests wait from %.0f s before it",
            token.fingerprint,
            token.expires_at - self.clock.monotonic(),
            advisory,
            mandatory,
        )
        self._wake_refresher()

    def _advisory_failed(self, exc: Exception) -> None:
        self._failures += 1
        now = self.clock.monotonic()
        delay = self.refresh.failure_backoff(self._failures, self._rng)
        if isinstance(exc, TokenRequestError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)  # the server said when; do not come sooner
        next_try = now + delay
        if now < self._mandatory_at:
            # One more try just before requests would have to wait for a token.
            next_try = min(next_try, self._mandatory_at)
        self._next_try_at = next_try
        reason = str(exc) if isinstance(exc, TokenRequestError) else type(exc).__name__
        token = self.current
        # Warn once per run of failures: the old token still serves, so this is not an
        # error yet, and a warning per try would flood the log of a long outage. The
        # decision itself (with the token it concerns) is always logged at DEBUG.
        if self._failures == 1:
            logger.warning(
                "token refresh failed (%s); the current token keeps serving for %.0f s, "
                "next try in %.0f s",
                reason,
                max(self._mandatory_at - now, 0.0),
                next_try - now,
            )
        logger.debug(
            "renewal of token %s failed %d time(s) in a row; backing off %.1f s",
            token.fingerprint if token is not None else None,
            self._failures,
            next_try - now,
        )

    async def _acquire(self, *, replacing: Token | None, force: bool = False) -> Token:
        """A token from the store (unless ``force``), else from the endpoint, stored."""
        if self._store is None:
            return await self._fetch_with_retries()
        token = None if force else await self._from_store(replacing)
        if token is not None:
            return token
        try:
            lock = self._store.lock(self._store_key)
            await lock.__aenter__()
        except Exception as exc:  # a store fault must not fail the request
            _store_warning("lock", exc)
            return await self._fetch_with_retries()
        try:
            # Another process may have fetched while we waited for the lock.
            token = None if force else await self._from_store(replacing)
            if token is not None:
                return token
            token = await self._fetch_with_retries()
            await self._to_store(token)
            return token
        finally:
            try:
                await lock.__aexit__(None, None, None)
            except Exception as exc:
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
        except Exception as exc:
            _store_warning("read", exc)
            return None
        if raw is None or self._codec is None:
            return None
        token = self._decode(raw)
        if token is None:
            logger.debug("stored token unusable (expired, corrupt or another secret); ignoring it")
            return None
        now = self.clock.monotonic()
        if token.expires_at - now > token.lifetime + _STORE_CLOCK_SKEW:
            # Stores carry expiry as wall-clock time. More life left than the token ever
            # had means this wall clock went back since it was stored (or another host's
            # is far off): its real expiry is unknown, so fetch rather than trust it.
            logger.debug(
                "stored token %s claims more life than it was issued with; the wall clock "
                "moved; ignoring it",
                token.fingerprint,
            )
            return None
        advisory, _ = self.refresh.windows(token.lifetime, self._rng)
        if token.expires_at - advisory <= now:
            return None  # in its own refresh window: fetch a fresh one instead
        if replacing is not None and token.fingerprint == replacing.fingerprint:
            return None
        if token.fingerprint in self._rejected:
            logger.debug("stored token %s was rejected by the API; ignoring it", token.fingerprint)
            return None
        logger.debug("token %s taken from the shared store", token.fingerprint)
        return token

    async def _to_store(self, token: Token) -> None:
        assert self._store is not None
        assert self._codec is not None
        try:
            await self._store.set(
                self._store_key,
                self._codec.encode(token),
                ttl=max(token.expires_at - self.clock.monotonic(), 1.0),
            )
        except Exception as exc:
            _store_warning("write", exc)

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
        self._cached_error_until = self.clock.monotonic() + ttl
        logger.debug("token fetch failed (HTTP %s); answering from memory for %.0f s", status, ttl)

    async def _fetch_with_retries(self) -> Token:
        now = self.clock.monotonic()
        cached = self._cached_error
        if cached is not None and now < self._cached_error_until:
            logger.debug(
                "the token endpoint failed (HTTP %s) recently; not asking again for %.0f s",
                cached.status_code,
                self._cached_error_until - now,
            )
            raise _copy_error(cached)
        deadline = now + self.retry.total
        # A backstop for transports with no timeout of their own (an in-process app that
        # never answers). The fixed second lets httpx's own timeout, which starts only once
        # the request is built and connected, fire first on a real socket.
        limit = self.retry.timeout * 1.5 + 1.0
        attempt = 0
        while True:
            attempt += 1
            self.fetches += 1
            logger.debug("fetching a token (attempt %d of %d)", attempt, self.retry.attempts)
            failure: TokenRequestError
            try:
                with anyio.fail_after(limit):
                    token = await self._fetch_once()
            except InvalidCredentialsError as exc:
                logger.debug("credentials rejected; not retrying")
                self._remember_failure(exc)
                raise
            except TimeoutError:
                # The HTTP timeout should have fired first; this guards transports that
                # ignore it (in-process ones do), so waiters never hang on a silent endpoint.
                failure = TokenRequestError(
                    f"The token endpoint did not answer within {limit:.1f} s; it is retried "
                    "automatically. Check network access to it.",
                    retryable=True,
                )
            except TokenRequestError as exc:
                failure = exc
            else:
                logger.debug("fetched token %s", token.fingerprint)
                return token
            delay = self._retry_delay(failure, attempt, deadline)
            if delay is None:
                self._remember_failure(failure)
                raise _detached(failure)
            await self.clock.sleep(delay)

    def _retry_delay(self, exc: TokenRequestError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up with ``exc``."""
        if not exc.retryable:
            logger.debug("token fetch failed, not retryable: %s", exc)
            return None
        if attempt >= self.retry.attempts:
            logger.debug("token fetch failed %d times, giving up: %s", attempt, exc)
            return None
        delay = self.retry.delay(attempt, exc.retry_after, self._rng)
        if self.clock.monotonic() + delay > deadline:
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

    # -- background refresh --------------------------------------------------------------

    async def run_refresher(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Renew the token at the start of each advisory window until stopped or cancelled.

        It never fetches the first token (that stays lazy, so opening a client makes no
        network call); it renews tokens that requests caused to be fetched. A failed
        renewal is backed off as in the advisory window; nothing it meets ends it.
        """
        if self._refresher_scope is not None:
            raise RuntimeError("this token manager already has a background refresher")
        scope = self._refresher_scope = anyio.CancelScope()
        self.background_running = True
        try:
            with scope:
                task_status.started()
                while True:
                    await self._refresh_once()
        finally:
            self.background_running = False
            self._refresher_scope = None

    def stop_refresher(self) -> None:
        """Stop the background refresher, if one runs (from the same event loop)."""
        if self._refresher_scope is not None:
            self._refresher_scope.cancel()

    async def _refresh_once(self) -> None:
        if self.current is None:
            await self._nap(None)  # until a request fetches the first token
            return
        delay = max(self.advisory_at, self._next_try_at) - self.clock.monotonic()
        if delay > 0:
            await self._nap(delay)
            return  # look again: the token may have been replaced meanwhile
        flight = self._flight
        if flight is not None:
            await flight.done.wait()
            return
        flight = await self._lead(advisory=True)  # a failure is logged and backed off
        await flight.done.wait()

    async def _nap(self, seconds: float | None) -> None:
        """Sleep on the clock (``None``: until woken), waking early when the token changes."""
        with anyio.CancelScope() as nap:
            self._refresher_nap = nap
            try:
                if seconds is None:
                    await anyio.sleep_forever()
                else:
                    await self.clock.sleep(seconds)
            finally:
                self._refresher_nap = None

    def _wake_refresher(self) -> None:
        # A new token may start its advisory window sooner than the refresher planned to
        # wake (a shorter life, a 401 replacement): it must look again now.
        nap = self._refresher_nap
        if nap is not None:
            nap.cancel()


def _detached(exc: TokenRequestError) -> TokenRequestError:
    """Drop the context an error was raised ``from None`` in.

    ``from None`` only hides the context from tracebacks; ``__context__`` still holds the
    httpx exception, whose ``request`` is the token request with the client secret in its
    body. An error tracker that walks the chain must not find it.
    """
    if exc.__suppress_context__:
        exc.__context__ = None
    return exc


def _copy_error(exc: Exception) -> Exception:
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


def _store_warning(what: str, exc: Exception) -> None:
    # Only the exception type and message: store errors never carry token text.
    logger.warning(
        "token store %s failed (%s: %s); continuing with this process's own token",
        what,
        type(exc).__name__,
        exc,
    )
