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

Topologies: a single Redis, a Sentinel-managed primary (any ``redis.Redis``, such as
``Sentinel.master_for``) or a Redis Cluster (``RedisCluster``, or one URL or several with
``cluster=True``). The token and its lease share a hash tag, so each command, pipeline and
script touches one slot. Through a failover, a waiter keeps polling past Redis errors (the
holder's token, or its lease's expiry, then shows on the new primary); only a process
that finds Redis down before it waits fetches on its own.

Every call honours its caller's cancellation (``abandon_on_cancel``): a timeout around a
call returns on time even while Redis hangs. The abandoned worker thread ends on its own
within the client's socket timeout (which the store therefore requires); see
:meth:`_Lease._poll` for why such a thread can never leave a lease behind.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import anyio

from ._clock import Clock, SystemClock
from ._errors import ConfigurationError
from ._policy import MAX_SECONDS, check_clock, check_positive_seconds

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.commands.core import Script
    from redis.connection import parse_url
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisClusterException, RedisError
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

#: How long a cancelled caller waits for its lease release (shielded) before leaving it
#: to its worker thread: a Redis that answers does so in milliseconds.
_RELEASE_GRACE = 0.5

logger = logging.getLogger("entur_oauth")


class RedisTokenStore:
    """Tokens shared by a fleet of processes on many hosts through Redis.

    Values are sealed (AES-GCM, key derived from the client secret) before they reach
    Redis, so a reader of the key learns nothing usable. Keys are
    ``entur-oauth:{<hash of token URL, audience, client id>}`` and, while a fetch runs,
    ``...:lease``; the braces are a Redis Cluster hash tag, so both keys of one client live
    in one hash slot and every command and script touches a single slot.

    When Redis is down or slow every call fails within ``socket_timeout``, and the client
    logs a warning and uses a token of its own: Redis saves token requests, it is never
    needed to make one. A process already waiting for another's fetch when Redis fails
    (a Sentinel or Cluster failover) keeps waiting, up to ``wait_timeout``.

    Args:
        url_or_client: A Redis URL (``redis://``, ``rediss://``, ``unix://``); with
            ``cluster=True`` a list of URLs, one per start-up node; or a synchronous
            client created with ``decode_responses=False`` and a ``socket_timeout``:
            ``redis.Redis`` (also from ``redis.sentinel.Sentinel(...).master_for(name)``)
            or ``redis.cluster.RedisCluster``; its own timeouts and retries then apply.
        cluster: The URL (or each URL of the list) names a node of a Redis Cluster
            (``redis.cluster.RedisCluster`` is used, trying the nodes in turn until one
            answers; it connects on first use, so a cluster that is down when the store
            is built costs warnings, not a crash).
        lease_ttl: Seconds a fetch lease lasts unless renewed; its holder renews it every
            third of that while its fetch runs (for up to ``wait_timeout``). It is how long
            the others wait if the holder dies mid-fetch.
        wait_timeout: Longest wait, in seconds, for another process's fetch before this
            one fetches on its own (default: twice ``lease_ttl``).
        poll_interval: Seconds between checks for the lease or the token while waiting.
        socket_timeout: Connect and read timeout, in seconds, for a client made from a URL.
        clock: The clock the lease wait runs on (``wait_timeout``, ``poll_interval``);
            the default is the real one. Tests pass the client's fake clock. The lease
            itself lives in Redis, on Redis's clock.

    Raises:
        ConfigurationError: The URL or client is unusable (also a client without a
            ``socket_timeout``), or an option is out of range.
    """

    def __init__(
        self,
        url_or_client: str | Sequence[str] | redis.Redis | RedisCluster,
        *,
        cluster: bool = False,
        lease_ttl: float = 15.0,
        wait_timeout: float | None = None,
        poll_interval: float = 0.05,
        socket_timeout: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(cluster, bool):
            # A truthy string ("no") would otherwise select cluster mode.
            raise ConfigurationError(
                f"RedisTokenStore: cluster must be True or False, not {cluster!r}."
            )
        lease_ttl = check_positive_seconds("RedisTokenStore: lease_ttl", lease_ttl)
        if wait_timeout is None:
            wait_timeout = min(2 * lease_ttl, MAX_SECONDS)
        wait_timeout = check_positive_seconds("RedisTokenStore: wait_timeout", wait_timeout)
        poll_interval = check_positive_seconds("RedisTokenStore: poll_interval", poll_interval)
        socket_timeout = check_positive_seconds("RedisTokenStore: socket_timeout", socket_timeout)
        check_clock("RedisTokenStore", clock)
        self.clock: Clock = SystemClock() if clock is None else clock
        self._connect, self._where = _connector(url_or_client, cluster, socket_timeout)
        # A client made from a URL is the store's own, and is closed when the store is
        # collected: redis-py 5 keeps a connection's socket in a reference cycle, which the
        # garbage collector would finalize with a ResourceWarning (an error under -W error).
        self._owns_client = not isinstance(url_or_client, redis.Redis | RedisCluster)
        self._connected: _Connected | None = None
        self._connect_guard = threading.Lock()
        # The value each key held at this store's latest get(): a waiter for the lease that
        # then finds another value knows a new token was written since (see _Lease).
        self._last_read: dict[str, bytes | None] = {}
        # The token a waiter's last poll found (and when), handed to the get() that follows
        # instead of a second round trip: that read would fail in a failover as the polls
        # do, and the process would then fetch a token of its own.
        self._polled: dict[str, tuple[bytes, float]] = {}
        self.lease_ttl = lease_ttl
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval

    def _redis(self) -> _Connected:
        """The client and its scripts, made on first use (in a worker thread: a cluster
        client connects when it is made)."""
        with self._connect_guard:
            if self._connected is None:
                client = self._connect()
                if self._owns_client:
                    weakref.finalize(self, _close_quietly, client)
                self._connected = _Connected(
                    client,
                    client.register_script(_COMPARE_AND_DELETE),
                    client.register_script(_COMPARE_AND_PEXPIRE),
                )
            return self._connected

    # -- TokenStore ----------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """Return the sealed token stored under ``key``, or ``None``.

        Raises:
            redis.RedisError: Redis is unreachable, slow or refused the command.
        """
        polled = self._polled.pop(key, None)
        # Fresh only: the manager reads right after the lease returns (a leftover of a read
        # that never came must not stand in for Redis later).
        if polled is not None and time.monotonic() - polled[1] < 1.0:
            value: bytes | None = polled[0]
        else:
            # Abandoned on cancel, as every call here: the thread ends within the client's
            # socket timeout, and a read changes nothing.
            value = await anyio.to_thread.run_sync(self._get, key, abandon_on_cancel=True)
        self._last_read[key] = value
        return value

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        """Store ``value`` under ``key``; Redis drops it after ``ttl`` seconds.

        Raises:
            redis.RedisError: Redis is unreachable, slow or refused the command.
        """
        # An abandoned write may still land, within the socket timeout: it is the token
        # this process just fetched, its expiry sealed inside, so it is never served stale.
        await anyio.to_thread.run_sync(self._set, key, value, ttl, abandon_on_cancel=True)

    async def delete(self, key: str, *, expected: bytes | None = None) -> None:
        """Remove ``key``; with ``expected``, only while it still holds that value (in Lua).

        Raises:
            redis.RedisError: Redis is unreachable, slow or refused the command.
        """
        # An abandoned compare-and-delete that lands late deletes only the value it names.
        await anyio.to_thread.run_sync(self._delete, key, expected, abandon_on_cancel=True)

    def lock(self, key: str) -> _Lease:
        """Return the fleet-wide fetch lease for ``key``."""
        return _Lease(self, key)

    def __repr__(self) -> str:
        return f"RedisTokenStore({self._where})"

    # -- blocking helpers, run in a worker thread ----------------------------------------

    def _get(self, key: str) -> bytes | None:
        return cast("bytes | None", self._redis().client.get(slot_keys(key)[0]))

    def _set(self, key: str, value: bytes, ttl: float) -> None:
        self._redis().client.set(slot_keys(key)[0], value, px=max(1, math.ceil(ttl * 1000)))

    def _delete(self, key: str, expected: bytes | None) -> None:
        redis_key = slot_keys(key)[0]
        if expected is None:
            self._redis().client.delete(redis_key)
        else:
            self._redis().compare_and_delete(keys=[redis_key], args=[expected])

    def _try_lease(self, key: str, owner: str) -> tuple[bool, bytes | None]:
        """Try to take the lease and read the token, in one round trip (one slot)."""
        token_key, lease_key = slot_keys(key)
        pipe = self._redis().client.pipeline(transaction=False)
        pipe.set(lease_key, owner, nx=True, px=max(1, math.ceil(self.lease_ttl * 1000)))
        # Reading the lease back covers a SET that succeeded but whose reply was lost and
        # retried: the retry fails NX, yet the lease is ours.
        pipe.get(lease_key)
        pipe.get(token_key)
        created, holder, value = pipe.execute()
        return bool(created) or holder == owner.encode(), cast("bytes | None", value)

    def _release(self, key: str, owner: str) -> None:
        self._redis().compare_and_delete(keys=[slot_keys(key)[1]], args=[owner])

    def _release_quietly(self, key: str, owner: str) -> None:
        """Release in a worker thread that nobody waits for; failing, the lease expires."""
        try:
            self._release(key, owner)
        except Exception as exc:
            logger.debug(
                "lease release failed (%s); it expires within lease_ttl", type(exc).__name__
            )

    def _renew(self, key: str, owner: str) -> bool:
        """Extend the lease to a full ``lease_ttl`` if ``owner`` still holds it."""
        ttl_ms = max(1, math.ceil(self.lease_ttl * 1000))
        renew = self._redis().compare_and_pexpire
        return bool(renew(keys=[slot_keys(key)[1]], args=[owner, ttl_ms]))

    def _renew_until(self, stop: threading.Event, key: str, owner: str) -> None:
        """Extend the lease every third of its TTL until ``stop`` is set or it is lost.

        A fetch may outlast one lease (retries, up to 10 s per attempt, against a 15 s
        default lease): without renewal the lease would expire mid-fetch and a waiter would
        fetch too. A Redis error skips one renewal; two more chances remain before expiry.

        Renewal stops after ``wait_timeout``: by then every waiter has given up on the lease
        and fetches alone, so a holder that hangs (not dies) would only keep newcomers
        waiting; its lease then expires after one more ``lease_ttl``.
        """
        until = time.monotonic() + self.wait_timeout
        while not stop.wait(self.lease_ttl / 3) and time.monotonic() < until:
            try:
                renewed = self._renew(key, owner)
            except Exception:  # noqa: S112 - retried at the next interval
                continue
            if not renewed:
                return  # lost (it expired anyway): never extend a successor's lease


class _Connected(NamedTuple):
    """A store's client and the scripts registered on it."""

    client: redis.Redis | RedisCluster
    compare_and_delete: Script
    compare_and_pexpire: Script


def _close_quietly(client: redis.Redis | RedisCluster) -> None:
    """Close a store's own client (its pooled sockets) when the store is collected."""
    with contextlib.suppress(Exception):  # at collection there is no one to tell
        client.close()


def slot_keys(key: str) -> tuple[str, str]:
    """Return the Redis keys (token, lease) for store key ``key``, in one hash slot.

    Redis Cluster hashes only the part of a key inside its first ``{...}``: tagging the
    hash part of ``entur-oauth:<hash>`` puts the token and its lease in one slot, so the
    lease round trip and every script run on one node.
    """
    if "{" not in key:
        prefix, colon, name = key.rpartition(":")
        key = f"{prefix}{colon}{{{name}}}"
    return key, f"{key}:lease"


def _connector(
    given: object, cluster: bool, socket_timeout: float
) -> tuple[Callable[[], redis.Redis | RedisCluster], str]:
    """Check what the store was given; return (how to get its client, where, for repr).

    Raises:
        ConfigurationError: Not a usable URL or synchronous client.
    """
    if isinstance(given, str):
        return _url_connector([given], cluster, socket_timeout)
    if isinstance(given, list | tuple) and given and all(isinstance(u, str) for u in given):
        if not cluster:
            raise ConfigurationError(
                "RedisTokenStore: several URLs name the start-up nodes of a Redis Cluster; "
                "pass cluster=True, or one URL for a single Redis."
            )
        return _url_connector(list(given), cluster, socket_timeout)
    if cluster:
        raise ConfigurationError(
            "RedisTokenStore: cluster=True applies to a URL; pass a RedisCluster client as is."
        )
    if isinstance(given, RedisCluster):
        kwargs = given.get_connection_kwargs()  # type: ignore[no-untyped-call]
        _check_decoding(kwargs)
        # The nodes' own clients hold the timeouts in effect (a missing key there means
        # redis-py's default, which differs between versions).
        nodes = given.get_nodes()  # type: ignore[no-untyped-call]
        pools = [n.redis_connection.connection_pool for n in nodes if n.redis_connection]
        _check_timeout([p.connection_kwargs for p in pools] or [kwargs], "RedisCluster(...)")
        node = given.get_default_node()  # type: ignore[no-untyped-call]
        where = f"cluster {node.host}:{node.port}" if node is not None else "cluster"
        return lambda: given, where
    if isinstance(given, redis.Redis):
        pool = given.connection_pool
        _check_decoding(pool.connection_kwargs)
        service = getattr(pool, "service_name", None)
        if service is not None:  # a Sentinel-managed primary: its address changes
            _check_timeout([pool.connection_kwargs], "master_for(name, ...)")
            manager = getattr(pool, "sentinel_manager", None)
            sentinels = getattr(manager, "sentinels", [])
            _check_timeout(
                [s.connection_pool.connection_kwargs for s in sentinels], "Sentinel(...)"
            )
            return lambda: given, f"sentinel {service}"
        _check_timeout([pool.connection_kwargs], "redis.Redis(...)")
        return lambda: given, _describe(pool.connection_kwargs)
    hint = (
        " redis.asyncio clients run on asyncio only; pass the synchronous redis.Redis or "
        "redis.cluster.RedisCluster (this store calls it from a worker thread)."
        if type(given).__module__.startswith("redis.asyncio")
        else ""
    )
    raise ConfigurationError(
        "RedisTokenStore takes a Redis URL, a redis.Redis or a redis.cluster.RedisCluster "
        f"client, not {type(given).__name__}.{hint}"
    )


def _check_timeout(kwargs_list: list[dict[str, Any]], made_by: str) -> None:
    """Refuse a client that would wait for ever on a Redis that stops answering.

    Refused rather than given the store's ``socket_timeout``: a client handed in is often
    the application's own, which may run blocking commands (BLPOP, XREAD BLOCK) that a
    timeout set behind its back would break; and a timeout is what ends a worker thread
    that a cancelled caller left behind.
    """
    if any(kwargs.get("socket_timeout") is None for kwargs in kwargs_list):
        raise ConfigurationError(
            f"RedisTokenStore: the Redis client has no socket_timeout, so a Redis that stops "
            f"answering would hang its calls (and their threads) for ever. Create it with "
            f"{made_by.removesuffix('...)')}socket_timeout=1.0) (for Sentinel on both "
            "Sentinel(...) and master_for(...)), or pass a URL and the store's "
            "socket_timeout."
        )


def _url_connector(
    urls: list[str], cluster: bool, socket_timeout: float
) -> tuple[Callable[[], redis.Redis | RedisCluster], str]:
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        # One immediate retry on a dropped connection (a pooled socket that Redis closed on
        # restart); none on timeouts, so a slow Redis fails fast and the client falls back
        # to its own fetch.
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    }
    parsed = [_parse_url(url) for url in urls]
    url, kwargs = urls[0], parsed[0]
    if not cluster:
        # redis-py < 6 retries only the errors named in retry_on_error, whatever the
        # Retry object supports; later versions take the Retry's errors.
        client = redis.Redis.from_url(url, retry_on_error=[RedisConnectionError], **options)
        return lambda: client, _describe(client.connection_pool.connection_kwargs)
    for each in parsed:
        if "path" in each or each.get("db", 0) != 0:
            raise ConfigurationError(
                "RedisTokenStore: a Redis Cluster is reached over TCP and has database 0 "
                "only; use redis://[:password@]host:port with cluster=True."
            )
        if _without_address(each) != _without_address(kwargs):
            raise ConfigurationError(
                "RedisTokenStore: the cluster URLs differ in more than host and port; give "
                "every node the same scheme, user, password and options."
            )
    # The first URL's node, then the others, in order: redis-py asks each in turn for the
    # slot map until one answers, so a dead first node (after a failover) costs a refused
    # connection, not the shared token.
    others = [
        ClusterNode(each["host"], each.get("port", 6379))  # type: ignore[no-untyped-call]
        for each in parsed[1:]
    ]
    # Connecting reads the cluster's slot map, so it waits for the first use.
    return (
        lambda: RedisCluster.from_url(url, startup_nodes=others, **options),
        f"cluster {kwargs.get('host', '?')}:{kwargs.get('port', 6379)}"
        + (f" (+{len(others)} start-up nodes)" if others else ""),
    )


