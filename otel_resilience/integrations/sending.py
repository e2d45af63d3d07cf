"""How a client integration runs a request under its policy: the one path every client shares.

:class:`HttpPolicy` holds what a request needs, prepared once per policy and per host (the
options, the policy handle, each host's view of it); :meth:`HttpPolicy.send_sync` and
:meth:`HttpPolicy.send` run one request as one execution of the policy, each send one attempt.
The rules they apply (which responses are failures, which requests may be sent again,
``Retry-After``, the deadline as the timeout, the breaker per host) are described in
:mod:`otel_resilience.integrations.http`. :class:`HttpIntegration` is the base of the clients'
integrations. No HTTP library is imported here.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import math
import threading
from abc import ABC, ABCMeta, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from types import CodeType
from typing import Any, ClassVar, Final, Generic, NoReturn, Protocol, TypeVar, cast, runtime_checkable

from otel_resilience.engine.deadline import DeadlineReachedError, WaitDeadlineReachedError, time_left
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.validation import fail
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.integrations.http import (
    _DEFAULT_OPTIONS,
    _RETRYABLE_ERRORS,
    DRAIN_LIMIT,
    RETRYABLE,
    FailedResponseError,
    HttpHedgeBudget,
    HttpOptions,
    HttpRetryOn,
    PolicyHandleLike,
    PoolTimeoutError,
    RequestNotSentError,
    http_config,
)
from otel_resilience.manager import ResilienceConfig, ResilienceManager, get_resilience_manager
from otel_resilience.manager.decorator import check_manager

__all__ = [
    "Decoder",
    "HttpIntegration",
    "HttpPolicy",
    "Link",
    "ReadsDropped",
    "Sent",
    "aclose_dropped",
    "aclose_earlier",
    "body_failed",
    "close_dropped",
    "close_earlier",
    "closed_during",
    "host_port",
    "pool_wait_ended",
    "raised_in",
    "read_dropped",
    "record_send",
    "refused",
    "refused_as_made",
]

R = TypeVar("R")
Q = TypeVar("Q")
S = TypeVar("S")
E = TypeVar("E", bound=BaseException)


class HttpPolicy:
    """Runs one client's requests under a policy: the part the client integrations share.

    A config becomes the policy handle ``manager.policy(name, config, adapt=...)`` (its name,
    or ``"http"``; made here when a manager is given, else on the first request, in the
    process-wide manager of then), whose ``adapt`` applies :func:`http_config` to the config
    and to every config a reload gives it, and whose
    ``for_key(host)`` runs each request when :attr:`HttpOptions.per_host` is set: a breaker,
    bulkhead and rate limiter per host, at most :attr:`HttpOptions.max_hosts` idle hosts kept,
    the host as the execution span's ``resilience.key``. What every request reads is prepared
    once: the options' fields, and each host's view of the handle (:meth:`route`).

    Args:
        policy: A :class:`~otel_resilience.ResilienceConfig`, or a policy handle whose retry
            policy (if any) carries the HTTP rule (made with ``manager.policy(name, config,
            adapt=http_config)``, which keeps the rule through reloads).
        options: How requests are judged (default :class:`HttpOptions`).
        manager: The manager a config's handle lives in (default: the process-wide one).
        transport_errors: The client's errors that are transport failures (retried).

    Attributes:
        policy: The config or handle given.
        options: The options in force.
        failure_statuses: The statuses that are failures (``options.failure_statuses``).

    Raises:
        TypeError: ``policy``, ``options`` or ``manager`` has the wrong type.
        ValueError: ``policy`` is a handle that would send a request twice where HTTP forbids
            it, or a config whose name (``"http"`` when unnamed) is the manager's policy of
            another config: clients whose configs differ need a name each (raised at the first
            request when no manager is given).
    """

    __slots__ = (
        "_config",
        "_errors",
        "_header",
        "_made",
        "_manager",
        "_methods",
        "_raises",
        "_routing",
        "_steady",
        "_timed",
        "_transport_errors",
        "failure_statuses",
        "options",
        "policy",
    )

    def __init__(
        self,
        policy: ResilienceConfig | PolicyHandleLike,
        options: HttpOptions | None,
        manager: ResilienceManager | None,
        transport_errors: tuple[type[BaseException], ...],
    ) -> None:
        if not isinstance(policy, ResilienceConfig) and not callable(getattr(policy, "for_key", None)):
            raise fail(
                "HttpPolicy", "policy", "a ResilienceConfig or a policy handle", policy, kind=TypeError
            )
        if options is not None and not isinstance(options, HttpOptions):
            raise fail("HttpPolicy", "options", "an HttpOptions or None", options, kind=TypeError)
        check_manager("HttpPolicy", manager)
        self.policy = policy
        self.options = options = options or _DEFAULT_OPTIONS
        self.failure_statuses = options.failure_statuses
        self._methods = options.retry_methods
        self._header = options.idempotency_header
        self._raises = options.raise_on_failure
        self._timed = options.deadline_as_timeout
        self._manager = manager
        # The errors a request is sent again for, by whether it may be sent again (index 1) or not.
        self._errors = ((), (_sent_again_after(transport_errors),))
        self._transport_errors = transport_errors
        self._made: tuple[ResilienceManager, PolicyHandleLike] | None = None
        self._routing: tuple[PolicyHandleLike | None, dict[tuple[str, int | None], Any]] = (None, {})
        self._steady: PolicyHandleLike | None = None  # the handle, once it cannot change
        self._config: ResilienceConfig | None = None
        if isinstance(policy, ResilienceConfig):
            self._config = http_config(replace(policy, name=policy.name or "http"), options)
            if manager is not None:  # made now, so that a name taken by another config is told here
                self.handle()
        else:
            _check_handle(policy)
            _keep_rule(policy, options)
            self._steady = policy

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (and copy) it as it was made: its policy, options, manager and the client's errors.

        What it prepared from them is prepared again by the copy (a config's handle is made at
        its first request, in the process-wide manager of then when none was given), so a
        ``requests.Session`` with a :class:`~otel_resilience.integrations.requests.ResilientAdapter`
        pickles as requests pickles its sessions. A policy handle or a manager holds locks: one
        made with either does not pickle (``TypeError``).
        """
        return HttpPolicy, (self.policy, self.options, self._manager, self._transport_errors)

    @property
    def manager(self) -> ResilienceManager:
        """The manager a config's handle lives in."""
        return self._manager or get_resilience_manager()

    def handle(self) -> PolicyHandleLike:
        """Return the policy handle requests run through (a config's is made on first use)."""
        steady = self._steady
        if steady is not None:
            return steady
        manager = self._manager or get_resilience_manager()
        made = self._made
        if made is not None and made[0] is manager:
            return made[1]
        config = self._config
        assert config is not None  # noqa: S101 - set for a config
        options = self.options
        try:
            handle = manager.policy(
                config.name or "http",
                config,
                max_keys=options.max_hosts,
                adapt=lambda reloaded: http_config(reloaded, options),  # a reload keeps the HTTP rule
            )
        except ValueError as error:  # the name is another client's, with another config
            msg = (
                f"HttpPolicy.policy: {error}. Clients whose configs differ need a name each "
                f"(ResilienceConfig(name=...)); an unnamed config is named {'http'!r}"
            )
            raise ValueError(msg) from error
        self._made = (manager, handle)
        if self._manager is not None:  # made in the manager given: it stays the handle
            self._steady = handle
        return handle

    def route(self, host: str, port: int | None) -> Any:
        """Return what a request to ``host`` runs through (``port``: ``None`` for the scheme's own).

        With :attr:`HttpOptions.per_host`, the handle's view ``for_key("host[:port]")``, kept
        per host for the next requests (a view holds no state: the handle keeps the host's
        breaker, and evicts it when idle); without it, or without a host, the handle itself.
        """
        handle = self.handle()
        routed, routes = self._routing
        if routed is not handle:  # the first request, or a request in another manager
            routes = {}
            self._routing = (handle, routes)
        found = routes.get((host, port))
        if found is None:
            found = handle if not host or not self.options.per_host else handle.for_key(_key(host, port))
            if len(routes) >= self.options.max_hosts:
                routes.clear()
            routes[host, port] = found
        return found

    # ------------------------------------------------------------------ judging a request

    def replayable(
        self, method: str, headers: Mapping[str, Any], mark: object, body_replayable: bool
    ) -> bool:
        """Return whether a request may be sent more than once.

        ``mark`` is the request's :data:`RETRYABLE` flag (``None`` when not given): ``True``
        allows, ``False`` forbids; without it the method decides, or the idempotency header
        (with a value: an empty or blank one marks nothing).
        A body that cannot be replayed forbids it whatever the mark.

        Raises:
            TypeError: ``mark`` is neither a bool nor ``None`` (``"false"`` would read as true
                and resend a POST).
        """
        if mark is not None and mark is not True and mark is not False:
            raise fail("request extension", RETRYABLE, "True, False or absent", mark, kind=TypeError)
        if not body_replayable:
            return False
        if mark is not None:
            return mark
        methods = self._methods
        if method in methods or method.upper() in methods:
            return True
        header = self._header
        if header is None:
            return False
        key = headers.get(header)  # a key names the operation: an empty one names none
        return key is not None and bool(key.strip())

    def timeout_left(self) -> float | None:
        """Return the seconds left before the execution's deadline (``None``: no deadline)."""
        if not self._timed:
            return None
        left = time_left()  # on the deadline's own clock; infinite when no deadline binds the request
        return None if math.isinf(left) else max(left, 0.001)

    def deadline_reached(self, error: BaseException | None = None) -> None:
        """Raise :class:`DeadlineReachedError` from a client's timeout ``error`` if the deadline has passed.

        The client gave up at the deadline this layer passed on as its timeout
        (:meth:`timeout_left`): the timeout scope that owns the deadline turns it into its own
        :class:`~otel_resilience.OperationTimeoutError` (an HTTP server maps that to 504), as it
        does for any wait the deadline cut short. Before the deadline, the client's own shorter
        timeout fired: this returns, and ``error`` stays a transport error (retried). Without
        ``error``, it checks the deadline between two reads (:meth:`read_failed`).

        A wait for a connection of the client's own pool that the deadline ended
        (:class:`~otel_resilience.integrations.http.PoolTimeoutError`) never reached the host:
        it is a :class:`~otel_resilience.engine.deadline.WaitDeadlineReachedError`, which the
        breaker ignores (a rejection), as it ignores a bulkhead's queue the deadline ended; and
        the request is told so (:func:`pool_wait_ended`), for an attempt's timeout, inside the
        breaker, that turns it into its own.
        """
        if self._timed and time_left() <= 0.0:
            name = self.policy.name or "http"
            if isinstance(error, PoolTimeoutError):
                pool_wait_ended(error)
                raise WaitDeadlineReachedError(name, 0.0, "total") from error
            raise DeadlineReachedError(name, 0.0, "total") from error

    def client_timed_out(self, operation_timeout: type[OperationTimeoutError]) -> OperationTimeoutError:
        """Return the policy's timeout for a request that the client's own timeout of it all ended.

        aiohttp's ``ClientTimeout.total`` bounds the whole request, as a deadline the policy
        does not see: once it fired, the client's caller gets a timeout whatever follows. So
        the request is never sent again after it (its record of the errors it may be sent
        again after is emptied: no retry, hedge or recovery re-run, each a send the caller
        would never see, whose failure a breaker would count), and the execution ends as a
        timeout (``operation_timeout``, an :class:`~otel_resilience.OperationTimeoutError`
        whose ``timeout`` is 0: the limit is the client's), not as a transport failure, nor as
        the cancellation the client's timer made of it.
        """
        _sent_no_more()
        return operation_timeout(self.policy.name or "http", 0.0, "total")

    def read_failed(self, chunks: Iterator[bytes], decoders: Sequence[Decoder] = ()) -> tuple[bytes, bool]:
        """Read a failed body from ``chunks`` in this thread, up to the drain limit, within the deadline.

        The body is read until it ends or more than
        :data:`~otel_resilience.integrations.http.DRAIN_LIMIT` came, decoded (:class:`_Head`:
        ``chunks`` give the decoded body, or, with ``decoders``, the raw one they decode, one
        per content coding); the rest is left in ``chunks``, for the caller to read if this
        response is the last.

        A client's read timeout bounds each read, not the whole body: a body that keeps coming a
        little at a time would hold the caller's thread past its deadline, for good. The deadline
        is checked after each chunk (:meth:`deadline_reached`), so the read ends at most one
        chunk after it. (An async client's read is cancelled at the deadline: :meth:`aread_failed`.)

        Returns:
            What was read (as ``chunks`` gave it), and whether it is the whole body.

        Raises:
            Exception: What ``decoders`` raise for a body they cannot decode.
        """
        head = _Head(decoders)
        for chunk in chunks:
            if head.over(chunk):
                return head.read(), False
            self.deadline_reached()
        return head.read(), head.ended()

    @staticmethod
    async def aread_failed(
        chunks: AsyncIterator[bytes], decoders: Sequence[Decoder] = ()
    ) -> tuple[bytes, bool]:
        """Read a failed response's body from ``chunks`` up to the drain limit; as :meth:`read_failed`.

        An async client's read is cancelled at the deadline, so no check is made between chunks.
        """
        head = _Head(decoders)
        async for chunk in chunks:
            if head.over(chunk):
                return head.read(), False
        return head.read(), head.ended()

    def read_dropped(self, chunks: Iterator[bytes], decoders: Sequence[Decoder] = ()) -> bool:
        """Read the body of a result the retry dropped from ``chunks``, as :meth:`read_failed` reads one.

        The one rule of how much of a body is read to keep its connection (:class:`_Head`): a
        body that ends within :data:`~otel_resilience.integrations.http.DRAIN_LIMIT` is read
        whole, so that closing the response gives its connection back to the client's pool;
        reading a longer one stops past the limit (closed, its connection is not reused). Within
        the deadline: the deadline reached is the policy's timeout (:meth:`deadline_reached`).
        What is read is nobody's: the response was judged, and dropped. A transport failure
        while it is read (the body cut off, the client's own read timeout before the deadline)
        ends the read, as the request goes on: the response is then closed as it would be unread,
        its connection not reused.

        Returns:
            Whether the whole body was read.
        """
        try:
            return self.read_failed(chunks, decoders)[1]
        except self._transport_errors as error:
            self.deadline_reached(error)
            return False

    async def aread_dropped(self, chunks: AsyncIterator[bytes], decoders: Sequence[Decoder] = ()) -> bool:
        """Read the body of a result the retry dropped from ``chunks``; as :meth:`read_dropped`.

        An async client's read is cancelled at the deadline (the caller closes the response).
        """
        try:
            return (await self.aread_failed(chunks, decoders))[1]
        except self._transport_errors:
            return False

    # ------------------------------------------------------------------ running it

    def send_sync(
        self,
        host: str,
        port: int | None,
        replayable: bool,
        attempt: Callable[[Q, Sent], R],
        request: Q,
    ) -> R:
        """Run ``attempt(request, sent)`` under the policy in this thread; return its response.

        ``attempt`` sends the request once, recorded in ``sent`` (:func:`record_send` before it
        sends: its resend count, 0, then 1..., or on from the request's earlier sends; the
        response it got after), and raises
        :class:`FailedResponseError` for a failed response; the last failed response is
        returned when attempts run out. A response an attempt got that the policy dropped (it
        came after the deadline, or another attempt won) is closed before this returns
        (:func:`close_dropped`); one the retry dropped, before the retry backs off
        (:meth:`Sent.drop`), and any earlier one before the request is sent again (``attempt``
        calls :func:`close_earlier`).
        ``host`` and ``port`` choose the breaker (:meth:`route`); ``replayable`` says whether
        the request may be sent again (:meth:`replayable`).
        """
        sent = Sent()
        token = _RETRYABLE_ERRORS.set((self._errors[replayable], attempt, sent))
        result: Any = None
        try:
            result = self.route(host, port).execute_sync(attempt, request, sent)
        except FailedResponseError as failed:  # attempts ran out on a failed response
            result = failed.response
            return self._ran_out(failed)  # type: ignore[no-any-return]
        else:
            return result  # type: ignore[no-any-return]
        finally:
            _RETRYABLE_ERRORS.reset(token)
            if sent and (len(sent) > 1 or sent[0] is not result):
                close_dropped(sent, result)

    async def send(
        self,
        host: str,
        port: int | None,
        replayable: bool,
        attempt: Callable[[Q, Sent], Awaitable[R]],
        request: Q,
    ) -> R:
        """Run ``await attempt(request, sent)`` under the policy; as :meth:`send_sync`.

        ``sent`` closes a response the retry dropped before the retry backs off
        (:meth:`_AsyncSent.drop`); a send closes none (it may start beside others, in a race).
        """
        sent = _AsyncSent()
        token = _RETRYABLE_ERRORS.set((self._errors[replayable], attempt, sent))
        result: Any = None
        try:
            result = await self.route(host, port).execute(attempt, request, sent)
        except FailedResponseError as failed:  # attempts ran out on a failed response
            result = failed.response
            return self._ran_out(failed)  # type: ignore[no-any-return]
        else:
            return result  # type: ignore[no-any-return]
        finally:
            try:
                _RETRYABLE_ERRORS.reset(token)
            except ValueError as error:
                # A coroutine closed outside its task's context (a task its closed loop left
                # pending, freed by the collector on another thread): nothing reads that context.
                if type(error.__context__) is not GeneratorExit:
                    raise
            if sent and (len(sent) > 1 or sent[0] is not result):
                await aclose_dropped(sent, result)

    def _ran_out(self, failed: FailedResponseError) -> Any:
        """The end of a request whose attempts ran out on a failed response: that response.

        Returned as the caller would get it from the client (a response, not an error), unless
        :attr:`HttpOptions.raise_on_failure` asks for the error.
        """
        if self._raises:
            try:
                raise failed
            finally:
                del failed  # its traceback holds this frame: not bound here (a cycle)
        return failed.response if failed.replay is None else failed.replay()


