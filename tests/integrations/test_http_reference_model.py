"""The HTTP client integrations against a reference model of README's rules.

A small model, written from README's "HTTP clients and servers" section, predicts for a policy
(random retry and breaker settings) and a scripted sequence of server answers (statuses, a
``Retry-After`` in seconds or as an HTTP date, a connection reset): how many times each request
is sent, the waits between its sends, what the caller gets (a status or an error type) and each
host's breaker state. The real clients (httpx sync and async, aiohttp, requests) then run the
same scenario against real local servers that play the script, and must agree with the model.

Every answer closes its connection (``Connection: close``), so no client sends a request again
on a pooled connection of its own accord: every send the server sees is the policy's.
"""

from __future__ import annotations

import email.utils
import http.server
import itertools
import math
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import httpx
import pytest
import requests

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.http import RESEND_COUNT, FailedResponseError, HttpOptions
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter

CLIENTS = ("httpx", "httpx-async", "requests", "aiohttp")
SYNC = frozenset({"httpx", "requests"})
SEEDS = range(24 if os.environ.get("RUN_SLOW") else 8)
"""Seeds per client: 8 in the suite, 24 with ``RUN_SLOW=1`` (each scenario's sends cross real sockets)."""
FAILURES = frozenset({408, 429, 500, 502, 503, 504})
"""README: 5xx, 408 and 429 are failures (the statuses the scripts use)."""
RETRY_AFTER_STATUSES = frozenset({429, 503})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RESET = "reset"
TRANSPORT_ERROR = "transport"
OPEN = "open"
TIMEOUT = "timeout"
SLOW = 1.0
"""How long a slow answer is held: past the short deadline and the attempt timeout."""
EARLY = 0.005
"""How much sooner than the model's wait a send may come (clock granularity)."""
LATE = 0.6
"""How much later than the model's wait a send (or the answer) may come: the machine is shared."""


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a status (with ``retry_after`` as the header's value), or a reset."""

    status: int | str
    retry_after: str | None = None
    retry_after_seconds: float | None = None
    """What the model reads the header as: seconds to wait (a date in the past: 0)."""
    delay: float = 0.0
    """How long the server holds the answer: past any deadline the scenario sets."""


@dataclass(frozen=True)
class Request:
    host: int
    method: str
    key: str | None
    """The ``Idempotency-Key`` header's value (``None``: no header; a blank one marks nothing)."""
    answers: tuple[Answer, ...]


@dataclass(frozen=True)
class Scenario:
    max_attempts: int
    initial_delay: float
    max_delay: float
    failure_threshold: int
    timeout: float
    attempt_timeout: float | None
    raise_on_failure: bool
    requests: tuple[Request, ...]

    def config(self) -> ResilienceConfig:
        return ResilienceConfig(
            name="model",
            retry_policy=RetryPolicy(
                max_attempts=self.max_attempts,
                initial_delay=self.initial_delay,
                multiplier=2.0,
                max_delay=self.max_delay,
                jitter="none",
                attempt_timeout=self.attempt_timeout,
            ),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=self.failure_threshold, timeout=60.0),
            timeout=self.timeout,
        )


@dataclass
class Outcome:
    """What the model predicts, or what a client did, for one request."""

    sends: int
    waits: list[float] = field(default_factory=list)
    got: int | str = 0


def _date(offset: float) -> str:
    return email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=offset), usegmt=True)


def _retry_after(rng: random.Random) -> Answer:
    """A 503 asking for a wait in seconds: 0, a decimal (read too), over max_delay, or no form."""
    value, seconds = rng.choice([("0", 0.0), ("0.04", 0.04), ("1", 1.0), ("x", None)])
    return Answer(503, value, seconds)


ANSWERS: tuple[Callable[[random.Random], Answer], ...] = (
    lambda _: Answer(200),
    lambda _: Answer(200),
    lambda _: Answer(200, delay=SLOW),
    lambda _: Answer(404),
    lambda _: Answer(408),
    lambda _: Answer(500),
    lambda _: Answer(500, "1", 1.0),  # not a 429 or 503: the header is ignored
    lambda _: Answer(503),
    _retry_after,
    lambda _: Answer(429, "0", 0.0),
    lambda _: Answer(RESET),
    lambda _: Answer(RESET),
    lambda rng: Answer(rng.choice([429, 503]), _date(3600), 3600.0),  # a date far past max_delay
    lambda _: Answer(503, _date(-3600), 0.0),  # a date past: no wait
)
"""What a server may answer, each drawn alike."""


def _answer(rng: random.Random) -> Answer:
    return rng.choice(ANSWERS)(rng)


