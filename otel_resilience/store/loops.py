"""One ``redis.asyncio`` client per event loop, made on the loop's first use, closed with the loop.

An asyncio client and its connections belong to the loop they ran on: a client used from
another loop fails (its streams and locks are bound to the first). A store serves any number of
loops (one per thread, one per ``asyncio.run``), so :class:`LoopClients` keeps one client per
loop, weakly keyed by the loop. Each client's lifetime is an async generator: ``asyncio.run``
and ``asyncio.Runner`` finalise a loop's async generators when they shut it down, which closes
its client on that loop, without any hook of ours in the user's code. :meth:`LoopClients.close`
(the store closing) closes the client of each loop running in another thread on that loop.

A loop closed with no such shutdown (``loop.close()`` with a permit still asked of Redis) never
closes its client, and the client's connections hold the loop: its weak key never dies. Such a
client is forgotten before every full collection (:func:`_drop_closed`), which then frees the
loop, its tasks and the client, closing the client's sockets, with no other loop asking the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.timer import before_full_collection

__all__ = ["LoopClients", "bounded"]


if sys.version_info >= (3, 11):  # chosen once, at import

    async def bounded(awaitable: Awaitable[Any], seconds: float) -> Any:
        """Await ``awaitable`` for at most ``seconds`` (then ``TimeoutError``, 3.10: its asyncio one).

        ``asyncio.timeout`` where there is one (3.11+): a task per call (3.10, :func:`_bounded_310`)
        costs about 50 µs of a 200 µs round trip to a local Redis. A cancellation of the caller
        always ends the wait with ``CancelledError``, even one that comes as the operation ends (its
        reply is then dropped, as ``asyncio.timeout`` drops it), and even one the client swallowed:
        redis-py 8 catches the ``CancelledError`` of a command under way and returns its reply (a
        task looping on permits then never ended), so a cancellation requested during the wait and
        still pending when the reply comes, or when the client fails after it, is raised here (3.11+
        counts the requests: ``cancelling``): such a failure is no store's, which, taken for one, would
        degrade the store and send the cancelled caller on to its call on local state.
        """
        task: asyncio.Task[Any] = asyncio.current_task()  # type: ignore[assignment] # as asyncio.timeout
        requested = task.cancelling()
        try:
            async with asyncio.timeout(seconds):
                reply = await awaitable
        except Exception:
            if task.cancelling() <= requested or asyncio._get_running_loop() is not task.get_loop():
                raise  # none pending: the operation's own error (or what closing it raised, off its loop)
            reply = None  # the client swallowed a cancellation, then failed: it ends the wait below
        if task.cancelling() > requested:  # requested during the wait, swallowed by the client
            raise asyncio.CancelledError
        return reply

else:  # pragma: no cover - Python 3.10

    async def bounded(awaitable: Awaitable[Any], seconds: float) -> Any:
        """Python 3.10: :func:`_bounded_310` (see the 3.11 one for what it promises)."""
        return await _bounded_310(awaitable, seconds)


async def _bounded_310(awaitable: Awaitable[Any], seconds: float) -> Any:  # pragma: no cover - 3.10
    """Python 3.10: the operation as a task of its own, awaited for at most ``seconds``.

    Not ``asyncio.wait_for``: on 3.10 it returns the operation's result when the caller is
    cancelled as the operation ends, and the cancellation is lost (the caller's task, a
    policy's timeout included, goes on as if it had never been requested). ``asyncio.wait``
    lets the cancellation through. Either way the operation is cancelled and awaited to its
    end first, as ``wait_for`` does, so none of its connections is left to a task nobody awaits.

    The caller's coroutine closed while it waits (its loop closed with it pending, then freed by
    the collector) closes the operation's coroutine with it, as from 3.11 (one task awaits both):
    what closing it raises reaches the caller, which tells a closing error
    (:meth:`~otel_resilience.store.redis_store.RedisStore._run_script_async`), never ``Exception
    ignored in`` the operation's coroutine, freed on its own. Closed while its loop still runs,
    the caller cancels the operation's task, never left running for nobody.
    """
    operation = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((operation,), timeout=seconds)
    except asyncio.CancelledError:
        operation.cancel()
        await asyncio.wait((operation,))  # a cancellation while it ends raises at once
        if not operation.cancelled():
            operation.exception()  # dropped with its reply: marked as read, never logged as lost
        raise
    except GeneratorExit:
        coroutine = operation.get_coro()  # (None for an eager task's, 3.12 on: never on 3.10)
        if operation.get_loop().is_closed() and coroutine is not None:  # nothing runs it again
            coroutine.close()
        else:
            operation.cancel()
        raise
    if not done:
        operation.cancel()
        await asyncio.wait((operation,))
        if operation.cancelled():
            raise asyncio.TimeoutError
    return operation.result()  # an operation that ended all the same: its reply or its error


class LoopClients:
    """The async clients of one store, one per event loop (thread-safe)."""

    __slots__ = ("__weakref__", "_clients", "_factory", "_lock")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._lock = fork_safe(threading.Lock())
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[Any, None], int]
        ] = weakref.WeakKeyDictionary()
        """Each loop's client, its lifetime, and the id of the process that made it (:meth:`close`)."""
        key = id(self)
        _ALL[key] = weakref.ref(self, lambda _: _ALL.pop(key, None))

    async def client(self) -> Any:
        """Return the running loop's client, made now if it has none (loops that closed are forgotten).

        Raises:
            Exception: What the factory raised (a store with no async client: a ``TypeError``).
        """
        loop = asyncio.get_running_loop()
        held = self._clients.get(loop)
        if held is not None:
            return held[0]
        lifetime = _lifetime(self._factory())
        client = await lifetime.__anext__()
        with self._lock:
            self._forget_closed_locked()
            self._clients[loop] = (client, lifetime, os.getpid())
        return client

    def forget_closed(self) -> None:
        """Forget the clients of closed loops, unless another thread holds the lock (never waits).

        Called before a full collection (:func:`_drop_closed`), in whichever thread allocates:
        maybe one that holds the lock, which then forgets them itself (:meth:`client`) or at the
        next full collection.
        """
        if self._lock.acquire(blocking=False):
            try:
                self._forget_closed_locked()
            finally:
                self._lock.release()

    def _forget_closed_locked(self) -> None:
        """Forget the clients of closed loops: a closed loop runs nothing again, nor closes its client."""
        for gone in [old for old in self._clients if old.is_closed()]:
            del self._clients[gone]

    def __len__(self) -> int:
        return len(self._clients)

    def close(self) -> None:
        """Close the clients of the loops running in other threads, each on its loop; end the others'.

        The client of the loop this is called from (a store closed from a coroutine) is kept
        until that loop shuts down, which closes it: closing it here would need a task that the
        loop's shutdown may cancel before it ran, leaving its connections open. The client of a
        loop that runs nothing now (one that ``run_until_complete`` runs now and then, or a
        closed one) cannot be closed on it: its connections are ended from here
        (:func:`_shut_down`), or they stayed open, on the server too, until that loop ran again;
        its closing is handed to that loop's next run, if any (:func:`_end`).
        A forked child shuts down none of the connections its parent made (their sockets are the
        parent's too: the parent's would end).
        """
        current = _running_loop()
        with self._lock:
            others = [(loop, held) for loop, held in self._clients.items() if loop is not current]
            for loop, _ in others:
                del self._clients[loop]
        for loop, (client, lifetime, pid) in others:
            if not loop.is_running():
                if pid != os.getpid():
                    continue  # a forked child's copy of its parent's idle loop and connections
                _shut_down(client)
            if not loop.is_closed():
                loop.call_soon_threadsafe(_end, lifetime)  # as it runs (an idle loop: its next run, if any)


