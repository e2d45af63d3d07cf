"""A real redis-server for the tests: started on a free 127.0.0.1 port, stopped (and restarted) by pid.

The binary is the one `.ci/install-tools` unpacks (.tools/bin/redis-server, a wrapper that sets
the library path), else one on PATH. When neither exists the tests FAIL, saying how to install it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support import stop_process

REPO = Path(__file__).resolve().parent.parent


def redis_binary() -> str:
    """Return the redis-server to run; fail the test when there is none."""
    wrapped = REPO / ".tools" / "bin" / "redis-server"
    if wrapped.exists():
        return str(wrapped)
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(
            "redis-server not found: run .ci/install-tools (it unpacks Debian's redis-server into .tools/)"
        )
    return found


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process, no persistence, on ``port``; :meth:`stop` and :meth:`start` again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it accepts connections (at most 10 s)."""
        args = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Stop the server (by its pid) and wait for it to exit."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, 5.0)

    def flush(self) -> None:
        """Delete every key (a test starts from an empty server)."""
        import redis  # noqa: PLC0415

        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


class Attempts:
    """A store's client that counts the failed writes by which its thread tries to reach Redis again."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.failed = 0

    def set(self, *args: Any, **kwargs: Any) -> Any:
        import redis  # noqa: PLC0415

        try:
            return self.real.set(*args, **kwargs)
        except redis.RedisError:
            self.failed += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)
