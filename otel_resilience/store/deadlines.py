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
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

__all__ = ["bound_connections", "within"]

_SHORTEST: Final = 0.001
"""The timeout of a step starting when the operation's time is up (0 makes a socket non-blocking)."""


class _Deadline(threading.local):
    at: float | None = None


_DEADLINE: Final = _Deadline()


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
