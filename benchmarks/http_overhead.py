"""What the HTTP integration adds to a real request: bare httpx against AsyncResilientTransport.

A local HTTP/1.1 server runs in a second process (its own interpreter, so it does not share the
client's GIL) and answers ``200 ok`` with keep-alive. Each round sends ``--requests`` GETs through
a bare ``httpx`` client and as many through the same client built with
``(Async)ResilientTransport`` (a retry, a breaker per host and a 5 s timeout; no SDK), the order
alternating between rounds (paired and interleaved, so drift hits both); the row is the median of
the per-round ratios. The ``layer`` row does the same with an in-process ``httpx.MockTransport``
(no socket): the microseconds the integration itself adds, which the noise of a real request on
a shared machine can hide. Run::

    python benchmarks/http_overhead.py                  # ~1 min on 2 cores
    python benchmarks/http_overhead.py --rounds 10 --requests 200 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # the tree beside this file, even where another is installed

import httpx  # noqa: E402

from otel_resilience import CircuitBreakerConfig, ResilienceConfig, ResilienceManager, RetryPolicy  # noqa: E402
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport  # noqa: E402

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


def sync_round(client: httpx.Client, url: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        client.get(url)
    return time.perf_counter() - start


async def async_round(client: httpx.AsyncClient, url: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await client.get(url)
    return time.perf_counter() - start


def summarise(bare: list[float], ours: list[float], n: int) -> dict[str, float]:
    ratios = [o / b for b, o in zip(bare, ours, strict=True)]
    bare_us = statistics.median(bare) / n * 1e6
    ours_us = statistics.median(ours) / n * 1e6
    return {
        "bare_us": round(bare_us, 1),
        "resilient_us": round(ours_us, 1),
        "overhead_us": round(ours_us - bare_us, 1),
        "overhead_pct": round((statistics.median(ratios) - 1) * 100, 2),
    }


def _answer(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def run_sync(url: str, rounds: int, n: int, *, in_process: bool = False) -> dict[str, float]:
    """Time the sync client; ``in_process``: an ``httpx.MockTransport`` (the layer's cost alone)."""
    inner: httpx.BaseTransport = httpx.MockTransport(_answer) if in_process else httpx.HTTPTransport()
    base: httpx.BaseTransport = httpx.MockTransport(_answer) if in_process else httpx.HTTPTransport()
    transport = ResilientTransport(POLICY, inner, manager=ResilienceManager())
    bare_times: list[float] = []
    ours_times: list[float] = []
    with httpx.Client(transport=base) as bare, httpx.Client(transport=transport) as ours:
        sync_round(bare, url, n)
        sync_round(ours, url, n)  # warm-up: connections open, the policy's key built
        for index in range(rounds):
            pair = [(bare, bare_times), (ours, ours_times)]
            for client, times in pair if index % 2 == 0 else reversed(pair):
                times.append(sync_round(client, url, n))
    return summarise(bare_times, ours_times, n)


async def run_async(url: str, rounds: int, n: int) -> dict[str, float]:
    transport = AsyncResilientTransport(POLICY, httpx.AsyncHTTPTransport(), manager=ResilienceManager())
    bare_times: list[float] = []
    ours_times: list[float] = []
    async with httpx.AsyncClient() as bare, httpx.AsyncClient(transport=transport) as ours:
        await async_round(bare, url, n)
        await async_round(ours, url, n)
        for index in range(rounds):
            pair = [(bare, bare_times), (ours, ours_times)]
            for client, times in pair if index % 2 == 0 else reversed(pair):
                times.append(await async_round(client, url, n))
    return summarise(bare_times, ours_times, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30, help="paired rounds per driver (default 30)")
    parser.add_argument("--requests", type=int, default=300, help="requests per round (default 300)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/item"
        rows = {
            "sync": run_sync(url, args.rounds, args.requests),
            "async": asyncio.run(run_async(url, args.rounds, args.requests)),
            "layer": run_sync(url, args.rounds, args.requests, in_process=True),
        }
    finally:
        server.terminate()
        server.wait(timeout=10)
    print("driver  bare µs/req  resilient µs/req  overhead µs  overhead % (median of paired ratios)")
    for driver, row in rows.items():
        print(
            f"{driver:6}  {row['bare_us']:11.1f}  {row['resilient_us']:16.1f}  "
            f"{row['overhead_us']:11.1f}  {row['overhead_pct']:6.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
