"""A requests transport adapter that sends every request under a policy (extra ``requests``).

::

    session = requests.Session()
    session.mount("https://", ResilientAdapter(policy))
    session.mount("http://", ResilientAdapter(policy))

Each request is one execution of the policy and each send one attempt; see
:mod:`otel_resilience.integrations.http` for which responses are failures, which requests are
retried (an ``Idempotency-Key`` header, or :func:`mark_retryable`), ``Retry-After``, the
deadline passed on as the request's timeout (a ``urllib3.util.Timeout`` too: each of its limits
capped; with ``pool_block=True``, the wait for a free connection too), and the breaker per
host (``http://host/`` and ``http://host:80/`` are one host). A body given as a file or an
iterator is never retried. The adapter's own ``max_retries`` stays 0 (any
other is refused, given or set later): the policy retries. A failed response is read in its attempt (up to
:data:`~otel_resilience.integrations.http.DRAIN_LIMIT`: a longer body is read as the caller
reads it, or not at all when the retry goes on after it): the one returned when attempts run
out gives its body through ``content``, ``text`` and ``iter_content`` (with ``stream=True``
too), its ``raw`` stream is spent (over the drain limit, it gives the body from its start through
``read()``, ``stream()`` and ``readinto()`` only). With ``pool_block=True``, a wait for a free connection the
deadline ended is the policy's timeout, never a failure of the host (urllib3's
``EmptyPoolError`` is a :class:`~otel_resilience.integrations.http.PoolTimeoutError`).

:func:`mark_retryable` marks the prepared request it is given: a request requests makes anew
from it (a redirect's next hop, an authentication's second send) is judged by its method and
headers alone; an ``Idempotency-Key`` header goes with it.

A header http.client refuses to write (a control character in one an auth set, which requests
does not check: its ``ValueError``, nothing sent) is the caller's mistake: not sent again, not
counted by the breaker (a :class:`~otel_resilience.integrations.http.RequestNotSentError`). So is
a ``timeout`` requests cannot use (``(1, 2, 3)``, ``-1``, a NaN, ``("abc", 1)``: requests',
urllib3's or the socket's ``ValueError`` as a connection opens or a pooled one takes it; a
``Decimal``: the socket's ``TypeError``; an infinity or an int past the floats, with no deadline
to cap it: the socket's or urllib3's ``OverflowError``), which the deadline's capping passes on as
it is (:func:`_capped`).

A request under way when its adapter closes (``session.close()``: its retry backing off, waiting
in a bulkhead's queue or for a rate limiter's permit, or, with ``pool_block=True``, for a free
connection of its pool) is not sent, neither again nor for the
first time: it ends with requests' own error for a closed pool (a ``ConnectionError`` from
urllib3's ``ClosedPoolError``), once, not retried. One waiting for its answer gets it: the close
leaves a connection in use open. A new request is sent, through new pools, as requests sends
one after ``close()``.

The OpenTelemetry requests instrumentation wraps ``Session.send``, so its client span covers the
whole execution (every attempt nests inside it) rather than one span per send.
"""

from __future__ import annotations

import contextlib
import http.client
import queue
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, TypedDict, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter
from requests.exceptions import ChunkedEncodingError, ContentDecodingError
from requests.models import CONTENT_CHUNK_SIZE
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool, port_by_scheme
from urllib3.exceptions import ClosedPoolError, EmptyPoolError
from urllib3.util import Timeout
from urllib3.util.connection import create_connection