class Decoder(Protocol):
    """A client's decoder of a body's ``Content-Encoding`` (httpx's), fed the raw body piece by piece.

    One whose output a step of input does not bound (brotli's: 52 bytes decode to 64 MiB) or
    bounds too loosely (zstd's: 64 bytes to 2 MiB) may give a bounded piece per call and hold
    the rest back, output or input: it then has a ``held`` attribute, true while it holds some,
    and :class:`_Head` calls :meth:`decode` again with no input for it before it feeds it more.
    """

    def decode(self, data: bytes) -> bytes:
        """Decode the next raw bytes; return what they give (possibly nothing yet)."""
        ...

    def flush(self) -> bytes:
        """The raw body ended: return what is left to decode."""
        ...


_STEP: Final = 64
"""Raw bytes a :class:`_Head` decodes at a time, in each layer of the body's content codings: what
one step can give is bounded (gzip and deflate expand 64 bytes to 66 KB at most), so a compressed
body is decoded no further than a step past the drain limit, never whole (a gzip body of 64 KiB
decodes to 64 MB). A body compressed twice (``Content-Encoding: gzip, gzip``) is stepped through
in each layer too: a step of the outer one gives up to 66 KB of the inner stream, which decoded
at once would give up to 66 MB (some 600 bytes on the wire decode to 256 MiB)."""


