"""Send N GETs through httpx, bare or through ``(Async)ResilientTransport``: for an instruction count.

The layer's cost in instructions (callgrind), which the load of a shared machine does not move,
as the difference of two runs so that start-up and the 50 warm-up requests cancel::

    count() { PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/http_instructions.py "$@" 2>&1 | awk '/Collected/ {print $4}'; }
    echo $(( ($(count sync ours 600) - $(count sync ours 100)) / 500 ))   # per request

``DRIVER`` is ``sync`` or ``async``; ``MODE`` ``bare`` (the client alone) or ``ours`` (through
the transport with :data:`http_overhead.POLICY`). Without ``--port`` the requests go to an
in-process ``httpx.MockTransport``; with it, to the server of ``http_overhead.py --serve``
listening on that port (loopback; callgrind counts the client process only).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # the tree beside this file, even where another is installed
sys.path.insert(0, str(_HERE))

import httpx  # noqa: E402
from http_overhead import POLICY  # noqa: E402

from otel_resilience import ResilienceManager  # noqa: E402
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport  # noqa: E402

WARM_UP = 50


def _answer(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def run_sync(ours: bool, n: int, port: int | None) -> None:
    inner: httpx.BaseTransport = httpx.HTTPTransport() if port else httpx.MockTransport(_answer)
    transport = ResilientTransport(POLICY, inner, manager=ResilienceManager()) if ours else inner
    url = f"http://127.0.0.1:{port}/item" if port else "http://example.test/item"
    with httpx.Client(transport=transport) as client:
        for _ in range(WARM_UP + n):
            client.get(url)


async def run_async(ours: bool, n: int, port: int | None) -> None:
    inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport() if port else httpx.MockTransport(_answer)
    transport = AsyncResilientTransport(POLICY, inner, manager=ResilienceManager()) if ours else inner
    url = f"http://127.0.0.1:{port}/item" if port else "http://example.test/item"
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(WARM_UP + n):
            await client.get(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("driver", choices=("sync", "async"))
    parser.add_argument("mode", choices=("bare", "ours"))
    parser.add_argument("n", type=int, help="requests after the warm-up")
    parser.add_argument("--port", type=int, help="the port of `http_overhead.py --serve`")
    args = parser.parse_args(argv)
    if args.driver == "sync":
        run_sync(args.mode == "ours", args.n, args.port)
    else:
        asyncio.run(run_async(args.mode == "ours", args.n, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
