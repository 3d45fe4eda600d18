"""RedisTokenStore: one token fetch for a fleet of processes on many hosts, through Redis.

Why the synchronous redis-py client in a worker thread (``anyio.to_thread``) rather than
redis-py's asyncio client: the asyncio client runs only on asyncio, and this library must
run on trio too. The store is consulted only when a process has no usable token (its
first request, then about once per token lifetime, 24 h at Entur), so a thread hop per
Redis call costs nothing that shows, and one code path serves both event loops.

The fetch lock is a lease: ``SET <key>:lease <random owner> NX PX <ttl>``. Only its owner
releases it (a Lua compare-and-delete), so a holder that outlived its lease never deletes
a successor's. While the fetch runs, the holder renews the lease every third of its TTL
(an owner-checked PEXPIRE), since a fetch with retries can outlast it. Waiters poll for the
lease and, in the same round trip, for the token the holder writes; if the holder dies, its
renewal dies too, its lease expires and exactly one waiter takes it over.
"""

from __future__ import annotations

import math
import random
import secrets
import threading
import time
import weakref
from types import TracebackType
from typing import Any, cast

import anyio

from ._errors import ConfigurationError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without redis
    raise ImportError(
        "RedisTokenStore needs the 'redis' package, which is not installed. Install the "
        "extra: pip install 'entur-oauth[redis]'",
        name=exc.name,
    ) from exc

__all__ = ["RedisTokenStore"]

# Deletes KEYS[1] only while it holds ARGV[1], atomically (Redis runs a script alone):
# releases a lease only for its owner, and drops a rejected token only if no other process
# has already replaced it.
_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# Extends KEYS[1] to ARGV[2] milliseconds only while ARGV[1] holds it: a holder renews its
# own lease, never one that expired and passed to another process.
_COMPARE_AND_PEXPIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_UNSEEN = object()


