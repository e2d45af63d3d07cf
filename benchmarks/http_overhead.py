"""What the HTTP integration adds to a real request: bare httpx against AsyncResilientTransport.

A local HTTP/1.1 server runs in a second process (its own interpreter, so it does not share the
client's GIL) and answers ``200 ok`` with keep-alive. Each round sends ``--requests`` GETs through
a bare ``httpx`` client and as many through a client built with ``(Async)ResilientTransport`` (a
retry, a breaker per host and a 5 s timeout; no SDK) around the *same* transport, so both use one
connection to one server thread. The clients take turns request by request, in an order shuffled
at each turn (a fixed order would hand the garbage collector's runs, which come at a fixed point
of a repeated sequence of allocations, to the same client each time), each request timed alone;
a round's ratio is the sum of its times through the policy
over the sum of its bare times, and a row is the median of the rounds' ratios.

Two more rows say how to read it:

* ``layer``: the same through an in-process ``httpx.MockTransport`` (no socket): the
  microseconds of CPU the integration itself adds to a request;
* ``spin``: a transport that busy-waits as long as the ``layer`` row measured before it sends,
  around the same loopback transport: what that much client CPU costs a loopback request on this
  machine. Where it reads more than the layer's own microseconds, the difference is the machine's
  (the server's idle core waking later), and any client work pays it.

With ``--controls``, two more rows: ``side layer`` and ``side sync``, where each request first
goes through httpx's own ``MockTransport`` (its response dropped) and then on as the bare one:
about as much work as the layer, in httpx's code rather than ours. A busy-wait touches no memory;
this control touches as many objects and functions as ordinary Python code does, and reads what
such code costs a loopback request when the request's own work has evicted it from the caches.

Run::

    python benchmarks/http_overhead.py                  # ~1 min on 2 cores
    python benchmarks/http_overhead.py --rounds 10 --requests 200 --json out.json
    python benchmarks/http_overhead.py --shapes         # the policy in parts (SHAPES), sync
    python benchmarks/http_overhead.py --controls       # + httpx's own work as a control
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import itertools
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # the tree beside this file, even where another is installed

import httpx  # noqa: E402

from otel_resilience import CircuitBreakerConfig, ResilienceConfig, ResilienceManager, RetryPolicy  # noqa: E402
from otel_resilience.integrations.http import HttpOptions  # noqa: E402
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport  # noqa: E402

C = TypeVar("C")

POLICY = ResilienceConfig(
    name="bench-http",
    retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.05),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=10.0),
    timeout=5.0,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body in two writes wait for a delayed ACK

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def serve() -> None:
    """Serve on an ephemeral port; print it, then serve until killed."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


class _Spin(httpx.BaseTransport):
    """Busy-waits ``seconds`` of client CPU before each request, then sends it through ``transport``."""

    def __init__(self, transport: httpx.BaseTransport, seconds: float) -> None:
        self._transport = transport
        self._seconds = seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _spin(self._seconds)
        return self._transport.handle_request(request)


class _Beside(httpx.BaseTransport):
    """Has ``side`` handle each request first (its response dropped), then sends it through ``transport``."""

    def __init__(self, transport: httpx.BaseTransport, side: httpx.BaseTransport) -> None:
        self._transport = transport
        self._side = side

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._side.handle_request(request)
        return self._transport.handle_request(request)


