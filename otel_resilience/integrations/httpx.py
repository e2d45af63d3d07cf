"""httpx transports that run every request under a policy (extra ``httpx``).

::

    policy = ResilienceConfig(
        name="payments",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=10.0),
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.2, max_delay=5.0),
        timeout=3.0,
    )
    client = httpx.AsyncClient(transport=AsyncResilientTransport(policy))

Each request is one execution of the policy and each send one attempt; see
:mod:`otel_resilience.integrations.http` for which responses are failures, which requests are
retried (mark one with ``extensions={RETRYABLE: True}`` or an ``Idempotency-Key`` header),
``Retry-After``, the deadline passed on as the request's timeout, and the breaker per host. A
``PoolTimeout`` (no free connection in the client's pool) is never a failure of the host: it is
a :class:`~otel_resilience.integrations.http.PoolTimeoutError`, which the breaker ignores; nor
is a per-attempt timeout that ended the wait (its timer cancelling it, for the async transport).
Nor is a ``connect`` or ``write`` timeout phase httpx cannot use (a NaN, a ``Decimal``, an int past
the floats; under the sync transport ``-1`` and an infinity too), which httpcore refuses as it
connects or before it writes the request's first byte: the client's own ``ValueError``,
``TypeError`` or ``OverflowError``, as a
:class:`~otel_resilience.integrations.http.RequestNotSentError`, not sent again
(:data:`_SYNC_REFUSING`, :data:`_ASYNC_REFUSING`). A ``read`` phase it cannot use is refused once
the request was written: the host had it.
Each send sets the request extension :data:`~otel_resilience.integrations.http.RESEND_COUNT`,
counted over the whole request: a redirect's next hop (which copies the extensions) and the
resend of an authentication flow (``auth=``: the same request) go on from the count of the send
before them (so does a request object the caller sends again: nothing tells it from an
authentication flow's resend; a new request counts from 0). With the OpenTelemetry httpx
instrumentation, pass :func:`~otel_resilience.integrations.http.resend_count_hook` as its
request hook to put ``http.request.resend_count`` on the client spans of resends.

A request under way when its transport is closed (``client.close()``: its retry backing off,
waiting in a bulkhead's queue or for a rate limiter's permit, a hedge about to start, waiting
for a free connection of the pool of the ``httpx.HTTPTransport`` wrapped) is not sent, neither
again nor for the first time: it ends with the ``RuntimeError`` httpx raises for a
closed client. One waiting for its answer at the close ends with the error the close gave it
(httpx's ``ReadError``), once: not retried, not counted by the breaker (the caller closed its
own client). A new request opens the transport again, as httpx's own transports allow. A
client's ``proxy=`` routes its requests through a transport of its own, around this one: give
the proxy to the transport wrapped.
"""

from __future__ import annotations

import asyncio
import socket
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from typing import Any, ClassVar, Final, Generic, NoReturn, TypeVar

import anyio
import httpcore
import httpx
from anyio._backends._asyncio import CancelScope
from httpcore._async.connection_pool import AsyncPoolRequest
from httpcore._backends.anyio import AnyIOBackend, AnyIOStream
from httpcore._backends.sync import SyncBackend, SyncStream
from httpx import _decoders as httpx_decoders
from httpx._decoders import BrotliDecoder, ContentDecoder, MultiDecoder
from httpx._multipart import MultipartStream

from otel_resilience.engine.validation import fail
from otel_resilience.integrations.http import (
    RESEND_COUNT,
    RETRYABLE,
    FailedResponseError,
    HttpOptions,
    PolicyHandleLike,
)
from otel_resilience.integrations.sending import (
    Decoder,
    HttpIntegration,
    HttpPolicy,
    Link,
    Sent,
    body_failed,
    close_earlier,
    closed_during,
    host_port,
    pool_wait_ended,
    raised_in,
    record_send,
    refused,
    refused_as_made,
)
from otel_resilience.manager import ResilienceConfig, ResilienceManager

__all__ = ["RETRYABLE", "AsyncResilientTransport", "ResilientTransport"]

T = TypeVar("T")
_PHASES = ("connect", "read", "write", "pool")


class _Cap(dict[str, Any]):
    """A request's ``timeout`` extension capped by a deadline (:func:`_prepare`).

    It remembers the one the request came with (``own``, ``None`` for none), from which every
    later send of the request, or of a request httpx makes from it (a redirect's next hop copies
    its extensions), is capped again: never from an earlier execution's cap.
    """

    __slots__ = ("own",)

    own: dict[str, Any] | None


