"""What the token lifecycle reports: log records always, OpenTelemetry when it is installed.

Every event is one function here, called from the one place it happens, and goes to two
sinks:

* a record on the ``entur_oauth`` logger with a stable ``event`` name (``record.event``)
  and the event's attributes as record attributes of the same names
  (``getattr(record, "entur_oauth.reason")``): DEBUG for the common path, INFO or
  WARNING for what an operator must see;
* OpenTelemetry, through the API only (a meter and a tracer named ``entur_oauth``; a
  library never configures an SDK or exporter), and only if ``opentelemetry-api`` is
  installed (``entur-oauth[otel]``). It is imported when the first client with
  credentials is built, never by ``import entur_oauth``.

Nothing here runs per API request except for a 401, 403 or 408: the events are per token
round, per token request, per store operation and per caller that waited for a token.

Why a token is requested is known far from where the request is made (the bearer's 401,
``fetch_token()``, the refresh windows are in the manager; the request in
:class:`RetryingFetch`, behind the shared store): the manager works out the reason when it
starts a round (:func:`reason_for`) and :func:`round_started` puts the :class:`Round` in a
context variable for the rest of the round, the way OpenTelemetry carries its own context.
The store's and the retrying fetch's events read it there, so their signatures carry
nothing for telemetry.

The providers are looked up on each event (``metrics.get_meter_provider()``), so a provider
set after the client was built is used, and tests may give their own; the instruments are
made once per provider. Never a secret, a token or a body in any attribute.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from contextlib import suppress
from contextvars import ContextVar
from contextvars import Token as VarToken
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter
    from opentelemetry.trace import Span, Tracer

    from ._clock import Clock
    from ._token import Token

__all__ = [
    "ADVISORY",
    "AFTER_401",
    "AFTER_408",
    "FIRST",
    "FORCED",
    "MANDATORY",
    "Labels",
    "Round",
    "api_error",
    "lease",
    "reason_for",
    "round_ended",
    "round_started",
    "store_fallback",
    "store_lookup",
    "storm_guard_kept",
    "token_request",
    "token_request_failed",
    "waited",
    "watch",
]

logger = logging.getLogger("entur_oauth")

NAME: Final = "entur_oauth"

# Why a token round was started (attribute ``entur_oauth.reason``).
FIRST: Final = "first"  # no token yet
ADVISORY: Final = "advisory"  # renewal in the advisory window (requests go on meanwhile)
MANDATORY: Final = "mandatory"  # renewal in the mandatory window, or expired: requests wait
AFTER_401: Final = "after_401"  # the API rejected the token
AFTER_408: Final = "after_408"  # the token expired while the API processed a request
FORCED: Final = "forced"  # await client.fetch_token()

# Attribute names: OpenTelemetry's semantic conventions where one exists.
STATUS: Final = "http.response.status_code"
ERROR_TYPE: Final = "error.type"
SERVER: Final = "server.address"
ENVIRONMENT: Final = "entur_oauth.environment"
REASON: Final = "entur_oauth.reason"
OUTCOME: Final = "entur_oauth.outcome"
ATTEMPT: Final = "entur_oauth.attempt"
SOURCE: Final = "entur_oauth.token.source"
ROLE: Final = "entur_oauth.wait.role"
STORE_KIND: Final = "entur_oauth.store.kind"
STORE_RESULT: Final = "entur_oauth.store.result"
STORE_FOUND: Final = "entur_oauth.store.found"
STORE_OPERATION: Final = "entur_oauth.store.operation"
CLIENT_ID: Final = "entur_oauth.client_id"

Attributes = dict[str, str | int]
_T = TypeVar("_T")


class Labels:
    """What every event of one client says about where it happened (none of it secret).

    Args:
        environment: The environment's name (``production``, ``staging``, ...).
        server: The token endpoint's host.
        store: The token store's class name, ``""`` for none.
        client_id: The client id (shown on the remaining-lifetime gauge only).
    """

    # A plain class, as Round below: a dataclass costs more to import than it saves here.
    __slots__ = ("attributes", "client_id", "environment", "server", "store")

    def __init__(
        self, environment: str = "", server: str = "", store: str = "", client_id: str = ""
    ) -> None:
        self.environment = environment
        self.server = server
        self.store = store
        self.client_id = client_id
        #: The attributes every event of this client carries.
        self.attributes: Attributes = {ENVIRONMENT: environment}

    def __repr__(self) -> str:
        return f"<Labels {self.environment!r} server={self.server!r} store={self.store!r}>"


_NO_LABELS = Labels()


class Round:
    """One token round in progress: the reason, and what the store and the endpoint did."""

    __slots__ = (
        "_context",
        "_var",
        "attempt",
        "found",
        "labels",
        "reason",
        "requests",
        "span",
        "started",
    )

    def __init__(self, reason: str, labels: Labels) -> None:
        self.reason = reason
        self.labels = labels
        self.started = time.perf_counter()
        #: What the shared store held when this round had to ask the endpoint.
        self.found: str | None = None
        self.requests = 0
        self.span: Any = None
        #: The attempt in progress: (number, span, started), until it is counted.
        self.attempt: tuple[int, Any, float] | None = None
        self._var: VarToken[Round | None] | None = None
        self._context: object = None

    def __repr__(self) -> str:
        return f"<Round {self.reason} requests={self.requests}>"


_ROUND: ContextVar[Round | None] = ContextVar("entur_oauth_round", default=None)


class _Watched(Protocol):
    current: Token | None
    clock: Clock


def reason_for(*, force: bool, advisory: bool, has_token: bool, rejected: int | None) -> str:
    """Why a round starts: ``fetch_token()``, a window, a rejection, or the first token."""
    if force:
        return FORCED
    if advisory:
        return ADVISORY
    if has_token:
        return MANDATORY
    if rejected is not None:
        return AFTER_408 if rejected == 408 else AFTER_401
    return FIRST


# -- the token path --------------------------------------------------------------------


def watch(manager: _Watched, labels: Labels) -> None:
    """Report ``manager``'s token on the remaining-lifetime gauge (loads OpenTelemetry)."""
    if _api() is not None:
        _watched[manager] = labels