class _AsyncSpin(httpx.AsyncBaseTransport):
    """The async :class:`_Spin`."""

    def __init__(self, transport: httpx.AsyncBaseTransport, seconds: float) -> None:
        self._transport = transport
        self._seconds = seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _spin(self._seconds)
        return await self._transport.handle_async_request(request)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def summarise(
    wall: dict[str, list[float]], cpu: dict[str, list[float]], n: int
) -> dict[str, dict[str, float]]:
    """Per contender other than ``bare``: µs per request (medians of the rounds) and the overhead.

    ``cpu_us`` is the client thread's CPU time a request added (``time.thread_time``: the
    process's own work, user and kernel, without the waits for the server).
    """
    bare, bare_cpu = wall["bare"], statistics.median(cpu["bare"])
    bare_us = statistics.median(bare) / n * 1e6
    rows = {}
    for name, spent in wall.items():
        if name == "bare":
            continue
        ratios = [o / b for b, o in zip(bare, spent, strict=True)]
        ours_us = statistics.median(spent) / n * 1e6
        rows[name] = {
            "bare_us": round(bare_us, 1),
            "resilient_us": round(ours_us, 1),
            "overhead_us": round(ours_us - bare_us, 1),
            "overhead_pct": round((statistics.median(ratios) - 1) * 100, 2),
            "cpu_us": round((statistics.median(cpu[name]) - bare_cpu) / n * 1e6, 1),
        }
    return rows


class _Turns(Generic[C]):
    """The clients' turns, request by request, in an order shuffled at each turn.

    Iterating gives the client whose turn it is; the time until the next step of the iteration
    (its request) is counted to it, in wall clock and in the thread's CPU time, summed per round.
    One loop serves both drivers: ``for client in turns: client.get(url)`` or ``await
    client.get(url)``.
    """

    def __init__(self, clients: dict[str, C], rounds: int, n: int) -> None:
        self.clients, self.rounds, self.n = clients, rounds, n
        self.wall: dict[str, list[float]] = {name: [] for name in clients}
        self.cpu: dict[str, list[float]] = {name: [] for name in clients}

    def warm_up(self) -> Iterator[C]:
        """Each client ``n`` times, untimed: the connection open, the policy's key built."""
        for client in self.clients.values():
            yield from itertools.repeat(client, self.n)

    def __iter__(self) -> Iterator[C]:
        clock, cpu, order = time.perf_counter, time.thread_time, random.Random(19)
        turn = list(self.clients.items())
        for _ in range(self.rounds):
            spent = {name: [0.0, 0.0] for name in self.clients}
            for _ in range(self.n):
                order.shuffle(turn)
                for name, client in turn:
                    used, start = cpu(), clock()
                    yield client
                    sums = spent[name]
                    sums[0] += clock() - start
                    sums[1] += cpu() - used
            for name, (wall, used_cpu) in spent.items():
                self.wall[name].append(wall)
                self.cpu[name].append(used_cpu)

    def rows(self) -> dict[str, dict[str, float]]:
        return summarise(self.wall, self.cpu, self.n)


def run_sync(clients: dict[str, httpx.Client], url: str, rounds: int, n: int) -> dict[str, dict[str, float]]:
    """Time the clients request by request, taking turns (:class:`_Turns`); ``clients`` holds ``bare``."""
    turns = _Turns(clients, rounds, n)
    for client in turns.warm_up():
        client.get(url)
    for client in turns:
        client.get(url)
    return turns.rows()


async def run_async(
    clients: dict[str, httpx.AsyncClient], url: str, rounds: int, n: int
) -> dict[str, dict[str, float]]:
    """:func:`run_sync` for async clients."""
    turns = _Turns(clients, rounds, n)
    for client in turns.warm_up():
        await client.get(url)
    for client in turns:
        await client.get(url)
    return turns.rows()


SHAPES = {
    "no strategy": ResilienceConfig(name="bench-http-none"),
    "retry only": ResilienceConfig(name="bench-http-retry", retry_policy=POLICY.retry_policy),
    "timeout only": ResilienceConfig(name="bench-http-timeout", timeout=POLICY.timeout),
    "the policy": POLICY,
}
"""``--shapes``: the policy in parts (the parts without a breaker are not keyed per host)."""