class _Head:
    """The start of a failed response's body, read until more than the drain limit came: the one rule.

    The limit, :data:`~otel_resilience.integrations.http.DRAIN_LIMIT`, counts the body as the
    caller reads it: decoded (what requests and aiohttp give). A client that gives the raw body
    (httpx, whose caller may read it raw) passes its ``decoders``, one per content coding in the
    order they decode: the raw chunks are kept, and decoded :data:`_STEP` bytes at a time only to
    be counted (what they give is dropped), what each layer gives fed to the next as many steps
    (a decoder that holds output back asked for the rest first: :class:`Decoder`), and the raw
    bytes count too, so neither the bytes read nor the bytes decoded go past the limit
    by more than a chunk or a step. A body that ends within the limit is read whole; reading a
    longer one stops at the chunk that passes it.
    """

    __slots__ = ("chunks", "decoded", "decoders", "size")

    def __init__(self, decoders: Sequence[Decoder] = ()) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.decoders = decoders
        self.decoded = 0

    def over(self, chunk: bytes) -> bool:
        """Keep ``chunk``; return whether what came is now over the limit (read no more)."""
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.size > DRAIN_LIMIT:
            return True
        return bool(self.decoders) and self._count(chunk, 0)

    def _count(self, data: bytes, layer: int) -> bool:
        """Decode ``data`` from the layer ``layer`` on, a step at a time; return whether over the limit.

        ``layer`` past the last: ``data`` is decoded body, counted. What a step gives is fed to
        the next layer in turn, before the next step (each decoder gets its bytes in order), so
        no layer is handed more than a step gives at once; a stack in place of a call per layer:
        a header may name many codings.
        """
        last = len(self.decoders)
        if layer == last:
            self.decoded += len(data)
            return self.decoded > DRAIN_LIMIT
        pending = [(layer, data, 0)] if data else []  # each: a layer, what it is fed, and how far
        while pending:
            at, fed, start = pending.pop()
            decoder = self.decoders[at]
            if start + _STEP < len(fed):  # the rest of it, after what this step gives
                pending.append((at, fed, start + _STEP))
            given = decoder.decode(fed[start : start + _STEP])
            if getattr(decoder, "held", False):  # output held back: asked for, with no input, first
                pending.append((at, b"", 0))
            if at + 1 == last:
                self.decoded += len(given)
                if self.decoded > DRAIN_LIMIT:
                    return True
            elif given:
                pending.append((at + 1, given, 0))
        return False

    def ended(self) -> bool:
        """The body ended: whether it is within the limit (each decoder's rest counted)."""
        for layer, decoder in enumerate(self.decoders):
            if self._count(decoder.flush(), layer + 1):
                return False
        return self.decoded <= DRAIN_LIMIT

    def read(self) -> bytes:
        """What came, in one piece."""
        return b"".join(self.chunks)