class RedisTokenStore:
    """Tokens shared by a fleet of processes on many hosts through Redis.

    Values are sealed (AES-GCM, key derived from the client secret) before they reach
    Redis, so a reader of the key learns nothing usable. Keys are
    ``entur-oauth:<hash of token URL, audience, client id>`` and, while a fetch runs,
    ``...:lease``.

    When Redis is down or slow every call fails within ``socket_timeout``, and the client
    logs a warning and uses a token of its own: Redis saves token requests, it is never
    needed to make one.

    Args:
        url_or_client: A Redis URL (``redis://``, ``rediss://``, ``unix://``) or a
            synchronous ``redis.Redis`` client (created with ``decode_responses=False``;
            its own timeouts and retries then apply).
        lease_ttl: Seconds a fetch lease lasts unless renewed; its holder renews it every
            third of that while its fetch runs (for up to ``wait_timeout``). It is how long
            the others wait if the holder dies mid-fetch.
        wait_timeout: Longest wait, in seconds, for another process's fetch before this
            one fetches on its own (default: twice ``lease_ttl``).
        poll_interval: Seconds between checks for the lease or the token while waiting.
        socket_timeout: Connect and read timeout, in seconds, for a client made from a URL.

    Raises:
        ConfigurationError: The URL or client is unusable, or an option is out of range.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        *,
        lease_ttl: float = 15.0,
        wait_timeout: float | None = None,
        poll_interval: float = 0.05,
        socket_timeout: float = 1.0,
    ) -> None:
        if wait_timeout is None:
            wait_timeout = 2 * lease_ttl
        if not all(
            value > 0 and math.isfinite(value)
            for value in (lease_ttl, wait_timeout, poll_interval, socket_timeout)
        ):
            raise ConfigurationError(
                "RedisTokenStore: lease_ttl, wait_timeout, poll_interval and socket_timeout "
                "must be positive numbers of seconds."
            )
        given: object = url_or_client  # checked at run time too: callers may be untyped
        if isinstance(given, str):
            try:
                client = redis.Redis.from_url(
                    given,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=socket_timeout,
                    # One immediate retry on a dropped connection (a pooled socket that
                    # Redis closed on restart); none on timeouts, so a slow Redis fails
                    # fast and the client falls back to its own fetch.
                    retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                )
            except ValueError:
                # Not the URL itself in the message: it may hold a password.
                raise ConfigurationError(
                    "RedisTokenStore: not a Redis URL; use redis://[:password@]host:port/db, "
                    "rediss://... for TLS, or unix:///path/to/socket."
                ) from None
        elif isinstance(given, redis.Redis):
            client = given
        else:
            hint = (
                " redis.asyncio clients run on asyncio only; pass the synchronous "
                "redis.Redis (this store calls it from a worker thread)."
                if type(given).__module__.startswith("redis.asyncio")
                else ""
            )
            raise ConfigurationError(
                "RedisTokenStore takes a Redis URL or a redis.Redis client, not "
                f"{type(given).__name__}.{hint}"
            )
        self._kwargs: dict[str, Any] = dict(
            getattr(client.connection_pool, "connection_kwargs", {})
        )
        if self._kwargs.get("decode_responses"):
            raise ConfigurationError(
                "RedisTokenStore needs a client with decode_responses=False: tokens are "
                "stored as encrypted bytes."
            )
        self._client = client
        self._compare_and_delete = client.register_script(_COMPARE_AND_DELETE)
        self._compare_and_pexpire = client.register_script(_COMPARE_AND_PEXPIRE)
        # The value each key held at this store's latest get(): a waiter for the lease that
        # then finds another value knows a new token was written since (see _Lease).
        self._last_read: dict[str, bytes | None] = {}
        self.lease_ttl = lease_ttl
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval

    # -- TokenStore ----------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """Return the sealed token stored under ``key``, or ``None``.

        Raises:
            redis.RedisError: Redis is unreachable, slow or refused the command.
        """
        value = cast("bytes | None", await anyio.to_thread.run_sync(self._client.get, key))
        self._last_read[key] = value
        return value

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        """Store ``value`` under ``key``; Redis drops it after ``ttl`` seconds.

        Raises:
            redis.RedisError: Redis is unreachable, slow or refused the command.
        """
        await anyio.to_thread.run_sync(
            lambda: self._client.set(key, value, px=max(1, math.ceil(ttl * 1000)))
        )

    async def delete(self, key: str, *, expected: bytes | None = None) -> None:
        """Remove ``key``; with ``expected``, only while it still holds that value (in Lua).

        Raises:
            redis.RedisError: Redis is unreachable, slow or refused the command.
        """
        if expected is None:
            await anyio.to_thread.run_sync(self._client.delete, key)
        else:
            await anyio.to_thread.run_sync(
                lambda: self._compare_and_delete(keys=[key], args=[expected])
            )

    def lock(self, key: str) -> _Lease:
        """Return the fleet-wide fetch lease for ``key``."""
        return _Lease(self, key)

    def __repr__(self) -> str:
        # Host, port and database only: the URL's password stays out of every repr.
        kw = self._kwargs
        if "path" in kw:
            where = f"unix://{kw['path']}"
        else:
            where = f"{kw.get('host', '?')}:{kw.get('port', '?')}"
        return f"RedisTokenStore({where}, db={kw.get('db', 0)})"

    # -- blocking helpers, run in a worker thread ----------------------------------------

    def _try_lease(self, lease_key: str, owner: str, key: str) -> tuple[bool, bytes | None]:
        """Try to take the lease and read the token, in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        pipe.set(lease_key, owner, nx=True, px=max(1, math.ceil(self.lease_ttl * 1000)))
        # Reading the lease back covers a SET that succeeded but whose reply was lost and
        # retried: the retry fails NX, yet the lease is ours.
        pipe.get(lease_key)
        pipe.get(key)
        created, holder, value = pipe.execute()
        return bool(created) or holder == owner.encode(), cast("bytes | None", value)

    def _release(self, lease_key: str, owner: str) -> None:
        self._compare_and_delete(keys=[lease_key], args=[owner])

    def _renew_until(self, stop: threading.Event, lease_key: str, owner: str) -> None:
        """Extend the lease every third of its TTL until ``stop`` is set or it is lost.

        A fetch may outlast one lease (retries, up to 10 s per attempt, against a 15 s
        default lease): without renewal the lease would expire mid-fetch and a waiter would
        fetch too. A Redis error skips one renewal; two more chances remain before expiry.

        Renewal stops after ``wait_timeout``: by then every waiter has given up on the lease
        and fetches alone, so a holder that hangs (not dies) would only keep newcomers
        waiting; its lease then expires after one more ``lease_ttl``.
        """
        ttl_ms = max(1, math.ceil(self.lease_ttl * 1000))
        until = time.monotonic() + self.wait_timeout
        while not stop.wait(self.lease_ttl / 3) and time.monotonic() < until:
            try:
                renewed = self._compare_and_pexpire(keys=[lease_key], args=[owner, ttl_ms])
            except Exception:  # noqa: S112 - retried at the next interval
                continue
            if not renewed:
                return  # lost (it expired anyway): never extend a successor's lease


