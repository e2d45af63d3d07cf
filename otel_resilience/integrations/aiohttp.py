"""An aiohttp client middleware that sends every request under a policy (extra ``aiohttp``, >= 3.12).

::

    async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(policy),)) as session:
        async with session.get(url) as response:
            ...

Each request is one execution of the policy and each send one attempt; see
:mod:`otel_resilience.integrations.http` for which responses are failures, which requests are
retried (an ``Idempotency-Key`` header marks one), ``Retry-After`` and the breaker per host. A
body from a stream, a file or an async iterator is never retried; one held in memory is (bytes,
text, a form, JSON, a ``FormData`` whose files are bytes or text). A failed response is read in
its attempt (its connection goes back to the pool), up to
:data:`~otel_resilience.integrations.http.DRAIN_LIMIT` (a longer body is read as the caller reads
it, or not at all when the retry goes on after it); the one returned when attempts run out reads
as an unread one: ``read()``, ``text()``, ``json()`` and its ``content`` stream give its body. A
wait for a free connection slot (``TCPConnector(limit=...)``) ends with the error a connect ends
with (``ConnectionTimeoutError``): the breaker does not count the one that ended a wait (told by
where it was raised), nor the policy's timeout of an attempt still waiting, nor aiohttp's total
timeout there; a connect's timeout is counted, as any transport failure.

The policy's deadline cancels the request (asyncio), so it never outlives its policy; aiohttp's
own timeouts still apply. A deadline reaches the caller as the policy's
:class:`~otel_resilience.OperationTimeoutError` (aiohttp wraps an ``OSError`` a middleware
raises in ``ClientOSError``, but passes a ``TimeoutError`` without an ``errno`` through as it
is), which the FastAPI handlers answer with a 504. aiohttp's own total timeout
(``ClientTimeout(total=...)``) firing during a send is the policy's timeout too: the execution
ends as a timeout and the request is not sent again (the caller's wait is over); firing in a
wait of the policy's own (a backoff, a bulkhead's queue, a hedging race) it cancels the
execution, as an enclosing ``asyncio.timeout`` does (outcome ``cancelled``: a deadline of the
library's own around the call ends it as a ``timeout``). aiohttp itself sends an
idempotent request once more when its connection was reset or closed without an answer: that is
a new request, so a new execution of the policy (after the policy's attempts ran out, the
breaker may have opened: the caller then sees :class:`~otel_resilience.CircuitOpenError`). A
request under way when its session closes (its retry backing off) is not sent again: it ends
with aiohttp's own ``RuntimeError("Session is closed")``; one whose connector closed under an
open session (``connector_owner=False``, closed by its owner) or while the session closed, with
aiohttp's own ``ClientConnectionError("Connector is closed.")``, once, not counted by the breaker.
One waiting for its answer at the close ends with the error the close gave it, as aiohttp raises
it (``ServerDisconnectedError``; a GET aiohttp sends again itself: ``Connector is closed.``),
once: not retried, not counted by the breaker. One waiting for a connection slot
(``TCPConnector(limit=...)``), whose wait aiohttp's close cancels, its task not cancelled, ends
with ``ClientConnectionError("Connector is closed.")``, never sent: not a cancellation (Python
3.11+: on 3.10 nothing tells it from a cancellation of the task, which it stays). A request with
a header aiohttp refuses to write (a control character in it: its ``ValueError``, nothing sent)
is the caller's mistake: not sent again, not counted by the breaker (a
:class:`~otel_resilience.integrations.http.RequestNotSentError`), as httpx's ``LocalProtocolError``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Final

import aiohttp
from aiohttp import payload
from aiohttp.base_protocol import BaseProtocol
from aiohttp.connector import BaseConnector
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_writer import StreamWriter

from otel_resilience.errors import OperationTimeoutError
from otel_resilience.integrations.http import FailedResponseError
from otel_resilience.integrations.sending import (
    HttpIntegration,
    HttpPolicy,
    Sent,
    body_failed,
    closed_during,
    host_port,
    pool_wait_ended,
    raised_in,
    record_send,
    refused,
    refused_as_made,
)

__all__ = ["MalformedResponseError", "ResilientMiddleware"]

_REPLAYABLE_BODIES = (payload.BytesPayload, payload.StringPayload, payload.JsonBytesPayload)
_POOL_WAIT: Final = BaseConnector._wait_for_available_connection.__code__
"""aiohttp's wait for a free connection slot (``TCPConnector(limit=...)``): a timeout or a
cancellation raised in it ended the send before it left the client (:func:`raised_in`)."""
_CONNECT: Final = BaseConnector.connect.__code__
"""aiohttp's connect: an error raised in it once the session is closed (its connector closed, by
the session or by the connector's owner) ended a send that never left the client."""
_HEADERS: Final = StreamWriter.write_headers.__code__
"""aiohttp's serialisation of a request's headers, before a byte of them is written: the
``ValueError`` raised in it for a header with a control character refuses the request as the
caller made it, which no host saw (:func:`refused_as_made`)."""