def _parse_url(url: str) -> dict[str, Any]:
    try:
        kwargs: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        # Not the URL itself in the message: it may hold a password.
        raise ConfigurationError(
            "RedisTokenStore: not a Redis URL; use redis://[:password@]host:port/db, "
            "rediss://... for TLS, or unix:///path/to/socket."
        ) from None
    _check_decoding(kwargs)
    db = urlsplit(url).path.strip("/") if not url.startswith("unix:") else ""
    if db and not db.isdigit():
        # redis-py would quietly use database 0 for it.
        raise ConfigurationError(
            f"RedisTokenStore: the database in the URL must be a number, not {db[:20]!r}; "
            "use redis://host:port/0."
        )
    return kwargs


def _without_address(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in ("host", "port")}


def _check_decoding(kwargs: dict[str, Any]) -> None:
    if kwargs.get("decode_responses"):
        raise ConfigurationError(
            "RedisTokenStore needs a client with decode_responses=False: tokens are "
            "stored as encrypted bytes."
        )


def _describe(kwargs: dict[str, Any]) -> str:
    # Host, port and database only: the URL's password stays out of every repr.
    if "path" in kwargs:
        where = f"unix://{kwargs['path']}"
    else:
        where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    return f"{where}, db={kwargs.get('db', 0)}"