def _judge(http: HttpPolicy, request: httpx.Request) -> bool:
    """Return whether ``request`` may be sent more than once."""
    body = request.stream
    in_memory = isinstance(body, httpx.ByteStream) or _in_memory(body)  # the usual case, without a call
    return http.replayable(request.method, request.headers, request.extensions.get(RETRYABLE), in_memory)


def _in_memory(body: object) -> bool:
    """Whether a request body is held in memory, so that it can be sent again as it was.

    Bytes, text, a form and JSON are (``httpx.ByteStream``); so is a multipart body whose files
    are all bytes or text. An iterator, or a file (in a multipart body too), is not.
    """
    if isinstance(body, httpx.ByteStream):
        return True
    if isinstance(body, MultipartStream):  # its form fields are values; a file field holds `file`
        return all(isinstance(getattr(field, "file", b""), (bytes, str)) for field in body.fields)
    return False


def _prepare(http: HttpPolicy, request: httpx.Request, sent: Sent) -> int:
    """Record the send and mark its resend count; cap each timeout phase by what is left of the deadline.

    The count goes on from the one the request carries (:func:`record_send`): a redirect's next
    hop copies its extensions, an authentication flow sends the same request again.
    No phase is left longer than what is left (a phase ``None``, no limit, neither). The
    request's own ``extensions`` dict is updated (httpx copies the one it is given); the cap
    stays on it for the caller's reads of the body. Each send is capped from the timeout the
    request came with (:class:`_Cap`), never from an earlier send's cap: a request httpx
    makes from this one (a redirect's next hop, which copies its extensions) or the request sent
    again is a new execution, with a deadline of its own.

    Returns:
        The send's place in ``sent``.
    """
    extensions = request.extensions
    index = len(sent)
    extensions[RESEND_COUNT] = record_send(sent, extensions.get(RESEND_COUNT))
    timeout = extensions.get("timeout")
    own = timeout.own if type(timeout) is _Cap else timeout
    left = http.timeout_left()
    if left is None:
        if own is not timeout:  # an earlier execution's cap: the request's own timeout again
            if own is None:
                del extensions["timeout"]
            else:
                extensions["timeout"] = own
        return index
    if own is None:
        capped: _Cap = _Cap.fromkeys(_PHASES, left)  # type: ignore[assignment] # a _Cap: fromkeys of a subclass
    else:
        capped = _Cap(own)
        for phase in _PHASES:
            value = own.get(phase)
            if value is None or value > left:
                capped[phase] = left
    capped.own = own
    extensions["timeout"] = capped
    return index


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body read already, streamed again: its raw bytes, in one chunk, sync or async."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    def __iter__(self) -> Iterator[bytes]:
        yield self._raw

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._raw


