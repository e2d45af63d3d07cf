"""A relay in front of the Redis server that drops out on a schedule (``--redis-drops``).

The replicas' stores connect to the relay, on ``127.0.0.1`` and a port of its own, and the relay
passes every byte on to the server of ``--redis-url`` and back. While it is *down* it cuts every
connection it relays and closes each new one at once: for the stores, Redis dropped out (a
network partition, a failover, a restart), and each drop is an outage of every store
(``resilience_store_outages_total``), which they recover from once it is up again. Its threads
are its own: the stores' calls block their callers' threads, the event loop's included, so a
relay on the event loop would never answer them.

The schedule is in real seconds (:data:`DROP_EVERY`, :data:`DROP_FOR`), not scaled: the stores'
own waits (a connection's timeout, the pause before they try Redis again, up to 5 s) are real
seconds at any time scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["DEFAULT_REDIS_PORT", "DROP_EVERY", "DROP_FOR", "DroppingRelay", "relayed_url"]

DROP_EVERY: Final = 3.0
"""Real seconds from one drop of Redis to the next."""
DROP_FOR: Final = 0.5
"""Real seconds each drop lasts."""
DEFAULT_REDIS_PORT: Final = 6379
_ACCEPT_POLL: Final = 0.1
"""Real seconds the accepting thread waits for a connection before it looks whether it should stop."""
_CONNECT_TIMEOUT: Final = 2.0
_CHUNK: Final = 65536


def relayed_url(url: str, port: int) -> str:
    """Return ``url`` (``redis://``) with its host and port replaced by ``127.0.0.1:port``: the relay's.

    Its user, password, database and query are kept.
    """
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class DroppingRelay:
    """A TCP relay on ``127.0.0.1`` to the server of a ``redis://`` URL, that can be cut (:meth:`drop`).

    Args:
        url: The server's ``redis://`` URL (its host and port; the default port 6379).

    Attributes:
        url: The URL to give the stores: ``url`` with the relay's address.
        drops: How many times it dropped out so far.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or DEFAULT_REDIS_PORT)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_ACCEPT_POLL)
        self.url = relayed_url(url, self._listener.getsockname()[1])
        self.drops = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down = False
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="demo-redis-relay", daemon=True)
        self._acceptor.start()

    @property
    def down(self) -> bool:
        """Whether Redis is dropped out now."""
        return self._down

    def drop(self) -> None:
        """Cut every relayed connection, and close the new ones at once until :meth:`restore`."""
        with self._lock:
            self._down = True
            self.drops += 1
            cut, self._open = self._open, set()
        for sock in cut:
            _shut(sock)

    def restore(self) -> None:
        """Relay new connections again."""
        with self._lock:
            self._down = False

    async def run(self, every: float | None = None, down_for: float | None = None) -> None:
        """Drop out for ``down_for`` real seconds every ``every`` seconds, until cancelled (then up again).

        ``None``: :data:`DROP_EVERY`, :data:`DROP_FOR`.
        """
        every = DROP_EVERY if every is None else every
        down_for = DROP_FOR if down_for is None else down_for
        try:
            while True:
                await asyncio.sleep(every - down_for)
                self.drop()
                await asyncio.sleep(down_for)
                self.restore()
        finally:
            self.restore()

    def close(self) -> None:
        """Stop relaying: close the listener and every connection, and wait for the threads (idempotent)."""
        self._closed.set()
        self.drop()
        self._acceptor.join(timeout=2.0)
        with contextlib.suppress(OSError):
            self._listener.close()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = None if self._down else socket.create_connection(self._target, _CONNECT_TIMEOUT)
            except OSError:
                upstream = None  # the server itself is away: the store sees the same
            if upstream is None:
                _shut(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._down or self._closed.is_set():
                    refused = True
                else:
                    refused = False
                    self._open |= {client, upstream}
            if refused:
                _shut(client)
                _shut(upstream)
                continue
            self._threads = [t for t in self._threads if t.is_alive()]
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(
                    target=_pump, args=(source, sink), name="demo-redis-relay", daemon=True
                )
                thread.start()
                self._threads.append(thread)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Pass what ``source`` sends on to ``sink`` until either side closes (then close both)."""
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _shut(source)
        _shut(sink)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
