"""A sync Redis operation bounded as a whole: connecting, the handshake and the command together.

``redis-py`` bounds each socket operation by ``socket_timeout`` (and connecting by
``socket_connect_timeout``), not the operation: a command on a new connection (the first
one, or the first after an outage, since a failed connection is dropped) waits for the TCP
connection, the handshake (``HELLO``, ``CLIENT SETINFO``: one or two round trips) and the
command, each up to the timeout, so a rate limiter's permit asked from a thread could wait 3 or 4
times the store's ``timeout``. :func:`bound_connections` makes a client's connections take the
rest of the time of the operation in progress in their thread (:func:`within`) as the timeout
of each of those steps, so that together they take at most the operation's time. Outside an
operation (the store's background thread) they keep their own timeouts. The wait for a free
connection of a bounded pool (``BlockingConnectionPool``: ``max_connections`` in use) is one
of those steps: it too takes at most the rest of the operation's time, then the pool raises its
``ConnectionError`` (an operation that failed: the store's outage path, never a hang).

The async path needs none of this: ``asyncio.timeout`` bounds the whole awaited operation.

A store that closes ends the operations of its sync clients in flight at once, in any thread:
each socket their connections opened is registered (:func:`track_sockets`) in the store's
:class:`Sockets`, which :meth:`Sockets.end` shuts down together and which refuses any socket
opened after it. Waiting for them instead (a thread cannot be cancelled) kept ``close()`` up to
a round trip, or a connection's handshake, of a slow Redis per thread.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Final

from otel_resilience.engine.forking import fork_safe

__all__ = ["Sockets", "bound_connections", "on_sent", "track_sockets", "within"]

_SHORTEST: Final = 0.001
"""The timeout of a step starting when the operation's time is up (0 makes a socket non-blocking)."""


class _Deadline(threading.local):
    at: float | None = None


_DEADLINE: Final = _Deadline()


class _Sent(threading.local):
    callback: Callable[[], object] | None = None


_SENT: Final = _Sent()
_EVAL: Final = b"\r\nEVAL\r\n"
"""How a request whose first command is ``EVAL`` begins (after its ``*N`` and ``$4``)."""


@contextlib.contextmanager
def on_sent(callback: Callable[[], object]) -> Iterator[None]:
    """Call ``callback`` each time a request of scripts made in this thread inside the block was sent.

    Sent: handed whole to the kernel (``sendall`` returned), not answered. A connection's
    handshake (``HELLO``, ``CLIENT SETINFO``) and health check (``PING``) are no such request.
    A socket shut down afterwards (:meth:`Sockets.end`) still delivers what it was given, before
    its end: the server runs the scripts whether or not their replies are read.
    """
    _SENT.callback = callback
    try:
        yield
    finally:
        _SENT.callback = None