def round_started(reason: str, labels: Labels) -> Round:
    """A token round begins (the single flight's leader, or the refresher)."""
    current = Round(reason, labels)
    current._var = _ROUND.set(current)
    otel = _otel()
    if otel is not None:
        span = otel.tracer.start_span(
            "entur_oauth.token", attributes={**labels.attributes, REASON: reason}
        )
        current.span = span
        current._context = otel.attach(span)
    return current


def round_ended(current: Round, token: Token | None, error: Exception | None) -> None:
    """The round ends: with a token, an error, or neither (its task was cancelled)."""
    if current.attempt is not None:  # a request that ended in no decision (a bug's error)
        _request_done(current, "failed", error, None)
    if current._var is not None:
        # In another context than it was set (cannot happen in a round): nothing to undo.
        with suppress(ValueError):
            _ROUND.reset(current._var)
    outcome = "ok" if token is not None else "failed" if error is not None else "cancelled"
    source = "endpoint" if current.requests else "store"
    attributes: Attributes = {REASON: current.reason, OUTCOME: outcome}
    if token is not None:
        attributes[SOURCE] = source
    if error is not None:
        attributes[ERROR_TYPE] = type(error).__name__
    if current.span is not None:
        _end_span(current.span, current._context, attributes, error)
    if token is not None:
        _log(
            logging.DEBUG,
            "token_round",
            current.labels,
            attributes,
            "token round (%s) ended: token %s from the %s",
            current.reason,
            token.fingerprint,
            source,
        )
    elif error is not None:
        # A failed renewal is an operator's business; a failed first token or advisory
        # renewal is reported otherwise (raised to the caller; the manager's own warning).
        level = logging.INFO if current.reason in (FIRST, ADVISORY) else logging.WARNING
        _log(
            level,
            "token_round_failed",
            current.labels,
            attributes,
            "token round (%s) failed (%s)",
            current.reason,
            type(error).__name__,
        )


