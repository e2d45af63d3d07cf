"""requests' ResilientAdapter against a real local HTTP server."""

from __future__ import annotations

import pickle
import socket
import time
from typing import Any

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter
from support import FAST_RETRY as FAST
from support import ScriptedHTTPServer

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.integrations.http import FailedResponseError, HttpOptions
from otel_resilience.integrations.requests import ResilientAdapter, mark_retryable


def session(options: HttpOptions | None = None, **changes: Any) -> requests.Session:
    fields: dict[str, Any] = {"name": "downstream", "retry_policy": FAST}
    fields.update(changes)
    s = requests.Session()
    s.mount(
        "http://", ResilientAdapter(ResilienceConfig(**fields), options=options, manager=ResilienceManager())
    )
    return s


def test_a_5xx_get_is_retried(server: ScriptedHTTPServer) -> None:
    """A GET that got a 503 then a 502 is sent again, and the caller sees the 200."""
    server.script("/a", (503, {}), (502, {}))
    with session() as s:
        response = s.get(f"{server.url}/a")
    assert (response.status_code, response.text) == (200, "200")
    assert server.count("/a") == 3


def test_the_last_failed_response_is_returned(server: ScriptedHTTPServer) -> None:
    """After max_attempts 500s the caller gets the last 500, its body readable."""
    server.script("/a", *[(500, {})] * 3)
    with session() as s:
        response = s.get(f"{server.url}/a")
    assert (response.status_code, response.text) == (500, "500")
    assert server.count("/a") == 3


def test_raise_on_failure(server: ScriptedHTTPServer) -> None:
    """With raise_on_failure the last failed response comes as FailedResponseError."""
    server.script("/a", *[(503, {})] * 3)
    with session(HttpOptions(raise_on_failure=True)) as s, pytest.raises(FailedResponseError) as caught:
        s.get(f"{server.url}/a")
    assert caught.value.response.status_code == 503


def test_a_session_with_the_adapter_pickles_and_its_copy_sends_under_the_policy(
    server: ScriptedHTTPServer,
) -> None:
    """requests pickles a session with its adapters: the copy's adapter runs the same policy.

    Its policy a config (the handle made in the process-wide manager at its first request, as the
    original's): the copy retries a GET's 503, and sends a POST once, as the original does.
    """
    config = ResilienceConfig(name="pickled-downstream", retry_policy=FAST)
    with requests.Session() as original:
        original.mount("http://", ResilientAdapter(config, pool_block=True))
        copy = pickle.loads(pickle.dumps(original))
    server.script("/a", (503, {}))
    server.script("/b", (503, {}))
    with copy:
        assert copy.get(f"{server.url}/a").status_code == 200
        assert copy.post(f"{server.url}/b", data=b"order").status_code == 503
    assert (server.count("/a"), server.count("/b")) == (2, 1)


def test_a_post_is_not_retried_unless_marked(server: ScriptedHTTPServer) -> None:
    """A POST gets one send; with an Idempotency-Key, or marked, it is retried with its body."""
    server.script("/a", (503, {}))
    with session() as s:
        assert s.post(f"{server.url}/a", data=b"order").status_code == 503
        assert server.count("/a") == 1
        server.script("/b", (503, {}))
        assert s.post(f"{server.url}/b", data=b"order", headers={"Idempotency-Key": "k"}).status_code == 200
        server.script("/c", (503, {}))
        prepared = mark_retryable(s.prepare_request(requests.Request("POST", f"{server.url}/c", data=b"x")))
        assert s.send(prepared).status_code == 200
    assert [body for _, path, _, body in server.requests if path == "/b"] == [b"order", b"order"]
    assert server.count("/c") == 2


@pytest.mark.parametrize("body", [bytearray(b"order"), memoryview(b"order")], ids=type)
def test_a_marked_post_whose_body_is_a_buffer_in_memory_is_retried_with_its_body(
    server: ScriptedHTTPServer, body: bytearray | memoryview
) -> None:
    """A bytearray or memoryview body is held in memory as bytes are (requests sends it whole): retried."""
    server.script("/a", (503, {}))
    with session() as s:
        assert s.post(f"{server.url}/a", data=body, headers={"Idempotency-Key": "k"}).status_code == 200
    assert [sent for _, path, _, sent in server.requests if path == "/a"] == [b"order", b"order"]


