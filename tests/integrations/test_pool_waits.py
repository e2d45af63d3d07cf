"""A wait for a connection of the client's own pool that ran out: local congestion, not the host's failure.

Each client's pool holds one connection, which another request keeps (its response open,
unread). A request under the policy finds none free: its wait ends with the client's error
(httpx's ``PoolTimeout``), or at the deadline with the policy's timeout (requests with
``pool_block=True``; httpx too). The host never saw the request, so the breaker does not count
it, however low its threshold: once the connection is back, the next request goes through. The
caller still gets the error, and the retry sends the request again only if it may be sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from support import ScriptedHTTPServer
from urllib3.exceptions import EmptyPoolError

from otel_resilience import (
    CircuitBreakerConfig,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.http import PoolTimeoutError, RequestNotSentError, http_config
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter

BREAKER = CircuitBreakerConfig(failure_threshold=1, timeout=60.0)
"""Opens at the first failure it counts."""
RETRY = RetryPolicy(max_attempts=2, initial_delay=0.0, jitter="none")
"""One more attempt, at once."""
POOL_WAIT = httpx.Timeout(10.0, pool=0.05)
"""The client's own wait for a free connection: short (the connection never comes back in time)."""


def _config(**changes: Any) -> ResilienceConfig:
    fields: dict[str, Any] = {"name": "pooled", "circuit_breaker": BREAKER, "retry_policy": RETRY}
    fields.update(changes)
    return ResilienceConfig(**fields)


def _breaker(manager: ResilienceManager) -> dict[str, Any]:
    return manager.policy("pooled").get_stats()["circuit_breaker"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def held(server: ScriptedHTTPServer, transport: httpx.HTTPTransport) -> Iterator[None]:
    """A request through ``transport`` keeps its one connection (its response open, unread) meanwhile."""
    other = httpx.Client(transport=transport)
    keeping = other.send(other.build_request("GET", f"{server.url}/held"), stream=True)
    try:
        yield
    finally:
        keeping.close()


@pytest.mark.parametrize(("method", "sends"), [("GET", 2), ("POST", 1)])
def test_httpx_a_pool_wait_that_ran_out_is_not_counted_against_the_host(
    server: ScriptedHTTPServer, method: str, sends: int
) -> None:
    """httpx's PoolTimeout reaches the caller; the breaker ignores it; a GET waits again, a POST does not."""
    inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1))
    manager = ResilienceManager()
    with httpx.Client(
        transport=ResilientTransport(_config(), transport=inner, manager=manager), timeout=POOL_WAIT
    ) as client:
        with held(server, inner), pytest.raises(httpx.PoolTimeout):
            client.request(method, f"{server.url}/job")
        stats = _breaker(manager)
        assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, sends, 0)
        assert server.count("/job") == 0
        assert client.request(method, f"{server.url}/job").status_code == 200  # the breaker let it through


async def test_httpx_async_a_pool_wait_that_ran_out_is_not_counted_against_the_host(
    server: ScriptedHTTPServer,
) -> None:
    """As with the sync transport: the caller gets PoolTimeout, the breaker stays closed, and then serves."""
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    manager = ResilienceManager()
    transport = AsyncResilientTransport(_config(), transport=inner, manager=manager)
    async with httpx.AsyncClient(transport=transport, timeout=POOL_WAIT) as client:
        other = httpx.AsyncClient(transport=inner)
        keeping = await other.send(other.build_request("GET", f"{server.url}/held"), stream=True)
        try:
            with pytest.raises(httpx.PoolTimeout):
                await client.get(f"{server.url}/job")
        finally:
            await keeping.aclose()
        stats = _breaker(manager)
        assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, 2, 0)
        assert (await client.get(f"{server.url}/job")).status_code == 200


def test_httpx_a_pool_wait_the_deadline_ended_is_the_policys_timeout_not_the_hosts_failure(
    server: ScriptedHTTPServer,
) -> None:
    """The pool's wait capped by the deadline: the caller gets the policy's timeout, the breaker counts nothing."""
    inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1))
    manager = ResilienceManager()
    config = _config(retry_policy=None, timeout=0.3)
    with httpx.Client(transport=ResilientTransport(config, transport=inner, manager=manager)) as client:
        with held(server, inner), pytest.raises(OperationTimeoutError):
            client.get(f"{server.url}/job")
        stats = _breaker(manager)
        assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, 1, 0)