def scenario(seed: int) -> Scenario:
    rng = random.Random(seed)
    max_attempts = rng.randint(1, 4)
    requests_ = []
    for _ in range(rng.randint(3, 6)):
        method = rng.choice(["GET", "GET", "HEAD", "PUT", "POST", "POST", "DELETE", "OPTIONS", "PATCH"])
        requests_.append(
            Request(
                host=rng.randint(0, 1),
                method=method,
                key=rng.choice([None, None, "k", ""]),
                answers=tuple(_answer(rng) for _ in range(max_attempts)),
            )
        )
    # A short deadline with a max_delay over a Retry-After of 1 s (past the deadline, not over
    # max_delay); or a long one, with maybe an attempt timeout.
    short = rng.random() < 0.4
    return Scenario(
        max_attempts=max_attempts,
        initial_delay=rng.choice([0.0, 0.01, 0.02]),
        max_delay=1.2 if short else rng.choice([0.05, 0.1]),
        failure_threshold=rng.randint(1, 5),
        timeout=0.6 if short else 10.0,
        attempt_timeout=None if short or rng.random() < 0.5 else 0.3,
        raise_on_failure=rng.random() < 0.3,
        requests=tuple(requests_),
    )


class Model:
    """README's rules, one request after the other; one consecutive-failure breaker per host."""

    def __init__(self, sc: Scenario, kind: str) -> None:
        self.sc = sc
        self.kind = kind
        self.failures = [0, 0]
        self.open = [False, False]

    def last_failed(self, out: Outcome) -> None:
        """The failed response is returned, or raised as ``FailedResponseError`` when asked."""
        if self.sc.raise_on_failure and isinstance(out.got, int):
            out.got = f"raised {out.got}"

    def fail(self, host: int) -> None:
        self.failures[host] += 1
        if self.failures[host] >= self.sc.failure_threshold:
            self.open[host] = True

    def backoff(self, attempt: int) -> float:
        return min(self.sc.initial_delay * 2.0 ** (attempt - 1), self.sc.max_delay)

    def run(self, req: Request) -> Outcome:
        out = Outcome(sends=0)
        answers = iter(req.answers)
        self.execute(req, answers, out)
        if self.kind == "aiohttp" and out.got == TRANSPORT_ERROR and req.method in IDEMPOTENT:
            # aiohttp sends an idempotent request whose connection broke once more itself, as a
            # new request through its middlewares: a new execution (README, "Clients").
            out.waits.append(0.0)
            self.execute(req, answers, out)
        return out

    def execute(self, req: Request, answers: Iterator[Answer], out: Outcome) -> None:
        """One execution of the policy; a path whose script ran out answers 200."""
        retryable = req.method in IDEMPOTENT or bool(req.key and req.key.strip())
        for attempt in range(1, self.sc.max_attempts + 1):
            if self.open[req.host]:
                out.got = OPEN  # a rejection: never retried, nothing sent
                return
            answer = next(answers, Answer(200))
            out.sends += 1
            late = answer.delay > self.sc.timeout or answer.delay > (self.sc.attempt_timeout or math.inf)
            if late and self.sc.attempt_timeout is None:
                # The whole deadline. An async attempt is cancelled: the breaker sees a
                # cancellation, no failure. A sync one cannot be: its client gives up at the
                # deadline passed as its timeout, and the breaker between the attempt and the
                # deadline's scope sees that as a failure (engine.deadline.DeadlineReachedError).
                if self.kind in SYNC:
                    self.fail(req.host)
                out.got = TIMEOUT
                return
            failed = late or answer.status == RESET or answer.status in FAILURES
            if not failed:
                self.failures[req.host] = 0
                out.got = answer.status
                return
            self.fail(req.host)
            out.got = TIMEOUT if late else TRANSPORT_ERROR if answer.status == RESET else answer.status
            if not retryable or attempt == self.sc.max_attempts:
                self.last_failed(out)
                return
            delay = self.backoff(attempt)
            if answer.status in RETRY_AFTER_STATUSES and answer.retry_after_seconds is not None:
                # Past max_delay or what is left of the deadline (here, more than half of it:
                # the waits before are short): the response at once, never a shorter wait.
                if answer.retry_after_seconds > min(self.sc.max_delay, self.sc.timeout / 2):
                    self.last_failed(out)
                    return
                delay = answer.retry_after_seconds
            out.waits.append(delay)