def test_the_retryable_mark_is_not_carried_to_a_redirects_next_hop(server: ScriptedHTTPServer) -> None:
    """A marked POST redirected by a 307 (its method and body kept): the next hop is a new request,
    unmarked, so its 503 is sent once and returned."""
    server.script("/from", (307, {"Location": "/to"}))
    server.script("/to", (503, {}))
    with session() as s:
        prepared = mark_retryable(
            s.prepare_request(requests.Request("POST", f"{server.url}/from", data=b"x"))
        )
        response = s.send(prepared, allow_redirects=True)
    assert response.status_code == 503
    assert (server.count("/from"), server.count("/to")) == (1, 1)
    assert [body for _, path, _, body in server.requests if path == "/to"] == [b"x"]


def test_mark_retryable_refuses_what_would_be_lost_or_misread() -> None:
    """An unprepared Request (its mark would not reach the send) or a non-bool flag is a TypeError."""
    request = requests.Request("POST", "http://orders.internal/orders", data=b"x")
    with pytest.raises(TypeError, match=r"mark_retryable\.request must be a requests\.PreparedRequest"):
        mark_retryable(request)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"mark_retryable\.retryable must be a bool"):
        mark_retryable(request.prepare(), "false")  # type: ignore[arg-type]
    prepared = request.prepare()
    assert mark_retryable(prepared, False) is prepared


def test_a_404_neither_retries_nor_opens_the_breaker(server: ScriptedHTTPServer) -> None:
    """A 404 is the caller's mistake: no retry, and a one-failure breaker stays closed."""
    server.script("/a", *[(404, {})] * 3)
    with session(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0)) as s:
        for _ in range(3):
            assert s.get(f"{server.url}/a").status_code == 404
        assert s.get(f"{server.url}/b").status_code == 200
    assert server.count("/a") == 3


def test_retry_after_is_honoured(server: ScriptedHTTPServer) -> None:
    """A 429 with Retry-After: 0.3 is sent again no sooner than 0.3 s later."""
    server.script("/a", (429, {"Retry-After": "0.3"}))
    start = time.monotonic()
    with session() as s:
        assert s.get(f"{server.url}/a").status_code == 200
    assert time.monotonic() - start >= 0.3


def test_connection_errors_are_retried_then_open_the_breaker() -> None:
    """A refused connection is retried, raised as requests' error, and then the breaker rejects."""
    closed = ScriptedHTTPServer()
    url = closed.url
    closed.close()
    with session(circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=60.0)) as s:
        with pytest.raises(requests.ConnectionError):
            s.get(f"{url}/a")
        with pytest.raises(CircuitOpenError) as caught:
            s.get(f"{url}/a")
    assert caught.value.name == "downstream"


def test_one_breaker_per_host(server: ScriptedHTTPServer) -> None:
    """One host's failures open its breaker only."""
    other = ScriptedHTTPServer()
    try:
        breaker = CircuitBreakerConfig(failure_threshold=1, timeout=60.0)
        with session(retry_policy=None, circuit_breaker=breaker) as s:
            server.script("/a", (500, {}))
            assert s.get(f"{server.url}/a").status_code == 500
            with pytest.raises(CircuitOpenError):
                s.get(f"{server.url}/a")
            assert s.get(f"{other.url}/a").status_code == 200
    finally:
        other.close()