def measure_shapes(url: str, rounds: int, n: int) -> dict[str, dict[str, float]]:
    """One sync client per policy shape, all around one loopback transport, in shuffled turns."""
    shared = httpx.HTTPTransport()
    clients = {"bare": httpx.Client(transport=shared)}
    for name, config in SHAPES.items():
        options = None if config is POLICY else HttpOptions(per_host=False)
        transport = ResilientTransport(config, shared, options=options, manager=ResilienceManager())
        clients[name] = httpx.Client(transport=transport)
    try:
        return run_sync(clients, url, rounds, n)
    finally:
        shared.close()


def _answer(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def measure(url: str, rounds: int, n: int, *, controls: bool = False) -> dict[str, dict[str, float]]:
    """The rows: ``layer`` (in process), then ``sync``, ``async``, ``spin sync`` and ``spin async``.

    With ``controls``, also ``side layer`` and ``side sync`` (see the module's docstring).
    """
    mock = httpx.MockTransport(_answer)
    in_process = {
        "bare": httpx.Client(transport=mock),
        "ours": httpx.Client(transport=ResilientTransport(POLICY, mock, manager=ResilienceManager())),
    }
    if controls:
        in_process["side"] = httpx.Client(transport=_Beside(mock, httpx.MockTransport(_answer)))
    try:
        layers = run_sync(in_process, "http://bench.test/item", rounds, n)
    finally:
        for client in in_process.values():
            client.close()
    spin = layers["ours"]["overhead_us"] / 1e6
    shared = httpx.HTTPTransport()
    sync_clients = {
        "bare": httpx.Client(transport=shared),
        "ours": httpx.Client(transport=ResilientTransport(POLICY, shared, manager=ResilienceManager())),
        "spin": httpx.Client(transport=_Spin(shared, spin)),
    }
    if controls:
        sync_clients["side"] = httpx.Client(transport=_Beside(shared, httpx.MockTransport(_answer)))
    try:
        sync = run_sync(sync_clients, url, rounds, n)
    finally:
        shared.close()
    async_rows = asyncio.run(_measure_async(url, rounds, n, spin))
    rows = {
        "layer": layers["ours"],
        "sync": sync["ours"],
        "async": async_rows["ours"],
        "spin sync": sync["spin"],
        "spin async": async_rows["spin"],
    }
    if controls:
        rows["side layer"], rows["side sync"] = layers["side"], sync["side"]
    return rows


async def _measure_async(url: str, rounds: int, n: int, spin: float) -> dict[str, dict[str, float]]:
    shared = httpx.AsyncHTTPTransport()
    clients = {
        "bare": httpx.AsyncClient(transport=shared),
        "ours": httpx.AsyncClient(
            transport=AsyncResilientTransport(POLICY, shared, manager=ResilienceManager())
        ),
        "spin": httpx.AsyncClient(transport=_AsyncSpin(shared, spin)),
    }
    try:
        return await run_async(clients, url, rounds, n)
    finally:
        await shared.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30, help="paired rounds per driver (default 30)")
    parser.add_argument("--requests", type=int, default=300, help="requests per round (default 300)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument(
        "--shapes", action="store_true", help="instead: the policy in parts, sync loopback (SHAPES)"
    )
    parser.add_argument(
        "--controls", action="store_true", help="also the rows of httpx's own work as a control (side)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/item"
        if args.shapes:
            rows = measure_shapes(url, args.rounds, args.requests)
        else:
            rows = measure(url, args.rounds, args.requests, controls=args.controls)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print("row         bare µs/req  through µs/req  overhead µs  overhead %  client CPU µs added")
    for driver, row in rows.items():
        print(
            f"{driver:10}  {row['bare_us']:11.1f}  {row['resilient_us']:14.1f}  "
            f"{row['overhead_us']:11.1f}  {row['overhead_pct']:10.2f}  {row['cpu_us']:19.1f}"
        )
    if "layer" in rows:
        spin = rows["layer"]["overhead_us"]
        print(f"spin rows: {spin:.1f} µs of client CPU busy-waited before each request")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
