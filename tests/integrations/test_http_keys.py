"""The HTTP integrations run each request through the policy handle's key of its host."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
import pytest
import requests
from support import FAST_RETRY as FAST
from support import ScriptedHTTPServer

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.http import RETRYABLE, HttpOptions, HttpRetryOn, http_config
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter
from otel_resilience.integrations.sending import HttpPolicy

BREAKER = CircuitBreakerConfig(failure_threshold=2, timeout=60.0)
DRIVERS = pytest.mark.parametrize("driver", ["sync", "async"])


async def send(driver: str, policy: Any, manager: ResilienceManager, method: str, url: str, **kw: Any) -> Any:
    """Send one request with the sync or the async transport (``options`` in ``kw`` goes to it)."""
    options = kw.pop("options", None)
    if driver == "sync":
        transport = ResilientTransport(policy, manager=manager, options=options)
        with httpx.Client(transport=transport, timeout=None) as client:
            return client.request(method, url, **kw)
    atransport = AsyncResilientTransport(policy, manager=manager, options=options)
    async with httpx.AsyncClient(transport=atransport, timeout=None) as aclient:
        return await aclient.request(method, url, **kw)


@DRIVERS
async def test_two_hosts_of_one_server_have_their_own_breaker(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """127.0.0.1 and localhost reach the same server; failures of one open that host's breaker only."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="downstream", circuit_breaker=BREAKER)
    first, second = f"127.0.0.1:{server.port}", f"localhost:{server.port}"
    server.script("/a", (500, {}), (500, {}))
    for _ in range(2):
        assert (await send(driver, config, manager, "GET", f"http://{first}/a")).status_code == 500
    with pytest.raises(CircuitOpenError):
        await send(driver, config, manager, "GET", f"http://{first}/a")
    assert (await send(driver, config, manager, "GET", f"http://{second}/a")).status_code == 200
    handle = manager.policy("downstream")
    assert handle.keys == 2
    assert handle.for_key(first).circuit_breaker.state.value == "open"  # type: ignore[union-attr]
    assert handle.for_key(second).circuit_breaker.state.value == "closed"  # type: ignore[union-attr]
    stats = handle.get_stats()
    assert stats["circuit_breaker"]["open_keys"] == 1
    assert stats["executions"]["total"] == 4


@DRIVERS
async def test_a_post_is_not_retried_through_a_users_handle(driver: str, server: ScriptedHTTPServer) -> None:
    """A handle made from http_config keeps the HTTP rule: POST sent once, GET and a marked POST retried."""
    manager = ResilienceManager()
    handle = manager.policy("orders", http_config(ResilienceConfig(retry_policy=FAST)))
    server.script("/post", (503, {}), (503, {}))
    assert (
        await send(driver, handle, manager, "POST", f"{server.url}/post", content=b"x")
    ).status_code == 503
    assert server.count("/post") == 1
    server.script("/marked", (503, {}))
    marked = await send(driver, handle, manager, "POST", f"{server.url}/marked", extensions={RETRYABLE: True})
    assert marked.status_code == 200
    server.script("/get", (503, {"Retry-After": "0"}))
    assert (await send(driver, handle, manager, "GET", f"{server.url}/get")).status_code == 200
    assert (server.count("/marked"), server.count("/get")) == (2, 2)
    assert handle.keys == 1


