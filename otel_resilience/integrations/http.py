"""What every HTTP client integration shares; no HTTP library is imported here.

One request is one *execution* of the policy; each time the client sends it is one *attempt*:

* **Outcomes.** A response whose status is in :attr:`HttpOptions.failure_statuses` (5xx, 408 and
  429 by default) is a failure: the attempt raises :class:`FailedResponseError` (holding the
  response, its body read), so the breaker counts it and the retry may send the request again.
  Any other response (a 404, a 400: the caller's mistake) is a success and never opens a
  breaker. A transport error (refused connection, reset, client timeout, a failed response's
  body cut off or not decodable) is a failure too. A wait for a free connection of the
  client's own pool that ran out (:class:`PoolTimeoutError`: httpx's ``PoolTimeout``,
  urllib3's ``EmptyPoolError`` with requests' ``pool_block=True``) is not the host's failure:
  the request never left the client (local congestion), so the breaker ignores it (neither
  success nor failure); the caller gets the client's error (the policy's timeout when the
  deadline ended the wait), and the retry treats it as a transport error (sent again only if
  the request may be sent twice). Nor does it count whatever else ended a wait for a
  connection: the timeout of an attempt (``RetryPolicy.attempt_timeout``, inside the breaker)
  still waiting, or aiohttp's ``ConnectionTimeoutError`` (or total timeout) ending its wait for
  a connection slot (its connect's still counts): the client tells the request, and the breaker
  asks it (:func:`~otel_resilience.integrations.sending.pool_wait_ended`). A request its client
  refuses to send (:class:`RequestNotSentError`: one the caller made that it cannot send as it
  is, an illegal header value (with every client), a URL scheme it does not speak or a streamed
  body an earlier send spent (a 307 redirect's next hop), or one under way when the client
  closed) never reached the host either: the breaker ignores
  it, the caller gets the client's error, and the request is neither retried nor re-run (the
  client would refuse it again). Nor is the error of the caller's own body, a generator (sync
  or async) that raised while the client sent it: the caller gets it (aiohttp: as the
  ``ClientConnectionError`` it raises from it), and the breaker does not count it
  (:func:`~otel_resilience.integrations.sending.body_failed`); a streamed body is sent once.
  When attempts run out on a failed response, the response is returned to the caller, as the
  client would have returned it, unless :attr:`HttpOptions.raise_on_failure` is set.
* **Failed bodies.** A failed response's body is read in its attempt up to
  :data:`DRAIN_LIMIT` (64 KiB of the body decoded, as the caller reads it, whatever the client):
  a body that ends within it is read whole and its connection goes back to the pool. A longer
  one is not read further: its response stays open, unread,
  as it may be the last, which the caller gets whole (the rest read as the caller reads it);
  once the retry (or a recovery's re-run) goes on after it, it is closed, its connection not reused
  (:meth:`HttpRetryOn.dropped`), so a host answering errors with huge bodies costs each
  attempt the retry drops 64 KiB and a chunk, not the body; a compressed one (a gzip body
  of 64 KiB decodes to 64 MB; one gzipped twice, each layer stepped through; a brotli or zstd
  one, a bounded piece at a time) is decoded no further than that either.
* **Safe retries.** Only requests that may be sent twice are retried: an idempotent method
  (:data:`IDEMPOTENT_METHODS`), or a request marked retryable (an ``Idempotency-Key`` header,
  or the client's own flag, e.g. httpx's ``extensions={RETRYABLE: True}``). A body streamed
  from an iterator or read from a file is not replayed: such a request is never retried (a body
  held in memory is: bytes, text, a form, JSON, multipart whose files are bytes or text). A
  request that is not retried still goes through the breaker, bulkhead, rate limiter and
  timeouts, and its response is never retried either, though a policy's ``retry_on_result``
  still judges it (:class:`HttpRetryOnResult`): a response it rejects is returned as a failure
  (the execution's outcome), never sent for again. Nor is it hedged: the policy's hedging
  starts no further attempt for it
  (:class:`HttpHedgeBudget`, its hedges denied with the reason ``not_replayable``), while a
  request that may be sent twice is hedged as configured. Nor does a recovery rule's RETRY or
  RESTART run it again. Retries, hedges and re-runs all ask one rule, the engine's
  :func:`~otel_resilience.engine.rerun.may_run_again`, which the integration sets per request.
* **Retry-After.** Unless the policy's ``RetryPolicy.delay_from`` says otherwise, a 429 or 503
  response's ``Retry-After`` (seconds or an HTTP date) is the next delay (:class:`HttpRetryAfter`;
  other failed statuses: :attr:`HttpOptions.retry_after_statuses`); one over ``max_delay`` or past
  the deadline stops retrying at once (the response is returned), it is never shortened.
* **Deadline.** Each attempt passes what is left of :func:`~otel_resilience.current_deadline`,
  read on the clock the deadline was computed on
  (:func:`~otel_resilience.engine.deadline.time_left`: a policy's fake clock in tests), to the
  client as its timeout (every phase capped by it), so no send outlives its policy, in
  threads too. The execution ends when the client hands the response over (its status and
  headers; a failed one's body read in its attempt, below): a success's body read after it
  (httpx's and requests' own read after the transport returned; ``client.stream``,
  ``stream=True``, aiohttp's reads) is the caller's, outside the policy and its deadline. With
  httpx and requests each read of it waits what was left of the deadline when the request was
  sent at most (the read timeout, capped), not the whole body: one that keeps coming a little
  at a time is read to its end; aiohttp's reads are bounded by the session's ``ClientTimeout``
  only. A client timeout at the deadline is the policy's timeout
  (:meth:`~otel_resilience.integrations.sending.HttpPolicy.deadline_reached`: the caller gets
  its :class:`~otel_resilience.OperationTimeoutError`); one before it, the client's own, stays
  a transport error. A response that came after the deadline (a client's read timeout
  bounds each read, not the whole answer) is a timeout, and is closed (a failed response's body,
  read in its attempt, is read until the deadline at most:
  :meth:`~otel_resilience.integrations.sending.HttpPolicy.read_failed`): every response an attempt
  got that the caller does not get (a hedge that lost, too) is closed before the request ends,
  so no connection stays out of the client's pool. One the retry dropped (a result its
  ``retry_on_result`` retried) has its body read up to :data:`DRAIN_LIMIT`, within the deadline,
  then is closed before the retry backs off (:meth:`HttpRetryOnResult.dropped`), so neither
  another request during the backoff nor the next send waits for its connection (a pool of one
  would wait until the deadline), and a body that ended within the limit leaves its keep-alive
  connection in the pool, reused (a longer one is closed unread); so is every
  response a recovery rule's RETRY or RESTART re-run drops, before its delay
  (:func:`~otel_resilience.engine.rerun.let_go`); a send started beside others by hedging closes
  none of its race. (A failed response is read and closed in its attempt; one whose body is over
  :data:`DRAIN_LIMIT` when the retry or a re-run goes on after it, as a dropped result.)
* **Per host.** Requests run through the policy handle's ``for_key(host)``: each host gets its
  own breaker, bulkhead and rate limiter, so one bad host does not open the breaker for the
  others (:attr:`HttpOptions.per_host`); at most :attr:`HttpOptions.max_hosts` idle hosts are
  kept, and the host is the execution span's ``resilience.key`` (never a metric attribute): the
  ASCII name the client sends (``xn--...`` for a non-ASCII one), with ``:port`` off the scheme's
  port, an IPv6 address in brackets and spelled one way (``[::1]:8080``).
"""