class _Lease:
    """The fetch lease on one key: taken by polling, released only by its owner."""

    def __init__(self, store: RedisTokenStore, key: str) -> None:
        self._store = store
        self._key = key
        self._lease_key = f"{key}:lease"
        self._owner: str | None = None
        self._stop_renewing: threading.Event | None = None

    async def __aenter__(self) -> None:
        store = self._store
        # Random per attempt: the lease names its holder, so only the holder releases it.
        owner = secrets.token_hex(16)
        deadline = anyio.current_time() + store.wait_timeout
        # What the client read just before asking for the lease (it found no usable token
        # there). Compared with the first poll too: a token written in between (the holder
        # writes, then releases) would otherwise count as "seen", and this waiter would
        # queue for the lease behind every other one just to read that token. (Clients in
        # one process sharing this store may race on it; the worst case is the one below:
        # an early return to a token this client cannot use, so one extra fetch.)
        seen: object = store._last_read.get(self._key, _UNSEEN)
        while True:
            try:
                acquired, value = await anyio.to_thread.run_sync(
                    store._try_lease, self._lease_key, owner, self._key
                )
            except BaseException:
                # The SET may have reached Redis before the reply was lost: release it, or
                # the fleet would wait out a lease nobody holds.
                self._owner = owner
                await self._release(quiet=True)
                raise
            if acquired:
                self._owner = owner
                self._start_renewing(owner)
                return
            if seen is _UNSEEN:
                seen = value
            elif value is not None and value != seen:
                # The holder has written a new token: go and read it without the lease,
                # instead of queueing for the lease one process at a time. (If this process
                # cannot use that token, say after a secret rotation, it fetches without
                # the lease: one extra fetch, never a wrong token.)
                return
            if anyio.current_time() >= deadline:
                raise TimeoutError(
                    f"Waited {store.wait_timeout:.0f} s for the token fetch lease that "
                    "another process holds in Redis; fetching without it."
                )
            await anyio.sleep(store.poll_interval * random.uniform(0.5, 1.5))  # noqa: S311

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._release(quiet=False)

    def _start_renewing(self, owner: str) -> None:
        # A daemon thread, not a task: the lease outlives __aenter__, so a task would need a
        # task group spanning __aenter__ and __aexit__, which anyio's cancel scopes forbid.
        # The thread makes its blocking Redis calls off the event loop on asyncio and trio
        # alike, and dies with the process: a killed holder's lease still expires.
        stop = self._stop_renewing = threading.Event()
        threading.Thread(
            target=self._store._renew_until,
            args=(stop, self._lease_key, owner),
            name="entur-oauth-lease-renewal",
            daemon=True,
        ).start()
        # A lease dropped without __aexit__ (its task's event loop torn down) stops renewing
        # when it is collected, and then expires like a dead holder's.
        weakref.finalize(self, stop.set)

    async def _release(self, *, quiet: bool) -> None:
        # Stop renewing before releasing, so no renewal runs after the lease is gone. (A
        # renewal already in flight only extends a lease that is still ours.)
        stop, self._stop_renewing = self._stop_renewing, None
        if stop is not None:
            stop.set()
        owner, self._owner = self._owner, None
        if owner is None:
            return
        # Shielded: a cancelled holder must still hand the lease back, or every other
        # process waits until it expires. Bounded by the client's socket timeout.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self._store._release, self._lease_key, owner)
            except Exception:
                if not quiet:
                    raise  # the manager logs it; the lease expires on its own