async def token_request(call: Callable[[int], Awaitable[_T]], attempt: int) -> _T:
    """Run ``call(attempt)``, one token request, as a span; count it if it succeeds.

    A failure is counted by :func:`token_request_failed` once the retry decision is made.
    """
    current = _ROUND.get()
    if current is None:  # a fetch outside any round (a test of RetryingFetch alone)
        return await call(attempt)
    current.requests += 1
    span = None
    otel = _otel()
    context: object = None
    if otel is not None:
        span = otel.tracer.start_span(
            "entur_oauth.token_request",
            attributes={
                **current.labels.attributes,
                SERVER: current.labels.server,
                REASON: current.reason,
                ATTEMPT: attempt,
            },
        )
        context = otel.attach(span)
    current.attempt = (attempt, span, time.perf_counter())
    try:
        result = await call(attempt)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # cancelled: no retry decision will follow
            _request_done(current, "cancelled", None, context)
        elif otel is not None:
            otel.detach(context)  # the span ends once the retry decision is made
        raise
    _request_done(current, "ok", None, context)
    return result


def token_request_failed(error: Exception, *, retried: bool) -> None:
    """The token request in progress failed; ``retried``: another attempt follows."""
    current = _ROUND.get()
    if current is not None and current.attempt is not None:
        _request_done(current, "retried" if retried else "failed", error, None)


def _request_done(current: Round, outcome: str, error: Exception | None, context: object) -> None:
    if current.attempt is None:
        return
    attempt, span, started = current.attempt
    current.attempt = None
    seconds = time.perf_counter() - started
    labels = current.labels
    attributes: Attributes = {
        **labels.attributes,
        SERVER: labels.server,
        REASON: current.reason,
        OUTCOME: outcome,
    }
    if current.found is not None:
        attributes[STORE_FOUND] = current.found
    if error is not None:
        attributes[ERROR_TYPE] = type(error).__name__
        status = getattr(error, "status_code", None)
        if isinstance(status, int):
            attributes[STATUS] = status
    otel = _otel()
    if otel is not None:
        otel.token_requests.add(1, attributes)
        otel.request_duration.record(seconds, attributes)
        if span is not None:
            _end_span(span, context, {**attributes, ATTEMPT: attempt}, error)
    level = logging.INFO if outcome == "failed" else logging.DEBUG
    _log(
        level,
        "token_request",
        labels,
        {**attributes, ATTEMPT: attempt},
        "token request %d (%s): %s in %.3f s",
        attempt,
        current.reason,
        outcome,
        seconds,
    )


def waited(
    labels: Labels,
    since: float | None,
    now: float,
    *,
    led: bool,
    token: Token | None,
    error: Exception | None,
) -> None:
    """A caller that had no usable token waited for a round, from ``since`` to ``now``
    (the manager's clock); ``led``: it started the round itself, else it joined one."""
    if since is None or (token is None and error is None):
        return  # not a request's wait (fetch_token), or the round was cancelled: go round
    attributes: Attributes = {
        **labels.attributes,
        ROLE: "led" if led else "joined",
        OUTCOME: "ok" if token is not None else "failed",
    }
    seconds = max(now - since, 0.0)
    otel = _otel()
    if otel is not None:
        otel.wait_duration.record(seconds, attributes)
    _log(
        logging.DEBUG,
        "token_wait",
        labels,
        attributes,
        "a request waited %.3f s for a token",
        seconds,
    )


# -- the shared store ------------------------------------------------------------------


def store_lookup(found: str | None) -> None:
    """The shared store was read: ``None`` for a usable token (a hit), else why not:
    ``"none"``, ``"unusable"`` (expired, corrupt, another secret), ``"stale"`` (in its
    refresh window, the one being renewed, or a wall clock that moved), ``"rejected"``."""
    current = _ROUND.get()
    labels = current.labels if current is not None else _NO_LABELS
    attributes: Attributes = {**labels.attributes, STORE_KIND: labels.store}
    attributes[STORE_RESULT] = "hit" if found is None else "miss"
    if found is not None:
        attributes[STORE_FOUND] = found
        if current is not None:
            current.found = found
    otel = _otel()
    if otel is not None:
        otel.store_lookups.add(1, attributes)
    _log(
        logging.DEBUG,
        "store_lookup",
        labels,
        attributes,
        "token store %s: %s",
        attributes[STORE_RESULT],
        found or "usable token",
    )