def test_requests_a_blocked_pools_wait_the_deadline_ended_is_not_counted_against_the_host(
    server: ScriptedHTTPServer,
) -> None:
    """requests with ``pool_block=True``: the policy's timeout for the caller, the breaker closed, then served."""
    manager = ResilienceManager()
    session = requests.Session()
    adapter = ResilientAdapter(
        _config(retry_policy=None, timeout=0.3), manager=manager, pool_maxsize=1, pool_block=True
    )
    session.mount("http://", adapter)
    keeping = session.get(f"{server.url}/held", stream=True)  # unread: its connection stays out of the pool
    try:
        outcome: list[BaseException] = []
        waiting = threading.Thread(target=lambda: _record(outcome, lambda: session.get(f"{server.url}/job")))
        waiting.start()
        waiting.join(10.0)
        assert not waiting.is_alive(), "the request waited past its deadline"
        assert [type(error) for error in outcome] == [OperationTimeoutError]
        stats = _breaker(manager)
        assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, 1, 0)
        keeping.close()
        assert session.get(f"{server.url}/job").status_code == 200
    finally:
        keeping.close()
        session.close()


def _record(outcome: list[BaseException], call: Callable[[], object]) -> None:
    try:
        call()
    except BaseException as error:  # recorded for the test to read
        outcome.append(error)


def test_the_clients_pool_waits_are_one_kind_the_http_breaker_ignores() -> None:
    """httpx's PoolTimeout and urllib3's EmptyPoolError are PoolTimeoutErrors; http_config has the breaker ignore them."""
    assert isinstance(httpx.PoolTimeout("no connection"), PoolTimeoutError)
    assert issubclass(EmptyPoolError, PoolTimeoutError)
    assert not issubclass(httpx.ConnectTimeout, PoolTimeoutError)
    config = http_config(
        ResilienceConfig(circuit_breaker=CircuitBreakerConfig(ignore_exceptions=(KeyError,)))
    )
    assert config.circuit_breaker is not None
    ignored = config.circuit_breaker.ignore_exceptions
    assert ignored[:3] == (KeyError, PoolTimeoutError, RequestNotSentError)
    assert len(ignored) == 4  # and an attempt's timeout that ended a pool wait (told by the request)
    assert not any(issubclass(kind, ignored[3]) for kind in (OperationTimeoutError, Exception))
    assert http_config(config) is config  # converted once
    counted = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(record_exceptions=(httpx.PoolTimeout,)))
    kept = http_config(counted).circuit_breaker
    assert kept is not None
    assert kept.ignore_exceptions == (RequestNotSentError,)  # the user counts them: as asked, cut or not


def test_the_clients_pool_waits_are_pool_timeouts_whatever_was_imported_before() -> None:
    """A process that imports no client integration (only http_config) knows the clients' pool waits too.

    Its breaker ignores httpx's PoolTimeout as http_config says, and a config that counts them
    (record_exceptions) is left counting them, as it is once the integrations are imported: the
    rule does not depend on what was imported first.
    """
    code = textwrap.dedent(
        """
        import httpx
        from urllib3.exceptions import EmptyPoolError
        from otel_resilience import CircuitBreakerConfig, ResilienceConfig, ResilienceManager
        from otel_resilience.integrations.http import PoolTimeoutError, http_config

        print(isinstance(httpx.PoolTimeout("none free"), PoolTimeoutError), issubclass(EmptyPoolError, PoolTimeoutError))
        counted = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(record_exceptions=(httpx.PoolTimeout,)))
        print(PoolTimeoutError not in http_config(counted).circuit_breaker.ignore_exceptions)
        breaker = CircuitBreakerConfig(failure_threshold=1, timeout=60.0)
        handle = ResilienceManager().policy("pooled", ResilienceConfig(circuit_breaker=breaker), adapt=http_config)

        def wait():
            raise httpx.PoolTimeout("none free")

        try:
            handle.execute_sync(wait)
        except httpx.PoolTimeout:
            pass
        stats = handle.get_stats()["circuit_breaker"]
        print(stats["total_failures"], stats["total_ignored"], stats["times_opened"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["True True", "True", "0 1 0"]


# ---------------------------------------------------------------- a per-attempt timeout ends the wait

ATTEMPT = RetryPolicy(max_attempts=1, attempt_timeout=0.1)
"""Each attempt timed on its own (inside the breaker), the wait for a connection included."""


def test_httpx_a_pool_wait_an_attempt_timeout_ended_is_not_counted_against_the_host(
    server: ScriptedHTTPServer,
) -> None:
    """The attempt's timeout reaches the caller; the breaker, just outside it, counts nothing; then it serves."""
    inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1))
    manager = ResilienceManager()
    config = _config(retry_policy=ATTEMPT)
    with httpx.Client(transport=ResilientTransport(config, transport=inner, manager=manager)) as client:
        with held(server, inner), pytest.raises(OperationTimeoutError) as raised:
            client.get(f"{server.url}/job")
        assert raised.value.scope == "attempt"
        stats = _breaker(manager)
        assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, 1, 0)
        assert client.get(f"{server.url}/job").status_code == 200
    assert server.count("/job") == 1


