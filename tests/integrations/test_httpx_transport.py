"""httpx's ResilientTransport and AsyncResilientTransport against a real local HTTP server."""

from __future__ import annotations

import dataclasses
import io
import pickle
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from support import FAST_RETRY as FAST
from support import ScriptedHTTPServer

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations.http import (
    _RETRYABLE_ERRORS,
    RETRY_AFTER_STATUSES,
    RETRYABLE,
    FailedResponseError,
    HttpOptions,
    HttpRetryAfter,
    http_config,
)
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.testing import FakeClock


def policy(**changes: Any) -> ResilienceConfig:
    fields: dict[str, Any] = {"name": "downstream", "retry_policy": FAST}
    fields.update(changes)
    return ResilienceConfig(**fields)


class Clients:
    """Sends one request with the sync or the async client, so each test runs on both."""

    def __init__(self, driver: str, config: ResilienceConfig, **kwargs: Any) -> None:
        self.driver = driver
        self.manager = ResilienceManager()
        self.config = config
        self.kwargs = kwargs

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.driver == "sync":
            transport = ResilientTransport(self.config, manager=self.manager, **self.kwargs)
            with httpx.Client(transport=transport, timeout=None) as client:
                return client.request(method, url, **kwargs)
        atransport = AsyncResilientTransport(self.config, manager=self.manager, **self.kwargs)
        async with httpx.AsyncClient(transport=atransport, timeout=None) as aclient:
            return await aclient.request(method, url, **kwargs)


DRIVERS = pytest.mark.parametrize("driver", ["sync", "async"])


@DRIVERS
async def test_a_5xx_get_is_retried_until_it_answers(driver: str, server: ScriptedHTTPServer) -> None:
    """A GET that got a 503 is sent again, and the caller sees the 200."""
    server.script("/a", (503, {}), (502, {}))
    response = await Clients(driver, policy()).request("GET", f"{server.url}/a")
    assert response.status_code == 200
    assert response.text == "200"
    assert server.count("/a") == 3