class ResilientMiddleware(HttpIntegration):
    """An aiohttp client middleware (``ClientSession(middlewares=(...,))``) running requests under ``policy``.

    ``ResilientMiddleware(policy, *, options=None, manager=None)``: the arguments of
    :class:`~otel_resilience.integrations.sending.HttpIntegration`.
    """

    transport_errors = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)
    """A failed connection, a timeout, and a failed response's body cut off (``ClientPayloadError``).

    A response aiohttp cannot parse (a bad status line, header or length) is one too: aiohttp
    raises it as a ``ClientResponseError``, which the attempt raises as
    :class:`MalformedResponseError`, a ``ClientConnectionError`` as well.
    """

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Send ``request`` under the policy: the last response, or the error that ended it."""
        http, url, body = self._http, request.url, request.body
        replayable = http.replayable(request.method, request.headers, None, not body or _in_memory(body))
        port = host_port(url.scheme, url.port)  # the scheme's own port: the host's one key
        host = url.raw_host or ""  # an IDNA name as sent: xn--...
        return await http.send(host, port, replayable, self._send_once, (request, handler))

    async def _send_once(
        self, exchange: tuple[aiohttp.ClientRequest, aiohttp.ClientHandlerType], sent: Sent
    ) -> aiohttp.ClientResponse:
        """One attempt: pass the request on; a failed response is read (:func:`_read_failed`) and raised.

        It releases nothing of the earlier sends (it may start beside them, in a hedging race): a
        response the retry dropped was released before the backoff (:meth:`Sent.drop`).
        """
        request, handler = exchange
        index = record_send(sent)
        try:
            sent[index] = response = await handler(request)
            if response.status not in self._http.failure_statuses:
                return response
            await _read_failed(self._http, response)
        except (asyncio.TimeoutError, asyncio.CancelledError) as error:
            total = _total_timed_out(request, error)  # aiohttp's ClientTimeout.total: the request is over
            if raised_in(error, _POOL_WAIT):  # waiting for a connection slot: it never left the client
                if not total and _slot_closed(request, error):  # the session's close ended the wait
                    raise refused(aiohttp.ClientConnectionError("Connector is closed.")) from None
                pool_wait_ended(
                    error, index, cancelled=not total and isinstance(error, asyncio.CancelledError)
                )
            if total:
                raise self._http.client_timed_out(_TotalTimeoutError) from error
            raise
        except (AssertionError, AttributeError) as error:  # aiohttp's own, sending without a connector
            if request.session.closed:  # closed while the request was under way (its retry backing off)
                raise refused(RuntimeError("Session is closed")) from error  # aiohttp's, for a closed session
            raise
        except Exception as error:
            cause = error.__cause__
            if isinstance(error, aiohttp.ClientResponseError) and isinstance(cause, HttpProcessingError):
                raise MalformedResponseError.of(error).with_traceback(error.__traceback__) from cause
            if refused_as_made(error, _HEADERS):  # a header aiohttp will not write: never sent
                raise refused(error).with_traceback(error.__traceback__) from None
            if request.session.closed:  # closed (or its connector) while the request was under way
                if raised_in(error, _CONNECT):  # before it was sent
                    raise refused(error).with_traceback(error.__traceback__) from None
                closed_during(error, index)  # waiting for its answer
            else:
                body_failed(error, getattr(request.body, "_value", None), index)  # the caller's generator's?
            raise
        raise FailedResponseError(response, response.status)

    async def read_dropped(self, response: aiohttp.ClientResponse) -> None:
        """Read a result the retry dropped up to the drain limit (:meth:`HttpPolicy.aread_dropped`).

        A body read whole has its connection back in the pool once released; a longer one, or
        one the read failed, is released unread (aiohttp closes its connection). Cancelled while
        it reads (the deadline's timer, the caller), the response is closed. aiohttp's total
        timeout firing while it reads ends the request as the policy's timeout, as in a send
        (:meth:`HttpPolicy.client_timed_out`): it is not sent again.
        """
        try:
            whole = await self._http.aread_dropped(response.content.iter_any())
        except BaseException:
            response.close()
            raise
        if not whole and _total_fired(response):  # its read ended by aiohttp's total timeout: over
            raise self._http.client_timed_out(_TotalTimeoutError)


class MalformedResponseError(aiohttp.ClientResponseError, aiohttp.ClientConnectionError):
    """aiohttp's ``ClientResponseError`` for a response it could not parse, raised as a transport error.

    A bad status line, header or ``Content-Length`` from the host: retried and counted by the
    breaker as a failed connection is (requests and httpx raise such a response as one of their
    connection or protocol errors). Still a ``ClientResponseError``, with aiohttp's ``status``
    (400, the parser's), ``message`` and ``request_info``; its ``__cause__`` is the parser's
    ``HttpProcessingError``.
    """

    @classmethod
    def of(cls, error: aiohttp.ClientResponseError) -> MalformedResponseError:
        """The same error as a :class:`MalformedResponseError`."""
        return cls(
            error.request_info,
            error.history,
            status=error.status,
            message=error.message,
            headers=error.headers,
        )


class _TotalTimeoutError(OperationTimeoutError):
    """The policy's timeout for a request that aiohttp's total timeout (``ClientTimeout.total``) ended."""

    __slots__ = ()

    def __str__(self) -> str:
        return (
            f"operation {self.operation!r} timed out: aiohttp's total timeout of the request "
            "(ClientTimeout.total) ended it"
        )


def _total_timed_out(request: aiohttp.ClientRequest, error: BaseException) -> bool:
    """Whether aiohttp's total timeout of ``request`` (``ClientTimeout.total``) ended the send with ``error``.

    aiohttp times the whole request with a timer that cancels the task: where it reads, it
    turns the cancellation into ``asyncio.TimeoutError``; elsewhere (waiting for a connection,
    connecting, writing) the ``CancelledError`` passes, and aiohttp turns it on its way out of
    the session. That one is taken back here, as aiohttp's timer would take it back (Python
    3.11+: the task's count of cancellations goes down), unless another cancellation is
    pending too: then it stays a cancellation. The timer is the request's (private to aiohttp,
    which gives a middleware no other way to it); without one, nothing is the total's.
    """
    if not _total_fired(request):
        return False
    timer = getattr(request, "_timer", None)
    if isinstance(error, asyncio.CancelledError) and sys.version_info >= (3, 11):
        task = asyncio.current_task()
        if task is not None:
            if task.cancelling() > getattr(timer, "_cancelling", 0) + 1:  # another one is pending
                return False
            task.uncancel()
    return True


def _total_fired(owner: aiohttp.ClientRequest | aiohttp.ClientResponse) -> bool:
    """Whether aiohttp's total timeout (``ClientTimeout.total``) of the request has fired.

    ``owner``: the request, or its response (both hold the request's timer); without a timer,
    nothing fired.
    """
    timer = getattr(owner, "_timer", None)
    if timer is None:
        return False
    try:
        timer.assert_timeout()  # raises once the total timeout fired
    except asyncio.TimeoutError:
        return True
    return False


def _slot_closed(request: aiohttp.ClientRequest, error: BaseException) -> bool:
    """Whether the close of ``request``'s session (or of its connector) ended its wait for a connection slot.

    aiohttp's close cancels each wait for a slot of the connector's (``TCPConnector(limit=...)``):
    the ``CancelledError`` reaches the request's task, which nobody cancelled. A task that is
    being cancelled too (its count of cancellations: Python 3.11+; on 3.10 nothing tells it)
    keeps its cancellation.
    """
    if isinstance(error, asyncio.CancelledError) and sys.version_info >= (3, 11) and request.session.closed:
        task = asyncio.current_task()
        return task is not None and not task.cancelling()
    return False


def _in_memory(body: object) -> bool:
    """Whether a request body is held in memory, so that it can be sent again as it was.

    Bytes, text, a form and JSON are; so is a multipart body (``FormData`` with a file) whose
    parts all are. A stream, a file or an async iterator is not.
    """
    if isinstance(body, _REPLAYABLE_BODIES):
        return True
    if isinstance(body, aiohttp.MultipartWriter):
        return all(_in_memory(part) for part, _encoding, _transfer in body)
    return False


async def _read_failed(http: HttpPolicy, response: aiohttp.ClientResponse) -> None:
    """Read a failed ``response``, up to the drain limit, and keep it readable whole.

    A body that ends within the drain limit (:meth:`HttpPolicy.aread_failed`) is read whole,
    and its connection goes back to the pool once it ended; a longer one is read no further,
    its connection kept for the rest (the retry that goes on after it releases it, not reused).
    The response is not released: aiohttp refuses a released response's ``read()`` and
    ``content``. Its ``content`` becomes a stream of the body read (then of the rest, as it
    comes: :class:`_Rest`), so the caller who gets it when attempts run out reads it as an
    unread one (``read()``, ``text()``, ``json()``, ``content.iter_chunked()``...), with the
    limits of the response's own stream (the session's ``read_bufsize``: the longest line
    ``readline()`` gives). Reading fails: the response is closed.
    """
    content = response.content
    try:
        head, whole = await http.aread_failed(content.iter_any())
    except BaseException:
        response.close()
        raise
    if whole and not head:  # no body (a HEAD's: aiohttp's empty stream, without limits): as it came
        return
    loop = asyncio.get_running_loop()
    limit = content.get_read_buffer_limits()[0]
    if whole:
        replay = aiohttp.StreamReader(_Unplugged(loop), limit, loop=loop)
        replay.feed_data(head)
        replay.feed_eof()
    else:
        replay = _Rest(head, content, limit, loop)
    response.content = replay


class _Unplugged(BaseProtocol):
    """The protocol of a stream fed by hand: nothing to pause or resume (no transport, no parser)."""

    def pause_reading(self) -> None:
        """Nothing reads into the stream on its own: nothing to pause."""

    def resume_reading(self, resume_parser: bool = True) -> None:
        """Nothing to resume."""


class _Rest(aiohttp.StreamReader):
    """A failed response's ``content`` read in part: the bytes read, then the rest of its own stream.

    Whenever a read finds nothing left (aiohttp's readers all wait in ``_wait``), the next piece
    of the response's own stream (``rest``) is fed in, its end the end; what the response's
    stream raises (a body cut off) is raised to the reader.
    """

    def __init__(
        self, head: bytes, rest: aiohttp.StreamReader, limit: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(_Unplugged(loop), limit, loop=loop)
        self._rest = rest
        self.feed_data(head)

    async def _wait(self, func_name: str) -> None:  # noqa: ARG002 - aiohttp's signature
        piece = await self._rest.readany()
        if piece:
            self.feed_data(piece)
        else:
            self.feed_eof()
