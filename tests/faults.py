"""A fault-injecting TCP proxy in front of a real HTTP/1.1 server, both on 127.0.0.1.

Shared by the tests that put real clients through network faults: the reliability tests (the
manager around a bare httpx client) and the client integrations' tests. ``mode`` is the fault
every request meets until it is set back to ``"pass"``; :meth:`FaultyNetwork.inject` applies a
fault to the next ``count`` requests only. The faults:

* ``drop``: the proxy reads the request and closes the connection without an answer;
* ``reset``: the proxy reads the request and resets the connection (RST);
* ``delay``: the proxy holds the request for :attr:`FaultyNetwork.delay` seconds, then forwards it;
* ``half_open``: the proxy reads the request and never answers nor closes.

Every request the proxy reads is logged (:attr:`FaultyNetwork.requests`, ``(method, path)``),
faulted or not, so a test can count how many times a client sent a request.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Awaitable, Callable

MODES = ("drop", "reset", "delay", "half_open")


class FaultyNetwork:
    """An HTTP server and a fault-injecting TCP proxy, on their own event loop in a thread.

    The server answers every request with ``200 ok`` (reading a body sent with
    ``Content-Length``), keeping the connection open.
    """

    def __init__(self, delay: float = 5.0) -> None:
        self.mode = "pass"
        self.delay = delay
        self.faults_left: int | None = None
        self.requests: list[tuple[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.backend, self.backend_port = self.call(self._serve(self._backend))
        self.proxy, self.proxy_port = self.call(self._serve(self._proxy))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def inject(self, mode: str, count: int | None = None) -> None:
        """Apply ``mode`` to the next ``count`` requests (``None``: until ``mode`` is reset)."""
        assert mode in MODES, mode
        self.faults_left = count
        self.mode = mode

    def sent(self, method: str | None = None) -> int:
        """How many requests (of ``method``, if given) reached the proxy."""
        return sum(1 for m, _ in self.requests if method is None or m == method)

    def call(self, coro: Awaitable[object]) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=5.0)  # type: ignore[arg-type]

    async def _serve(self, handler: Callable[..., Awaitable[None]]) -> tuple[asyncio.Server, int]:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)  # type: ignore[arg-type]
            self.writers.add(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self.writers.discard(writer)
                self.tasks.discard(task)  # type: ignore[arg-type]
                if not writer.is_closing():
                    writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]

    async def _backend(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A minimal HTTP/1.1 server: answers every request with 200 "ok", keeping the connection."""
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    def _fault(self) -> str:
        """The fault the request just read meets (counting it against ``faults_left``)."""
        mode = self.mode
        if mode != "pass" and self.faults_left is not None:
            self.faults_left -= 1
            if self.faults_left <= 0:
                self.mode, self.faults_left = "pass", None
        return mode

    async def _proxy(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """Forward each request to the backend, or apply the current fault to it."""
        backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        self.writers.add(backend_writer)
        try:
            while True:
                request = await _read_request(client_reader)
                method, path = request.split(b" ", 2)[:2]
                self.requests.append((method.decode(), path.decode()))
                mode = self._fault()
                if mode == "drop":
                    return
                if mode == "reset":
                    sock = client_writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client_writer.transport.abort()
                    return
                if mode == "delay":
                    await asyncio.sleep(self.delay)
                if mode == "half_open":
                    await asyncio.sleep(3600)
                backend_writer.write(request)
                await backend_writer.drain()
                head = await backend_reader.readuntil(b"\r\n\r\n")
                body = await backend_reader.readexactly(2)
                client_writer.write(head + body)
                await client_writer.drain()
        finally:
            self.writers.discard(backend_writer)
            backend_writer.close()

    def __enter__(self) -> FaultyNetwork:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the proxy and the server, abort their connections, end their thread."""

        async def shutdown() -> None:
            for server in (self.proxy, self.backend):
                server.close()  # type: ignore[attr-defined]
            for writer in list(self.writers):
                writer.transport.abort()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for server in (self.proxy, self.backend):
                await server.wait_closed()  # type: ignore[attr-defined]

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5.0)
        self.loop.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request: its head, and its body when it has a ``Content-Length``."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and int(value):
            return head + await reader.readexactly(int(value))
    return head
