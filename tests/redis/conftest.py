"""Fixtures of the shared-state tests: one redis-server per session, flushed before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_support import RedisServer
from tcp_proxy import TcpFaultProxy


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free 127.0.0.1 port for the session, stopped by pid at its end."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's server, running and empty (a test may have stopped it)."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def proxy(redis_server: RedisServer, redis_url: str) -> Iterator[TcpFaultProxy]:
    """A fault proxy in front of the session's (flushed) redis-server."""
    assert redis_url
    proxy = TcpFaultProxy("127.0.0.1", redis_server.port).start()
    yield proxy
    proxy.stop()