@DRIVERS
async def test_the_last_failed_response_is_returned_when_attempts_run_out(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """After max_attempts 500s the caller gets the last 500 response, body readable, as httpx would."""
    server.script("/a", (500, {}), (500, {}), (500, {}))
    response = await Clients(driver, policy()).request("GET", f"{server.url}/a")
    assert response.status_code == 500
    assert response.text == "500"
    assert server.count("/a") == 3


@DRIVERS
async def test_raise_on_failure_raises_the_failed_response(driver: str, server: ScriptedHTTPServer) -> None:
    """With raise_on_failure the caller gets FailedResponseError holding the last response."""
    server.script("/a", (429, {}), (429, {}), (429, {}))
    clients = Clients(driver, policy(), options=HttpOptions(raise_on_failure=True))
    with pytest.raises(FailedResponseError) as caught:
        await clients.request("GET", f"{server.url}/a")
    assert caught.value.status_code == 429
    assert caught.value.response.status_code == 429


@DRIVERS
async def test_a_requests_retryable_errors_are_withdrawn_however_it_ends(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """The errors a request may be sent again for are told to the retry rule for that request
    only: after a success, a failed response returned, a failed response raised and a POST
    (sent once), the context holds what it held before."""
    server.script("/run-out", (500, {}), (500, {}), (500, {}))
    server.script("/raised", (503, {}), (503, {}), (503, {}))
    before = _RETRYABLE_ERRORS.get()
    assert (await Clients(driver, policy()).request("GET", f"{server.url}/ok")).status_code == 200
    assert _RETRYABLE_ERRORS.get() is before
    assert (await Clients(driver, policy()).request("GET", f"{server.url}/run-out")).status_code == 500
    assert _RETRYABLE_ERRORS.get() is before
    with pytest.raises(FailedResponseError):
        await Clients(driver, policy(), options=HttpOptions(raise_on_failure=True)).request(
            "GET", f"{server.url}/raised"
        )
    assert _RETRYABLE_ERRORS.get() is before
    assert (await Clients(driver, policy()).request("POST", f"{server.url}/post")).status_code == 200
    assert _RETRYABLE_ERRORS.get() is before
    assert (server.count("/run-out"), server.count("/raised"), server.count("/post")) == (3, 3, 1)


@DRIVERS
async def test_a_4xx_is_neither_retried_nor_a_breaker_failure(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """404s pass through at once, and a breaker that opens after one failure stays closed."""
    server.script("/a", *[(404, {})] * 5)
    config = policy(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0))
    clients = Clients(driver, config)
    for _ in range(5):
        assert (await clients.request("GET", f"{server.url}/a")).status_code == 404
    assert server.count("/a") == 5
    assert (await clients.request("GET", f"{server.url}/b")).status_code == 200


@DRIVERS
async def test_failure_statuses_are_configurable(driver: str, server: ScriptedHTTPServer) -> None:
    """A policy that counts 404 as a failure retries it; one that does not count 503 returns it."""
    server.script("/a", (404, {}))
    clients = Clients(driver, policy(), options=HttpOptions(failure_statuses={404}))
    assert (await clients.request("GET", f"{server.url}/a")).status_code == 200
    server.script("/b", (503, {}))
    assert (await clients.request("GET", f"{server.url}/b")).status_code == 503
    assert server.count("/b") == 1


@DRIVERS
async def test_a_post_is_not_retried(driver: str, server: ScriptedHTTPServer) -> None:
    """A POST (not idempotent) that got a 503 is sent once and its 503 returned."""
    server.script("/a", (503, {}), (503, {}))
    response = await Clients(driver, policy()).request("POST", f"{server.url}/a", content=b"order")
    assert response.status_code == 503
    assert server.count("/a") == 1


@DRIVERS
@pytest.mark.parametrize(
    "mark",
    [{"headers": {"Idempotency-Key": "k1"}}, {"extensions": {RETRYABLE: True}}],
    ids=["idempotency-key", "extension"],
)
async def test_a_marked_post_is_retried(
    driver: str, mark: dict[str, Any], server: ScriptedHTTPServer
) -> None:
    """A POST with an Idempotency-Key or the retryable flag is retried, its body sent again."""
    server.script("/a", (503, {}))
    response = await Clients(driver, policy()).request("POST", f"{server.url}/a", content=b"order", **mark)
    assert response.status_code == 200
    assert [body for _, path, _, body in server.requests if path == "/a"] == [b"order", b"order"]


@DRIVERS
@pytest.mark.parametrize("key", ["", "   "], ids=["empty", "blank"])
async def test_an_empty_idempotency_key_marks_nothing(
    driver: str, key: str, server: ScriptedHTTPServer
) -> None:
    """An Idempotency-Key without a value names no operation the server could deduplicate: sent once."""
    server.script("/a", (503, {}))
    headers = {"Idempotency-Key": ""}
    response = await Clients(driver, policy()).request(
        "POST", f"{server.url}/a", content=b"order", headers=headers
    )
    assert response.status_code == 503
    assert server.count("/a") == 1


@DRIVERS
async def test_a_get_marked_not_retryable_is_sent_once(driver: str, server: ScriptedHTTPServer) -> None:
    """The retryable flag set to False forbids retrying even an idempotent method."""
    server.script("/a", (503, {}))
    response = await Clients(driver, policy()).request(
        "GET", f"{server.url}/a", extensions={RETRYABLE: False}
    )
    assert response.status_code == 503
    assert server.count("/a") == 1


@DRIVERS
async def test_a_retryable_flag_that_is_not_a_bool_is_refused_before_sending(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """``"false"`` would read as true and resend a POST: the request is refused, never sent."""
    with pytest.raises(TypeError, match=r"otel_resilience\.retryable"):
        await Clients(driver, policy()).request("POST", f"{server.url}/a", extensions={RETRYABLE: "false"})
    assert server.count("/a") == 0


async def test_a_streamed_body_is_never_retried(server: ScriptedHTTPServer) -> None:
    """A body from an iterator cannot be replayed: sent once, even when marked retryable."""
    server.script("/a", (503, {}))
    manager = ResilienceManager()

    def chunks() -> Iterator[bytes]:
        yield b"ord"
        yield b"er"

    transport = ResilientTransport(policy(), manager=manager)
    with httpx.Client(transport=transport) as client:
        response = client.put(
            f"{server.url}/a", content=chunks(), headers={"Content-Length": "5"}, extensions={RETRYABLE: True}
        )
    assert response.status_code == 503
    assert server.count("/a") == 1


@DRIVERS
async def test_a_multipart_body_held_in_memory_is_retried_and_one_with_a_file_is_not(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """A multipart PUT whose files are bytes is sent again whole; one reading a file object is sent once."""
    server.script("/bytes", (503, {}), (502, {}))
    server.script("/file", (503, {}))
    clients = Clients(driver, policy())
    files = {"upload": ("a.txt", b"contents")}
    response = await clients.request("PUT", f"{server.url}/bytes", data={"k": "v"}, files=files)
    assert response.status_code == 200
    bodies = [body for _, path, _, body in server.requests if path == "/bytes"]
    assert len(bodies) == 3
    assert len(set(bodies)) == 1
    assert b"contents" in bodies[0]
    response = await clients.request("PUT", f"{server.url}/file", files={"upload": io.BytesIO(b"contents")})
    assert (response.status_code, server.count("/file")) == (503, 1)


@DRIVERS
async def test_retry_after_sets_the_next_delay(driver: str, server: ScriptedHTTPServer) -> None:
    """A 503 with Retry-After: 0.3 is retried no sooner than 0.3 s later (the policy's delay is 0.01 s)."""
    server.script("/a", (503, {"Retry-After": "0.3"}))
    start = time.monotonic()
    response = await Clients(driver, policy()).request("GET", f"{server.url}/a")
    assert response.status_code == 200
    assert time.monotonic() - start >= 0.3


@DRIVERS
async def test_a_retry_after_over_max_delay_is_not_waited(driver: str, server: ScriptedHTTPServer) -> None:
    """A Retry-After longer than max_delay stops retrying at once: the 429 is returned, sent once."""
    server.script("/a", (429, {"Retry-After": "120"}))
    start = time.monotonic()
    response = await Clients(driver, policy()).request("GET", f"{server.url}/a")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "120"
    assert server.count("/a") == 1
    assert time.monotonic() - start < 60


@DRIVERS
async def test_retry_after_is_read_on_429_and_503_only(driver: str, server: ScriptedHTTPServer) -> None:
    """A 500 or 502 carrying Retry-After: 120 is retried on the policy's own backoff, not given up on."""
    server.script("/a", (500, {"Retry-After": "120"}), (502, {"Retry-After": "120"}))
    start = time.monotonic()
    response = await Clients(driver, policy()).request("GET", f"{server.url}/a")
    assert (response.status_code, server.count("/a")) == (200, 3)
    assert time.monotonic() - start < 60


@DRIVERS
async def test_a_retry_after_date_is_read_as_the_wait_until_it(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """An HTTP date: two minutes ahead is over max_delay (the 503 returned, sent once); one past asks no wait."""
    ahead = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120), usegmt=True)
    server.script("/ahead", (503, {"Retry-After": ahead}))
    start = time.monotonic()
    response = await Clients(driver, policy()).request("GET", f"{server.url}/ahead")
    assert (response.status_code, server.count("/ahead")) == (503, 1)
    assert time.monotonic() - start < 60
    past = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=120), usegmt=True)
    server.script("/past", (503, {"Retry-After": past}))
    response = await Clients(driver, policy()).request("GET", f"{server.url}/past")
    assert (response.status_code, server.count("/past")) == (200, 2)


@DRIVERS
async def test_a_retry_after_past_the_deadline_ends_the_retries_unshortened(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """Retry-After: 30 under max_delay but past a 10 s deadline: the 503 is returned at once, sent once."""
    server.script("/a", (503, {"Retry-After": "30"}))
    retry = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=60.0, jitter="none")
    start = time.monotonic()
    response = await Clients(driver, policy(retry_policy=retry, timeout=10.0)).request(
        "GET", f"{server.url}/a"
    )
    assert (response.status_code, server.count("/a")) == (503, 1)
    assert time.monotonic() - start < 9


@DRIVERS
async def test_a_policys_own_delay_from_or_honour_retry_after_off_overrides_the_header(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """Retry-After: 120 on a 503: a ``delay_from`` of the policy's own (0 s), or
    ``honour_retry_after=False`` (the policy's backoff), retries it at once instead of giving up."""
    retry = RetryPolicy(
        max_attempts=3, initial_delay=0.01, max_delay=1.0, jitter="none", delay_from=lambda _: 0.0
    )
    start = time.monotonic()
    server.script("/own", (503, {"Retry-After": "120"}))
    response = await Clients(driver, policy(retry_policy=retry)).request("GET", f"{server.url}/own")
    assert (response.status_code, server.count("/own")) == (200, 2)
    server.script("/off", (503, {"Retry-After": "120"}))
    clients = Clients(driver, policy(), options=HttpOptions(honour_retry_after=False))
    response = await clients.request("GET", f"{server.url}/off")
    assert (response.status_code, server.count("/off")) == (200, 2)
    assert time.monotonic() - start < 60


def test_retry_after_statuses_are_an_option_checked_at_construction() -> None:
    """Other statuses may be named; a non-status is refused, naming the field."""
    assert HttpOptions().retry_after_statuses == frozenset({429, 503})
    options = HttpOptions(retry_after_statuses=[500, 503])
    assert options.retry_after_statuses == frozenset({500, 503})
    converted = http_config(policy(), options).retry_policy
    assert converted is not None
    assert converted.delay_from == HttpRetryAfter(frozenset({500, 503}))
    with pytest.raises(ValueError, match="retry_after_statuses"):
        HttpOptions(retry_after_statuses={700})
    with pytest.raises(TypeError, match="retry_after_statuses"):
        HttpOptions(retry_after_statuses="503")


def test_retry_after_statuses_that_are_no_failures_are_refused() -> None:
    """A status whose response is a success is never retried, so its Retry-After could never be honoured: refused."""
    with pytest.raises(ValueError, match="retry_after_statuses"):
        HttpOptions(retry_after_statuses={418, 503})
    with pytest.raises(ValueError, match="retry_after_statuses"):
        HttpOptions(failure_statuses={500}, retry_after_statuses={503})
    assert HttpOptions(failure_statuses={404, 503}, retry_after_statuses={404}).retry_after_statuses == {404}


def test_the_default_retry_after_statuses_are_those_of_429_and_503_that_are_failures() -> None:
    """Left to its default, the option keeps 429 and 503 where they are failure statuses (a set of failures of one's own is never refused)."""
    assert HttpOptions(failure_statuses={500, 503}).retry_after_statuses == frozenset({503})
    assert HttpOptions(failure_statuses={404}).retry_after_statuses == frozenset()
    assert HttpOptions().retry_after_statuses == RETRY_AFTER_STATUSES


@DRIVERS
async def test_a_retry_after_status_made_a_failure_is_honoured(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """A 418 counted as a failure and named in retry_after_statuses: its Retry-After (120 s, over max_delay) ends the retries."""
    server.script("/a", (418, {"Retry-After": "120"}))
    options = HttpOptions(failure_statuses={418, 503}, retry_after_statuses={418})
    response = await Clients(driver, policy(), options=options).request("GET", f"{server.url}/a")
    assert (response.status_code, server.count("/a")) == (418, 1)


@DRIVERS
async def test_transport_errors_are_retried_then_raised_and_open_the_breaker(driver: str) -> None:
    """A refused connection is retried, then raised as httpx's error; the breaker then rejects."""
    closed = ScriptedHTTPServer()
    url = closed.url
    closed.close()
    config = policy(circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=60.0))
    clients = Clients(driver, config)
    with pytest.raises(httpx.ConnectError):
        await clients.request("GET", f"{url}/a")
    with pytest.raises(CircuitOpenError) as caught:
        await clients.request("GET", f"{url}/a")
    assert caught.value.name == "downstream"
    host = f"127.0.0.1:{url.rsplit(':', 1)[1]}"
    breaker = clients.manager.policy("downstream").for_key(host).circuit_breaker
    assert breaker is not None
    assert breaker.state.value == "open"


@DRIVERS
async def test_one_breaker_per_host(driver: str, server: ScriptedHTTPServer) -> None:
    """Failures of one host open its breaker only: another host keeps answering."""
    other = ScriptedHTTPServer()
    try:
        config = policy(
            retry_policy=None, circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=60.0)
        )
        clients = Clients(driver, config)
        server.script("/a", (500, {}), (500, {}))
        for _ in range(2):
            assert (await clients.request("GET", f"{server.url}/a")).status_code == 500
        with pytest.raises(CircuitOpenError):
            await clients.request("GET", f"{server.url}/a")
        assert (await clients.request("GET", f"{other.url}/a")).status_code == 200
        handle = clients.manager.policy("downstream")
        assert handle.keys == 2
        assert handle.get_stats()["circuit_breaker"]["open_keys"] == 1
    finally:
        other.close()


@DRIVERS
async def test_per_host_off_shares_one_breaker(driver: str, server: ScriptedHTTPServer) -> None:
    """With per_host=False every host shares the policy's breaker."""
    other = ScriptedHTTPServer()
    try:
        config = policy(
            retry_policy=None, circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0)
        )
        clients = Clients(driver, config, options=HttpOptions(per_host=False))
        server.script("/a", (500, {}))
        assert (await clients.request("GET", f"{server.url}/a")).status_code == 500
        with pytest.raises(CircuitOpenError):
            await clients.request("GET", f"{other.url}/a")
    finally:
        other.close()