@DRIVERS
async def test_a_post_is_not_retried_on_a_configs_keyed_policy(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """A config becomes a keyed handle that still sends a POST once."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="downstream", retry_policy=FAST)
    server.script("/a", (503, {}), (503, {}))
    assert (await send(driver, config, manager, "POST", f"{server.url}/a", content=b"x")).status_code == 503
    assert server.count("/a") == 1
    handle = manager.policy("downstream")
    assert isinstance(handle.config.retry_policy.retry_on, HttpRetryOn)  # type: ignore[union-attr]
    assert handle.keys == 1


@DRIVERS
async def test_a_reload_without_the_rule_keeps_it(driver: str, server: ScriptedHTTPServer) -> None:
    """A config's policy adapts every reload (reconfigure, a file): a POST is still sent once after it."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="reloaded", retry_policy=FAST)
    server.script("/warm", (200, {}))
    assert (await send(driver, config, manager, "GET", f"{server.url}/warm")).status_code == 200
    plain = ResilienceConfig(name="reloaded", retry_policy=RetryPolicy(max_attempts=4, initial_delay=0.0))
    handle = manager.reconfigure("reloaded", plain)
    assert handle.generation == 2
    assert isinstance(handle.config.retry_policy.retry_on, HttpRetryOn)  # type: ignore[union-attr]
    assert handle.config.retry_policy.max_attempts == 4  # type: ignore[union-attr]
    server.script("/post", (503, {}), (503, {}), (503, {}))
    assert (
        await send(driver, handle, manager, "POST", f"{server.url}/post", content=b"x")
    ).status_code == 503
    assert server.count("/post") == 1
    assert manager.apply_config({"reloaded": plain})["reloaded"].generation == 2  # unchanged: no reload


def test_the_rule_only_acts_inside_a_request() -> None:
    """Outside a request the handle's retry decides alone, so one handle may serve other calls too."""
    manager = ResilienceManager()
    handle = manager.policy("shared", http_config(ResilienceConfig(retry_policy=FAST)))
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("boom")
        return "ok"

    assert handle.execute_sync(flaky) == "ok"
    assert len(calls) == 3
    assert http_config(handle.config) is handle.config
    assert http_config(ResilienceConfig(retry_policy=FAST)) == http_config(
        ResilienceConfig(retry_policy=FAST)
    )


def test_a_handle_without_the_rule_is_refused() -> None:
    """A handle whose retry would resend POSTs is refused, naming http_config; one without retry is fine."""
    manager = ResilienceManager()
    plain = manager.policy("plain", ResilienceConfig(retry_policy=FAST))
    with pytest.raises(ValueError, match=r"http_config"):
        ResilientTransport(plain, manager=manager)
    ResilientTransport(manager.policy("no-retry", ResilienceConfig(circuit_breaker=BREAKER)))


def test_evicted_hosts_keep_their_counts(server: ScriptedHTTPServer) -> None:
    """Past max_hosts idle hosts are evicted; the policy's totals still count their requests."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="downstream", circuit_breaker=BREAKER)
    transport = ResilientTransport(config, manager=manager, options=HttpOptions(max_hosts=1))
    server.script("/a", (500, {}))
    with httpx.Client(transport=transport, timeout=None) as client:
        assert client.get(f"http://127.0.0.1:{server.port}/a").status_code == 500
        assert client.get(f"http://localhost:{server.port}/a").status_code == 200
        assert client.get(f"http://127.0.0.1:{server.port}/a").status_code == 200
    stats = manager.policy("downstream").get_stats()
    assert stats["keys"] == 1
    assert stats["evicted_keys"] == 1  # localhost: 127.0.0.1's breaker holds a failure, so it stays
    assert stats["executions"]["total"] == 3
    assert stats["circuit_breaker"]["total_failures"] == 1
    assert stats["circuit_breaker"]["total_successes"] == 2


def test_per_host_off_runs_unkeyed(server: ScriptedHTTPServer) -> None:
    """With per_host=False requests use the handle's unkeyed state: no key is made."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="downstream", circuit_breaker=BREAKER)
    transport = ResilientTransport(config, manager=manager, options=HttpOptions(per_host=False))
    with httpx.Client(transport=transport) as client:
        assert client.get(f"{server.url}/a").status_code == 200
    handle = manager.policy("downstream")
    assert handle.keys == 0
    assert handle.get_stats()["executions"]["total"] == 1


def test_a_hosts_view_is_made_once_and_the_views_kept_are_bounded() -> None:
    """route() gives a host the same view each time, keyed host[:port]; past max_hosts it starts over."""
    http = HttpPolicy(ResilienceConfig(name="views"), HttpOptions(max_hosts=2), ResilienceManager(), ())
    first = http.route("a.internal", None)
    assert http.route("a.internal", None) is first
    assert first.key == "a.internal"
    assert http.route("a.internal", 8443).key == "a.internal:8443"
    http.route("b.internal", None)  # a third view: the two kept are dropped, not the hosts' state
    again = http.route("a.internal", None)
    assert again is not first
    assert again.key == "a.internal"
    assert again.circuit_breaker is first.circuit_breaker


# ---------------------------------------------------------------- one host, one key, whatever the client


async def get(client: str, config: ResilienceConfig, manager: ResilienceManager, url: str, **kw: Any) -> int:
    """GET ``url`` with the named client under ``config``; ``proxy`` in ``kw``: through that HTTP proxy."""
    proxy = kw.get("proxy")
    if client == "requests":
        with requests.Session() as session:
            session.trust_env = False
            session.mount("http://", ResilientAdapter(config, manager=manager))
            return session.get(url, proxies={"http": proxy} if proxy else None).status_code
    if client == "aiohttp":
        middleware = ResilientMiddleware(config, manager=manager)
        async with aiohttp.ClientSession(middlewares=(middleware,), trust_env=False) as session:
            async with session.get(url, proxy=proxy) as response:
                return response.status
    inner = httpx.HTTPTransport(proxy=proxy) if proxy else None
    ainner = httpx.AsyncHTTPTransport(proxy=proxy) if proxy else None
    driver = "sync" if client == "httpx" else "async"
    if driver == "sync":
        with httpx.Client(transport=ResilientTransport(config, inner, manager=manager)) as sync:
            return sync.get(url).status_code
    async with httpx.AsyncClient(
        transport=AsyncResilientTransport(config, ainner, manager=manager)
    ) as aclient:
        return (await aclient.get(url)).status_code


CLIENTS = pytest.mark.parametrize("client", ["httpx", "httpx-async", "requests", "aiohttp"])


@CLIENTS
async def test_one_ipv6_address_is_one_host_however_it_is_spelled(client: str) -> None:
    """[::1] and [0:0:0:0:0:0:0:1] are one address: its failures open one breaker, keyed [::1]:port."""
    server = ScriptedHTTPServer("::1")
    try:
        manager = ResilienceManager()
        config = ResilienceConfig(name="v6", circuit_breaker=BREAKER)
        server.script("/a", (500, {}), (500, {}))
        assert await get(client, config, manager, f"http://[::1]:{server.port}/a") == 500
        assert await get(client, config, manager, f"http://[0:0:0:0:0:0:0:1]:{server.port}/a") == 500
        with pytest.raises(CircuitOpenError):
            await get(client, config, manager, f"http://[::1]:{server.port}/a")
    finally:
        server.close()
    handle = manager.policy("v6")
    assert handle.keys == 1
    assert handle.for_key(f"[::1]:{server.port}").circuit_breaker.state.value == "open"  # type: ignore[union-attr]


def test_an_ipv6_literal_is_keyed_in_brackets_so_a_port_is_never_read_as_part_of_it() -> None:
    """::1 on port 8080 and the address ::1:8080 on the scheme's port are two hosts, two breakers."""
    config = ResilienceConfig(name="brackets", circuit_breaker=BREAKER)
    http = HttpPolicy(config, None, ResilienceManager(), ())
    with_port, address = http.route("::1", 8080), http.route("::1:8080", None)
    assert (with_port.key, address.key) == ("[::1]:8080", "[::1:8080]")
    assert with_port.circuit_breaker is not address.circuit_breaker
    assert http.route("::FFFF:127.0.0.1", None).key == "[::ffff:7f00:1]"  # one spelling per address
    # ...and on every Python version (3.13 writes an IPv4-mapped address dotted)
    assert http.route("::ffff:10.0.0.1", 443).key == "[::ffff:a00:1]:443"
    assert http.route("0:0:0:0:0:ffff:0:0", None).key == "[::ffff:0:0]"


async def test_an_idna_host_is_one_key_for_every_client(server: ScriptedHTTPServer) -> None:
    """Each client keys a non-ASCII host by the name it sends (xn--...): clients sharing a policy share its host."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="idna", circuit_breaker=BREAKER)
    for client in ("httpx", "httpx-async", "requests", "aiohttp"):  # through the server as a proxy
        assert await get(client, config, manager, "http://bücher.test/a", proxy=server.url) == 200
    assert server.count("http://xn--bcher-kva.test/a") == 4
    handle = manager.policy("idna")
    assert handle.keys == 1
    breaker = handle.for_key("xn--bcher-kva.test").circuit_breaker
    assert breaker is not None
    assert breaker.get_stats()["total_requests"] == 4


async def test_a_host_with_a_trailing_dot_is_one_key_with_the_host_for_every_client(
    server: ScriptedHTTPServer,
) -> None:
    """``example.test.`` (the absolute name) and ``example.test`` are one host: one breaker, keyed without the dot."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="dotted", circuit_breaker=CircuitBreakerConfig(failure_threshold=8))
    for client in ("httpx", "httpx-async", "requests", "aiohttp"):  # through the server as a proxy
        for host in ("example.test.", "example.test"):
            assert await get(client, config, manager, f"http://{host}/a", proxy=server.url) == 200
    handle = manager.policy("dotted")
    assert handle.keys == 1
    breaker = handle.for_key("example.test").circuit_breaker
    assert breaker is not None
    assert breaker.get_stats()["total_requests"] == 8


def test_a_hosts_key_is_its_name_in_lower_case_without_the_trailing_dot() -> None:
    """However a client spells a host (case, the root's dot), route() keys it one way: one breaker."""
    http = HttpPolicy(
        ResilienceConfig(name="spelled", circuit_breaker=BREAKER), None, ResilienceManager(), ()
    )
    views = [http.route(host, 8443) for host in ("API.Example.test", "api.example.test.", "api.example.test")]
    assert {view.key for view in views} == {"api.example.test:8443"}
    assert len({id(view.circuit_breaker) for view in views}) == 1
    assert http.route("127.0.0.1.", None).key == "127.0.0.1"
    assert http.route("::1", None).key == "[::1]"


async def test_the_schemes_own_port_written_out_is_one_key_with_the_host_for_every_client(
    server: ScriptedHTTPServer,
) -> None:
    """``HTTP://Example.test:80`` is ``http://example.test``: one host, one breaker, keyed without the port.

    httpx keeps the port of a URL whose scheme is written in capitals (``HTTP://h:80``, whose
    ``url.port`` is 80, where ``http://h:80`` gives ``None``): its transports keyed the host
    ``example.test:80``, a second breaker for the host ``example.test``.
    """
    manager = ResilienceManager()
    config = ResilienceConfig(name="own-port", circuit_breaker=CircuitBreakerConfig(failure_threshold=12))
    for client in ("httpx", "httpx-async", "requests", "aiohttp"):  # through the server as a proxy
        for url in ("HTTP://Example.test:80/a", "http://example.test:80/a", "http://example.test/a"):
            assert await get(client, config, manager, url, proxy=server.url) == 200
    handle = manager.policy("own-port")
    assert handle.keys == 1
    breaker = handle.for_key("example.test").circuit_breaker
    assert breaker is not None
    assert breaker.get_stats()["total_requests"] == 12