class HttpIntegration:
    """The base of the client integrations: the :class:`HttpPolicy` their requests run under.

    Args:
        policy: A :class:`~otel_resilience.ResilienceConfig` (or a policy handle made with
            ``manager.policy(name, config, adapt=http_config)``).
        options: How requests are judged (:class:`HttpOptions`).
        manager: The manager keeping breakers and bulkheads (default: the process-wide one).
        **client_options: Passed on to the client's own base class (``HTTPAdapter``'s
            ``pool_connections``, ``pool_maxsize``...; none for the others).

    Raises:
        TypeError: ``policy``, ``options`` or ``manager`` has the wrong type.
        ValueError: ``policy`` is a handle whose retry policy lacks the HTTP rule, or it hedges
            and the client is sync (hedging is async only).
    """

    transport_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """The client's errors that are transport failures (failures for the breaker, retried)."""

    synchronous: ClassVar[bool] = False
    """Whether the client sends in the caller's thread (``send_sync``): its policy may not hedge."""

    def __init__(
        self,
        policy: ResilienceConfig | PolicyHandleLike,
        *,
        options: HttpOptions | None = None,
        manager: ResilienceManager | None = None,
        **client_options: NoReturn,  # none: a subclass whose client takes some says so (ResilientAdapter)
    ) -> None:
        config = policy if isinstance(policy, ResilienceConfig) else getattr(policy, "config", None)
        if self.synchronous and getattr(config, "hedging", None) is not None:
            kind = type(self).__name__
            msg = f"{kind}.policy: hedging is async only, and {kind} sends in the caller's thread"
            raise ValueError(msg)
        self._check_client_options(client_options)
        self._http = HttpPolicy(policy, options, manager, self.transport_errors)
        super().__init__(**client_options)

    def _check_client_options(self, client_options: dict[str, Any]) -> None:
        """Refuse options the client's own base class takes but the policy forbids.

        Here, a client whose base takes none (``object``): any keyword is refused as Python
        refuses an unexpected one, naming it (``object.__init__()`` would name none). A client
        whose base takes options (``ResilientAdapter``) refuses those the policy forbids.
        """
        if client_options:
            name = next(iter(client_options))
            msg = f"{type(self).__name__}() got an unexpected keyword argument {name!r}"
            raise TypeError(msg)

    # ------------------------------------------------------------------ a client that closes

    _link_kind: ClassVar[type[Link[Any]]]
    """The kind of :class:`Link` of a client that may close while requests are under way."""
    _link: Link[Any]
    _attempt: Any
    """The current link's attempt (its ``_send_once``, bound once per link): what a new request sends with."""

    def _open(self, sender: object) -> None:
        """Have the requests entering from now on send through a new link to ``sender``."""
        self._link = link = self._link_kind(self._http, sender)
        self._attempt = link._send_once

    def _close_link(self, guard: Callable[[Any], S]) -> S:
        """Close the current link and open a new one; return the guard the closed link's requests read.

        ``guard(sender)`` is what the requests under way send through from now on: it refuses
        each of their sends (:func:`refused`), and holds the link's sender, to close it. A new
        request gets the new link, to the same sender (which the clients let a new request
        open again: httpx's transports, requests' pools).
        """
        with _CLOSING:  # two closes at once (a client two sessions share) would open a link to a guard
            closing = self._link
            sender = closing._sender
            closing._sender = closed = guard(sender)
            closing._closed = True
            self._open(sender)
        return closed