def test_the_deadline_is_the_request_timeout(server: ScriptedHTTPServer) -> None:
    """A request with no timeout of its own ends at the policy's deadline, not the server's 3 s.

    The caller gets the policy's timeout, not the client's ``ReadTimeout`` (a server maps it to 504).
    """
    server.script("/slow", (200, {}, 3.0))
    start = time.monotonic()
    with session(retry_policy=None, timeout=0.3) as s, pytest.raises(OperationTimeoutError) as caught:
        s.get(f"{server.url}/slow")
    assert time.monotonic() - start < 2.5
    assert (type(caught.value), caught.value.timeout) == (OperationTimeoutError, 0.3)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_schemes_own_port_is_the_hosts_one_breaker(scheme: str, server: ScriptedHTTPServer) -> None:
    """scheme://host/ and scheme://host:80/ (443 for https) share one breaker: one key, no port.

    The local server is the proxy the requests go through, so no request needs port 80 or 443:
    an http request is answered (its path is the full URL), an https tunnel is refused (501).
    """
    default = {"http": 80, "https": 443}[scheme]
    manager = ResilienceManager()
    breaker = CircuitBreakerConfig(failure_threshold=1, timeout=60.0)
    config = ResilienceConfig(name="downstream", circuit_breaker=breaker)
    server.script("http://example.test/a", (500, {}))
    with requests.Session() as s:
        s.trust_env = False
        s.proxies = {scheme: server.url}
        s.mount(f"{scheme}://", ResilientAdapter(config, manager=manager))
        if scheme == "http":
            assert s.get("http://example.test/a").status_code == 500
        else:
            with pytest.raises(requests.exceptions.ProxyError, match="501"):
                s.get("https://example.test/a")
        with pytest.raises(CircuitOpenError):
            s.get(f"{scheme}://example.test:{default}/a")
    handle = manager.policy("downstream")
    assert handle.keys == 1
    assert handle.for_key("example.test").circuit_breaker.state.value == "open"  # type: ignore[union-attr]
    assert len(server.requests) == (1 if scheme == "http" else 0)  # the refused CONNECT is not recorded


class _Recorder(HTTPAdapter):
    """Sits below ResilientAdapter in the MRO: records the timeout each send passes to HTTPAdapter."""

    def __init__(self, **kwargs: Any) -> None:
        self.timeouts: list[Any] = []
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.timeouts.append(kwargs.get("timeout"))
        return super().send(request, *args, **kwargs)


class RecordingAdapter(ResilientAdapter, _Recorder):
    """A ResilientAdapter that records the timeout of every send."""


def recording_session(**changes: Any) -> tuple[requests.Session, RecordingAdapter]:
    fields: dict[str, Any] = {"name": "downstream", "retry_policy": None}
    fields.update(changes)
    adapter = RecordingAdapter(ResilienceConfig(**fields), manager=ResilienceManager())
    s = requests.Session()
    s.mount("http://", adapter)
    return s, adapter


def test_a_urllib3_timeout_is_capped_by_the_deadline(server: ScriptedHTTPServer) -> None:
    """A urllib3 Timeout of 30 s ends at the policy's 0.3 s deadline, not the server's 3 s."""
    server.script("/slow", (200, {}, 3.0))
    start = time.monotonic()
    s, adapter = recording_session(timeout=0.3)
    with s, pytest.raises((requests.Timeout, TimeoutError)):
        s.get(f"{server.url}/slow", timeout=urllib3.Timeout(connect=30.0, read=30.0))
    assert time.monotonic() - start < 1.5
    [sent] = adapter.timeouts
    assert isinstance(sent, urllib3.Timeout)
    assert 0 < sent.connect_timeout <= 0.3  # type: ignore[operator]
    assert 0 < sent.read_timeout <= 0.3  # type: ignore[operator]


@pytest.mark.parametrize(
    "given",
    [
        urllib3.Timeout(connect=30.0, read=30.0),
        urllib3.Timeout(),  # urllib3's default: the socket's (no limit)
        urllib3.Timeout(connect=None, read=None),
        urllib3.Timeout(connect=1.0, read=None),
        urllib3.Timeout(total=30.0, connect=1.0, read=2.0),
    ],
    ids=["30s", "default", "none", "read-unset", "total"],
)
def test_each_limit_of_a_urllib3_timeout_is_capped(
    server: ScriptedHTTPServer, given: urllib3.Timeout
) -> None:
    """Connect, read and total are each at most the deadline; the limits already within are kept."""
    s, adapter = recording_session(timeout=5.0)
    with s:
        assert s.get(f"{server.url}/a", timeout=given).status_code == 200
    [sent] = adapter.timeouts
    assert isinstance(sent, urllib3.Timeout)
    assert sent is not given
    for name in ("_connect", "_read"):
        limit = getattr(sent, name)
        assert isinstance(limit, float)
        assert 0 < limit <= 5.0
        if isinstance(getattr(given, name), float) and getattr(given, name) <= 5.0:
            assert limit == getattr(given, name)
    assert sent.total == (None if given.total is None else pytest.approx(5.0, abs=0.5))