class _Rest(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A failed response's body read in part, streamed whole: the bytes read, then the rest as it comes.

    Closing it closes the transport's response (its connection not reused, when not read to the end).
    """

    def __init__(
        self, head: bytes, rest: Iterator[bytes] | AsyncIterator[bytes], response: httpx.Response
    ) -> None:
        self._head = head
        self._rest = rest
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        yield from self._rest  # type: ignore[misc] # a sync transport's

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        async for chunk in self._rest:  # type: ignore[union-attr] # an async transport's
            yield chunk

    def close(self) -> None:
        if isinstance(self._rest, Generator):  # the transport's response's own reader, left part way
            self._rest.close()
        self._response.close()

    async def aclose(self) -> None:
        if isinstance(self._rest, AsyncGenerator):
            await self._rest.aclose()
        await self._response.aclose()


def _unread(
    request: httpx.Request,
    response: httpx.Response,
    head: bytes,
    rest: Iterator[bytes] | AsyncIterator[bytes],
) -> FailedResponseError:
    """The error of a failed response whose body is longer than the drain limit: ``head`` read, ``rest`` not.

    It holds the response the caller gets if it is the last: open and unread, its whole raw
    body streamed (:class:`_Rest`), as the transport gave it; the retry that goes on after it
    closes it (:meth:`~otel_resilience.integrations.http.HttpRetryOn.dropped`).
    """
    kept = httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=_Rest(head, rest, response),
        request=request,
        extensions=response.extensions,
    )
    return FailedResponseError(kept, response.status_code)


def _decoders(response: httpx.Response) -> Sequence[Decoder]:
    """What the drain decodes a failed body with to count it (:meth:`HttpPolicy.read_failed`): httpx's own.

    One decoder per content coding, in the order they decode (httpx's ``MultiDecoder`` for a body
    coded more than once, ``Content-Encoding: gzip, br``: its layers, each stepped through by the
    drain); none for a body without ``Content-Encoding``, whose raw bytes are its bytes. A body a
    decoder cannot decode raises httpx's ``DecodingError`` in the drain (a transport failure, as
    a body cut off is).
    """
    if "content-encoding" not in response.headers:
        return ()
    decoder = response._get_content_decoder()  # httpx's decoder of the response's encodings
    layers = decoder.children if isinstance(decoder, MultiDecoder) else (decoder,)  # in decoding order
    return tuple(_bounded(layer) for layer in layers)


def _bounded(decoder: ContentDecoder) -> Decoder:
    """``decoder``, or one giving a bounded piece of its output per call where httpx's does not.

    httpx's brotli and zstd decoders give all a piece of input decodes to at once: unlike gzip's
    (66 KB at most for a step of 64 bytes), 52 bytes of brotli decode to 64 MiB, and 64 bytes of
    zstd to 2 MiB (16 blocks of 128 KiB). The drain gets them a bounded piece at a time
    (:class:`_Bounded`): brotli with its output limit (``brotli`` or ``brotlicffi`` 1.2 and
    later; an older one's decoder is httpx's own), zstd fed a few bytes at a time.
    """
    if isinstance(decoder, BrotliDecoder):
        decompressor = decoder.decompressor
        if hasattr(decompressor, "can_accept_more_data"):  # the output limit: brotli or brotlicffi 1.2+
            package = vars(httpx_decoders)["brotli"]  # the one httpx decodes with: brotli or brotlicffi
            return _BoundedBrotli(decompressor, package.error)
    elif _ZSTD is not None and isinstance(decoder, _ZSTD):
        return _BoundedZstd(vars(httpx_decoders)["zstandard"])
    return decoder


_ZSTD: Final[type[ContentDecoder] | None] = httpx_decoders.SUPPORTED_DECODERS.get("zstd")
"""httpx's zstd decoder, where httpx has one and ``zstandard`` is installed (else ``None``)."""

_OUTPUT_LIMIT: Final = 64 * 1024
"""The decoded bytes a :class:`_Bounded` gives at most per call, about (brotli's
``output_buffer_limit``, which it passes by a buffer's growth at most: some 96 KiB; zstd's, which
it passes by a block at most: 192 KiB)."""

_ZSTD_PIECE: Final = 4
"""The raw bytes a :class:`_BoundedZstd` feeds zstd at a time: a block of zstd takes 4 bytes at
least (one byte repeated, an RLE block), so at most one that gives anything, 128 KiB at most,
ends in each (a step of 64 bytes ends 16 of them: 2 MiB)."""


class _Bounded(ABC):
    """httpx's decoding of one content coding for the drain, a bounded piece of output per call.

    A call gives at most about :data:`_OUTPUT_LIMIT` bytes, and holds the rest back (``held``,
    the drain's :class:`~otel_resilience.integrations.sending.Decoder` protocol: it is called
    again with no input for it). The package's errors are httpx's ``DecodingError``, as httpx's
    decoder raises them.
    """

    __slots__ = ("_error", "held")

    def __init__(self, error: type[Exception]) -> None:
        self._error = error  # the package's
        self.held = False

    def decode(self, data: bytes) -> bytes:
        """Decode ``data`` (none while :attr:`held`): at most about :data:`_OUTPUT_LIMIT` bytes."""
        try:
            return self._give(data)
        except self._error as error:
            raise httpx.DecodingError(str(error)) from error

    def flush(self) -> bytes:
        """Nothing (all was given as it decoded): raises ``DecodingError`` where httpx's flush does."""
        try:
            self._end()
        except self._error as error:
            raise httpx.DecodingError(str(error)) from error
        return b""

    @abstractmethod
    def _give(self, data: bytes) -> bytes:
        """Decode ``data``: at most about :data:`_OUTPUT_LIMIT` bytes; :attr:`held` set."""

    @abstractmethod
    def _end(self) -> None:
        """The body ended: raise the package's error where httpx's decoder raises one."""