class _Lease:
    """The fetch lease on one key: taken by polling, released only by its owner."""

    def __init__(self, store: RedisTokenStore, key: str) -> None:
        self._store = store
        self._key = key
        self._owner: str | None = None
        self._stop_renewing: threading.Event | None = None
        self._warned = False

    async def __aenter__(self) -> None:
        store = self._store
        # Random per attempt: the lease names its holder, so only the holder releases it.
        owner = secrets.token_hex(16)
        clock = store.clock
        deadline = clock.monotonic() + store.wait_timeout
        # What the client read just before asking for the lease (it found no usable token
        # there). Compared with the first poll too: a token written in between (the holder
        # writes, then releases) would otherwise count as "seen", and this waiter would
        # queue for the lease behind every other one just to read that token. (Clients in
        # one process sharing this store may race on it; the worst case is the one below:
        # an early return to a token this client cannot use, so one extra fetch.)
        seen: object = store._last_read.get(self._key, _UNSEEN)
        waiting = False
        while True:
            polled = await self._poll(owner, tolerate=waiting, deadline=deadline)
            if polled is not None:
                acquired, value = polled
                if acquired:
                    self._owner = owner
                    self._start_renewing(owner)
                    return
                waiting = True
                if seen is _UNSEEN:
                    seen = value
                elif value is not None and value != seen:
                    # The holder has written a new token: go and read it without the
                    # lease, instead of queueing for the lease one process at a time. (If
                    # this process cannot use that token, say after a secret rotation, it
                    # fetches without the lease: one extra fetch, never a wrong token.)
                    store._polled[self._key] = (value, time.monotonic())
                    return
            if clock.monotonic() >= deadline:
                raise TimeoutError(
                    f"Waited {store.wait_timeout:.0f} s for the token fetch lease that "
                    "another process holds in Redis; fetching without it."
                )
            await clock.sleep(store.poll_interval * random.uniform(0.5, 1.5))  # noqa: S311

    async def _poll(
        self, owner: str, *, tolerate: bool, deadline: float
    ) -> tuple[bool, bytes | None] | None:
        """One try for the lease; ``None`` for a Redis error tolerated while waiting.

        A waiter that saw another process hold the lease keeps waiting through Redis
        errors until its deadline: a Sentinel or Cluster failover takes seconds, and the
        holder's token (or its lease's expiry) is then found on the new primary. Were every
        waiter to fetch alone instead, one failover would cost the fleet a token each.
        """
        store, key = self._store, self._key
        # The caller may leave (cancelled) while the thread runs; the thread then goes on,
        # abandoned, and must not leave the lease taken: whichever of the two ends last
        # releases it, decided under this lock.
        guard = threading.Lock()
        holding = left = False

        def attempt() -> tuple[bool, bytes | None]:
            nonlocal holding
            try:
                acquired, value = store._try_lease(key, owner)
            except BaseException:
                # The SET may have reached Redis before its reply was lost (a timeout, a
                # dropped connection): release it here, or the fleet would wait out a
                # lease nobody holds.
                store._release_quietly(key, owner)
                raise
            with guard:
                holding = acquired
                gone = left
            if gone and acquired:
                store._release_quietly(key, owner)  # taken after its caller left
            return acquired, value

        try:
            return await anyio.to_thread.run_sync(attempt, abandon_on_cancel=True)
        except BaseException as exc:
            with guard:
                left = True
                taken = holding
            if taken:
                # Cancelled after the thread took the lease, before its answer came back.
                self._owner = owner
                await self._release(quiet=True)
            if not (tolerate and isinstance(exc, (RedisError, RedisClusterException))):
                raise
            if store.clock.monotonic() >= deadline:
                raise
            if not self._warned:
                self._warned = True
                logger.warning(
                    "Redis failed while another process holds the token fetch lease (%s); "
                    "still waiting for its token, up to %.0f s in all",
                    type(exc).__name__,
                    self._store.wait_timeout,
                )
            return None

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
            args=(stop, self._key, owner),
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
        # process waits until it expires. But a cancelled caller waits only a moment
        # (_RELEASE_GRACE); past it the release goes on in its abandoned thread, which ends
        # within the client's socket timeout (or the lease expires), and the caller's own
        # timeout holds. A caller not cancelled waits for it, as for any call.
        outer = anyio.current_effective_deadline()
        deadline = max(outer, anyio.current_time()) + _RELEASE_GRACE
        with anyio.CancelScope(shield=True, deadline=deadline):
            try:
                await anyio.to_thread.run_sync(
                    self._store._release, self._key, owner, abandon_on_cancel=True
                )
            except Exception:
                if not quiet:
                    raise  # the manager logs it; the lease expires on its own
