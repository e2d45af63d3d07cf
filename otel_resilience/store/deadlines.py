"""A sync Redis operation bounded as a whole: connecting, the handshake and the command together.

``redis-py`` bounds each socket operation by ``socket_timeout`` (and connecting by
``socket_connect_timeout``), not the operation: a command on a new connection (the first
one, or the first after an outage, since a failed connection is dropped) waits for the TCP
connection, the handshake (``HELLO``, ``CLIENT SETINFO``: one or two round trips) and the
command, each up to the timeout, so a rate limiter's permit asked from a thread could wait 3 or 4
times the store's ``timeout``; and for the lookup of the host's name before them, which nothing
bounds. :func:`bound_connections` makes a client's connections take the rest of the time of the
operation in progress in their thread (:func:`within`) as the timeout of each of those steps, so
that together they take at most the operation's time. Outside an operation (the store's
background threads) they keep their own timeouts. Every connection of a store's sync clients is
made in a thread of its own, waited for no longer than its connect timeout (:func:`track_sockets`,
:class:`_Connecting`), which a lookup that never ends cannot hold. The wait for a free
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


MAX_ABANDONED_CONNECTIONS: Final = 4
"""Connections still being made after their callers gave up (a lookup of the host's name that
does not end) past which a new one fails at once (:class:`_Connecting`): while the resolver hangs,
each try would leave one more thread waiting on it."""


class _Abandoned:
    """How many connections are still being made after their callers gave up (one per process).

    Counted down by the threads making them, which a process forked meanwhile does not have:
    the child starts from none (:meth:`forked`), or the parent's count, at the cap, failed every
    connection of the child at once for the rest of its life.
    """

    __slots__ = ("count", "lock")

    def __init__(self) -> None:
        self.lock = fork_safe(threading.Lock())
        self.count = 0

    def forked(self) -> None:
        """``os.register_at_fork(after_in_child=...)``: the parent's threads are not the child's."""
        self.count = 0


_ABANDONED: Final = _Abandoned()
if hasattr(os, "register_at_fork"):  # POSIX: no fork elsewhere
    os.register_at_fork(after_in_child=_ABANDONED.forked)


class _Connecting:
    """One connection being made in a thread of its own, which its caller waits for at most a time.

    The lookup of the host's name (``getaddrinfo``, which redis-py calls for each connection) has
    no timeout: a resolver that does not answer (a DNS server gone) held a permit asked from a
    thread for as long as it took (seconds), whatever the store's ``timeout``, and the store's
    threads as long, which :meth:`~otel_resilience.store.RedisStore.close` waited for (2 s each,
    then left them running). Made in a thread, a connection is waited for at most its connect
    timeout (a new connection only: an operation on an open one pays nothing for it). A socket
    made after its caller gave up is closed by that thread. While
    :data:`MAX_ABANDONED_CONNECTIONS` threads so left are still at it (the resolver still hangs),
    a new connection fails at once, as one that timed out, and starts no thread.
    """

    __slots__ = ("_connect", "_done", "_left", "_lock", "_outcome")

    def __init__(self, connect: Callable[[], socket.socket]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._outcome: socket.socket | BaseException | None = None
        self._left = False
        """Whether the caller stopped waiting (the socket, when it comes, is closed)."""

    def made_within(self, seconds: float) -> socket.socket:
        """Return the connection's socket, made within ``seconds``.

        Raises:
            TimeoutError: It was not made in time (redis-py raises its ``TimeoutError`` for it).
            BaseException: What making it raised.
        """
        if _ABANDONED.count >= MAX_ABANDONED_CONNECTIONS:  # read without the lock: a hint
            raise TimeoutError("timed out connecting (earlier connections still wait for the host's name)")
        try:
            threading.Thread(target=self._make, name="otel_resilience store connection", daemon=True).start()
        except RuntimeError:  # the interpreter is shutting down: no thread starts, the caller makes it
            return self._connect()
        try:
            self._done.wait(seconds)
        except BaseException:
            _close(self._leave())
            raise
        outcome = self._leave()
        if outcome is None:
            raise TimeoutError("timed out connecting")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _make(self) -> None:
        try:
            outcome: socket.socket | BaseException = self._connect()
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
            outcome = error
        with self._lock:
            if not self._left:
                self._outcome = outcome
                self._done.set()
                return
        with _ABANDONED.lock:
            _ABANDONED.count -= 1
        _close(outcome)

    def _leave(self) -> socket.socket | BaseException | None:
        """Stop waiting: the outcome if it came (the caller's), else ``None`` (the thread's to close)."""
        with self._lock:
            self._left = True
            outcome = self._outcome
        if outcome is None:  # the thread is still at it: counted until it ends (_make)
            with _ABANDONED.lock:
                _ABANDONED.count += 1
        return outcome


def _close(outcome: object) -> None:
    """Close ``outcome`` if it is a socket nobody will use."""
    if isinstance(outcome, socket.socket):
        with contextlib.suppress(OSError):
            outcome.close()


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
    """Make the connections ``client`` opens from now on register their sockets in ``sockets``; return it.

    Each is made in a thread of its own and waited for at most its ``socket_connect_timeout``
    (:class:`_Connecting`): the lookup of the host's name included.
    """
    pool = client.connection_pool
    base = pool.connection_class

    class Tracked(base):  # type: ignore[misc,valid-type]
        """A connection of ``base`` whose socket :meth:`Sockets.end` shuts down."""

        def _connect(self) -> Any:
            sockets.opening()
            bound = self.socket_connect_timeout  # the store's timeout, or less (bound_connections)
            if bound is None:
                return sockets.opened(super()._connect())
            return sockets.opened(_Connecting(super()._connect).made_within(bound))

        def send_packed_command(self, *args: Any, **kwargs: Any) -> Any:
            sent = super().send_packed_command(*args, **kwargs)
            callback = _SENT.callback
            if callback is not None and _sent_scripts(args, kwargs):  # :func:`on_sent`
                callback()
            return sent

    Tracked.__name__ = Tracked.__qualname__ = f"Tracked{base.__name__}"
    pool.connection_class = Tracked
    return client