class _BoundedBrotli(_Bounded):
    """httpx's brotli decoding for the drain: ``process(data, output_buffer_limit=...)``.

    It gives at most about the limit, and, while ``can_accept_more_data()`` is false, more with
    no input. At the end, ``brotlicffi``'s ``finish()`` tells a stream cut short, as httpx calls it.
    """

    __slots__ = ("_decompressor", "_seen")

    def __init__(self, decompressor: Any, error: type[Exception]) -> None:
        super().__init__(error)
        self._decompressor = decompressor
        self._seen = False

    def _give(self, data: bytes) -> bytes:
        decompressor = self._decompressor
        self._seen = self._seen or bool(data)
        given: bytes = decompressor.process(data, output_buffer_limit=_OUTPUT_LIMIT)
        self.held = not decompressor.can_accept_more_data()
        return given

    def _end(self) -> None:
        finish = getattr(self._decompressor, "finish", None)  # brotlicffi's only
        if self._seen and finish is not None:
            finish()


class _BoundedZstd(_Bounded):
    """httpx's zstd decoding for the drain: ``zstandard``'s, fed :data:`_ZSTD_PIECE` bytes at a time.

    zstandard's ``decompressobj`` gives all its input decodes to, and has no output limit: it is
    fed a few bytes at a time until about :data:`_OUTPUT_LIMIT` came, the rest of the input held
    for the next calls. A body may hold frames one after another, as httpx decodes them: each
    decoded from where the last ended, wherever that is in what was fed (httpx's own decoder
    refuses a frame starting a piece of input: its pieces are the network's, the drain's are steps).
    """

    __slots__ = ("_decompressor", "_input", "_started", "_zstandard")

    def __init__(self, zstandard: Any) -> None:
        super().__init__(zstandard.ZstdError)
        self._zstandard = zstandard
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        self._started = False  # the frame being decoded was fed a byte
        self._input = b""  # what was given and not fed yet (held)

    def _give(self, data: bytes) -> bytes:
        data = self._input + data if self._input else data
        given: list[bytes] = []
        size = at = 0
        decompressor = self._decompressor
        while at < len(data) and size < _OUTPUT_LIMIT:
            piece = data[at : at + _ZSTD_PIECE]
            at += len(piece)
            self._started = True
            decoded = decompressor.decompress(piece)
            if decoded:
                given.append(decoded)
                size += len(decoded)
            if decompressor.eof:  # the frame ended: what follows it starts the next one
                at -= len(decompressor.unused_data)
                decompressor = self._decompressor = self._zstandard.ZstdDecompressor().decompressobj()
                self._started = False
        self._input = data[at:]
        self.held = bool(self._input)
        return b"".join(given)

    def _end(self) -> None:
        if self._started:  # a frame cut short
            raise self._zstandard.ZstdError("Zstandard data is incomplete")


def _failed(request: httpx.Request, response: httpx.Response, raw: bytes) -> FailedResponseError:
    """The error of a failed response whose raw body ``raw`` is within the drain limit (connection closed).

    It holds a copy read (``text`` and ``content`` at hand for a handler of the error: decoded
    once more, within the limit as the drain counted it), and replays an unread one for the
    caller when attempts run out: the transport's response as it came, whose raw body a
    ``client.stream(...)`` caller can read (``iter_raw``).
    """

    def replay() -> httpx.Response:
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Body(raw),
            request=request,
            extensions=response.extensions,
        )

    read = replay()
    read.read()  # decoded from the bytes in memory: no I/O
    return FailedResponseError(read, response.status_code, replay)


_CLOSED: Final = "Cannot send a request, as the client has been closed."
"""httpx's own error for a request to a closed client (``httpx.Client.send``)."""