_CLOSING: Final = fork_safe(threading.Lock())
"""Held while a client's link is swapped at a close (:meth:`HttpIntegration._close_link`): closes are rare."""


class Link(ABC, Generic[S]):
    """What a request sends through from the moment it enters its client: the policy, the client's sender.

    A client closed while one of its requests is under way (its retry backing off, waiting in a
    bulkhead's queue or for a rate limiter's permit, a hedge about to start) would never send it:
    neither does the policy. The client gives each request its link of the moment (its
    ``_send_once``, each kind's own, bound once per link: :meth:`HttpIntegration._open`);
    closing the client closes that link (:meth:`HttpIntegration._close_link`): its ``_sender``
    becomes a guard that refuses every send of the requests that entered before, the first one
    too, with the client's own error for a closed client (:func:`refused`), while the requests
    entering after get a new link, open again. An open link's sends pay nothing for it. Sent,
    a request of a closed client would open a connection in its closed pool, which nothing
    would close again. A send under way at the close (waiting for its answer) ends with the
    error the close gave it, as the client raises it: the link tells it, :attr:`_closed`
    read on that error only (:func:`closed_during`).
    """

    __slots__ = ("_closed", "_http", "_sender")

    def __init__(self, http: HttpPolicy, sender: S) -> None:
        self._http = http
        self._sender = sender
        self._closed = False  # set by the client's close (HttpIntegration._close_link), never reset

    @abstractmethod
    def _send_once(self, request: Any, sent: Sent) -> Any:
        """One attempt: each client's own I/O (the decisions are :class:`HttpPolicy`'s)."""


def refused(error: E) -> E:
    """Return ``error``, the client's own refusal of a send, as a :class:`RequestNotSentError`.

    The client refused the send of its closed client, or of a request it cannot send as the caller
    made it (a header it will not write: :func:`refused_as_made`; httpx's are known by their class).
    A link's guard raises it for each send of a request its client closed under (:class:`Link`):
    nothing may send the request any more, so nothing tries (no retry, hedge or recovery re-run,
    each refused in turn after its wait, whatever the error's kind: requests' is a
    ``ConnectionError``, a transport error otherwise retried). As :meth:`HttpPolicy.client_timed_out`.
    The host never saw it: the error returned is a copy of ``error`` (its arguments and fields)
    whose class is a subclass of both ``error``'s (of its name and module: the caller catches
    and reads it as the client's own) and :class:`RequestNotSentError`, which the breaker ignores.
    """
    _sent_no_more()
    kind = type(error)
    made = _REFUSALS.get(kind)
    if made is None:
        made = _REFUSALS.setdefault(
            kind,
            type(
                kind.__name__,
                (kind, RequestNotSentError),
                {"__module__": kind.__module__, "__qualname__": kind.__qualname__},
            ),
        )
    copy = made.__new__(made, *error.args)
    copy.args = error.args
    copy.__dict__.update(error.__dict__)  # requests': its request and response
    return cast("E", copy)


def closed_during(error: BaseException, index: int | None = None) -> None:
    """Tell the current request that the caller closed its client while its send at ``index`` was under way.

    The one rule of a send that the caller's own close cut (``client.close()`` or
    ``session.close()`` while the request waited for its answer): the client's error for it
    (httpx's ``ReadError``, aiohttp's ``ServerDisconnectedError``) is no failure of the host, so
    no breaker counts it (:func:`_not_the_hosts`); nothing sends the request again (each send
    would be refused by the closed client, after its wait: :func:`_sent_no_more`); and the
    caller gets that error once, as the client raised it (it is not a
    :class:`RequestNotSentError`: the host may have had the request). Called by each client,
    on a send's error, when its client was closed (:class:`Link`, or a closed aiohttp session);
    ``index``: the send's place in the request's record (``None``: the last send, a sync
    request's).
    """
    if isinstance(error, RequestNotSentError):  # refused by the closed client: told by its class
        return
    _sent_no_more()
    _not_the_hosts(error, index)


def refused_as_made(
    error: BaseException, *checks: CodeType, raising: tuple[CodeType | tuple[CodeType, CodeType], ...] = ()
) -> bool:
    """Whether ``error`` is a client's refusal of the request as the caller made it, before a byte is sent.

    The one rule of a request a client will not send as it is: a refusal (:data:`_REFUSALS_OF_A_VALUE`:
    a ``ValueError``, ``TypeError`` or ``OverflowError``) raised in a call of one of ``checks``,
    the client's code that judges the request before a byte of it is written, or a plain one
    (of exactly one of those classes) raised by one of ``raising`` itself (its own ``raise``, or
    a builtin it calls: the last frame of the error's traceback; a code every error of the send
    passes through, which judges something first, or whose other plain such error can only
    be such a refusal); a pair ``(code, caller)`` in ``raising``: raised by ``code`` itself in a
    call of ``caller`` (a code shared with other callers, the socket's ``create_connection``,
    anyio's ``fail_after``, whose refusal is the request's only where the client's ``caller``
    calls it with the request's timeout). A subclass ``raising`` raises is no such refusal: it may
    stand for the host's answer (requests' ``InvalidHeader``, a ``ValueError``, for a response whose
    ``Content-Length`` holds unmatching values, raised by ``HTTPAdapter.send`` once the request
    was sent).
    A header with a control character in its name or value (a token read from a file with its
    newline): aiohttp's ``StreamWriter.write_headers``, http.client's ``putheader`` under
    requests, as httpx's ``LocalProtocolError`` (known by its class). A timeout requests cannot
    use (a tuple that is no ``(connect, read)`` pair, a limit that is no positive number, a NaN;
    one of a type the socket does not take, a ``Decimal``: its ``TypeError``; one past what it
    can hold, an infinity or an int past the floats: its or urllib3's ``OverflowError``):
    requests' ``HTTPAdapter.send`` (``raising``), urllib3's check of each limit, the socket's
    ``settimeout`` as urllib3 opens a connection, or gives a pooled one the request's timeout
    (urllib3's ``HTTPConnection.request``, ``raising``). So is a timeout phase httpx cannot use (a
    NaN, a ``Decimal``, an infinity or an int past the floats; ``-1`` under the sync transport):
    httpcore's connect (the socket's ``create_connection``; anyio's ``fail_after`` under the async
    transport) or its first write of the request (``settimeout``, or ``fail_after``, before the
    socket's ``send``). No host saw the request, and the client would
    refuse it again: the client raises it as :func:`refused` makes it (the breaker ignores it;
    nothing sends the request again). Asked on a send's error only.
    """
    if not isinstance(error, _REFUSALS_OF_A_VALUE):
        return False
    if raising and type(error) in _REFUSALS_OF_A_VALUE and _raised_by(error, raising):
        return True
    return any(raised_in(error, code) for code in checks)