def lease(won: bool) -> None:
    """The store's fetch lock was taken: ``won`` (this client fetches), or after waiting
    for another client's fetch, whose token it then found (waited)."""
    current = _ROUND.get()
    labels = current.labels if current is not None else _NO_LABELS
    result = "won" if won else "waited"
    attributes: Attributes = {**labels.attributes, STORE_KIND: labels.store, STORE_RESULT: result}
    otel = _otel()
    if otel is not None:
        otel.store_leases.add(1, attributes)
    _log(logging.DEBUG, "store_lease", labels, attributes, "token store lease %s", result)


def store_fallback(operation: str, error: Exception, level: int = logging.WARNING) -> None:
    """A store operation failed; the client goes on with its own token (logged at ``level``:
    a WARNING for the first fault of an outage)."""
    current = _ROUND.get()
    labels = current.labels if current is not None else _NO_LABELS
    attributes: Attributes = {
        **labels.attributes,
        STORE_KIND: labels.store,
        STORE_OPERATION: operation,
        ERROR_TYPE: type(error).__name__,
    }
    if operation in ("read", "lock") and current is not None:
        current.found = "unreachable"
    otel = _otel()
    if otel is not None:
        otel.store_fallbacks.add(1, attributes)
    # Only the exception type and message: store errors never carry token text.
    _log(
        level,
        "store_fallback",
        labels,
        attributes,
        "token store %s failed (%s: %s); continuing with this process's own token",
        operation,
        type(error).__name__,
        error,
    )


# -- API answers (per API request, but only for a 401, 403 or 408) ----------------------


def api_error(status: int, error: type[Exception], environment: str, server: str) -> None:
    """An Entur API's 401/403/408 is raised as ``error``."""
    attributes: Attributes = {
        ENVIRONMENT: environment,
        STATUS: status,
        ERROR_TYPE: error.__name__,
        SERVER: server,
    }
    otel = _otel()
    if otel is not None:
        otel.api_errors.add(1, attributes)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "API answered %d: raising %s",
            status,
            error.__name__,
            extra={"event": "api_error", **attributes},
        )


def storm_guard_kept(status: int, environment: str) -> None:
    """The API rejected a token that replaced a rejected one moments ago: no new token is
    requested (the 401-storm guard), the request fails."""
    attributes: Attributes = {ENVIRONMENT: environment, STATUS: status}
    otel = _otel()
    if otel is not None:
        otel.storm_guard.add(1, attributes)
    logger.info(
        "API answered %d to a token fetched moments ago to replace a rejected one; not "
        "requesting another (check the client's access to this API)",
        status,
        extra={"event": "storm_guard", **attributes},
    )


# -- sinks -----------------------------------------------------------------------------


def _log(
    level: int, event: str, labels: Labels, attributes: Attributes, message: str, *args: object
) -> None:
    if logger.isEnabledFor(level):
        logger.log(
            level,
            message,
            *args,
            # Flat, under the attribute names: OpenTelemetry's logging handler turns a
            # record's extra fields into log attributes, and takes no nested mapping.
            extra={"event": event, **labels.attributes, **attributes},
        )


def _end_span(
    span: Span, context: object, attributes: Attributes, error: BaseException | None
) -> None:
    otel = _otel()
    if otel is None:  # the provider went away meanwhile: end it all the same
        span.end()
        return
    span.set_attributes(attributes)
    if error is not None:
        otel.set_error(span, error)
    otel.detach(context)
    span.end()