def test_a_urllib3_timeout_within_the_deadline_is_kept(server: ScriptedHTTPServer) -> None:
    """A urllib3 Timeout already tighter than the deadline is passed on as the caller built it."""
    given = urllib3.Timeout(connect=1.0, read=2.0)
    s, adapter = recording_session(timeout=5.0)
    with s:
        assert s.get(f"{server.url}/a", timeout=given).status_code == 200
    [sent] = adapter.timeouts
    assert sent is given


def test_urllib3s_default_limit_is_the_sockets_default(
    server: ScriptedHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A limit left to urllib3's default is the socket module's default timeout, when it is tighter."""
    monkeypatch.setattr(socket, "getdefaulttimeout", lambda: 2.0)
    s, adapter = recording_session(timeout=5.0)
    with s:
        assert s.get(f"{server.url}/a", timeout=urllib3.Timeout(connect=1.0)).status_code == 200
    [sent] = adapter.timeouts
    assert (sent.connect_timeout, sent.read_timeout) == (1.0, 2.0)


def test_a_float_timeout_is_capped_as_before(server: ScriptedHTTPServer) -> None:
    """Seconds and (connect, read) are still capped part by part; None becomes the deadline."""
    s, adapter = recording_session(timeout=5.0)
    with s:
        for timeout in (1.0, 30.0, (1.0, 30.0), (None, 2.0), None):
            assert s.get(f"{server.url}/a", timeout=timeout).status_code == 200
    one, capped, pair, unset, none = adapter.timeouts
    assert one == 1.0
    assert 0 < capped <= 5.0
    assert pair[0] == 1.0
    assert 0 < pair[1] <= 5.0
    assert 0 < unset[0] <= 5.0
    assert unset[1] == 2.0
    assert 0 < none <= 5.0


class _PositionalSender(ResilientAdapter):
    """An adapter of the usual form of a subclass: it passes ``send``'s arguments on by position."""

    def send(  # noqa: PLR0917 - positional, as HTTPAdapter.send's own
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        request.headers["X-Sent-By"] = "subclass"
        return super().send(request, stream, timeout, verify, cert, proxies)


class _ArgumentsRecorder(HTTPAdapter):
    """Sits below ResilientAdapter in the MRO: records the arguments each send passes to HTTPAdapter."""

    def __init__(self, **kwargs: Any) -> None:
        self.arguments: list[tuple[Any, ...]] = []
        super().__init__(**kwargs)

    def send(  # noqa: PLR0917 - positional, as HTTPAdapter.send's own
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        self.arguments.append((stream, timeout, verify, cert, proxies))
        return super().send(request, stream, timeout, verify, cert, proxies)


class _RecordingPositional(_PositionalSender, _ArgumentsRecorder):
    """A positional subclass over the recorder: what reaches ``HTTPAdapter.send``."""


def test_send_takes_httpadapters_arguments_by_position_too(server: ScriptedHTTPServer) -> None:
    """``HTTPAdapter.send(request, stream, timeout, verify, cert, proxies)``: an adapter built on this one
    (CacheControl's and most subclasses pass them on by position) sends through the policy, each
    argument reaching ``HTTPAdapter.send`` as given."""
    server.script("/a", (503, {}))
    adapter = _PositionalSender(
        ResilienceConfig(name="downstream", retry_policy=FAST), manager=ResilienceManager()
    )
    with requests.Session() as s:
        s.mount("http://", adapter)
        response = s.get(f"{server.url}/a", timeout=5.0)
    assert (response.status_code, server.count("/a")) == (200, 2)  # retried by the policy
    assert [headers.get("X-Sent-By") for _, path, headers, _ in server.requests] == ["subclass"] * 2

    recording = _RecordingPositional(ResilienceConfig(name="downstream"), manager=ResilienceManager())
    proxies: dict[str, str] = {}
    prepared = requests.Request("GET", f"{server.url}/b").prepare()
    assert recording.send(prepared, True, 5.0, False, None, proxies).status_code == 200
    [(stream, timeout, verify, cert, sent_proxies)] = recording.arguments
    assert (stream, timeout, verify, cert) == (True, 5.0, False, None)
    assert sent_proxies is proxies