from otel_resilience.engine.validation import check_int, fail
from otel_resilience.integrations.http import FailedResponseError
from otel_resilience.integrations.sending import (
    HttpIntegration,
    HttpPolicy,
    Link,
    Sent,
    body_failed,
    close_earlier,
    host_port,
    record_send,
    refused,
    refused_as_made,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from otel_resilience.integrations.http import HttpOptions, PolicyHandleLike
    from otel_resilience.manager import ResilienceConfig, ResilienceManager

__all__ = ["AdapterOptions", "ResilientAdapter", "mark_retryable"]

_MARK = "otel_resilience_retryable"
_IN_MEMORY: Final = (bytes, str, bytearray, memoryview)
"""The prepared bodies held in memory, sent whole each time (a form, JSON and a multipart body are
bytes once prepared; requests streams a ``bytearray`` or ``memoryview`` as it is, whole): a
request with one may be sent again. An iterator or a file is read as it is sent: never again."""


def mark_retryable(request: requests.PreparedRequest, retryable: bool = True) -> requests.PreparedRequest:
    """Allow (or, with ``False``, forbid) retrying ``request`` whatever its method; return it.

    Raises:
        TypeError: ``request`` is not a ``PreparedRequest`` (an unprepared ``requests.Request``
            would lose the mark when prepared), or ``retryable`` is not a bool.
    """
    if not isinstance(request, requests.PreparedRequest):
        raise fail("mark_retryable", "request", "a requests.PreparedRequest", request, kind=TypeError)
    if not isinstance(retryable, bool):
        raise fail("mark_retryable", "retryable", "a bool", retryable, kind=TypeError)
    setattr(request, _MARK, retryable)
    return request


def _capped(timeout: Any, left: float | None) -> Any:
    """Return requests' ``timeout`` capped by ``left`` (the seconds left; ``None``: no deadline).

    ``timeout`` is ``None``, seconds, ``(connect, read)`` or a ``urllib3.util.Timeout``
    (:func:`_capped_timeout`). One requests cannot use is returned as it is, for requests to
    refuse with its own error (a tuple holding what is no number too: never a ``TypeError`` here).
    """
    if left is None:
        return timeout
    if timeout is None:
        return left
    if isinstance(timeout, tuple):
        try:
            return tuple(left if part is None else min(part, left) for part in timeout)
        except TypeError:  # a part that is no number, ("abc", 1): returned as it is, below
            pass
    if isinstance(timeout, (int, float)):
        return min(timeout, left)
    if isinstance(timeout, Timeout):
        return _capped_timeout(timeout, left)
    return timeout  # not a timeout requests knows: its own error will say so


def _capped_timeout(timeout: Timeout, left: float) -> Timeout:
    """Return a urllib3 ``timeout`` whose connect and read (and total, if set) are at most ``left``.

    An unset limit (``None``, or urllib3's default: the socket module's default timeout) has no
    bound, so it becomes ``left``. ``timeout`` itself is returned when it is already within.
    """
    connect, read, total = timeout._connect, timeout._read, timeout.total
    capped_total = min(total, left) if isinstance(total, (int, float)) else total
    capped = (_within(connect, left), _within(read, left), capped_total)
    if capped == (connect, read, total):
        return timeout
    return Timeout(connect=capped[0], read=capped[1], total=capped[2])


def _within(limit: Any, left: float) -> Any:
    """Return a urllib3 Timeout's connect or read ``limit`` capped by ``left`` (unset: ``left``).

    A limit is a number urllib3 took (its check reads it as a float): one of a type the socket
    refuses (a ``Decimal``) is capped as any, so that it stays what it was unless ``left`` is
    less, and is refused by the socket as without a deadline. Taken for an unset one, it was
    replaced by ``left``, a longer limit than the caller's.
    """
    if limit is Timeout.DEFAULT_TIMEOUT:
        limit = socket.getdefaulttimeout()
    return left if limit is None else min(limit, left)


def _bound_waits(manager: PoolManager, http: HttpPolicy) -> None:
    """Have the pools ``manager`` makes wait for a free connection no longer than the deadline.

    requests gives urllib3 no pool timeout: with ``pool_block=True``, a request finding every
    connection of its pool in use waits for one for good, past its deadline. Each pool waits
    what is left of the deadline at most (:meth:`HttpPolicy.timeout_left`; without a deadline,
    as long as it takes), then raises urllib3's ``EmptyPoolError``: the policy's timeout.
    """
    manager.pool_classes_by_scheme = {
        scheme: _bounded(pool, http) for scheme, pool in manager.pool_classes_by_scheme.items()
    }


def _bounded(pool: type[HTTPConnectionPool], http: HttpPolicy) -> type[HTTPConnectionPool]:
    """Return a subclass of the urllib3 ``pool`` class whose wait for a connection ``http`` bounds.

    Closing such a pool (:meth:`ResilientAdapter.close`) ends the waits for its connections too
    (:class:`_ClosedSlot`): urllib3's own close leaves a request waiting for one until a
    connection comes back, then sends it through the closed pool.
    """

    def _get_conn(self: HTTPConnectionPool, timeout: float | None = None) -> Any:
        return pool._get_conn(self, http.timeout_left() if timeout is None else timeout)

    def close(self: HTTPConnectionPool) -> None:
        waits = self.pool
        pool.close(self)
        if waits is not None:
            _ClosedSlot(self, waits).pass_on()

    return type(pool.__name__, (pool,), {"_get_conn": _get_conn, "close": close, "__module__": __name__})


def _closed_pool(error: requests.ConnectionError) -> bool:
    """Whether ``error`` is requests' error for a request to a closed pool (urllib3's ``ClosedPoolError``)."""
    return isinstance(next(iter(error.args), None), ClosedPoolError)


class _ClosedSlot:
    """What a closed blocking pool's queue gives a request still waiting in it: urllib3's ``ClosedPoolError``.

    urllib3 checks each connection it takes from the queue (``is_connection_dropped``, which
    reads ``is_connected``, or ``sock`` before urllib3 2): this one raises there, after putting
    itself back for the next request waiting. The request is not sent (requests raises its
    ``ConnectionError`` for a closed pool: refused, :meth:`_AdapterLink._send_once`); a
    connection given back to the closed pool is closed (urllib3's ``_put_conn``).
    """

    __slots__ = ("_pool", "_queue")

    def __init__(self, pool: HTTPConnectionPool, waits: Any) -> None:
        self._pool = pool
        self._queue = waits

    def pass_on(self) -> None:
        """Put this in the queue, for the next request waiting in it (if there is room: a pool's size)."""
        with contextlib.suppress(queue.Full):
            self._queue.put(self, block=False)

    @property
    def is_connected(self) -> NoReturn:
        """Refuse the request that took this from the queue (and pass it on to the next)."""
        self.pass_on()
        raise ClosedPoolError(self._pool, "Pool is closed.")

    sock = is_connected

    def close(self) -> None:
        """Nothing to close: no connection."""


class _Rest:
    """The ``raw`` of a failed response read in part: the body read, then the rest as it comes.

    requests reads a response's ``content`` (and ``iter_content``) from its ``raw.stream``:
    this one gives what the attempt read (``head``), then the rest of the body from ``rest``
    (the attempt's ``iter_content``: decoded, its errors requests' own), through ``read``,
    ``stream`` and ``readinto`` (what ``io.BufferedReader`` reads with: lines through one). The
    urllib3 response's other ways of reading the body (:data:`_UNREAD`) would read the wire
    past what the attempt read: they are refused. Anything else is the urllib3 response's
    (``raw``): closing it closes the connection, which is not reused unless the body was read
    to its end.
    """

    def __init__(self, head: bytes, rest: Iterator[bytes], raw: Any) -> None:
        self._pending = head
        self._rest = rest
        self._raw = raw

    def _next(self) -> bytes:
        """The next piece of the body; ``b""`` at its end."""
        if self._pending:
            piece, self._pending = self._pending, b""
            return piece
        return next(self._rest, b"")

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:  # noqa: ARG002
        """Up to ``amt`` bytes of the body (``None``: all that is left), decoded."""
        pieces: list[bytes] = []
        size = 0
        while amt is None or size < amt:
            piece = self._next()
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
        data = b"".join(pieces)
        if amt is not None and size > amt:
            data, self._pending = data[:amt], data[amt:]
        return data

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:  # noqa: ARG002
        """The body as requests' ``iter_content`` reads it: decoded, in chunks of ``amt`` bytes."""
        while data := (self.read(amt) if amt else self._next()):
            yield data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read up to ``len(buffer)`` bytes of the body into ``buffer``; return how many (0: its end)."""
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def __getattr__(self, name: str) -> Any:
        if name == "_raw":  # not set yet (a copy being made): not the urllib3 response's either
            raise AttributeError(name)
        if name in _UNREAD:
            msg = (
                f"the raw stream of a failed response read in part has no {name!r}: read its body "
                "with read(), stream() or readinto() (io.BufferedReader(raw) for lines), or content"
            )
            raise AttributeError(msg)
        return getattr(self._raw, name)


_UNREAD = frozenset({"data", "json", "peek", "read1", "read_chunked", "readline", "readlines"})
"""The urllib3 response's ways of reading its body that :class:`_Rest` does not give: each would
read the wire past the bytes the attempt read, as if they were not part of the body."""


def _as_it_comes(raw: Any, http: HttpPolicy) -> tuple[Iterator[bytes], _Pieces | None]:
    """The body of ``raw`` (a urllib3 response), decoded, in the pieces it comes in (``iter_content``).

    A failed body is read in its attempt until the deadline at most, however slowly it comes
    (:meth:`HttpPolicy.read_failed`). A piece of a fixed size
    (``iter_content(CONTENT_CHUNK_SIZE)``) waits for its 10 KiB through as many reads of the
    connection as it takes, each within the read timeout; so does urllib3's decoding for the first
    byte it gives (a gzip header that never ends). Here each piece is what one read of the
    connection gives (urllib3's ``read1``), and each read of the connection is made within the
    deadline (:class:`_Pieces`) while the attempt reads (an older urllib3 without ``read1`` reads
    its own pieces). requests' ``iter_content`` still reads it, so its errors are requests' own (a
    body cut off: ``ChunkedEncodingError``; a read timeout: ``ConnectionError``).

    Returns:
        The pieces, and what reads them (``None`` without ``read1``): its ``http`` set to ``None``
        once the attempt is over leaves the rest of the body to the caller's reads, unbounded.
    """
    reader = requests.Response()
    pieces = _Pieces(raw, http) if hasattr(raw, "read1") else None
    reader.raw = raw if pieces is None else pieces
    return reader.iter_content(CONTENT_CHUNK_SIZE), pieces


class _Pieces:
    """A urllib3 response whose ``stream`` gives what each read of the connection gives.

    What :func:`_as_it_comes` has requests' ``iter_content`` read. While :attr:`http` is set,
    each read of the connection urllib3 makes for a piece first checks the deadline
    (:meth:`HttpPolicy.deadline_reached`, through :class:`_Checked`): urllib3 reads on, within one
    piece, until something decodes.

    Attributes:
        http: The policy whose deadline bounds each read (``None``: none does).
    """

    __slots__ = ("_raw", "http")

    def __init__(self, raw: Any, http: HttpPolicy | None) -> None:
        self._raw = raw
        self.http = http

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        """The body, decoded as asked, in pieces of at most ``amt`` bytes, each one read's; none empty."""
        raw = self._raw
        while True:
            http, wire = self.http, raw._fp  # http.client's response, which urllib3 reads through
            if http is None or wire is None:
                piece = raw.read1(amt, decode_content=decode_content)
            else:
                raw._fp = _Checked(wire, http)
                try:
                    piece = raw.read1(amt, decode_content=decode_content)
                finally:
                    raw._fp = wire
            if not piece:
                return
            yield piece


class _Checked:
    """http.client's response under a urllib3 one, each read of which first checks the deadline.

    The deadline passed, the read raises the policy's timeout (an ``OperationTimeoutError``, a
    ``TimeoutError``): urllib3 reads it as a socket's timeout (its ``ReadTimeoutError``, closing
    the connection), requests as a ``ConnectionError``, which the attempt turns back into the
    policy's timeout (:meth:`HttpPolicy.deadline_reached`). Anything else is the response's own.
    """

    __slots__ = ("_http", "_wire")

    def __init__(self, wire: Any, http: HttpPolicy) -> None:
        self._wire = wire
        self._http = http

    def read1(self, *args: Any) -> bytes:
        """What one read of the connection gives, if the deadline has not passed."""
        self._http.deadline_reached()
        return cast("bytes", self._wire.read1(*args))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wire, name)


_PUT_HEADER: Final = http.client.HTTPConnection.putheader.__code__
"""http.client's check of each header urllib3 puts in a request, before a byte of it is written:
the ``ValueError`` raised in it for a control character (a header an auth set, which requests
does not check) refuses the request as the caller made it (:func:`refused_as_made`)."""

_CHECKS: Final = (
    _PUT_HEADER,
    vars(Timeout)["_validate_timeout"].__func__.__code__,  # a classmethod: its function's code
    create_connection.__code__,
)
"""The code that refuses a request as the caller made it before a byte of it is sent: a
``ValueError`` raised in it is requests' (urllib3's, the socket's) own refusal, never the host's
failure (:func:`refused_as_made`): a header with a control character (:data:`_PUT_HEADER`); a
limit of a timeout that is no positive number (urllib3's check of each, whose ``OverflowError``
refuses an int past the floats); a NaN, a ``Decimal`` or an infinity, which urllib3 lets through
and the socket refuses (a ``ValueError``, ``TypeError`` or ``OverflowError``) as urllib3 opens a
connection (``create_connection``; on a pooled one, :data:`_RAISING`). requests' own refusal of
a tuple that is no ``(connect, read)`` pair is raised by ``HTTPAdapter.send`` itself
(:data:`_RAISING`)."""
_RAISING: Final = (HTTPAdapter.send.__code__, HTTPConnection.request.__code__)
"""The code whose own plain ``ValueError`` (``TypeError``, ``OverflowError``) refuses the request's
timeout, before a byte is sent (:func:`refused_as_made`): requests' ``HTTPAdapter.send`` (its
``InvalidHeader``, a subclass, is a response's malformed header: the host's failure); urllib3's
``HTTPConnection.request``, where the socket refuses a NaN (a ``Decimal``, an infinity) as a
pooled connection takes the request's timeout, before writing it (a
body's text it cannot encode is a ``UnicodeEncodeError``, a subclass; a body iterator of builtins
raising there is the caller's failure too, the request never sent whole)."""

_Exchange = tuple[requests.PreparedRequest, bool, Any, Any, Any, Any]
"""``HTTPAdapter.send``'s arguments: request, ``stream``, ``timeout``, ``verify``, ``cert``, ``proxies``."""


class _AdapterLink(Link[Callable[..., requests.Response]]):
    """The link of a :class:`ResilientAdapter`: its attempt, which sends with ``HTTPAdapter.send``."""

    __slots__ = ()

    def _send_once(self, exchange: _Exchange, sent: Sent) -> requests.Response:
        """One attempt: send the request; a failed response is read, closed and raised.

        A client timeout, a wait for a pool's connection that ran out, or a failed response's
        body still coming (:meth:`HttpPolicy.read_failed`) is the policy's timeout when the
        deadline has passed (:meth:`HttpPolicy.deadline_reached`).
        """
        request, stream, timeout, verify, cert, proxies = exchange
        http = self._http
        if sent:  # sent again: what the earlier sends got was dropped
            close_earlier(sent)
        index = record_send(sent)
        try:
            sent[index] = response = self._sender(
                request,
                stream=stream,
                timeout=_capped(timeout, http.timeout_left()),
                verify=verify,
                cert=cert,
                proxies=proxies,
            )
        except (requests.Timeout, EmptyPoolError) as error:  # EmptyPoolError: the pool's wait ran out
            http.deadline_reached(error)
            raise
        except Exception as error:
            if refused_as_made(error, *_CHECKS, raising=_RAISING):  # a header, a timeout: never sent
                raise refused(error).with_traceback(error.__traceback__) from None
            if isinstance(error, requests.ConnectionError) and _closed_pool(error):  # closed: sent no more
                raise refused(error).with_traceback(error.__traceback__) from None
            body_failed(error, request.body)  # the caller's body generator raised it?
            raise
        if response.status_code in http.failure_statuses:
            rest, pieces = _as_it_comes(response.raw, http)
            try:  # read before the connection goes back, as `content` reads it
                head, whole = http.read_failed(rest)
            except requests.ConnectionError as error:  # a read timeout in the body is one
                response.close()
                http.deadline_reached(error)
                raise
            except BaseException:
                response.close()
                raise
            if pieces is not None:  # the rest, if any, is the caller's to read
                pieces.http = None
            if whole:
                response._content = head
                response._content_consumed = True  # iter_content gives it, as after `content`
                response.close()
            else:  # over the drain limit: open, for the caller if it is the last (else the retry closes it)
                response.raw = _Rest(head, rest, response.raw)
            raise FailedResponseError(response, response.status_code)
        return response

    def read_dropped(self, response: requests.Response) -> None:
        """Read a result the retry dropped up to the drain limit (:meth:`HttpPolicy.read_dropped`).

        Each read of the connection within the deadline (:func:`_as_it_comes`). A body read
        whole is marked consumed, so that closing the response gives its connection back to the
        pool; a longer one, or one the read failed, is closed unread (urllib3 closes its
        connection). A body read already (by the retry's own ``dropped`` hook) is left as it is.
        """
        if response._content_consumed:  # requests' own mark, as `content` sets it
            return
        rest, _pieces = _as_it_comes(response.raw, self._http)
        try:
            whole = self._http.read_dropped(rest)
        except BaseException:
            response.close()
            raise
        if whole:
            response._content_consumed = True  # its connection released, not closed


def _read_raised(response: requests.Response) -> None:
    """Read the rest of a raised failed response's body (over the drain limit), as ``content`` reads it.

    A request sent without ``stream=True`` leaves no response for its caller to close: its body
    is read, and its connection goes back to the pool, as requests' own read after
    ``HTTPAdapter.send`` would. A read that fails closes the response (its connection with it);
    the failed response is raised either way, its body then what was read before the failure.
    """
    if response._content_consumed:  # read whole already (under the drain limit)
        return
    try:
        response.content  # noqa: B018 - read, as Session.send reads it
    except Exception:  # noqa: BLE001 - the response's failure is what is raised, not its body's
        response.close()


class _Closed:
    """What the requests under way when their adapter closed send through: nothing (a closed :class:`Link`).

    Each send of a request under way when its adapter closed raises requests' own error for a
    request to a closed pool (a ``ConnectionError`` from urllib3's ``ClosedPoolError``), which
    the attempt makes final, as for a request its pool's close ended (:func:`refused`: a
    transport error otherwise, which the retry would try again). It holds the adapter's send,
    as a closed link holds what it sent through.
    """

    __slots__ = ("send",)

    def __init__(self, send: Callable[..., requests.Response]) -> None:
        self.send = send

    def __call__(self, request: requests.PreparedRequest, **_: Any) -> NoReturn:
        """Refuse the request: its adapter closed (urllib3's error and words, naming the pool's host)."""
        url = urlsplit(request.url or "")
        kind = HTTPSConnectionPool if url.scheme == "https" else HTTPConnectionPool
        pool = kind(
            url.hostname or "", url.port or port_by_scheme.get(url.scheme, 80)
        )  # named by the error only
        pool.close()
        raise requests.ConnectionError(ClosedPoolError(pool, "Pool is closed."), request=request)


class AdapterOptions(TypedDict, total=False):
    """The keyword arguments :class:`ResilientAdapter` passes on to ``HTTPAdapter``."""

    pool_connections: int
    """Connection pools cached (one per host)."""
    pool_maxsize: int
    """Connections kept per pool."""
    max_retries: Literal[0]
    """0 only: the policy retries (urllib3 would send again inside each attempt)."""
    pool_block: bool
    """Whether a request waits for a free connection (until its deadline at most)."""


class _MaxRetries:
    """``ResilientAdapter.max_retries``: requests' own ``Retry(0, read=False)``, which stays 0.

    ``HTTPAdapter`` sets it once (made, or unpickled); a later assignment (requests' other idiom,
    ``adapter.max_retries = Retry(...)``) is checked as the keyword is
    (:meth:`ResilientAdapter._check_client_options`): anything but 0 is refused, and 0 keeps
    the adapter's own. Only assignments run here: a read (each send's) finds the instance's
    value, as a plain attribute's (no ``__get__``).
    """

    def __set__(self, adapter: ResilientAdapter, value: Any) -> None:
        if "max_retries" in vars(adapter):  # set already: by HTTPAdapter, made or unpickled
            adapter._check_client_options({"max_retries": value})  # refuses all but 0
        else:
            vars(adapter)["max_retries"] = value


class ResilientAdapter(HttpIntegration, HTTPAdapter):
    """An ``HTTPAdapter`` whose ``send`` runs under ``policy``: mount it on a ``requests.Session``.

    ``ResilientAdapter(policy, *, options=None, manager=None, **adapter_options)``: the arguments
    of :class:`~otel_resilience.integrations.sending.HttpIntegration`; ``adapter_options`` go to
    ``HTTPAdapter`` (:class:`AdapterOptions`: ``pool_connections``, ``pool_maxsize``,
    ``pool_block``; its ``max_retries`` stays 0).

    With ``pool_block=True``, a request waits for a free connection until its deadline at most.
    It pickles (and so does a session it is mounted on) when its policy is a config and no
    ``manager`` is given (:meth:`HttpPolicy.__reduce__`).

    Raises:
        ValueError: ``max_retries`` is given, or set later (``adapter.max_retries = ...``),
            and not 0: urllib3 would send the request again inside an attempt (a POST too),
            beside the policy's retries; or ``pool_connections``
            or ``pool_maxsize`` is below 1.
        TypeError: ``pool_connections`` or ``pool_maxsize`` is not an ``int``, or ``pool_block``
            not a ``bool``.
    """

    _link_kind = _AdapterLink
    _attempt: Callable[[_Exchange, Sent], requests.Response]
    transport_errors = (
        requests.ConnectionError,
        requests.Timeout,
        ChunkedEncodingError,
        ContentDecodingError,
    )
    """A failed connection, a timeout, and a failed response's body cut off (``ChunkedEncodingError``)
    or not decodable (``ContentDecodingError``)."""
    synchronous = True
    max_retries = _MaxRetries()  # type: ignore[assignment] # read as HTTPAdapter's Retry: no __get__

    def __init__(
        self,
        policy: ResilienceConfig | PolicyHandleLike,
        *,
        options: HttpOptions | None = None,
        manager: ResilienceManager | None = None,
        **adapter_options: Unpack[AdapterOptions],
    ) -> None:
        # The base passes them on to HTTPAdapter (typed as taking none, for the other clients).
        super().__init__(policy, options=options, manager=manager, **cast("dict[str, Any]", adapter_options))
        self._open(super().send)  # HTTPAdapter's: each attempt sends with it

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK, **pool_kwargs: Any
    ) -> None:
        """Make requests' pool manager; a blocking one's pools wait until the deadline at most."""
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        if block:
            _bound_waits(self.poolmanager, self._http)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Return the pool manager for ``proxy``; a blocking one's pools wait until the deadline at most."""
        made = proxy not in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if made and self._pool_block:
            _bound_waits(manager, self._http)
        return manager

    def _check_client_options(self, client_options: dict[str, Any]) -> None:
        """Refuse a ``max_retries`` other than 0, and pool options ``HTTPAdapter`` would pass on unchecked.

        urllib3's retries would send again inside each attempt. A pool size that is no ``int`` failed every
        request with urllib3's ``TypeError``; one below 1 kept no connection, so that under
        ``pool_block=True`` every request waited for one until its deadline; a ``pool_block`` that
        is no ``bool`` was read by its truth (``"no"`` blocked).
        """
        retries = client_options.get("max_retries", 0)
        if isinstance(retries, bool) or retries != 0:
            raise fail("ResilientAdapter", "max_retries", "0 (the policy retries)", retries)
        for option in ("pool_connections", "pool_maxsize"):
            if option in client_options:
                check_int("ResilientAdapter", option, client_options[option], minimum=1)
        block = client_options.get("pool_block", False)
        if not isinstance(block, bool):
            raise fail("ResilientAdapter", "pool_block", "a bool", block, kind=TypeError)

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state["_http"] = self._http
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._open(super().send)

    def send(  # noqa: PLR0917 - positional, as HTTPAdapter.send's own
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        """Send ``request`` under the policy: the last response, or the error that ended it.

        The arguments are ``HTTPAdapter.send``'s, by position or by name (an adapter built on this
        one passes them on by position).
        """
        http, body = self._http, request.body
        replayable = http.replayable(
            request.method or "GET",
            request.headers,
            getattr(request, _MARK, None),
            body is None or isinstance(body, _IN_MEMORY),
        )
        url = urlsplit(request.url or "")
        port = host_port(url.scheme, url.port)  # the scheme's own port: the host's one key
        exchange = (request, stream, timeout, verify, cert, proxies)
        try:
            return http.send_sync(url.hostname or "", port, replayable, self._attempt, exchange)
        except FailedResponseError as failed:
            if not stream:  # Session.send reads a response's body unless streaming: raised, it never would
                _read_raised(failed.response)
            raise

    def close(self) -> None:
        """Close the adapter's pools; a request under way is not sent (:class:`_Closed`).

        Each pool is closed (urllib3 2 only forgets them): a request waiting for one of its
        connections (``pool_block=True``) is refused at once (:class:`_ClosedSlot`), and a
        connection an earlier response gives back is closed, not kept in a pool nothing uses.
        """
        self._close_link(_Closed)
        for manager in (self.poolmanager, *self.proxy_manager.values()):
            pools = manager.pools
            for key in pools.keys():  # noqa: SIM118 - urllib3's container refuses to be iterated
                pool = pools.get(key)
                if pool is not None:
                    pool.close()
        super().close()