from __future__ import annotations

import inspect
import re
from abc import ABCMeta
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Protocol, TypeVar, cast

from otel_resilience.engine.rerun import RERUNNABLE, may_run_again
from otel_resilience.engine.validation import Derived, check_int, fail
from otel_resilience.manager import ResilienceConfig
from otel_resilience.patterns.hedging import HedgeBudget
from otel_resilience.patterns.hedging.config import refund_hedge, withdraw_hedge
from otel_resilience.patterns.retry import RetryPolicy, retry_after_delay

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "DRAIN_LIMIT",
    "IDEMPOTENT_METHODS",
    "RESEND_COUNT",
    "RESEND_COUNT_ATTRIBUTE",
    "RETRYABLE",
    "RETRY_AFTER_STATUSES",
    "FailedResponseError",
    "HttpHedgeBudget",
    "HttpOptions",
    "HttpRetryAfter",
    "HttpRetryOn",
    "HttpRetryOnResult",
    "PoolTimeoutError",
    "RequestNotSentError",
    "async_resend_count_hook",
    "http_config",
    "is_failure_status",
    "resend_count_hook",
]

R = TypeVar("R")
B = TypeVar("B")

if TYPE_CHECKING:
    # What HttpOptions takes for a set of statuses or methods (each field holds a frozenset).
    _Statuses = frozenset[int] | set[int] | list[int] | tuple[int, ...]
    _Methods = frozenset[str] | set[str] | list[str] | tuple[str, ...]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods retried by default (RFC 9110 idempotent methods)."""
DEFAULT_FAILURE_STATUSES: Final[frozenset[int]] = frozenset({408, 429, *range(500, 600)})
"""Statuses that are failures by default: every 5xx, 408 Request Timeout, 429 Too Many Requests."""
RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
"""Failed statuses whose ``Retry-After`` sets the next delay by default: 429 Too Many Requests
(RFC 6585) and 503 Service Unavailable (RFC 9110), the two that give it that meaning."""
RETRYABLE: Final = "otel_resilience.retryable"
"""The httpx request extension that allows (``True``) or forbids (``False``) retrying a request
whatever its method (requests: :func:`~otel_resilience.integrations.requests.mark_retryable`;
aiohttp has no such flag: an ``Idempotency-Key`` header marks its request)."""
RESEND_COUNT: Final = "otel_resilience.resend_count"
"""The request extension an attempt sets to the number of times the request was sent before,
over the whole request: a redirect's next hop copies it and an authentication flow sends the
same request again, and their sends go on from it
(:func:`~otel_resilience.integrations.sending.record_send`)."""
RESEND_COUNT_ATTRIBUTE: Final = "http.request.resend_count"
"""The OpenTelemetry HTTP client span attribute: how many times the request was sent before, for
any reason (a retry, a hedge, a redirect, an authentication challenge)."""
DEFAULT_MAX_HOSTS: Final = 256
"""How many idle hosts an integration's policy handle keeps (its ``max_keys``)."""
DRAIN_LIMIT: Final = 64 * 1024
"""Bytes of a failed response's body read in its attempt (64 KiB: any error page, and what a
response the retry drops may cost at most; a result the retry drops is read as far before it is
closed), counted decoded, as the caller reads the body
(``content``, ``text``), by every client: httpx, which reads the raw body, decodes it a few
bytes at a time to count it, and stops at 64 KiB on the wire too. A body that ends within it is
read whole and its connection goes back to the pool; reading a longer one stops once more has
come (at most one chunk of the client's more, or what one step of decoding gives), and the
response is kept open, unread, for the caller if it is the last: one the retry goes on after is
closed there, its connection not reused (:meth:`HttpRetryOn.dropped`)."""
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token (RFC 9110): what a method and a header name are; never empty, no space."""

_RETRYABLE_ERRORS: Final = RERUNNABLE
"""In a request an integration sends: the errors after which it may be sent again (``()``: none,
the request may not be sent twice), the function each attempt sends it with, and the request's
record of sends (:class:`~otel_resilience.integrations.sending.Sent`, which
:class:`HttpRetryOnResult` and :class:`HttpRetryOn` tell of a response the retry goes on
after); ``None`` outside one. The engine's rule of every re-run
(:func:`~otel_resilience.engine.rerun.may_run_again`): a retry (:class:`HttpRetryOn` for an
error, the retry itself for a result its ``retry_on_result`` rejected), a hedge
(:class:`HttpHedgeBudget`) and a recovery's RETRY/RESTART re-run all ask it."""