class _OTel:
    """The instruments of one meter provider, and the tracer of the current tracer provider."""

    def __init__(self, meter: Meter, api: _API) -> None:
        self._api = api
        #: The tracer of the tracer provider current at the last look-up (set by _otel).
        self.tracer: Tracer
        self.tracer_provider: object = None
        self.token_requests: Counter = meter.create_counter(
            "entur_oauth.token.requests",
            unit="{request}",
            description="Token requests sent, by reason and outcome.",
        )
        self.request_duration: Histogram = meter.create_histogram(
            "entur_oauth.token.request.duration",
            unit="s",
            description="How long each token request took.",
        )
        self.wait_duration: Histogram = meter.create_histogram(
            "entur_oauth.token.wait.duration",
            unit="s",
            description="How long callers without a usable token waited for one.",
        )
        self.store_lookups: Counter = meter.create_counter(
            "entur_oauth.store.lookups",
            unit="{lookup}",
            description="Shared token store reads: hit or miss (and what it held).",
        )
        self.store_leases: Counter = meter.create_counter(
            "entur_oauth.store.leases",
            unit="{lease}",
            description="Shared store fetch locks taken: won (fetched) or waited.",
        )
        self.store_fallbacks: Counter = meter.create_counter(
            "entur_oauth.store.fallbacks",
            unit="{operation}",
            description="Store operations that failed; the client went on without them.",
        )
        self.api_errors: Counter = meter.create_counter(
            "entur_oauth.api.errors",
            unit="{response}",
            description="Entur API answers 401/403/408 raised as typed errors.",
        )
        self.storm_guard: Counter = meter.create_counter(
            "entur_oauth.storm_guard.kept",
            unit="{response}",
            description="401/408 answers the storm guard kept from becoming token requests.",
        )
        meter.create_observable_gauge(
            "entur_oauth.token.remaining",
            callbacks=[_observe_remaining],
            unit="s",
            description="Seconds until the current token expires.",
        )

    def attach(self, span: Span) -> object:
        return self._api.context.attach(self._api.trace.set_span_in_context(span))

    def detach(self, context: object) -> None:
        if context is not None:
            self._api.context.detach(context)

    def set_error(self, span: Span, error: BaseException) -> None:
        trace = self._api.trace
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))


class _API:
    """The OpenTelemetry API modules, once imported."""

    def __init__(self) -> None:
        from opentelemetry import context, metrics, trace

        self.context = context
        self.metrics = metrics
        self.trace = trace
        self.Observation = metrics.Observation


# The process's telemetry state: OpenTelemetry's own providers are process-wide, so the
# instruments made for them are too (made once per provider; weak, so a test's provider
# and its instruments go away with it), and so is the set of clients whose token the
# gauge reports (weak: a client that is gone is not reported).
_loaded: list[_API | None] = []
_instruments: weakref.WeakKeyDictionary[object, _OTel] = weakref.WeakKeyDictionary()
_watched: weakref.WeakKeyDictionary[_Watched, Labels] = weakref.WeakKeyDictionary()


def _api() -> _API | None:
    """The OpenTelemetry API if it is installed (imported on the first call only)."""
    if not _loaded:
        try:
            _loaded.append(_API())
        except ImportError:
            _loaded.append(None)
    return _loaded[0]


def _otel() -> _OTel | None:
    api = _api()
    if api is None:
        return None
    provider = api.metrics.get_meter_provider()
    found = _instruments.get(provider)
    if found is None:
        found = _instruments[provider] = _OTel(provider.get_meter(NAME, _release()), api)
    tracer_provider = api.trace.get_tracer_provider()
    if found.tracer_provider is not tracer_provider:
        # Set or replaced independently of the meter provider: one tracer per change.
        found.tracer = tracer_provider.get_tracer(NAME, _release())
        found.tracer_provider = tracer_provider
    return found


def _release() -> str:
    from importlib.metadata import version

    return version("entur-oauth")


def _observe_remaining(options: Any) -> list[Any]:
    api = _api()
    if api is None:
        return []
    observations = []
    try:
        # The SDK may call this from its exporter's thread while a client is being built.
        watched = list(_watched.items())
    except RuntimeError:  # changed size meanwhile: this collection reports nothing
        return []
    for manager, labels in watched:
        token = manager.current
        if token is None:
            continue
        seconds = token.expires_at - manager.clock.monotonic()
        attributes = {**labels.attributes, CLIENT_ID: labels.client_id}
        observations.append(api.Observation(max(seconds, 0.0), attributes))
    return observations
