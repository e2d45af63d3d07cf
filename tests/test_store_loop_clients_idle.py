"""A store's per-loop async client of a loop that runs nothing when the store closes.

``close()`` shuts down the sockets of such a client from the thread closing the store, and the
loop's next run, if any, closes the client on it. A loop closed with no other run (``loop.close()``
after ``run_until_complete``) must find nothing of the client's to run: from Python 3.13 a
coroutine of an async generator (its ``aclose()``) dropped unawaited with the loop's queue is
reported (``RuntimeWarning: coroutine method 'aclose' ... was never awaited``).
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from types import SimpleNamespace

from otel_resilience.store.loops import LoopClients


class _Client:
    """An async client with no connection, counting the ``aclose`` calls it was awaited for."""

    def __init__(self) -> None:
        self.connection_pool = SimpleNamespace(_available_connections=[], _in_use_connections=[])
        self.closed_on: list[asyncio.AbstractEventLoop] = []

    async def aclose(self) -> None:
        self.closed_on.append(asyncio.get_running_loop())


def _clients() -> tuple[LoopClients, list[_Client]]:
    """A store's clients of fake clients, and the list of those it made."""
    made: list[_Client] = []

    def factory() -> _Client:
        made.append(_Client())
        return made[-1]

    return LoopClients(factory), made


def test_an_idle_loop_closed_after_the_store_leaves_no_coroutine_unawaited() -> None:
    clients, made = _clients()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(clients.client())
        clients.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop.close()
            gc.collect()
        assert [str(w.message) for w in caught] == []
        assert made[0].closed_on == []  # the loop never ran again: its sockets were shut down only
    finally:
        loop.close()


def test_an_idle_loop_that_runs_again_after_the_store_closed_closes_its_client_on_it() -> None:
    clients, made = _clients()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(clients.client())
        clients.close()
        assert made[0].closed_on == []
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        assert made[0].closed_on == [loop]
    finally:
        loop.close()
