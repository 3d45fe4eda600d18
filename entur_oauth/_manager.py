"""Token acquisition for one client: one fetch at a time, and two refresh windows.

:class:`TokenManager` composes the units that do the other jobs: a :class:`RetryingFetch`
(retries, backoff, failures answered from memory), a :class:`SharedStore` (the shared
store's I/O) and a :class:`Refresher` (background renewal). What is left here is the
single flight, the refresh windows and the 401-storm guard.

The fast path of :meth:`TokenManager.token` (a valid token outside its advisory window)
is a field read and one clock read, with no lock and no other await.

There is no lock: the one fetch in progress is a :class:`_Flight` that other tasks wait
on, so a task cancelled while it fetches or waits leaves nothing held. By default (no
task group, see ``_lifetime.py``) the flight runs in the task of the caller that started
it; if that caller is cancelled, the flight ends with neither token nor error and its
waiters look again: one of them starts it anew (at most one extra token request per
cancelled fetcher), none fails or is cancelled. Only when :meth:`TokenManager.start` was
given a task group (``task_group=``, or ``RefreshPolicy(background=True)``) does the
flight run there, and go on when the task that started it is cancelled.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial

import anyio
from anyio.abc import TaskGroup

from . import _telemetry as telemetry
from ._clock import Clock
from ._codec import TokenCodec
from ._errors import TokenRequestError
from ._policy import RefreshPolicy, RetryPolicy
from ._refresher import Refresher
from ._retrying import FetchOnce, RetryingFetch, copy_error
from ._shared import SharedStore
from ._stores import TokenStore
from ._token import Token

__all__ = ["FetchOnce", "OnToken", "TokenManager"]

logger = logging.getLogger("entur_oauth")

#: Awaited with each new token the manager starts using (fetched or taken from the store).
OnToken = Callable[[Token], Awaitable[None]]

_NEVER = float("-inf")


class _StormGuard:
    """Bounds what an API that rejects every token costs the token endpoint (issue 11.4).

    A token fetched right after a rejection is its replacement, marked with the time it
    arrived (:attr:`Token.replaced_at`). If the API rejects the replacement too within
    ``ttl`` of that time, the credentials (or the API's idea of them) are the problem, not
    the token: it is kept and no new one is fetched until ``ttl`` has passed. The mark is
    sealed into a shared store with the token, so every client that takes the token from
    the store keeps it too: the bound holds across clients sharing a store, not just per
    client. One revocation still costs exactly one re-fetch.
    """

    __slots__ = ("_after_rejection", "_ttl")

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._after_rejection = False

    async def fetch(self, fetch: FetchOnce, now: Callable[[], float]) -> Token:
        """A token from ``fetch``, marked as a replacement if a rejection preceded it (before
        a shared store saves it, so the mark reaches every client that takes it there)."""
        token = await fetch()
        return replace(token, replaced_at=now()) if self._after_rejection else token

    def installed(self) -> None:
        """A token became the current one: the next fetch replaces no rejected token."""
        self._after_rejection = False

    def keeps(self, token: Token, now: float) -> bool:
        """The API rejected ``token`` (the current one): True to keep it, False to drop it."""
        replaced_at = token.replaced_at
        if replaced_at is not None and now < replaced_at + self._ttl:
            return True
        self._after_rejection = True
        return False


class _Runner:
    """Where fetch rounds run: in the task group :meth:`TokenManager.start` gave, if any
    (the round then survives the cancellation of the caller that started it, issue 11
    item 5), else in the task of that caller (a cancelled caller hands the round on to
    its waiters, see :meth:`TokenManager._slow_token`)."""

    __slots__ = ("task_group",)

    def __init__(self) -> None:
        self.task_group: TaskGroup | None = None

    async def run(self, flight: _Flight, fly: Callable[[], Awaitable[None]]) -> None:
        """Run ``fly`` for ``flight``: started in the task group (returns at once), or here."""
        task_group = self.task_group
        if task_group is not None:
            scope = flight.scope = anyio.CancelScope()
            try:
                task_group.start_soon(_run_in, scope, fly)
                return
            except RuntimeError:  # the task group has closed meanwhile: run it here
                self.task_group = flight.scope = None
        await fly()

    def stop(self, flight: _Flight | None) -> None:
        """Forget the task group, and cancel ``flight`` if it runs there (so no fetch holds
        the closing task group open; its waiters then fetch in their own tasks)."""
        self.task_group = None
        if flight is not None and flight.scope is not None:
            flight.scope.cancel()

    def abandoned(self, flight: _Flight) -> None:
        """``flight`` ended with neither token nor error: if the task group is being
        cancelled, later rounds run in the callers' tasks again."""
        group = self.task_group
        if flight.scope is not None and group is not None and group.cancel_scope.cancel_called:
            self.task_group = None


async def _run_in(scope: anyio.CancelScope, fly: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await fly()


@dataclass(eq=False)
class _Flight:
    """One token fetch in progress; every task that needs a token meanwhile waits on it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    token: Token | None = None
    #: Set when the fetch failed; ``None`` with no token means the fetcher was cancelled.
    error: Exception | None = None
    #: The scope of a fetch run in the manager's task group (not by the caller).
    scope: anyio.CancelScope | None = None
    #: Why this round was started (telemetry: ``entur_oauth.reason``).
    reason: str = telemetry.FIRST


class TokenManager:
    """Keeps one valid token for one client and renews it as :class:`RefreshPolicy` says.

    The counters say what the manager actually did, for tests, benchmarks and the CLI:

    * ``fetches``: token requests sent (every attempt, failed ones included);
    * ``rounds``: fetch rounds (one round makes up to ``RetryPolicy.attempts`` requests);
    * ``waits``: calls of :meth:`token` that waited for a round (as its leader or behind it);
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
        labels: telemetry.Labels | None = None,
    ) -> None:
        self.clock = clock
        self._monotonic = clock.monotonic  # bound once: the fast path pays one lookup
        self.refresh = refresh
        self.retry = retry
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._fetch = RetryingFetch(fetch_once, clock=clock, retry=retry, rng=self._rng)
        self._shared = (
            SharedStore(store, store_key, codec, clock=clock, refresh=refresh, rng=self._rng)
            if store is not None and codec is not None
            else None
        )
        self._guard = _StormGuard(retry.credentials_error_ttl)
        self._fetch_new = partial(self._guard.fetch, self._fetch, clock.monotonic)
        self._refresher = Refresher(clock=clock, due=self._renewal_due, renew=self._renew_once)
        self._on_token = on_token
        self._runner = _Runner()
        #: The current token (read without a lock by the fast path of :meth:`token`), and
        #: the monotonic times at which its advisory and mandatory windows start.
        self.current: Token | None = None
        self.advisory_at = self.mandatory_at = _NEVER
        self._flight: _Flight | None = None
        self._next_try_at = _NEVER
        self._failures = 0
        self._warned_no_refresher = False
        self.rounds = 0
        self.waits = 0
        self.valid_waits = 0
        #: The status (401/408) that dropped the token, until a new one is installed.
        self._rejected_status: int | None = None
        self._labels = labels or telemetry.Labels(store=type(store).__name__ if store else "")
        telemetry.watch(self, self._labels)

    @property
    def fetches(self) -> int:
        """Token requests sent (every attempt, failed ones included)."""
        return self._fetch.fetches

    @property
    def background_running(self) -> bool:
        """Whether the background refresher runs."""
        return self._refresher.running

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
        if token is not None and self._monotonic() < self.advisory_at:
            return token
        return await self._slow_token()

    async def _slow_token(self) -> Token:
        counted = False
        while True:
            now = self.clock.monotonic()
            token = self.current
            if token is not None and now < self.mandatory_at:
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
                renewed = await self._join(flight, advisory=True, led=True, since=now)
                return renewed if renewed is not None else token
            if not counted:
                counted = True
                self._count_wait(token, now)
                since = now
            joined = self._flight
            flight = joined or await self._lead(advisory=False)
            result = await self._join(flight, advisory=False, led=joined is None, since=since)
            if result is not None:
                return result
            # The fetching task was cancelled before it finished (no task group held, so
            # the fetch ran in that task): go round, and this task (or another waiter,
            # whichever runs first) starts a new fetch. The cancellation stays the
            # cancelled caller's; the waiters neither fail nor are cancelled by it.

    async def _join(
        self, flight: _Flight, *, advisory: bool, led: bool = False, since: float | None = None
    ) -> Token | None:
        """Wait for ``flight``: its token, ``None`` if it was cancelled, or its error.

        The task that started the round (``led``) gets the error itself, every other one
        a copy. An advisory round that failed answers ``None`` too (it was logged and
        backed off; the old token keeps serving). ``since``: when a request began to wait.
        """
        await flight.done.wait()
        telemetry.waited(
            self._labels,
            since,
            self.clock.monotonic(),
            led=led,
            token=flight.token,
            error=flight.error,
        )
        if flight.token is not None:
            return flight.token
        if flight.error is not None and not advisory:
            raise flight.error if led else copy_error(flight.error)
        self._runner.abandoned(flight)
        return None

    def _count_wait(self, token: Token | None, now: float) -> None:
        self.waits += 1
        if token is not None and now < token.expires_at:
            self.valid_waits += 1

    async def renew(self) -> Token:
        """Force a new token through the single flight (``await client.fetch_token()``).

        A fetch already in flight is joined only if it started after this call; the new
        token skips the store's cached copy, is installed, saved and counted, and later
        calls get it.

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

    def seed(self, token: Token | None) -> Token | None:
        """Install ``token`` (if any) as the current one, without any request (``token=``).

        Returns:
            The token requests use from now on (``None`` before the first fetch), so the
            client can show it as ``client.token`` without reading the manager's fields.
        """
        if token is not None:
            self._install(token)
        return self.current

    async def invalidate(self, token: Token, *, status: int = 401) -> bool:
        """Drop ``token`` after the API rejected it, unless another task already replaced it.

        ``status``: the API's answer (401 or 408), the reason of the next token request.

        Returns:
            True: the caller may retry once with :meth:`token`. False (the 401-storm
            guard): ``token`` itself was fetched to replace a rejected token (by this
            client or by another one sharing the store) less than
            ``RetryPolicy.credentials_error_ttl`` ago, so a new one is unlikely to fare
            better; it is kept, and the caller fails without any token request.
        """
        if self.current is not token:
            return True
        if self._guard.keeps(token, self.clock.monotonic()):
            logger.debug("token %s replaced a rejected one and was rejected too", token.fingerprint)
            return False
        logger.debug("token %s rejected by the API; discarding it", token.fingerprint)
        if self._shared is not None:
            # Never taken from the store again; the fetch of its replacement overwrites it
            # there under the store's lock, so no other client finds the store empty.
            self._shared.reject(token)
        self.current = None
        self._rejected_status = status
        self.advisory_at = self.mandatory_at = _NEVER
        self._refresher.wake()
        return True

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, task_group: TaskGroup) -> None:
        """Run shared fetches (and the background refresher, if asked) in ``task_group``.

        A fetch started there goes on when the caller that started it is cancelled, for
        the callers still waiting on it. Called on ``async with client`` only where the
        client holds a task group (``task_group=`` or a background refresher); without
        a call, fetches run in their callers' tasks.
        """
        self._runner.task_group = task_group
        if self.refresh.background:
            await task_group.start(self._refresher.run)

    def stop(self) -> None:
        """Stop the refresher and a shared fetch, and forget the task group (before it closes).

        The waiters of a stopped fetch fetch again in their own tasks.
        """
        self._runner.stop(self._flight)
        self._refresher.stop()

    # -- fetching ------------------------------------------------------------------------

    async def _lead(self, *, advisory: bool, force: bool = False) -> _Flight:
        """Run a fetch round: in the task group if there is one (returns at once), else here."""
        flight = self._flight = _Flight(reason=self._reason(advisory, force))
        self.rounds += 1
        if self.refresh.background and not self.background_running:
            if not self._warned_no_refresher:
                _warn_no_refresher()
            self._warned_no_refresher = True
        if advisory and self.current is not None:
            logger.debug("token %s is in its refresh window; renewing it", self.current.fingerprint)
        await self._runner.run(flight, partial(self._fly, flight, advisory, force))
        return flight

    def _reason(self, advisory: bool, force: bool) -> str:
        has_token = self.current is not None
        return telemetry.reason_for(
            force=force, advisory=advisory, has_token=has_token, rejected=self._rejected_status
        )

    async def _fly(self, flight: _Flight, advisory: bool, force: bool) -> None:
        round_ = telemetry.round_started(flight.reason, self._labels)
        try:
            shared = self._shared
            if shared is None:
                token = await self._fetch_new()
            else:
                # The token we hold is never its own replacement, whichever window we
                # are in: the store holds it too (we put it there).
                token = await shared.fetch_through(
                    self._fetch_new, replacing=self.current, force=force
                )
            self._install(token)
            if self._on_token is not None:
                await _announce(self._on_token, token)
        except Exception as exc:
            # Cancellation (and other BaseExceptions) leave ``error`` unset: the waiters
            # then fetch again themselves instead of failing with someone else's cancel.
            flight.error = exc
            if advisory:
                self._advisory_failed(exc)
        else:
            flight.token = token
        finally:
            if self._flight is flight:
                self._flight = None
            flight.done.set()
            # After set(), which wakes no one before this task yields: the waiters are
            # never held up, and the round's span has ended before any of them runs.
            telemetry.round_ended(round_, flight.token, flight.error)

    def _install(self, token: Token) -> None:
        advisory, mandatory = self.refresh.windows(token.lifetime, self._rng)
        self.current = token
        self._rejected_status = None
        self._guard.installed()
        self.mandatory_at = token.expires_at - mandatory
        self.advisory_at = token.expires_at - advisory
        self._failures = 0
        self._next_try_at = _NEVER
        logger.debug(
            "token %s valid for %.0f s; refresh from %.0f s before expiry, "
            "requests wait from %.0f s before it",
            token.fingerprint,
            token.expires_at - self.clock.monotonic(),
            advisory,
            mandatory,
        )
        self._refresher.wake()

    def _advisory_failed(self, exc: Exception) -> None:
        self._failures += 1
        self._next_try_at = _next_try(
            exc,
            self._failures,
            self.refresh.failure_backoff(self._failures, self._rng),
            now=self.clock.monotonic(),
            mandatory_at=self.mandatory_at,
            token=self.current,
        )

    # -- background refresh --------------------------------------------------------------

    def _renewal_due(self) -> float | None:
        """For the refresher: seconds until a renewal is due, ``None`` with no token."""
        if self.current is None:
            return None
        return max(self.advisory_at, self._next_try_at) - self.clock.monotonic()

    async def _renew_once(self) -> None:
        """For the refresher: join the round in flight, or run an advisory one."""
        flight = self._flight or await self._lead(advisory=True)
        await flight.done.wait()  # a failure is logged and backed off in _fly


def _next_try(
    exc: Exception,
    failures: int,
    backoff: float,
    *,
    now: float,
    mandatory_at: float,
    token: Token | None,
) -> float:
    """When to renew again after the ``failures``-th failed renewal in a row (logged)."""
    delay = backoff
    if isinstance(exc, TokenRequestError) and exc.retry_after is not None:
        delay = max(delay, exc.retry_after)  # the server said when; do not come sooner
    next_try = now + delay
    if now < mandatory_at:
        # One more try just before requests would have to wait for a token.
        next_try = min(next_try, mandatory_at)
    reason = str(exc) if isinstance(exc, TokenRequestError) else type(exc).__name__
    # Warn once per run of failures: the old token still serves, so this is not an
    # error yet, and a warning per try would flood the log of a long outage. The
    # decision itself (with the token it concerns) is always logged at DEBUG.
    if failures == 1:
        logger.warning(
            "token refresh failed (%s); the current token keeps serving for %.0f s, "
            "next try in %.0f s",
            reason,
            max(mandatory_at - now, 0.0),
            next_try - now,
        )
    logger.debug(
        "renewal of token %s failed %d time(s) in a row; backing off %.1f s",
        token.fingerprint if token is not None else None,
        failures,
        next_try - now,
    )
    return next_try


def _warn_no_refresher() -> None:
    # The refresher starts only in ``async with client`` (in the client's own task group
    # or the one passed as task_group=); without it background=True silently does
    # nothing and every renewal makes requests wait, so say so (once per manager).
    logger.warning(
        "RefreshPolicy(background=True), but no background refresher runs: it starts "
        "only inside `async with client` (also with task_group=). Until then tokens are "
        "renewed by requests, which may wait for them. Use `async with client`."
    )


async def _announce(on_token: OnToken, token: Token) -> None:
    """Await ``on_token`` with a new token; its failure does not fail the fetch."""
    try:
        await on_token(token)
    except Exception as exc:
        # Only the type: a hook's message may quote the token it was handed.
        logger.warning(
            "the on_token/update_token hook failed (%s); the new token is used anyway",
            type(exc).__name__,
        )
