"""Run the example: the downstreams as a second process, the service with uvicorn, on free ports.

From the repository root: ``python -m examples.http_service`` (or ``python
examples/http_service/run.py``). Stop with Ctrl-C or SIGTERM: the service shuts down, the
downstream process is stopped too, and the exit status is 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType

import uvicorn

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.http_service.service import create_app

DOWNSTREAM = Path(__file__).with_name("downstream.py")


def start_downstream(
    names: tuple[str, ...] = ("inventory", "pricing"),
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start the downstream process; return it and the base URL of each downstream.

    The process stops when its standard input closes (``--parent-pipe``): when this process ends,
    however it ends (killed included), the system closes the pipe. Stopped here too if anything
    (a signal) interrupts the start.
    """
    command = [sys.executable, str(DOWNSTREAM), "--parent-pipe", *names]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ports = json.loads(process.stdout.readline())
    except BaseException:
        stop_downstream(process)
        raise
    return process, {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}


def stop_downstream(process: subprocess.Popen[str]) -> None:
    """Stop the downstream process and close its output pipe."""
    process.terminate()
    process.wait(timeout=10)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def _exit(_signum: int, _frame: FrameType | None) -> None:
    """Leave through ``finally`` blocks on SIGTERM (uvicorn raises the signal again once it stopped)."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    """Start the downstreams and serve the service until Ctrl-C or SIGTERM.

    ``argv`` (default: ``sys.argv[1:]``) takes no argument but ``--help``: anything else is a usage
    error (exit status 2) before anything starts.
    """
    argparse.ArgumentParser(
        prog="python -m examples.http_service",
        description="Start the example's downstreams (a second process) and its service (uvicorn) "
        "on free ports of 127.0.0.1, print their addresses, and serve until Ctrl-C or SIGTERM.",
    ).parse_args(argv)
    signal.signal(signal.SIGTERM, _exit)
    process, urls = start_downstream()
    try:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # before the address is printed: a request sent at once waits, is not refused
        port = sock.getsockname()[1]
        print(f"downstreams: {urls}")
        print(f"service:     http://127.0.0.1:{port}  (try /items/1, /prices/1, POST /orders)")
        order = '{"item": 1}'  # POST /orders takes a JSON object: without one FastAPI answers 422
        print(f"order:       curl --json '{order}' http://127.0.0.1:{port}/orders")
        down = '{"mode": "down"}'
        print(f"switch one:  curl -X POST {urls['inventory']}/admin/mode -d '{down}'", flush=True)
        server = uvicorn.Server(uvicorn.Config(create_app(urls), log_level="warning"))
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn stopped the service, then raised it again
        pass
    finally:
        stop_downstream(process)


if __name__ == "__main__":
    main()