async def test_httpx_async_a_pool_wait_an_attempt_timeout_ended_is_not_counted_against_the_host(
    server: ScriptedHTTPServer,
) -> None:
    """As with the sync transport, whether the attempt's timer or the client's capped pool timeout ends the wait."""
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    manager = ResilienceManager()
    transport = AsyncResilientTransport(_config(retry_policy=ATTEMPT), transport=inner, manager=manager)
    async with httpx.AsyncClient(transport=transport) as client:
        other = httpx.AsyncClient(transport=inner)
        keeping = await other.send(other.build_request("GET", f"{server.url}/held"), stream=True)
        try:
            with pytest.raises(OperationTimeoutError) as raised:
                await client.get(f"{server.url}/job")
        finally:
            await keeping.aclose()
        assert raised.value.scope == "attempt"
        stats = _breaker(manager)
        assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, 1, 0)
        assert (await client.get(f"{server.url}/job")).status_code == 200


def test_requests_a_blocked_pools_wait_an_attempt_timeout_ended_is_not_counted_against_the_host(
    server: ScriptedHTTPServer,
) -> None:
    """requests with ``pool_block=True`` and a per-attempt timeout: the attempt's timeout, the breaker closed."""
    manager = ResilienceManager()
    session = requests.Session()
    adapter = ResilientAdapter(
        _config(retry_policy=ATTEMPT), manager=manager, pool_maxsize=1, pool_block=True
    )
    session.mount("http://", adapter)
    keeping = session.get(f"{server.url}/held", stream=True)
    try:
        with pytest.raises(OperationTimeoutError) as raised:
            session.get(f"{server.url}/job")
        assert raised.value.scope == "attempt"
        stats = _breaker(manager)
        assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, 1, 0)
        keeping.close()
        assert session.get(f"{server.url}/job").status_code == 200
    finally:
        keeping.close()
        session.close()


def test_an_attempt_timeout_of_a_slow_host_is_still_its_failure(server: ScriptedHTTPServer) -> None:
    """Only a wait for the pool is spared: an attempt the host kept past its timeout is counted, as before."""
    manager = ResilienceManager()
    config = _config(retry_policy=RetryPolicy(max_attempts=1, attempt_timeout=0.1))
    server.script("/slow", (200, {}, 0.2))
    with httpx.Client(transport=ResilientTransport(config, manager=manager)) as client:
        with pytest.raises(OperationTimeoutError):
            client.get(f"{server.url}/slow")
    stats = _breaker(manager)
    assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (1, 0, 1)


@contextlib.asynccontextmanager
async def aiohttp_held(
    server: ScriptedHTTPServer, config: ResilienceConfig, manager: ResilienceManager, **session: Any
) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session with one connection, which a request outside the policy keeps (its answer slow) meanwhile."""
    middleware = ResilientMiddleware(config, manager=manager)
    connector = aiohttp.TCPConnector(limit=1)
    server.script("/held", (200, {}, 5.0))
    async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,), **session) as client:
        keeping = asyncio.ensure_future(client.get(f"{server.url}/held", middlewares=()))
        while not server.count("/held"):  # its connection is taken
            await asyncio.sleep(0.005)
        try:
            yield client
        finally:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping


async def test_aiohttp_a_pool_wait_an_attempt_timeout_ended_is_not_counted_against_the_host(
    server: ScriptedHTTPServer,
) -> None:
    """aiohttp's wait for a connection slot, ended by the attempt's timer: the attempt's timeout, not counted."""
    manager = ResilienceManager()
    async with aiohttp_held(server, _config(retry_policy=ATTEMPT), manager) as client:
        with pytest.raises(OperationTimeoutError) as raised:
            await client.get(f"{server.url}/job")
    assert raised.value.scope == "attempt"
    stats = _breaker(manager)
    assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, 1, 0)


async def test_aiohttp_a_pool_wait_its_own_connect_timeout_ended_is_not_counted_against_the_host(
    server: ScriptedHTTPServer,
) -> None:
    """aiohttp's ``ClientTimeout.connect`` ending the wait for a slot (not a connect): its error, not counted."""
    manager = ResilienceManager()
    timeout = aiohttp.ClientTimeout(connect=0.05)
    async with aiohttp_held(server, _config(retry_policy=None), manager, timeout=timeout) as client:
        with pytest.raises(aiohttp.ConnectionTimeoutError):
            await client.get(f"{server.url}/job")
    stats = _breaker(manager)
    assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, 1, 0)
