"""A store's per-loop async clients in a process forked from one that used them."""

from __future__ import annotations

import asyncio
import select
import socket
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from otel_resilience.store.loops import LoopClients
from tests.forking_support import run_in_child

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="os.fork() is POSIX only")


class _Client:
    """An async client whose one connection's socket is ``sock`` (redis-py's attributes, as read)."""

    def __init__(self, sock: socket.socket) -> None:
        writer = SimpleNamespace(get_extra_info=lambda name: sock if name == "socket" else None)
        connection = SimpleNamespace(_writer=writer)
        self.connection_pool = SimpleNamespace(_available_connections=[connection], _in_use_connections=[])

    async def aclose(self) -> None:
        pass


def test_a_forked_child_closing_its_store_shuts_down_none_of_its_parents_connections() -> None:
    """A child of a process whose loop is not running (one ``run_until_complete`` runs now and then)
    closes its store: the parent's connection of that loop stays up, as the sync clients' do
    (``Sockets.end``). Was: the child shut the shared socket down, ending the parent's connection
    (its peer read the end of the stream)."""
    ours, peer = socket.socketpair()
    clients = LoopClients(lambda: _Client(ours))
    loop = asyncio.new_event_loop()
    try:
        client: Any = loop.run_until_complete(clients.client())
        assert client.connection_pool._available_connections
        assert run_in_child(clients.close) == 0
        readable, _, _ = select.select([peer], [], [], 0)
        assert readable == []  # the child ended; the connection is as it was
        clients.close()  # the parent's own close ends it
        readable, _, _ = select.select([peer], [], [], 0)
        assert readable == [peer]
        assert peer.recv(1) == b""
    finally:
        loop.close()
        ours.close()
        peer.close()