class Server:
    """A real HTTP/1.1 server playing each path's script; it records every send's time."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Answer]] = {}
        self.sent: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with owner.lock:
                    owner.sent.setdefault(self.path, []).append(time.monotonic())
                    queue = owner.scripts.get(self.path)
                    answer = queue.pop(0) if queue else Answer(200)
                self.close_connection = True
                time.sleep(answer.delay)
                if answer.status == RESET:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    return
                assert isinstance(answer.status, int)
                self.send_response(answer.status)
                if answer.retry_after is not None:
                    self.send_header("Retry-After", answer.retry_after)
                self.send_header("Content-Length", "2")
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(b"ok")

            do_HEAD = do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _answer

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                """A reset the script asked for: no traceback."""

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5.0)


class Client:
    """One integration behind ``await send(method, url, headers)``: the status, or what it raised."""

    def __init__(self, kind: str, config: ResilienceConfig, options: HttpOptions) -> None:
        self.kind = kind
        self.manager = ResilienceManager()
        self.integration: Any
        self.client: Any = None
        self.resends: int | None = None
        """httpx's count of the last request's resends (its ``RESEND_COUNT`` extension)."""
        if kind == "httpx":
            self.integration = ResilientTransport(config, options=options, manager=self.manager)
            self.client = httpx.Client(transport=self.integration)
        elif kind == "httpx-async":
            self.integration = AsyncResilientTransport(config, options=options, manager=self.manager)
            self.client = httpx.AsyncClient(transport=self.integration)
        elif kind == "requests":
            self.integration = ResilientAdapter(config, options=options, manager=self.manager)
            self.client = requests.Session()
            self.client.mount("http://", self.integration)
        else:
            self.integration = ResilientMiddleware(config, options=options, manager=self.manager)

    async def send(self, method: str, url: str, headers: dict[str, str]) -> int | str:  # noqa: PLR0911 - one return per client
        body = b"order" if method in ("POST", "PUT", "PATCH") else None
        self.resends = None
        try:
            if self.kind == "httpx":
                response = self.client.request(method, url, content=body, headers=headers)
                self.resends = response.request.extensions.get(RESEND_COUNT, 0)
                return int(response.status_code)
            if self.kind == "httpx-async":
                response = await self.client.request(method, url, content=body, headers=headers)
                self.resends = response.request.extensions.get(RESEND_COUNT, 0)
                return int(response.status_code)
            if self.kind == "requests":
                return int(self.client.request(method, url, data=body, headers=headers).status_code)
            if self.client is None:
                self.client = aiohttp.ClientSession(middlewares=(self.integration,))
            async with self.client.request(method, url, data=body, headers=headers) as answer:
                await answer.read()
                return int(answer.status)
        except FailedResponseError as error:
            return f"raised {error.status_code}"
        except CircuitOpenError:
            return OPEN
        except OperationTimeoutError:
            return TIMEOUT
        except (httpx.TransportError, requests.ConnectionError, aiohttp.ClientConnectionError):
            return TRANSPORT_ERROR

    def breaker_state(self, port: int) -> str:
        host = self.integration._http.handle().for_key(f"127.0.0.1:{port}")
        return str(host.circuit_breaker.get_stats()["state"])

    async def close(self) -> None:
        if self.kind == "httpx-async":
            await self.client.aclose()
        elif self.kind == "aiohttp":
            if self.client is not None:
                await self.client.close()
        else:
            self.client.close()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    pair = (Server(), Server())
    try:
        yield pair
    finally:
        for s in pair:
            s.close()


async def _play(kind: str, sc: Scenario, servers: tuple[Server, Server]) -> None:
    model = Model(sc, kind)
    client = Client(kind, sc.config(), HttpOptions(raise_on_failure=sc.raise_on_failure))
    try:
        for index, req in enumerate(sc.requests):
            server = servers[req.host]
            path = f"/{kind}/{index}"
            with server.lock:
                server.scripts[path] = list(req.answers)
            expected = model.run(req)
            headers = {} if req.key is None else {"Idempotency-Key": req.key}
            started = time.monotonic()
            got = await client.send(req.method, f"http://127.0.0.1:{server.port}{path}", headers)
            took = time.monotonic() - started
            with server.lock:
                times = list(server.sent.get(path, []))
            where = f"{kind} {sc}, request {index} ({req})"
            assert (len(times), got) == (expected.sends, expected.got), where
            if isinstance(got, int) and client.resends is not None:
                assert client.resends == expected.sends - 1, (where, client.resends)
            if not any(a.delay for a in req.answers):  # nothing slow: no wait but the model's
                assert took <= sum(expected.waits) + LATE, (where, took)
            elif got == TIMEOUT and sc.attempt_timeout is None:  # the deadline is the client's timeout
                assert took < SLOW, (where, took)
            gaps = (b - a for a, b in itertools.pairwise(times))
            for gap, wait in zip(gaps, expected.waits, strict=False):  # no send after a rejection
                assert wait - EARLY <= gap <= wait + LATE, (where, gap, wait)
            for host in (0, 1):
                state = client.breaker_state(servers[host].port)
                assert state == ("open" if model.open[host] else "closed"), (where, host)
    finally:
        await client.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("seed", SEEDS)
async def test_clients_agree_with_the_reference_model(
    kind: str, seed: int, servers: tuple[Server, Server]
) -> None:
    """Sends, waits, what the caller gets and each host's breaker, request by request, as README says."""
    await _play(kind, scenario(seed), servers)