@DRIVERS
async def test_the_deadline_is_the_request_timeout(driver: str, server: ScriptedHTTPServer) -> None:
    """A client with no timeout of its own gives up at the policy's deadline, not the server's 3 s.

    The caller gets the policy's timeout (not the client's ``ReadTimeout``): a server maps it to 504.
    """
    server.script("/slow", (200, {}, 3.0))
    config = policy(retry_policy=None, timeout=0.3)
    start = time.monotonic()
    with pytest.raises(OperationTimeoutError) as caught:
        await Clients(driver, config).request("GET", f"{server.url}/slow")
    assert time.monotonic() - start < 2.5
    assert (type(caught.value), caught.value.operation, caught.value.timeout) == (
        OperationTimeoutError,
        "downstream",
        0.3,
    )


class _StalledBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A failed response's body that stops coming: the client's read timeout, at the deadline.

    Reading it moves the policy's fake clock past the deadline, then raises what httpx raises
    when a read of the body outlives the timeout it was given.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def _stall(self) -> bytes:
        self.clock.advance(10.0)
        raise httpx.ReadTimeout("timed out")

    def __iter__(self) -> Iterator[bytes]:
        yield self._stall()

    async def __aiter__(self) -> Any:
        yield self._stall()


@DRIVERS
async def test_the_deadline_reached_in_a_failed_body_is_the_policys_timeout(driver: str) -> None:
    """A 503 whose body stops coming until the deadline: the caller gets the policy's timeout.

    As a read timeout before the response's head is (and as with requests): the client gave up at
    the deadline passed on as its timeout, so it is not a transport error of its own.
    """
    clock = FakeClock(start=1000.0)
    sends: list[str] = []

    def stalled(request: httpx.Request) -> httpx.Response:
        sends.append(request.method)
        return httpx.Response(503, stream=_StalledBody(clock))

    class Stalled(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return stalled(request)

    class AsyncStalled(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return stalled(request)

    manager = ResilienceManager(clock=clock)
    config = policy(timeout=5.0)
    with pytest.raises(OperationTimeoutError) as caught:
        if driver == "sync":
            with httpx.Client(transport=ResilientTransport(config, Stalled(), manager=manager)) as client:
                client.get("http://downstream.internal/a")
        else:
            atransport = AsyncResilientTransport(config, AsyncStalled(), manager=manager)
            async with httpx.AsyncClient(transport=atransport) as aclient:
                await aclient.get("http://downstream.internal/a")
    assert (caught.value.operation, caught.value.timeout, sends) == ("downstream", 5.0, ["GET"])


def test_a_client_timeout_of_its_own_before_the_deadline_stays_the_clients(
    server: ScriptedHTTPServer,
) -> None:
    """The client's own 0.2 s read timeout fires long before the policy's 30 s: a transport error."""
    server.script("/slow", (200, {}, 3.0))
    transport = ResilientTransport(policy(retry_policy=None, timeout=30.0), manager=ResilienceManager())
    with httpx.Client(transport=transport, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
        client.get(f"{server.url}/slow")


def test_the_timeout_passed_on_is_capped_by_the_deadline(server: ScriptedHTTPServer) -> None:
    """Every timeout phase the sending transport sees is at most what is left of the deadline."""
    seen: list[dict[str, Any]] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions))
            return super().handle_request(request)

    server.script("/a", (503, {}))
    transport = ResilientTransport(policy(timeout=5.0), Recording(), manager=ResilienceManager())
    with httpx.Client(transport=transport, timeout=30.0) as client:
        assert client.get(f"{server.url}/a").status_code == 200
    assert [s["otel_resilience.resend_count"] for s in seen] == [0, 1]
    for extensions in seen:
        assert set(extensions["timeout"]) == {"connect", "read", "write", "pool"}
        assert all(0 < value <= 5.0 for value in extensions["timeout"].values())


@DRIVERS
async def test_the_timeout_passed_on_is_read_on_the_deadlines_own_clock(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """A policy on a fake clock: what is left of its deadline is read on that clock, not the system's.

    The fake clock never moves during the request, so every phase gets the whole 5 s (read on the
    system clock, a deadline at fake time 1005 would be long past: a 1 ms timeout).
    """
    seen: list[dict[str, Any]] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions["timeout"]))
            return super().handle_request(request)

    class AsyncRecording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions["timeout"]))
            return await super().handle_async_request(request)

    server.script("/a", (200, {}))
    manager = ResilienceManager(clock=FakeClock(start=1000.0))
    config = policy(retry_policy=None, timeout=5.0)
    if driver == "sync":
        transport = ResilientTransport(config, Recording(), manager=manager)
        with httpx.Client(transport=transport, timeout=None) as client:
            assert client.get(f"{server.url}/a").status_code == 200
    else:
        atransport = AsyncResilientTransport(config, AsyncRecording(), manager=manager)
        async with httpx.AsyncClient(transport=atransport, timeout=None) as aclient:
            assert (await aclient.get(f"{server.url}/a")).status_code == 200
    assert seen == [dict.fromkeys(("connect", "read", "write", "pool"), 5.0)]