class _Closed(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """What the requests under way when their transport closed send through: nothing (a closed :class:`Link`).

    Each send of a request under way when its client closed raises the ``RuntimeError`` httpx
    raises for a closed client (:func:`refused`: nothing sends it again). It holds the wrapped
    transport, to close it.
    """

    __slots__ = ("transport",)

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:  # noqa: ARG002 - httpx's signature
        """Refuse the request: its client closed."""
        raise refused(RuntimeError(_CLOSED))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:  # noqa: ARG002
        """Refuse the request: its client closed."""
        raise refused(RuntimeError(_CLOSED))

    def close(self) -> None:
        """Close the wrapped transport (again); a request waiting for its pool is refused."""
        _refuse_waits(self.transport)
        self.transport.close()

    async def aclose(self) -> None:
        """Close the wrapped transport (again); as :meth:`close`."""
        _refuse_waits(self.transport)
        await self.transport.aclose()


class _ClosedPool:
    """What httpcore's closed pool gives a request waiting for one of its connections: a refusal.

    httpcore's ``close()`` closes the connections it holds, nothing more: a request waiting for
    one (every connection in use, ``max_connections``) is given a new one once a request in
    use ends, and sent through the closed pool, on a connection nothing closes again. This one,
    given in place of a connection (:func:`_refuse_waits`), refuses it with httpx's own error for
    a closed client (:func:`refused`); httpcore then drops the request from its pool.
    """

    __slots__ = ()

    def handle_request(self, request: httpcore.Request) -> NoReturn:  # noqa: ARG002 - httpcore's signature
        """Refuse the request: its client closed."""
        raise refused(RuntimeError(_CLOSED))

    async def handle_async_request(self, request: httpcore.Request) -> NoReturn:  # noqa: ARG002
        """Refuse the request: its client closed."""
        raise refused(RuntimeError(_CLOSED))


def _refuse_waits(transport: object) -> None:
    """Give each request waiting for a connection of ``transport``'s httpcore pool a :class:`_ClosedPool`.

    Before the pool closes, under its lock, so that no request ending then gives a waiting one a
    new connection first. A transport of another kind (no httpcore pool), or a pool of an
    httpcore whose insides differ, is left as it is.
    """
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, (httpcore.ConnectionPool, httpcore.AsyncConnectionPool)):
        return
    lock, waits = getattr(pool, "_optional_thread_lock", None), getattr(pool, "_requests", None)
    if lock is None or waits is None:  # another httpcore's pool: closed as httpcore closes it
        return
    with lock:
        for waiting in waits:
            if waiting.is_queued():
                waiting.assign_to_connection(_REFUSAL)


_REFUSAL: Final[Any] = _ClosedPool()
"""What a waiting request is given in place of a connection (httpcore calls its ``handle_request`` only)."""