_REFUSALS_OF_A_VALUE: Final = (ValueError, TypeError, OverflowError)
"""What a client's check raises for a value of the request it will not use (:func:`refused_as_made`):
a wrong value (``ValueError``), one of a wrong type (``TypeError``), one out of its range
(``OverflowError``)."""


def _raised_by(error: BaseException, codes: tuple[CodeType | tuple[CodeType, CodeType], ...]) -> bool:
    """Whether ``error`` was raised by one of ``codes`` itself: the last frame of its traceback runs it.

    A pair ``(code, caller)``: ``code`` raised it in a call of ``caller`` (:func:`refused_as_made`).
    """
    trace = error.__traceback__
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    last = trace.tb_frame.f_code
    return any(
        code is last if isinstance(code, CodeType) else code[0] is last and raised_in(error, code[1])
        for code in codes
    )


_REFUSALS: Final[dict[type[BaseException], type[BaseException]]] = {}
"""Each client error :func:`refused` was given, and its subclass that is a :class:`RequestNotSentError`."""


@functools.cache
def _sent_again_after(transport_errors: tuple[type[BaseException], ...]) -> type[BaseException]:
    """The errors after which a request that may be sent twice is sent again, as one class.

    The HTTP failures (a failed response, a timeout, a pool wait that ran out, the client's
    ``transport_errors``) but a :class:`RequestNotSentError`: a request its client refused to
    send would be refused again (httpx's ``LocalProtocolError`` is one of its transport errors).
    The one class of :data:`_RETRYABLE_ERRORS`'s errors: an ABC, so that
    :func:`~otel_resilience.engine.rerun.may_run_again`'s test of the error's class gives the
    answer (computed once per class of error); one per client kind.
    """
    failures = (FailedResponseError, OperationTimeoutError, PoolTimeoutError, *transport_errors)

    class SentAgainAfter(BaseException, metaclass=ABCMeta):
        @classmethod
        def __subclasshook__(cls, subclass: type) -> bool:
            return issubclass(subclass, failures) and not issubclass(subclass, RequestNotSentError)

    return SentAgainAfter


def pool_wait_ended(error: BaseException, index: int | None = None, *, cancelled: bool = False) -> None:
    """Tell the current request that its send at ``index`` ended with ``error`` waiting for its pool.

    The one rule of a pool wait that ran out, for every client: the request never left the
    client, so no breaker counts what ended the send (:func:`_not_the_hosts`). A client's own
    pool timeout is a :class:`~otel_resilience.integrations.http.PoolTimeoutError`, which the
    breaker ignores by its class; this tells the rest: a wait a deadline ended (the policy's
    ``timeout``, whose wait is a rejection, :meth:`HttpPolicy.deadline_reached`; or a
    per-attempt timeout, inside the breaker, which turns it into the attempt's
    :class:`~otel_resilience.OperationTimeoutError`), and one a client's other timeout ended
    (aiohttp's ``ClientTimeout.connect`` and ``total``, which also bound its connect and the
    whole request). Called by each client where its send ended in the wait
    (:func:`raised_in`), with the error that ended it; ``index``: the send's place in the
    request's record (``None``: the last send, a sync request's). A ``cancelled`` send (a
    deadline's timer, or the race of a hedge that lost) is told only once the deadline has
    passed: a hedge that lost is no timeout.
    """
    if not cancelled or time_left() <= 0.0:
        _not_the_hosts(error, index)


def body_failed(error: BaseException, body: object, index: int | None = None) -> None:
    """Tell the current request that its send at ``index`` ended with ``error`` from the caller's ``body``.

    ``body`` is what the client reads the request's body from, as the caller gave it: a
    generator (sync or async) that raised ``error`` while the client sent (or an error it was
    raised from: aiohttp's ``ClientConnectionError``) is the caller's failure, never the
    host's: no breaker counts it (:func:`_not_the_hosts`), as a request its client refuses to
    send. The request is not sent again either: a streamed body is sent once. Called by each
    client on a send's error; any other body (bytes, a file, an iterator of another kind)
    tells nothing.
    """
    code = getattr(body, "gi_code", None) or getattr(body, "ag_code", None)
    if code is not None and raised_in(error, code):
        _not_the_hosts(error, index)


def _not_the_hosts(error: BaseException, index: int | None) -> None:
    """Have the request's record tell the breaker that its send at ``index`` ended by no fault of the host.

    ``index``: the send's place in the record (``None``: the last send, a sync request's); ``error``:
    what the send ended with. The breaker of an HTTP policy asks it of the error the attempt ended
    with (:class:`~otel_resilience.integrations.http._NotTheHostsError`, :meth:`Sent.not_the_hosts`).
    """
    request = _RETRYABLE_ERRORS.get()
    if request is not None:
        sent = cast("Sent", request[2])
        sent.spared = (*sent.spared, (len(sent) - 1 if index is None else index, error))


def raised_in(error: BaseException, code: CodeType) -> bool:
    """Whether ``error``, or an error it was raised from, was raised in a call of ``code``.

    Read from the tracebacks (``error``'s, then its cause's or context's, a few at most), on a
    failure path only: how a client's wait for a connection of its pool is told from its other
    waits, where nothing else tells it (a cancellation, aiohttp's timeout of connect and wait),
    and the caller's body generator from the client's own code (:func:`body_failed`).
    """
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        trace = seen.__traceback__
        while trace is not None:
            if trace.tb_frame.f_code is code:
                return True
            trace = trace.tb_next
        seen = seen.__cause__ or seen.__context__
    return False


def _sent_no_more() -> None:
    """Empty the current request's record of the errors it may be sent again after: it is over.

    Set again in the context of the attempt that ends it (the sync driver's, the async task's):
    the reset of :meth:`HttpPolicy.send` and :meth:`HttpPolicy.send_sync` still restores.
    """
    found = _RETRYABLE_ERRORS.get()
    if found is not None:
        _RETRYABLE_ERRORS.set(((), found[1], found[2]))