@pytest.mark.parametrize(
    ("client_timeout", "kept"),
    [
        (httpx.Timeout(2.0), {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}),  # all within
        (httpx.Timeout(connect=1.0, read=None, write=30.0, pool=0.5), {"connect": 1.0, "pool": 0.5}),
        (httpx.Timeout(None), {}),  # no limit anywhere: every phase capped
        (httpx.Timeout(30.0), {}),  # every phase longer: every phase capped
    ],
)
def test_each_timeout_phase_is_capped_on_its_own(
    server: ScriptedHTTPServer, client_timeout: httpx.Timeout, kept: dict[str, float]
) -> None:
    """A phase within what is left is kept as the client set it; a longer or unlimited one is capped."""
    seen: list[dict[str, Any]] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions["timeout"]))
            return super().handle_request(request)

    server.script("/a", (200, {}))
    transport = ResilientTransport(policy(timeout=5.0), Recording(), manager=ResilienceManager())
    with httpx.Client(transport=transport, timeout=client_timeout) as client:
        assert client.get(f"{server.url}/a").status_code == 200
    (timeout,) = seen
    assert set(timeout) == {"connect", "read", "write", "pool"}
    for phase, value in timeout.items():
        if phase in kept:
            assert value == kept[phase], phase
        else:
            assert 4.0 < value <= 5.0, phase  # what was left of the 5 s deadline