class _Sends(Protocol):
    """What :class:`HttpRetryOnResult` and :class:`HttpRetryOn` tell a request's record of sends.

    It is :class:`~otel_resilience.integrations.sending.Sent` (defined there, which imports this module).
    """

    def drop(self, result: object, *, read: bool = False) -> Awaitable[None] | None: ...

    def not_the_hosts(self, error: BaseException) -> bool: ...


def is_failure_status(status: int, statuses: frozenset[int] = DEFAULT_FAILURE_STATUSES) -> bool:
    """Return whether a response with ``status`` is a failure (for the breaker, and retried)."""
    return status in statuses


_POOL_WAITS: Final = frozenset({("httpx", "PoolTimeout"), ("urllib3.exceptions", "EmptyPoolError")})
"""The clients' errors that end a wait for a connection of their own pool: (module, name) of each
(no client is imported here), :class:`PoolTimeoutError`'s subclasses."""


def _named_in(subclass: type, names: frozenset[tuple[str, str]]) -> bool:
    """Whether ``subclass`` or a class it derives from is one of ``names``, ``(module, qualname)`` pairs.

    How a client's error is known without importing the client (whatever was imported first).
    """
    return any((getattr(kind, "__module__", None), kind.__qualname__) in names for kind in subclass.__mro__)


class PoolTimeoutError(Exception, metaclass=ABCMeta):
    """A client's wait for a free connection of its own pool that ran out: local congestion.

    Never raised itself: the clients' own errors are its subclasses (httpx's ``PoolTimeout``,
    urllib3's ``EmptyPoolError``, with ``pool_block=True``, and theirs: :data:`_POOL_WAITS`),
    known by their names whatever was imported before (a config :func:`http_config` converts
    before a client integration is imported is converted as after), so ``except
    PoolTimeoutError`` catches any of them. aiohttp has
    none: its ``ConnectionTimeoutError`` ends the wait for a free connection and the connect
    alike (one ``ClientTimeout.connect``); the one that ended a wait is told apart by the
    request (:class:`_NotTheHostsError`), and is not counted either.

    The request never left the client, so such an error is no failure of the host: the
    breaker of an HTTP policy ignores it (:func:`http_config` adds it to
    ``CircuitBreakerConfig.ignore_exceptions``: neither success nor failure, a probe's permit
    given back), and a wait cut by the deadline is the policy's timeout, which the breaker
    ignores too (a :class:`~otel_resilience.engine.deadline.WaitDeadlineReachedError`, as for
    a wait in a bulkhead's queue). The caller gets the client's error (or the policy's timeout).
    The retry sends again, as after any transport failure, only a request that may be sent
    twice (see "Safe retries"): nothing was sent, but whether nothing was written before the
    wait ended is the client's to say, so a POST is not sent again after it either.
    """

    @classmethod
    def __subclasshook__(cls, subclass: type) -> bool:
        """A client's error of :data:`_POOL_WAITS` (or a subclass of one) is a subclass; else ABC's rule."""
        if cls is PoolTimeoutError and _named_in(subclass, _POOL_WAITS):
            return True
        return cast("bool", NotImplemented)  # ABCMeta's own rule (its registry, real subclasses)


_NOT_SENT: Final = frozenset(
    {
        ("httpx", "LocalProtocolError"),
        ("httpx", "UnsupportedProtocol"),
        ("httpx", "StreamConsumed"),
        ("requests.exceptions", "InvalidURL"),
    }
)
"""The clients' errors for a request the caller made that they refuse to send as it is: (module,
name) of each (no client is imported here), :class:`RequestNotSentError`'s subclasses."""


