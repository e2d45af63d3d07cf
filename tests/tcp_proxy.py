"""A small TCP fault proxy: forwards to a target and can pass, delay or drop the traffic.

Used to make a real server (Redis) slow or partitioned for one client. Runs its own asyncio
loop in a daemon thread; the mode may be changed at any time from any thread:

* ``"pass"``: bytes are forwarded at once;
* ``"delay"``: every chunk is forwarded ``delay`` seconds after it arrived (in order);
* ``"drop"``: bytes are read and thrown away (connections stay open: a partition, not a reset).

:meth:`TcpFaultProxy.sever` cuts the connections open now without a word to their clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal

Mode = Literal["pass", "delay", "drop"]


class TcpFaultProxy:
    """Listen on 127.0.0.1 (a free port) and forward every connection to ``(host, port)``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._links: list[_Link] = []
        self._closing = False
        """Set by :meth:`stop`: a connection accepted from then on is closed at once (:meth:`_accept`)."""
        self._thread = threading.Thread(target=self._run, name="tcp fault proxy", daemon=True)

    def start(self) -> TcpFaultProxy:
        """Start listening; return self once the port is known."""
        self._thread.start()
        self._ready.wait(5.0)
        return self

    def set(self, mode: Mode, delay: float = 0.0) -> None:
        """Switch to ``mode`` (``delay`` seconds for ``"delay"``) for the bytes that arrive from now on."""
        self.delay = delay
        self.mode = mode

    def sever(self) -> None:
        """Cut every connection open now as a NAT or a vanished host does: silently, for its client.

        The server sees the connection close (it drops the client, and its subscriptions); the
        client's side stays open and never receives a byte again, and what it sends is thrown
        away. Connections made afterwards are forwarded as the mode says.
        """
        asyncio.run_coroutine_threadsafe(self._sever(), self._loop).result(5.0)

    async def _sever(self) -> None:
        links, self._links = self._links, []
        for link in links:
            link.severed = True
            link.upstream.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:  # accepted before the server closed, its task started after stop() looked
            writer.transport.abort()  # at the tasks and writers: nothing else would close it
            return
        self._writers.add(writer)  # before the upstream connection: stop() meanwhile closes it too
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        link = _Link(up_writer)
        self._links.append(link)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, link), self._pipe(up_reader, writer, link))
        finally:
            with contextlib.suppress(ValueError):  # severed already
                self._links.remove(link)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def send() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - self._loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while data := await reader.read(65536):
                if self.mode == "drop" or link.severed:
                    continue
                delay = self.delay if self.mode == "delay" else 0.0
                queue.put_nowait((self._loop.time() + delay, data))
        except OSError:
            pass
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await sender
            if not (link.severed and writer is not link.upstream):  # a severed client hears nothing
                writer.close()

    def stop(self) -> None:
        """Stop listening, close every connection, the loop and its thread."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        await asyncio.sleep(0)  # a connection accepted just before: its task starts, and closes it
        for writer in self._writers:
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in self._writers:  # any added meanwhile (aborting one closed already does nothing)
            writer.transport.abort()
        await asyncio.sleep(0)  # their sockets are closed in the loop's next turn
        if self._server is not None:
            # Once every connection is closed: from Python 3.12.1 this waits for them (a severed
            # client's side, left open, would keep it waiting), before it returned at once.
            await self._server.wait_closed()


class _Link:
    """One forwarded connection: its writer toward the server, and whether :meth:`TcpFaultProxy.sever` cut it."""

    __slots__ = ("severed", "upstream")

    def __init__(self, upstream: asyncio.StreamWriter) -> None:
        self.upstream = upstream
        self.severed = False