def test_a_timeout_of_another_shape_keeps_its_own_keys(server: ScriptedHTTPServer) -> None:
    """A request's own timeout dict missing phases, or with a key of its own, is capped phase by phase."""
    seen: list[dict[str, Any]] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions["timeout"]))
            return super().handle_request(request)

    server.script("/a", (200, {}))
    transport = ResilientTransport(policy(timeout=5.0), Recording(), manager=ResilienceManager())
    with httpx.Client(transport=transport) as client:
        response = client.get(f"{server.url}/a", extensions={"timeout": {"read": 1.0, "note": "kept"}})
        assert response.status_code == 200
    (timeout,) = seen
    assert timeout.pop("read") == 1.0
    assert timeout.pop("note") == "kept"
    assert set(timeout) == {"connect", "write", "pool"}
    assert all(4.0 < value <= 5.0 for value in timeout.values())


def test_a_cap_is_never_carried_into_another_execution(server: ScriptedHTTPServer) -> None:
    """A redirect's next hop, and a request sent again, go with their own timeout, not an earlier cap.

    httpx copies a request's extensions into its redirect's next hop: the cap of the first hop's
    deadline must not bound the next hop, a new execution (here under a policy with no deadline).
    """
    seen: list[dict[str, Any]] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions["timeout"]))
            return super().handle_request(request)

    other = ScriptedHTTPServer()
    try:
        server.script("/r", (302, {"Location": f"{other.url}/b"}))
        capped = ResilientTransport(policy(timeout=1.0), Recording(), manager=ResilienceManager())
        uncapped = ResilientTransport(policy(name="other"), Recording(), manager=ResilienceManager())
        mounts = {server.url: capped, other.url: uncapped}
        with httpx.Client(mounts=mounts, timeout=30.0, follow_redirects=True) as client:
            response = client.get(f"{server.url}/r")
            assert (response.status_code, other.count("/b")) == (200, 1)
            again = client.build_request("GET", f"{other.url}/c")
            capped.handle_request(again).close()
            uncapped.handle_request(again).close()
    finally:
        other.close()
    first, hop, sent_capped, sent_again = seen
    assert all(value <= 1.0 for value in (*first.values(), *sent_capped.values()))
    assert hop == sent_again == dict.fromkeys(("connect", "read", "write", "pool"), 30.0)