class RequestNotSentError(Exception, metaclass=ABCMeta):
    """A request its client refused to send: it never reached the host, and would be refused again.

    Never raised itself: its subclasses are the clients' own errors, so ``except
    RequestNotSentError`` catches any of them:

    * a request the caller made that the client refuses to send as it is: httpx's
      ``LocalProtocolError`` (an illegal header value: nothing is written),
      ``UnsupportedProtocol`` (a URL scheme it does not speak) and ``StreamConsumed`` (a body
      streamed from a generator, spent by an earlier send: a 307 or 308 redirect's next hop,
      an ``auth=`` flow's second send), and requests' ``InvalidURL`` (in its adapter's send: a
      proxy URL it cannot use, ``InvalidProxyURL`` too), known by their names whatever was
      imported before (:data:`_NOT_SENT`), and the ``ValueError`` aiohttp and requests (http.client) raise for
      a header with a control character, and requests (urllib3, the socket) for a ``timeout`` it
      cannot use (``(1, 2, 3)``, ``-1``, a NaN; a ``Decimal``'s ``TypeError``, an infinity's
      ``OverflowError``), and httpx (httpcore: the socket, anyio) for a ``connect`` or ``write``
      timeout phase it cannot use (the same values; anyio takes an infinity and ``-1``), before
      a byte is written (told by where it was raised:
      :func:`~otel_resilience.integrations.sending.refused_as_made`, a subclass of it made by
      :func:`~otel_resilience.integrations.sending.refused`);
    * a request under way when its client closed (its retry backing off, queued in a bulkhead):
      the client's own error for a closed client (httpx's and aiohttp's ``RuntimeError``,
      requests' ``ConnectionError``), of a subclass of it
      (:func:`~otel_resilience.integrations.sending.refused`).

    The caller's mistake or the caller's own close, never the host's: the breaker of an HTTP
    policy ignores it (:func:`http_config` adds it to ``CircuitBreakerConfig.ignore_exceptions``:
    neither success nor failure, a probe's permit given back), so it never opens the breaker of
    a host that saw nothing, and the request is not sent again: neither retried nor re-run by a
    recovery rule (each would be refused in turn; a hedge racing it is refused as it was, and
    ignored too).
    """

    @classmethod
    def __subclasshook__(cls, subclass: type) -> bool:
        """A client's error of :data:`_NOT_SENT` (or a subclass of one) is a subclass; else ABC's rule."""
        if cls is RequestNotSentError and _named_in(subclass, _NOT_SENT):
            return True
        return cast("bool", NotImplemented)  # ABCMeta's own rule (its registry, real subclasses)


_METHOD_NAMES: Final = "method names (str)"
"""The rule of the items of :attr:`HttpOptions.retry_methods` (a ``TypeError``: of their type)."""


def _set_of(owner: str, field: str, value: object, items: str, kind: type[Exception]) -> frozenset[Any]:
    """Return ``value``, a ``set``, ``frozenset``, ``list`` or ``tuple``, as a frozenset.

    Raises:
        TypeError: ``value`` is none of those (a ``str`` is none: a set of its characters).
        Exception: ``kind``, the error of a wrong item (``"<owner>.<field> must be <items>"``),
            for an item that cannot be hashed (a list in the list), so is none of ``items``.
    """
    if isinstance(value, str) or not isinstance(value, (set, frozenset, list, tuple)):
        raise fail(owner, field, "a set", value, kind=TypeError)
    try:
        return frozenset(value)
    except TypeError:  # an unhashable item: no status, no method name
        raise fail(owner, field, items, value, kind=kind) from None