def _sent_scripts(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether ``send_packed_command(*args, **kwargs)`` sent a request beginning with ``EVAL``."""
    command = args[0] if args else kwargs.get("command", b"")
    first = command if isinstance(command, (bytes, bytearray, memoryview, str)) else command[0]
    head = first[:16]
    return _EVAL in (head.encode() if isinstance(head, str) else bytes(head))


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Bound the Redis operation made in this thread inside the block by ``seconds``, all steps together."""
    _DEADLINE.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _DEADLINE.at = None


def _left() -> float | None:
    at = _DEADLINE.at
    return None if at is None else max(at - time.monotonic(), _SHORTEST)


def _bounded_wait(configured: float | None) -> float | None:
    """The wait for a free connection: ``configured``, or less when the operation's time is shorter."""
    left = _left()
    if left is None:
        return configured
    return left if configured is None else min(configured, left)


class _BoundedWait:
    """A blocking pool whose wait for a free connection (its ``timeout``) honours :func:`within`.

    The pool reads ``self.timeout`` at each wait; the configured value stays in the instance's
    ``__dict__`` (the property, a data descriptor, is looked up first).
    """

    @property
    def timeout(self) -> float | None:
        configured: float | None = vars(self).get("timeout")
        return _bounded_wait(configured)

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        vars(self)["timeout"] = value


def bound_connections(client: Any) -> Any:
    """Make the connections ``client`` opens from now on honour :func:`within`; return ``client``.

    A blocking pool's wait for a free connection honours it too.
    """
    pool = client.connection_pool
    if "timeout" in vars(pool):  # a BlockingConnectionPool: its wait for a free connection
        cls = type(pool)
        pool.__class__ = type(f"Bounded{cls.__name__}", (_BoundedWait, cls), {})
    base = pool.connection_class

    class Bounded(base):  # type: ignore[misc,valid-type]
        """A connection of ``base`` whose steps take at most what is left of the operation's time."""

        _short = False

        def _connect(self) -> Any:
            left = _left()
            if left is None:
                return super()._connect()
            connection: Any = self  # redis-py's attributes are untyped
            configured = connection.socket_connect_timeout
            connection.socket_connect_timeout = left if configured is None else min(configured, left)
            try:
                return super()._connect()
            finally:
                connection.socket_connect_timeout = configured

        def _bound(self) -> None:
            sock = getattr(self, "_sock", None)
            if sock is None:
                return
            left = _left()
            if left is not None:
                configured = self.socket_timeout
                sock.settimeout(left if configured is None else min(configured, left))
                self._short = True
            elif self._short:
                sock.settimeout(self.socket_timeout)
                self._short = False

        def send_packed_command(self, *args: Any, **kwargs: Any) -> Any:
            self._bound()
            return super().send_packed_command(*args, **kwargs)

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            self._bound()
            return super().read_response(*args, **kwargs)

    Bounded.__name__ = Bounded.__qualname__ = f"Bounded{base.__name__}"
    pool.connection_class = Bounded
    return client


class Sockets:
    """The sockets a store's sync clients opened in this process, to end at once when the store closes.

    A socket is registered once connected (its connection's ``_connect``, :func:`track_sockets`),
    before any byte of the handshake is sent; :meth:`end` shuts every registered one down (from
    any thread: the operation waiting on it fails at once, as on a connection the server
    closed, and its owner closes it), and from then on a connection is refused before it is
    made (:meth:`opening`: the next operation on a socket shut down makes a new one) and
    each registration closes its socket and fails. Either a socket is registered before
    :meth:`end`, which shuts it down, or its registration fails: no operation of the store
    waits on Redis once it closed, but for a TCP connection being made when it did (its
    socket is known once made: at most the store's ``timeout``).
    A forked child shuts down none of its parent's sockets (their connections are the
    parent's too).
    """

    __slots__ = ("_ended", "_lock", "_open", "_pid")

    def __init__(self) -> None:
        self._lock = fork_safe(threading.Lock())
        self._open: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._pid = os.getpid()
        self._ended = False

    def opening(self) -> None:
        """Refuse a connection about to be made once :meth:`end` was called (no lock: one read).

        Raises:
            ConnectionAbortedError: It was (redis-py raises a ``ConnectionError`` for it).
        """
        if self._ended:
            raise ConnectionAbortedError("the store closed")

    def opened(self, sock: socket.socket) -> socket.socket:
        """Register ``sock`` (just connected) and return it.

        Raises:
            ConnectionAbortedError: :meth:`end` was called: ``sock`` is closed (redis-py raises a
                ``ConnectionError`` for it).
        """
        with self._lock:
            if not self._ended:
                if self._pid != os.getpid():  # a forked child: the parent's sockets are not its own
                    self._open, self._pid = weakref.WeakSet(), os.getpid()
                self._open.add(sock)
                return sock
        with contextlib.suppress(OSError):
            sock.close()
        raise ConnectionAbortedError("the store closed")

    def end(self) -> None:
        """Shut down every socket registered in this process, and refuse any opened from now on."""
        with self._lock:
            self._ended = True
            mine = self._pid == os.getpid()
            opened, self._open = list(self._open), weakref.WeakSet()
        for sock in opened if mine else ():
            with contextlib.suppress(OSError):  # closed already (its fd is then -1: no other socket's)
                sock.shutdown(socket.SHUT_RDWR)


def track_sockets(client: Any, sockets: Sockets) -> Any:
    """Make the connections ``client`` opens from now on register their sockets in ``sockets``; return it."""
    pool = client.connection_pool
    base = pool.connection_class

    class Tracked(base):  # type: ignore[misc,valid-type]
        """A connection of ``base`` whose socket :meth:`Sockets.end` shuts down."""

        def _connect(self) -> Any:
            sockets.opening()
            return sockets.opened(super()._connect())

        def send_packed_command(self, *args: Any, **kwargs: Any) -> Any:
            sent = super().send_packed_command(*args, **kwargs)
            callback = _SENT.callback
            if callback is not None and _sent_scripts(args, kwargs):  # :func:`on_sent`
                callback()
            return sent

    Tracked.__name__ = Tracked.__qualname__ = f"Tracked{base.__name__}"
    pool.connection_class = Tracked
    return client