def test_bad_arguments_are_refused() -> None:
    """A policy or options of the wrong type is a TypeError naming the field."""
    with pytest.raises(TypeError, match=r"HttpPolicy.policy"):
        ResilientTransport("payments")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"HttpPolicy.options"):
        ResilientTransport(policy(), options={"per_host": False})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"HttpOptions.failure_statuses"):
        HttpOptions(failure_statuses={700})
    with pytest.raises(TypeError, match=r"HttpOptions.retry_methods"):
        HttpOptions(retry_methods="GET")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wrapper", "wrapped"),
    [
        (AsyncResilientTransport, httpx.HTTPTransport),  # a sync transport under the async client
        (ResilientTransport, httpx.AsyncHTTPTransport),  # an async transport under the sync client
        (ResilientTransport, object),
    ],
)
def test_a_transport_that_cannot_send_for_the_wrapper_is_refused_at_construction(
    wrapper: type[Any], wrapped: type[Any]
) -> None:
    """A transport of the other driver is a TypeError naming ``transport``, before the policy exists.

    Taken, each request failed inside the policy with an ``AttributeError`` that the retry
    retried and the breaker counted (it opened on the mistake), and closing the client raised it too.
    """
    manager = ResilienceManager()
    with pytest.raises(TypeError, match=rf"{wrapper.__name__}\.transport must be"):
        wrapper(policy(), wrapped(), manager=manager)
    assert "downstream" not in manager.get_resilience_statistics()["named_policies"]