def _statuses(owner: str, field: str, value: object) -> frozenset[int]:
    """Return ``value`` as a frozenset of HTTP statuses: the one rule of every set of statuses.

    Raises:
        TypeError: ``value`` is not a ``set``, ``frozenset``, ``list`` or ``tuple``.
        ValueError: An item is not an ``int`` (a ``bool`` is none) from 100 to 599.
    """
    rule = "HTTP statuses (ints 100..599)"
    statuses = _set_of(owner, field, value, rule, ValueError)
    if not all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses):
        raise fail(owner, field, rule, value)
    return statuses


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How an HTTP client integration judges and retries requests. Every field has a safe default.

    A set of statuses or methods may be given as a ``set``, ``frozenset``, ``list`` or
    ``tuple`` (for type checkers too); the field holds a ``frozenset``.

    Attributes:
        failure_statuses: Statuses that are failures: counted by the breaker, retried
            (default :data:`DEFAULT_FAILURE_STATUSES`).
        retry_methods: Methods retried without a mark (default :data:`IDEMPOTENT_METHODS`;
            any case, each an HTTP token).
        idempotency_header: A request header whose presence marks the request retryable
            (default ``"Idempotency-Key"``, any case; ``None`` for none).
        raise_on_failure: Raise :class:`FailedResponseError` when attempts run out on a failed
            response, instead of returning the response (default ``False``).
        honour_retry_after: Take the delay from a failed response's ``Retry-After`` when the
            policy's ``RetryPolicy.delay_from`` is ``None`` (default ``True``).
        retry_after_statuses: The failed statuses whose ``Retry-After`` is honoured, each one of
            ``failure_statuses`` (a response of another status is no failure, never retried for
            its status: naming one is refused); on any other failed status the header is ignored
            and the policy's own backoff applies (a response a ``retry_on_result`` rejects has its
            header read whatever its status: :class:`HttpRetryAfter`). Default (``None``):
            those of :data:`RETRY_AFTER_STATUSES` (429 and 503) that are ``failure_statuses``,
            read in the field as a frozenset and derived again from ``failure_statuses`` by
            ``dataclasses.replace`` (a set given is checked, and kept, whatever the change).
        per_host: One breaker and one bulkhead per host (default ``True``).
        deadline_as_timeout: Cap the client's timeout by what is left of the deadline
            (default ``True``).
        max_hosts: How many idle hosts the policy handle keeps (its ``max_keys``, default 256);
            past it the least recently used idle host is evicted, its counts kept in the
            policy's totals (a host whose breaker is OPEN is not idle).
    """

    failure_statuses: frozenset[int] = DEFAULT_FAILURE_STATUSES
    retry_methods: frozenset[str] = IDEMPOTENT_METHODS
    idempotency_header: str | None = "Idempotency-Key"
    raise_on_failure: bool = False
    honour_retry_after: bool = True
    retry_after_statuses: frozenset[int] | None = None
    per_host: bool = True
    deadline_as_timeout: bool = True
    max_hosts: int = DEFAULT_MAX_HOSTS

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # set, list or tuple for a frozenset), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            failure_statuses: _Statuses = ...,
            retry_methods: _Methods = ...,
            idempotency_header: str | None = ...,
            raise_on_failure: bool = ...,
            honour_retry_after: bool = ...,
            retry_after_statuses: _Statuses | None = ...,
            per_host: bool = ...,
            deadline_as_timeout: bool = ...,
            max_hosts: int = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        # A default stored as derived is derived again (dataclasses.replace passes it back).
        defaulted = self.retry_after_statuses is None or type(self.retry_after_statuses) is _Derived
        if defaulted:
            object.__setattr__(self, "retry_after_statuses", RETRY_AFTER_STATUSES)
        failures = _statuses("HttpOptions", "failure_statuses", self.failure_statuses)
        retry_after = _statuses("HttpOptions", "retry_after_statuses", self.retry_after_statuses)
        methods = _set_of("HttpOptions", "retry_methods", self.retry_methods, _METHOD_NAMES, TypeError)
        object.__setattr__(self, "failure_statuses", failures)
        object.__setattr__(self, "retry_after_statuses", retry_after)
        if defaulted:  # 429 and 503, where they are failures
            object.__setattr__(self, "retry_after_statuses", _Derived(retry_after & self.failure_statuses))
        elif not retry_after <= self.failure_statuses:  # no failure: its header never read for it
            raise fail(
                "HttpOptions",
                "retry_after_statuses",
                "failure statuses only (a response of another status is no failure, never retried for it)",
                sorted(retry_after - self.failure_statuses),
            )
        if not all(isinstance(m, str) for m in methods):
            raise fail("HttpOptions", "retry_methods", _METHOD_NAMES, self.retry_methods, kind=TypeError)
        if not all(_TOKEN.fullmatch(m) for m in methods):  # "GET " or "" would match no request
            raise fail("HttpOptions", "retry_methods", "method names (HTTP tokens)", self.retry_methods)
        object.__setattr__(self, "retry_methods", frozenset(m.upper() for m in methods))
        header = self.idempotency_header
        if header is not None and not isinstance(header, str):
            raise fail("HttpOptions", "idempotency_header", "a str or None", header, kind=TypeError)
        if header is not None and not _TOKEN.fullmatch(header):  # no request carries such a header
            raise fail("HttpOptions", "idempotency_header", "a header name (an HTTP token) or None", header)
        for field in ("raise_on_failure", "honour_retry_after", "per_host", "deadline_as_timeout"):
            if not isinstance(getattr(self, field), bool):
                raise fail("HttpOptions", field, "a bool", getattr(self, field), kind=TypeError)
        check_int("HttpOptions", "max_hosts", self.max_hosts, minimum=1)


class _Derived(Derived, frozenset[int]):
    """:attr:`HttpOptions.retry_after_statuses` left to its default: derived from ``failure_statuses``.

    A frozenset of its statuses (equal to, and read as, the plain one), marked so that an
    ``HttpOptions`` made from it (``dataclasses.replace``, a copy, a pickle) derives it again from
    its own ``failure_statuses`` rather than checking it as a value the caller gave.
    """

    __slots__ = ()
    plain = frozenset


_DEFAULT_OPTIONS: Final = HttpOptions()


class FailedResponseError(Exception):
    """A response whose status is a failure (5xx, 408, 429 by default).

    Raised inside an attempt so that the breaker counts it and the retry may send the request
    again; it reaches the caller only with :attr:`HttpOptions.raise_on_failure` (otherwise the
    last response itself is returned). Its body has been read, unless it is longer than
    :data:`DRAIN_LIMIT`: then the response is open and unread (its first bytes kept), and reading
    it (``read()``, ``content``...) gives the whole body; closed once the retry goes on after it.

    Attributes:
        response: The client's response object (``httpx.Response``, ``requests.Response``,
            ``aiohttp.ClientResponse``); :func:`~otel_resilience.patterns.retry.retry_after_delay` reads
            its ``Retry-After`` header.
        status_code: The response's status.
        replay: Makes the response the caller gets when attempts run out, unread, as the client's
            transport gave it (httpx: its raw body can be streamed again), or ``None``: then
            :attr:`response` is returned.
    """

    def __init__(self, response: Any, status_code: int, replay: Callable[[], Any] | None = None) -> None:
        super().__init__(f"HTTP {status_code} counted as a failure")
        self.response = response
        self.status_code = status_code
        self.replay = replay

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (and copy) it with its response and status, as a worker process hands it back.

        Its :attr:`replay` stays behind (``None``: the copy gives :attr:`response`): it reads the
        live transport's response. The response must pickle itself (httpx's and requests' do
        once read; aiohttp's does not).
        """
        state = {name: value for name, value in self.__dict__.items() if name != "replay"}
        return type(self), (self.response, self.status_code), state


@dataclass(frozen=True, slots=True)
class HttpRetryAfter:
    """The ``RetryPolicy.delay_from`` of an HTTP policy: ``Retry-After``, on the statuses that give it.

    A failed response (:class:`FailedResponseError`) whose status is in :attr:`statuses` asks
    for its ``Retry-After`` (:func:`~otel_resilience.patterns.retry.retry_after_delay`); one
    with another status asks for nothing (``None``: the policy's own backoff), whatever header
    it carries. Any other outcome is read by ``retry_after_delay`` as it is.

    Attributes:
        statuses: :attr:`HttpOptions.retry_after_statuses` (a set, list or tuple is held as a
            frozenset).

    Raises:
        TypeError: ``statuses`` is not a ``set``, ``frozenset``, ``list`` or ``tuple``.
        ValueError: One of them is not an HTTP status (an ``int`` from 100 to 599).
    """

    statuses: frozenset[int] = RETRY_AFTER_STATUSES

    def __post_init__(self) -> None:
        # Checked as HttpOptions.retry_after_statuses is, once: each call reads the set.
        object.__setattr__(self, "statuses", _statuses("HttpRetryAfter", "statuses", self.statuses))

    def __call__(self, outcome: Any) -> float | None:
        """Return the delay ``outcome`` asks for, or ``None`` for the policy's own backoff."""
        if isinstance(outcome, FailedResponseError) and outcome.status_code not in self.statuses:
            return None
        return retry_after_delay(outcome)