class _SyncLink(Link[httpx.BaseTransport]):
    """The link of a :class:`ResilientTransport`: its attempt."""

    __slots__ = ()

    def _send_once(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        """One attempt: send ``request``; a failed response is read (up to the drain limit) and raised.

        A failed body that ends within the drain limit is read and its response closed; a
        longer one is left open, unread past it (:func:`_unread`, in ``sent`` in place of the
        transport's). A client timeout while sending or while reading a failed response's body
        is the policy's timeout when the deadline has passed (:meth:`HttpPolicy.deadline_reached`);
        so is a failed body still coming at the deadline (:meth:`HttpPolicy.read_failed`).
        """
        http = self._http
        if sent:  # sent again: what the earlier sends got was dropped (a late response: the timeout's)
            close_earlier(sent)
        index = _prepare(http, request, sent)
        try:
            sent[index] = response = self._sender.handle_request(request)
            if response.status_code not in http.failure_statuses:
                return response
            consumed = response.is_stream_consumed  # read by its transport (a MockTransport's): as it is
            if not consumed:
                rest = response.iter_raw()
                try:
                    raw, whole = http.read_failed(rest, _decoders(response))
                except BaseException:
                    response.close()
                    raise
        except httpx.TimeoutException as error:
            http.deadline_reached(error)
            raise
        except Exception as error:
            if refused_as_made(error, raising=_SYNC_REFUSING):  # a timeout it cannot use: never sent
                raise refused(error).with_traceback(error.__traceback__) from None
            if self._closed:  # the caller closed the client while the request was under way
                closed_during(error, index)
            else:
                body_failed(error, _source(request), index)  # the caller's body generator raised it?
            raise
        if consumed:
            response.close()
            raise FailedResponseError(response, response.status_code)
        if not whole:
            failed = _unread(request, response, raw, rest)
            sent[index] = failed.response  # what the retry closes, or the caller gets
            raise failed
        response.close()
        raise _failed(request, response, raw)

    def read_dropped(self, response: httpx.Response) -> None:
        """Read a result the retry dropped up to the drain limit (:meth:`HttpPolicy.read_dropped`).

        httpx closes a response once its body is read whole, and its connection goes back to the
        pool; a longer one is closed unread once the read stops, as is one the read failed.
        A body read or closed already (by the retry's own ``dropped`` hook) is left as it is.
        """
        if response.is_stream_consumed or response.is_closed:
            return
        try:
            self._http.read_dropped(response.iter_raw(), _decoders(response))
        except BaseException:
            response.close()
            raise


class _AsyncLink(Link[httpx.AsyncBaseTransport]):
    """The link of an :class:`AsyncResilientTransport`: its attempt."""

    __slots__ = ()

    async def _send_once(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        """One attempt: send ``request``; a failed response is read, closed and raised (as the sync one).

        It closes nothing of the earlier sends (it may start beside them, in a hedging race): a
        response the retry dropped was closed before the backoff (:meth:`Sent.drop`).
        """
        http = self._http
        index = _prepare(http, request, sent)
        try:
            sent[index] = response = await self._sender.handle_async_request(request)
            if response.status_code not in http.failure_statuses:
                return response
            consumed = response.is_stream_consumed  # read by its transport (a MockTransport's): as it is
            if not consumed:
                rest = response.aiter_raw()
                try:
                    raw, whole = await http.aread_failed(rest, _decoders(response))
                except BaseException:
                    await response.aclose()
                    raise
        except httpx.TimeoutException as error:
            http.deadline_reached(error)
            raise
        except asyncio.CancelledError as error:
            if raised_in(error, _POOL_WAIT):  # a deadline's timer (or a race): it never left the client
                pool_wait_ended(error, index, cancelled=True)
            raise
        except Exception as error:
            if refused_as_made(error, raising=_ASYNC_REFUSING):  # a timeout it cannot use: never sent
                raise refused(error).with_traceback(error.__traceback__) from None
            if self._closed:  # the caller closed the client while the request was under way
                closed_during(error, index)
            else:
                body_failed(error, _source(request), index)  # the caller's body generator raised it?
            raise
        if consumed:
            await response.aclose()
            raise FailedResponseError(response, response.status_code)
        if not whole:
            failed = _unread(request, response, raw, rest)
            sent[index] = failed.response  # what the retry closes, or the caller gets
            raise failed
        await response.aclose()
        raise _failed(request, response, raw)

    async def read_dropped(self, response: httpx.Response) -> None:
        """Read a result the retry dropped up to the drain limit (:meth:`HttpPolicy.aread_dropped`).

        Cancelled while it reads (the deadline's timer, the caller), the response is closed.
        """
        if response.is_stream_consumed or response.is_closed:
            return
        try:
            await self._http.aread_dropped(response.aiter_raw(), _decoders(response))
        except BaseException:
            await response.aclose()
            raise


_POOL_WAIT: Final = AsyncPoolRequest.wait_for_connection.__code__
"""httpcore's one wait for a free connection of an async pool (its proxies' pools too): a
cancellation raised in it ended the send before it left the client (:func:`raised_in`)."""


_SYNC_REFUSING: Final = (
    SyncStream.write.__code__,
    (socket.create_connection.__code__, SyncBackend.connect_tcp.__code__),
)
"""Where httpcore's sync backend refuses a timeout phase before a byte of the request is written: the
socket's ``settimeout`` in ``SyncStream.write`` (the first write of the request, its headers, with the
``write`` phase: its ``ValueError`` for a NaN or ``-1``, ``TypeError`` for a ``Decimal``,
``OverflowError`` for an infinity or an int past the floats) and in ``create_connection`` as
``SyncBackend.connect_tcp`` opens a connection (the ``connect`` phase). A plain such error raised by
these (:func:`refused_as_made`'s ``raising``) can only be that refusal: ``write``'s other builtin, the
socket's ``send``, takes httpcore's bytes; ``create_connection``'s own errors are ``OSError``; a host
name it cannot encode is a ``UnicodeError`` (a subclass) raised deeper. The ``read`` phase is refused
the same way, but only once the request was written whole (its first read): the host had it."""
_ASYNC_REFUSING: Final = tuple(
    (raiser, caller)
    for raiser in (
        getattr(anyio.fail_after, "__wrapped__", anyio.fail_after).__code__,  # a @contextmanager in anyio 4
        CancelScope.__init__.__code__,
    )
    for caller in (AnyIOBackend.connect_tcp.__code__, AnyIOStream.write.__code__)
)
"""Where httpcore's async backend refuses a timeout phase before a byte of the request is written:
anyio's ``fail_after`` (its ``TypeError`` for a ``Decimal``, ``OverflowError`` for an int past the
floats) or its cancel scope (``ValueError`` for a NaN), entered by ``AnyIOBackend.connect_tcp`` with
the ``connect`` phase or by ``AnyIOStream.write`` with the ``write`` phase before the stream's
``send``. Each only in a call of httpcore's: anyio's code is anyone's. An infinity is no limit to
anyio, and ``-1`` one that has passed (httpx's timeout)."""


def _source(request: httpx.Request) -> object:
    """What the caller gave as ``request``'s body when httpx streams it: a generator (else no matter)."""
    return getattr(request.stream, "_stream", None)  # httpx's Iterator/AsyncIteratorByteStream's


class _Wrapping(HttpIntegration, Generic[T]):
    """What both transports hold: the policy's HTTP rules and the link the requests entering now send through.

    The link (:class:`~otel_resilience.integrations.sending.Link`) is to the wrapped transport;
    closing the transport closes it (:class:`_Closed`).

    Args:
        policy: A :class:`~otel_resilience.ResilienceConfig` (or a policy handle).
        transport: The transport that sends (default: a new one of the class's default kind).
        options: How requests are judged (:class:`~otel_resilience.integrations.http.HttpOptions`).
        manager: The manager keeping breakers and bulkheads (default: the process-wide one).

    Raises:
        TypeError: ``policy``, ``options`` or ``manager`` has the wrong type, or ``transport``
            cannot send for this client (no callable ``handle_request`` for the sync one,
            ``handle_async_request`` for the async one: an ``httpx.HTTPTransport`` under an
            ``AsyncClient``), checked first, so that nothing is made for a refused transport.
    """

    _default: ClassVar[type[Any]]
    _sends: ClassVar[str]
    """The method of a transport this client sends through (httpx's name for its driver's)."""
    transport_errors = (httpx.TransportError, httpx.DecodingError)
    """A failed connection, a timeout, a failed response's body cut off or not decodable."""

    def __init__(
        self,
        policy: ResilienceConfig | PolicyHandleLike,
        transport: T | None = None,
        *,
        options: HttpOptions | None = None,
        manager: ResilienceManager | None = None,
    ) -> None:
        if transport is not None and not callable(getattr(transport, self._sends, None)):
            kind = type(self).__name__
            rule = f"an httpx transport with {self._sends}() (one of {self._default.__name__}'s kind)"
            raise fail(kind, "transport", rule, transport, kind=TypeError)
        super().__init__(policy, options=options, manager=manager)
        self._open(transport if transport is not None else self._default())


class ResilientTransport(_Wrapping[httpx.BaseTransport], httpx.BaseTransport):
    """An httpx transport that sends each request under ``policy``, through ``transport``.

    Takes ``policy``, ``transport`` (default: a new ``httpx.HTTPTransport()``), ``options`` and
    ``manager``, as described on its base.
    """

    _default = httpx.HTTPTransport
    _sends = "handle_request"
    _link_kind = _SyncLink
    _attempt: Callable[[httpx.Request, Sent], httpx.Response]
    synchronous = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under the policy: the last response, or the error that ended it."""
        http, url = self._http, request.url
        host, port = url.raw_host.decode("ascii"), url.port  # an IDNA name as sent: xn--...
        if port is not None:  # written out: httpx keeps the scheme's own after a capital scheme
            port = host_port(url.scheme, port)
        return http.send_sync(host, port, _judge(http, request), self._attempt, request)

    def close(self) -> None:
        """Close the wrapped transport; a request under way is not sent (:class:`_Closed`)."""
        self._close_link(_Closed).close()


class AsyncResilientTransport(_Wrapping[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport):
    """An async httpx transport that sends each request under ``policy``; as :class:`ResilientTransport`.

    Its default ``transport`` is a new ``httpx.AsyncHTTPTransport()``.
    """

    _default = httpx.AsyncHTTPTransport
    _sends = "handle_async_request"
    _link_kind = _AsyncLink
    _attempt: Callable[[httpx.Request, Sent], Awaitable[httpx.Response]]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under the policy: the last response, or the error that ended it."""
        http, url = self._http, request.url
        host, port = url.raw_host.decode("ascii"), url.port  # an IDNA name as sent: xn--...
        if port is not None:  # written out: httpx keeps the scheme's own after a capital scheme
            port = host_port(url.scheme, port)
        return await http.send(host, port, _judge(http, request), self._attempt, request)

    async def aclose(self) -> None:
        """Close the wrapped transport; a request under way is not sent (:class:`_Closed`)."""
        await self._close_link(_Closed).aclose()