def test_a_transport_of_both_kinds_is_taken_by_either() -> None:
    """The control: httpx's MockTransport (sync and async) is wrapped by both transports."""
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    ResilientTransport(policy(), mock, manager=ResilienceManager())
    AsyncResilientTransport(policy(), mock, manager=ResilienceManager())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retry_methods", {"GET "}),
        ("retry_methods", {""}),
        ("idempotency_header", ""),
        ("idempotency_header", "Idempotency Key"),
        ("idempotency_header", "Idempotency-Key:"),
    ],
)
def test_a_method_or_header_no_request_can_carry_is_refused(field: str, value: object) -> None:
    """A method or header name that is not an HTTP token would match nothing: a ValueError naming it."""
    with pytest.raises(ValueError, match=rf"HttpOptions.{field} must be"):
        HttpOptions(**{field: value})


def test_a_response_the_deadline_dropped_is_closed(server: ScriptedHTTPServer) -> None:
    """A response that came after the deadline is a timeout: it is closed, its connection back in the pool."""
    got: list[httpx.Response] = []

    class Late(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            got.append(response)
            time.sleep(0.5)  # the response is in hand, but after the policy's 0.2 s
            return response

    inner = Late(limits=httpx.Limits(max_connections=1))
    transport = ResilientTransport(policy(retry_policy=None, timeout=0.2), inner, manager=ResilienceManager())
    with httpx.Client(transport=transport, timeout=httpx.Timeout(10.0, pool=2.0)) as client:
        with pytest.raises(OperationTimeoutError):
            client.get(f"{server.url}/a")
        assert [response.is_closed for response in got] == [True]
        got.clear()
        fast = ResilientTransport(policy(retry_policy=None), inner, manager=ResilienceManager())
        with httpx.Client(transport=fast, timeout=httpx.Timeout(10.0, pool=2.0)) as again:
            assert again.get(f"{server.url}/b").status_code == 200  # the one connection was free


@DRIVERS
async def test_a_failed_response_returned_can_be_streamed_raw(
    driver: str, server: ScriptedHTTPServer
) -> None:
    """When attempts run out, ``client.stream`` gets the failed response unread, as the transport gave it."""
    server.script("/a", (503, {}), (503, {}), (503, {}))
    url = f"{server.url}/a"
    if driver == "sync":
        with httpx.Client(transport=ResilientTransport(policy(), manager=ResilienceManager())) as client:
            with client.stream("GET", url) as response:
                assert (response.status_code, b"".join(response.iter_raw())) == (503, b"503")
    else:
        transport = AsyncResilientTransport(policy(), manager=ResilienceManager())
        async with httpx.AsyncClient(transport=transport) as aclient:
            async with aclient.stream("GET", url) as aresponse:
                raw = b"".join([chunk async for chunk in aresponse.aiter_raw()])
                assert (aresponse.status_code, raw) == (503, b"503")
    assert server.count("/a") == 3


@DRIVERS
async def test_a_raised_failed_response_has_its_body_at_hand(driver: str, server: ScriptedHTTPServer) -> None:
    """With raise_on_failure, the error's response is read: its text needs no I/O."""
    server.script("/a", (500, {}), (500, {}), (500, {}))
    clients = Clients(driver, policy(), options=HttpOptions(raise_on_failure=True))
    with pytest.raises(FailedResponseError) as caught:
        await clients.request("GET", f"{server.url}/a")
    assert caught.value.response.text == "500"


@DRIVERS
async def test_a_failed_response_its_transport_read_already_is_returned_as_it_is(driver: str) -> None:
    """A transport that answers with read responses (httpx's MockTransport): the last one comes back."""
    statuses = iter([503, 503, 502])

    def answer(_request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        return httpx.Response(status, content=str(status).encode())

    config = policy()
    if driver == "sync":
        transport = ResilientTransport(config, httpx.MockTransport(answer), manager=ResilienceManager())
        with httpx.Client(transport=transport) as client:
            response = client.get("http://downstream.test/a")
    else:
        atransport = AsyncResilientTransport(config, httpx.MockTransport(answer), manager=ResilienceManager())
        async with httpx.AsyncClient(transport=atransport) as aclient:
            response = await aclient.get("http://downstream.test/a")
    assert (response.status_code, response.text) == (502, "502")


@DRIVERS
async def test_a_result_retried_by_the_policy_is_sent_again_only_when_http_allows(driver: str) -> None:
    """``retry_on_result`` follows the HTTP rule too: a GET is sent again, a POST never.

    The policy retries a 202 (a job not finished yet, say). Sending the POST again would run its
    operation twice, as a retried error would.
    """
    sends: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sends.append(request.method)
        return httpx.Response(202)

    retried = RetryPolicy(
        max_attempts=3, initial_delay=0.01, jitter="none", retry_on_result=lambda r: r.status_code == 202
    )
    clients = Clients(driver, policy(retry_policy=retried), transport=httpx.MockTransport(answer))
    assert (
        await clients.request("POST", "http://downstream.internal/jobs", content=b"job")
    ).status_code == 202
    assert sends == ["POST"]
    assert (await clients.request("GET", "http://downstream.internal/jobs/1")).status_code == 202
    assert sends == ["POST", "GET", "GET", "GET"]


def test_a_default_retry_after_statuses_follows_failure_statuses_through_replace() -> None:
    """Left to its default, the field is derived again by dataclasses.replace; an explicit one still checked."""
    options = dataclasses.replace(HttpOptions(), failure_statuses={500})
    assert options.retry_after_statuses == frozenset()
    assert options == HttpOptions(failure_statuses={500})
    assert dataclasses.replace(options, failure_statuses={429, 500}).retry_after_statuses == {429}
    assert HttpOptions() == HttpOptions(retry_after_statuses={429, 503})
    assert hash(HttpOptions()) == hash(HttpOptions(retry_after_statuses={429, 503}))
    assert "retry_after_statuses=frozenset({429, 503})" in repr(HttpOptions())
    explicit = HttpOptions(retry_after_statuses={503})
    assert dataclasses.replace(explicit, failure_statuses={503, 500}).retry_after_statuses == {503}
    with pytest.raises(ValueError, match="retry_after_statuses"):
        dataclasses.replace(explicit, failure_statuses={500})
    assert pickle.loads(pickle.dumps(HttpOptions())) == HttpOptions()
    unpickled = pickle.loads(pickle.dumps(HttpOptions()))
    assert dataclasses.replace(unpickled, failure_statuses={500}).retry_after_statuses == frozenset()