class Sent(list[Any]):
    """One request's sends, in order: the response each got (``None``: none yet, an error, or closed).

    It also knows which of them the policy dropped (:attr:`dropped`): a response the retry
    retried is never the caller's once the retry goes on, and the retry tells it so before it
    backs off (:meth:`drop`, through
    :meth:`~otel_resilience.integrations.http.HttpRetryOnResult.dropped`), which reads its body
    up to the drain limit (:func:`read_dropped`) and closes it then,
    its connection back in the client's pool for the whole backoff (a pool of one would
    otherwise wait for it until the deadline, or, with no deadline, for good; and another
    request on the pool through the backoff). A recovery's RETRY or RESTART re-run tells it so
    too, before its delay (:meth:`let_go`). Only what the retry or a re-run dropped is closed
    early: under hedging, sends run side by side, and a response of a race still running may win
    it. A sync request's next send also closes what any earlier send got (:func:`close_earlier`).

    Attributes:
        dropped: How many of the first sends the policy dropped (all over, none the caller's).
        before: How many times the request was sent before this execution (a redirect's earlier
            hops, the send an authentication challenge answered): the resend counts of its sends
            continue from it (:func:`record_send`).
        spared: The sends that ended by no fault of the host (in a wait for a connection of the
            client's pool, the caller's body raised, or the caller closed the client), not told
            yet (:meth:`not_the_hosts`): the place of each and the error it ended with.
    """

    dropped: int = 0
    before: int = 0
    spared: tuple[tuple[int, BaseException], ...] = ()

    def not_the_hosts(self, error: BaseException) -> bool:
        """Whether ``error``, an attempt's, ended a send of the request by no fault of the host; told once.

        Asked by the breaker of an HTTP policy of the error of an attempt that just ended, in its
        task or thread (:func:`pool_wait_ended`, :func:`body_failed`, :func:`closed_during`). A send
        told is known by its error: ``error`` is the one it ended with, or was raised from it (a few
        at most: an async attempt's timeout from the cancellation of its wait), whichever send it
        was (under hedging, every send of the race is told apart); or by its place, when it is the
        last send (a sync attempt's timeout raises an error of its own in place of the wait's). A
        send told but never asked of (an error the breaker ignores by its class) spares no later
        send's error.
        """
        spared = self.spared
        if not spared:
            return False
        found = next((told for told in spared if _raised_from(error, told[1])), None)
        if found is None:
            found = next((told for told in spared if told[0] == len(self) - 1), None)
            if found is None:
                return False
        self.spared = tuple(told for told in spared if told is not found)
        return True

    def drop(self, result: object, *, read: bool = False) -> Awaitable[None] | None:
        """The retry goes on after ``result`` (one of the sends'): close every send so far.

        Called before the backoff, once the retry decided to send the request again: the retry
        judges a result once its attempt is over (under hedging, once its race is: every send of
        it ended, the losers cancelled), so no send made so far is still running or may still be
        returned; when retrying stops on ``result`` instead, nothing is closed and the caller
        gets it. A result that is none of this request's responses (another policy's, judged by
        a retry inside the request) closes nothing. ``read``: ``result`` is a response the retry
        retried for its result, whose body is read up to the drain limit first
        (:func:`read_dropped`), so that its connection is reused; a failed response (``False``)
        was read in its attempt, and one over the limit is closed unread.

        Returns:
            ``None`` (a sync request's sends are closed in this thread); an async request's
            (:class:`_AsyncSent`) return the close to await.
        """
        if any(response is result for response in self):
            return self.let_go(result if read else None)
        return None

    def let_go(self, result: object = None) -> Awaitable[None] | None:
        """Every send so far is over and dropped: close them (the retry goes on, a re-run starts).

        Called by :meth:`drop`, and by a recovery's RETRY or RESTART re-run before its delay
        (:func:`~otel_resilience.engine.rerun.let_go`: the recovery encloses the retry and the
        hedging, so no send is still running, nor may any be returned). ``result``: the
        response whose body is read up to the drain limit first (:meth:`drop`), or ``None``.

        Returns:
            ``None`` (closed in this thread: :func:`close_earlier`); an async request's
            (:class:`_AsyncSent`) return the close to await.
        """
        if result is not None:
            read_dropped(self, result)
        close_earlier(self)
        return None


def _raised_from(error: BaseException, cause: BaseException) -> bool:
    """Whether ``error`` is ``cause``, or was raised from it (its chain of causes or contexts, a few)."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if seen is cause:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _AsyncSent(Sent):
    """The sends of an async request: :meth:`let_go` returns the close to await (:func:`aclose_earlier`)."""

    def let_go(self, result: object = None) -> Awaitable[None] | None:
        """As :meth:`Sent.let_go`: the awaitable reading ``result`` (if any), then closing every send."""
        self.dropped = len(self)
        return aclose_earlier(self, result)


@runtime_checkable
class ReadsDropped(Protocol):
    """The owner of a client's attempt (a :class:`Link`, aiohttp's middleware): it reads dropped results.

    ``read_dropped(response)`` reads the body of ``response``, a result the retry dropped,
    through :meth:`HttpPolicy.read_dropped` (an async client's: :meth:`HttpPolicy.aread_dropped`,
    returning the read to await), and closes it if the read raises (the deadline, a
    cancellation).
    """

    def read_dropped(self, response: Any) -> Awaitable[None] | None:
        """Read ``response``'s body up to the drain limit (see the class)."""
        ...


def read_dropped(sent: Sent, result: object) -> Awaitable[None] | None:
    """Read the body of ``result``, a response of ``sent`` the retry dropped, up to the drain limit.

    Read by the client that sent it: the :class:`ReadsDropped` whose method the request's
    attempt is (its ``__self__``), so that closing it then gives its connection back to the pool
    when its body ended within the limit. Nothing is read for a request of another kind of
    attempt, nor outside the request (``sent`` is not its record).

    Returns:
        ``None`` (read in this thread), or the read to await (an async client's).
    """
    found = _RETRYABLE_ERRORS.get()
    if found is None or found[2] is not sent:
        return None
    owner = getattr(found[1], "__self__", None)
    if not isinstance(owner, ReadsDropped):
        return None
    return owner.read_dropped(result)


def record_send(sent: Sent, last: int | None = None) -> int:
    """Record a send of the request in ``sent`` (before it is made); return its resend count.

    The one rule of the count (``http.request.resend_count``): how many times the request was
    sent before, over the whole request as the HTTP semantic conventions count it, whatever the
    reason (a retry, a hedge, a redirect's next hop, the answer to an authentication challenge).
    This execution's sends continue from :attr:`Sent.before`: ``last`` is the count of the
    request's last send before this execution, where the client carries it on the request
    (httpx: the :data:`~otel_resilience.integrations.http.RESEND_COUNT` extension, which a
    redirect's next hop copies and an authentication flow's resend keeps), read at the
    execution's first send; ``None``: none. Without one, the count is the send's place in
    ``sent``.
    """
    place = len(sent)
    sent.append(None)
    if last is not None and not place:
        sent.before = last + 1
    return sent.before + place