_ALL: dict[int, weakref.ref[LoopClients]] = {}
"""Every store's :class:`LoopClients`, keyed by ``id`` beside a weak reference whose death callback
removes the entry (as :data:`otel_resilience.engine.timer._TIMERS` is)."""


def _drop_closed() -> None:
    """Before a full collection: every store forgets the clients of closed loops (which then are freed).

    The keys are copied to a list first (nothing the collector tracks is made meanwhile), and an
    entry removed since is skipped.
    """
    for key in list(_ALL):
        found = _ALL.get(key)
        clients = found() if found is not None else None
        if clients is not None:
            clients.forget_closed()


before_full_collection(_drop_closed)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _shut_down(client: Any) -> None:
    """Shut down the sockets of ``client``'s connections (from any thread: its loop runs nothing now).

    The server ends each connection at once; the loop, if it runs again, finds them ended (as
    the server had closed them) and the client's next operation, if any, connects again. Their
    descriptors are closed with the connections (the loop's next run, or the collector). Each is
    shut down through a duplicate of its descriptor, closed at once: the socket a transport hands
    out may refuse ``shutdown()`` (uvloop's), and a shutdown ends the connection whatever
    descriptor it is asked through.
    """
    for connection in _connections(client):
        writer = getattr(connection, "_writer", None)
        sock = writer.get_extra_info("socket") if writer is not None else None
        if sock is not None:
            with (
                contextlib.suppress(OSError),  # ended already, or its descriptor closed
                socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto) as duplicate,
            ):
                duplicate.shutdown(socket.SHUT_RDWR)


def _connections(client: Any) -> list[Any]:
    """The connections of ``client``'s pool, idle and in use (none for a client with no pool)."""
    pool = getattr(client, "connection_pool", None)
    return [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]


async def _lifetime(client: Any) -> AsyncGenerator[Any, None]:
    """Hand out ``client`` once; close it when finalised (by :func:`_end`, or by its loop shutting down).

    Its closing cancelled (a lifetime freed with its store as the loop shuts down is finalised in
    a task of the loop's finaliser, which ``asyncio.run`` cancels with the loop's other tasks),
    each connection is closed without waiting, then the cancellation goes on: never a connection
    left open past the loop's end (uvloop's ``close()`` reports its transport, still open).
    """
    try:
        yield client
    finally:
        try:
            await client.aclose()
        except asyncio.CancelledError:
            for connection in _connections(client):
                connection._close()  # redis-py's close without waiting (what its finaliser does)
            raise


def _end(lifetime: AsyncGenerator[Any, None]) -> None:
    """On the lifetime's loop, as it runs: close its client in a task (as the loop's own finalizer does).

    Handed to the loop as a plain call, never as a coroutine made beforehand: a loop closed
    before it runs again drops its queue, and the lifetime with it (then forgotten, the loop
    being closed), where a coroutine dropped unawaited would be reported (the lifetime's
    ``aclose()`` from Python 3.13, and one of ours on any version). Also held here, the
    lifetime is not finalised by the collector meanwhile, which would queue that ``aclose()``.
    """
    asyncio.get_running_loop().create_task(lifetime.aclose())