class PolicyHandleLike(Protocol):
    """A named policy of the manager (``manager.policy(name, config)``), keyed by host when asked."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> ResilienceConfig: ...

    def for_key(self, key: Hashable, /) -> Any: ...

    def execute_sync(self, fn: Callable[[], R], /) -> R: ...

    async def execute(self, fn: Callable[[], Awaitable[R]], /) -> R: ...


class _HttpRule(Generic[B]):
    """An HTTP rule around the user's ``base``: :class:`HttpRetryOn`, :class:`HttpRetryOnResult`.

    Two rules of one class are equal when their bases are; the repr names the class (for a
    subclass of one, the public class it extends).
    """

    __slots__ = ("base",)
    base: B
    _rule: ClassVar[type[_HttpRule[Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _HttpRule in cls.__bases__:
            cls._rule = cls

    def __eq__(self, other: object) -> bool:
        return isinstance(other, self._rule) and other.base == self.base

    def __hash__(self) -> int:
        return hash((self._rule, self.base))

    def __repr__(self) -> str:
        return f"{self._rule.__name__}({self.base!r})"


class HttpRetryOn(_HttpRule[RetryPolicy]):
    """The HTTP retry rule (a ``RetryPolicy.retry_on``): in a request, only what HTTP allows is retried.

    Inside a request sent by an integration, an error is retried only if the request may be
    sent again and the error is an HTTP failure (:class:`FailedResponseError`, a timeout, the
    client's transport errors, a wait for its pool's connection that ran out:
    :class:`PoolTimeoutError`) other than a request its client refused to send
    (:class:`RequestNotSentError`); then ``base`` (the user's policy) decides. Outside a request (a
    policy shared with other calls) ``base`` alone decides. A failed response the retry goes on
    after is closed (:meth:`dropped`). Made by :func:`http_config`.

    Attributes:
        base: The user's retry policy.
    """

    __slots__ = ()

    def __init__(self, base: RetryPolicy) -> None:
        self.base = base

    def __call__(self, error: Exception) -> bool:
        """Return whether ``error`` is retried (see the class)."""
        return may_run_again(error) and self.base.is_retryable(error)

    def dropped(self, error: Exception) -> object:
        """Close the response of ``error``, a failed response the retry goes on after, and the earlier sends'.

        The retry calls it once it goes on after ``error``, before ``on_retry`` and the backoff
        (see ``RetryPolicy.retry_on``). A failed response whose body is longer than
        :data:`DRAIN_LIMIT` was left open in its attempt, as it may be the last, which the
        caller gets whole: the request's record of sends closes it now
        (:meth:`~otel_resilience.integrations.sending.Sent.drop`), unread, its connection not
        reused. Any other error closes nothing (a failed response read whole was closed in its
        attempt). A ``base.retry_on`` with a ``dropped`` method of its own is told first.

        Returns:
            As :meth:`HttpRetryOnResult.dropped`.
        """
        response = error.response if isinstance(error, FailedResponseError) else _NONE
        return _let_go(getattr(self.base.retry_on, "dropped", None), error, response)


class HttpRetryOnResult(_HttpRule[Callable[[Any], bool]]):
    """The HTTP rule for retried results (a ``RetryPolicy.retry_on_result``): dropped responses are closed.

    ``base`` (the user's predicate) judges every result, in a request or not: a response it
    rejects is a failure of the request (its outcome, its telemetry), whether or not the
    request may be sent again. Whether it is then sent again is the retry's question to the
    engine's :func:`~otel_resilience.engine.rerun.may_run_again`, which the integration answers
    per request: a request sent once (a POST) is never sent again, and its rejected response is
    returned to the caller as a failure. A response the retry goes on after is closed
    (:meth:`dropped`). Made by :func:`http_config`.

    Attributes:
        base: The user's ``retry_on_result``.
    """

    __slots__ = ()

    def __init__(self, base: Callable[[Any], bool]) -> None:
        self.base = base

    def __call__(self, result: Any) -> bool:
        """Return whether ``base`` rejects ``result`` (see the class)."""
        return self.base(result)

    def dropped(self, result: Any) -> object:
        """Close ``result``, a response the retry dropped, and what the earlier sends got.

        The retry calls it once it goes on after ``result``, before ``on_retry`` and the backoff
        (see ``RetryPolicy.retry_on_result``): the request's record of sends reads ``result``'s
        body up to :data:`DRAIN_LIMIT`, within the deadline, then closes them
        (:meth:`~otel_resilience.integrations.sending.Sent.drop`), so their connections are
        back in the client's pool during the backoff (``result``'s kept open for the next sends
        when its body ended within the limit). Outside a request, nothing is read or closed.
        A ``base`` with a ``dropped`` method of its own is told first, the response still open.

        Returns:
            What to await for an async client's request (what ``base.dropped`` returned, if
            awaitable, then the close), else what ``base.dropped`` returned, or ``None``.
        """
        return _let_go(getattr(self.base, "dropped", None), result, result, read=True)


_NONE: Final = object()
"""No response: what :func:`_let_go` is given for an error that holds none (it matches no send)."""


def _let_go(
    told: Callable[[Any], object] | None, outcome: object, response: object, *, read: bool = False
) -> object:
    """Tell ``told`` (a user's ``dropped``, if any) of ``outcome``, then have the request close its sends.

    The request's record of sends (its :class:`_Sends`) closes every send so far when
    ``response`` is one of them (``read``: a result, its body read up to :data:`DRAIN_LIMIT`
    first); outside a request nothing is closed.

    Returns:
        What to await for an async client's request (what ``told`` returned, if awaitable, then
        the close), else what ``told`` returned, or ``None``.
    """
    own = None if told is None else told(outcome)  # what it raises ends the request: all closed then
    request = _RETRYABLE_ERRORS.get()
    closing = None if request is None else cast("_Sends", request[2]).drop(response, read=read)  # its Sent
    if closing is None:
        return own  # an awaitable under the sync driver is refused there, as without the rule
    if not inspect.isawaitable(own):  # the drivers' test of what a call returned
        return closing
    return _in_turn(own, closing)


async def _in_turn(first: Awaitable[object], then: Awaitable[None]) -> None:
    """Await ``first``, then ``then`` (whatever ``first`` raised)."""
    try:
        await first
    finally:
        await then


def _sent_once() -> bool:
    """Whether the request being sent by an integration may not be sent twice (see "Safe retries")."""
    return not may_run_again()


class HttpHedgeBudget:
    """The hedging rule of HTTP (a ``HedgingConfig.budget``): a request sent once is never hedged.

    Inside a request sent by an integration that may not be sent twice (see "Safe retries"), it
    allows no hedge; otherwise it draws on ``base`` (the hedging's own budget, or the retry
    policy's that hedges share), or allows every hedge without one. Made by :func:`http_config`.

    Attributes:
        base: The budget hedges draw on, or ``None``.
        deposits: Whether it counts first attempts in ``base``: not when ``base`` is the retry
            policy's, where the retry does (once per execution).
    """

    __slots__ = ("base", "deposits")

    def __init__(self, base: HedgeBudget | None, *, deposits: bool) -> None:
        self.base = base
        self.deposits = deposits

    def deposit(self) -> None:
        """Count one first attempt in ``base`` (unless the retry does)."""
        if self.base is not None and self.deposits:
            self.base.deposit()

    def withdraw(self) -> object:
        """Allow a hedge and name it: never for a request that may not be sent twice; else as ``base`` does.

        Returns:
            What :meth:`refund` gives back exactly (``base``'s receipt when it names its
            withdrawals, as a ``RetryBudget`` does), or ``None`` when the hedge is denied.
        """
        if _sent_once():
            return None
        return True if self.base is None else withdraw_hedge(self.base)

    def try_withdraw(self) -> bool:
        """Allow a hedge: never for a request that may not be sent twice; else as ``base`` does."""
        return self.withdraw() is not None

    @property
    def refusal(self) -> str:
        """Why a hedge of the current request was refused: ``not_replayable``, else ``budget``."""
        return "not_replayable" if _sent_once() else "budget"

    def refund(self, withdrawal: object = None) -> None:
        """Give back a hedge allowed but not started (to ``base``).

        Args:
            withdrawal: What :meth:`withdraw` returned: the hedge leaves the count it was made in
                (a ``RetryBudget`` base). ``None`` (a caller of :meth:`try_withdraw`) gives back
                as ``base.refund()`` does.
        """
        if self.base is not None:
            refund_hedge(self.base, withdrawal)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HttpHedgeBudget):
            return False
        return (other.base, other.deposits) == (self.base, self.deposits)

    def __hash__(self) -> int:
        return hash((HttpHedgeBudget, self.base, self.deposits))

    def __repr__(self) -> str:
        return f"HttpHedgeBudget({self.base!r}, deposits={self.deposits})"


def http_config(config: ResilienceConfig, options: HttpOptions | None = None) -> ResilienceConfig:
    """Return ``config`` with the HTTP retry rule: what to build a policy handle for a client from.

    The retry policy's ``retry_on`` becomes :class:`HttpRetryOn` (non-idempotent or streamed
    requests are never sent twice; only HTTP failures are retried), its ``retry_on_result`` (if
    any) :class:`HttpRetryOnResult` (a response it drops is closed; such requests' results are
    judged, never retried), and its ``delay_from``
    :class:`HttpRetryAfter` (``Retry-After`` on ``options.retry_after_statuses``) unless it has
    one (and ``options.honour_retry_after`` is set). The hedging's budget becomes an
    :class:`HttpHedgeBudget` (such requests are never hedged either). The breaker ignores a
    wait for a connection of the client's own pool that ran out and a request its client refused
    to send (:class:`PoolTimeoutError` and :class:`RequestNotSentError` join its
    ``ignore_exceptions``, each unless its ``record_exceptions`` names such an error: counted as
    asked). A config without a retry policy, hedging or breaker, or already converted, is
    returned as it is.
    ``manager.policy(name, config, adapt=http_config)`` makes a handle a client integration
    accepts, and keeps the rule through every reload (``manager.reconfigure``, a configuration
    file); a handle made from ``http_config(config)`` alone loses it at its first reload, and
    its retries then resend POSTs.

    Raises:
        TypeError: ``config`` is not a ResilienceConfig, or ``options`` not HttpOptions.
    """
    if not isinstance(config, ResilienceConfig):
        raise fail("http_config", "config", "a ResilienceConfig", config, kind=TypeError)
    if options is not None and not isinstance(options, HttpOptions):
        raise fail("http_config", "options", "an HttpOptions or None", options, kind=TypeError)
    retry, hedging = config.retry_policy, config.hedging
    if retry is not None and not isinstance(retry.retry_on, HttpRetryOn):
        delay_from = retry.delay_from
        options = options or _DEFAULT_OPTIONS
        if delay_from is None and options.honour_retry_after:
            delay_from = HttpRetryAfter(cast("frozenset[int]", options.retry_after_statuses))
        on_result = retry.retry_on_result
        if on_result is not None:  # a retried result is a request sent again, as a retried error
            on_result = HttpRetryOnResult(on_result)
        retry_policy = replace(
            retry, retry_on=HttpRetryOn(retry), retry_on_result=on_result, delay_from=delay_from
        )
        config = replace(config, retry_policy=retry_policy)
    if hedging is not None and not isinstance(hedging.budget, HttpHedgeBudget):
        shared = None if retry is None else retry.budget  # hedges draw on it when they have none
        base = hedging.budget if hedging.budget is not None else shared
        budget = HttpHedgeBudget(base, deposits=base is not shared)
        config = replace(config, hedging=replace(hedging, budget=budget))
    breaker = config.circuit_breaker
    if breaker is not None:
        ignored = cast("tuple[type[Exception], ...]", breaker.ignore_exceptions)
        added = tuple(kind for kind in _NOT_THE_HOSTS if _counts(kind, ignored, breaker.record_exceptions))
        if added:
            config = replace(config, circuit_breaker=replace(breaker, ignore_exceptions=(*ignored, *added)))
    return config


class _ToldByTheRequest(type):
    """The metaclass of :class:`_NotTheHostsError`: its instances are told by the request, not by class."""

    def __instancecheck__(cls, instance: object) -> bool:
        """Whether ``instance`` ended one of the request's sends by no fault of the host.

        Asked by the breaker of an HTTP policy, of the error of an attempt that just ended: the
        request's record of sends tells it once
        (:meth:`~otel_resilience.integrations.sending.Sent.not_the_hosts`).
        """
        request = _RETRYABLE_ERRORS.get()
        return (
            request is not None
            and isinstance(instance, Exception)
            and cast("_Sends", request[2]).not_the_hosts(instance)
        )


class _NotTheHostsError(Exception, metaclass=_ToldByTheRequest):
    """An error that ended a send by no fault of the host, whatever its class: told by the request.

    Never raised: the breaker of an HTTP policy ignores an error it matches, as it ignores a
    :class:`PoolTimeoutError` or a :class:`RequestNotSentError`. The client tells the request
    what no class tells:

    * a wait for a connection of the client's pool that a timeout ended, whichever: a
      per-attempt timeout (``RetryPolicy.attempt_timeout``, inside the breaker, which turns the
      wait it ended into the attempt's :class:`~otel_resilience.OperationTimeoutError`), or
      aiohttp's ``ClientTimeout.connect`` or ``total`` (which bound its connect and the whole
      request too): :func:`~otel_resilience.integrations.sending.pool_wait_ended`;
    * the caller's body generator raising while the client sent it (the caller's own failure):
      :func:`~otel_resilience.integrations.sending.body_failed`;
    * the caller closing its own client while the request waited for its answer (httpx's
      ``ReadError``, aiohttp's ``ServerDisconnectedError``):
      :func:`~otel_resilience.integrations.sending.closed_during`.

    A class matches none of it (``record_exceptions`` and ``ignore_exceptions`` stay disjoint).
    """


_NOT_THE_HOSTS: Final = (PoolTimeoutError, RequestNotSentError, _NotTheHostsError)
"""The errors of a request that never reached the host, which the breaker of an HTTP policy ignores."""


def _counts(kind: type[Exception], ignored: tuple[type[Exception], ...], recorded: object) -> bool:
    """Whether a breaker counts ``kind`` errors (of :data:`_NOT_THE_HOSTS`), no selector of it naming them.

    ``False`` once it ignores them (converted), or when ``recorded`` (its ``record_exceptions``
    types) names one: the user counts them, and ignoring them too is refused. A pool wait an
    attempt's timeout ended is a pool wait: counted when the breaker counts pool waits.
    """
    if kind in ignored:
        return False
    named = PoolTimeoutError if kind is _NotTheHostsError else kind
    return not (isinstance(recorded, tuple) and any(issubclass(each, named) for each in recorded))


def resend_count_hook(span: Any, request: Any, *_: Any) -> None:
    """Set ``http.request.resend_count`` on an HTTP client span from the request's :data:`RESEND_COUNT`.

    A request hook for the OpenTelemetry httpx instrumentation (``HTTPXClientInstrumentor().
    instrument(request_hook=resend_count_hook)``, or its async hook through
    :func:`async_resend_count_hook`): it reads ``request.extensions`` (httpx's ``RequestInfo``)
    and sets the attribute on resends only (a retry, a hedge, a redirect's next hop, the answer to
    an authentication challenge: counted over the whole request), as the semantic conventions ask.
    """
    extensions = getattr(request, "extensions", None)
    count = extensions.get(RESEND_COUNT) if isinstance(extensions, Mapping) else None
    if isinstance(count, int) and count > 0 and span.is_recording():
        span.set_attribute(RESEND_COUNT_ATTRIBUTE, count)


async def async_resend_count_hook(span: Any, request: Any, *_: Any) -> None:
    """The async form of :func:`resend_count_hook` (httpx's ``async_request_hook``)."""
    resend_count_hook(span, request)