def _dropped(sent: Sent) -> Iterator[int]:
    """The places in ``sent`` of the responses the policy dropped that are not closed yet.

    Each is set to ``None`` once closed (not before: a close cut short, by a cancellation, leaves
    it to :func:`close_dropped` or :func:`aclose_dropped` at the end).
    """
    return (index for index in range(sent.dropped) if sent[index] is not None)


def close_earlier(sent: Sent) -> None:
    """Close the responses of the earlier sends of a sync request, all dropped, in this thread.

    A sync execution makes its attempts one after another (hedging is async only): when the
    retry backs off (:meth:`Sent.drop`) or a send starts again, every earlier send is over and
    was dropped (a result the policy retried, a late response its timeout dropped, a re-run),
    so all are marked :attr:`Sent.dropped`, then closed as :func:`aclose_earlier` closes an
    async client's; :func:`close_dropped` still closes the last ones at the end.
    """
    sent.dropped = len(sent)
    for index in _dropped(sent):
        sent[index].close()
        sent[index] = None


async def aclose_earlier(sent: Sent, result: object = None) -> None:
    """Close the dropped responses (:attr:`Sent.dropped`) of an async request the retry goes on with.

    Async sends may run side by side (hedging): only the responses the retry dropped are
    closed (``aclose``, else ``release``), never one of a race still running. ``result``: the
    response whose body is read up to the drain limit first (:func:`read_dropped`), or ``None``.
    """
    if result is not None:
        reading = read_dropped(sent, result)
        if reading is not None:
            await reading
    for index in _dropped(sent):
        await _aclose(sent[index])
        sent[index] = None


def close_dropped(sent: Sent, kept: object) -> None:
    """Close each response in ``sent`` but ``kept`` (the one the caller gets), in this thread.

    A response the policy dropped would otherwise hold its connection until it is collected
    (httpx keeps it out of its pool for good). Closing a closed response does nothing.
    """
    for response in sent:
        if response is not None and response is not kept:
            response.close()


async def aclose_dropped(sent: Sent, kept: object) -> None:
    """Close each response in ``sent`` but ``kept``: an async client's (``aclose``, else ``release``)."""
    for response in sent:
        if response is not None and response is not kept:
            await _aclose(response)


async def _aclose(response: Any) -> None:
    """Close an async client's response: ``aclose`` (httpx), else ``release`` (aiohttp)."""
    aclose = getattr(response, "aclose", None)
    if aclose is not None:
        await aclose()
    else:
        response.release()


_SCHEME_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
"""The port of each scheme a client sends to when its URL names none."""


def host_port(scheme: str, port: int | None) -> int | None:
    """The port a host's key carries (:meth:`HttpPolicy.route`): ``None`` for the scheme's own.

    ``http://h:80`` is ``http://h``: one host, one key (``h``), whether a client gives the port
    written out or not (httpx keeps it after a scheme written in capitals: ``HTTP://h:80``).
    ``scheme`` in lower case, as the clients give it.
    """
    return None if port == _SCHEME_PORTS.get(scheme) else port


def _key(host: str, port: int | None) -> str:
    """The key of a host: ``host``, or ``host:port`` when the port is not the scheme's default.

    ``host`` is the ASCII host the client sends to (an IDNA name as ``xn--...``, as every client
    gives it). One host is one key however it is spelled: a name in lower case (DNS names are
    case-insensitive), without the trailing dot of its absolute form (``example.com.`` is
    ``example.com``); an IPv6 literal written one way (``[::ffff:7f00:1]``: compressed, lower
    case, in brackets, as in a URL), so that a port is never read as part of the address
    (``[::1]:8080`` is not ``[::1:8080]``). Made once per host and port (:meth:`HttpPolicy.route`).
    """
    if ":" not in host:  # a name or an IPv4 address
        host = host.lower().removesuffix(".")
    else:
        address, percent, zone = host.partition("%")
        with contextlib.suppress(ValueError):
            ip = ipaddress.IPv6Address(address)
            mapped = ip.ipv4_mapped
            # Python 3.13 writes an IPv4-mapped address dotted (::ffff:127.0.0.1): the key keeps
            # the hexadecimal spelling of the versions before, one key on every version.
            address = (
                ip.compressed if mapped is None else f"::ffff:{int(mapped) >> 16:x}:{int(mapped) & 0xFFFF:x}"
            )
        host = f"[{address}{percent}{zone}]"
    return host if port is None else f"{host}:{port}"


def _keep_rule(handle: PolicyHandleLike, options: HttpOptions) -> None:
    """Have every later reload of ``handle`` keep the HTTP rule, as its current config does.

    A handle made with ``manager.policy(name, http_config(config))`` (no ``adapt``) would lose
    the rule at its first reload, and its retries would then resend POSTs. A manager's handle
    takes :func:`http_config` as one more ``adapt`` (one for all the clients it serves; the rule
    is applied once: :func:`http_config` leaves a converted config as it is).
    """
    adapt_also = getattr(handle, "_adapt_also", None)
    if adapt_also is not None:
        adapt_also("http", lambda config: http_config(config, options))


def _check_handle(handle: PolicyHandleLike) -> None:
    """Refuse a handle that would send again what HTTP forbids (a POST, a streamed body).

    Its retry policy must have the HTTP retry rule, and its hedging the HTTP hedging budget.
    """
    config = getattr(handle, "config", None)
    if not isinstance(config, ResilienceConfig):
        return
    retry, hedging = config.retry_policy, config.hedging
    lacking = (
        "retry policy lacks the HTTP retry rule (it would retry"
        if retry is not None and not isinstance(retry.retry_on, HttpRetryOn)
        else "hedging lacks the HTTP hedging budget (it would hedge"
        if hedging is not None and not isinstance(hedging.budget, HttpHedgeBudget)
        else None
    )
    if lacking is not None:
        msg = (
            f"HttpPolicy.policy: the handle's {lacking} POSTs and streamed bodies): create it "
            "with manager.policy(name, config, adapt=http_config), which also gives the rule to "
            "every config a reload brings"
        )
        raise ValueError(msg)
