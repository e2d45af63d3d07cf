"""A flaky downstream: one small HTTP server per name, each switched healthy/down/throttled at run time.

Standard library only, run as its own process::

    python examples/http_service/downstream.py inventory pricing

It prints one JSON line, ``{"inventory": <port>, "pricing": <port>}`` (free ports on 127.0.0.1),
then serves until stopped. Every server answers any path:

* ``healthy``: ``200`` with ``{"name": ..., "path": ...}``;
* ``down``: ``503``;
* ``throttled``: ``429`` with ``Retry-After: <retry_after>``;

and has two admin paths, never counted nor failed:

* ``POST /admin/mode`` with ``{"mode": "down", "count": 2, "retry_after": 1}``: switch the mode,
  for the next ``count`` requests only (then ``healthy`` again) when ``count`` is given; a body it
  cannot apply (an unknown field too) is answered ``400`` with the field named, and changes
  nothing;
* ``GET /admin/stats``: ``{"mode": ..., "requests": {"GET /items/1": 3, ...}}``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("healthy", "down", "throttled")
FIELDS = ("mode", "count", "retry_after")
"""The fields of an ``/admin/mode`` body: any other (a typo such as ``cout``) is refused."""


class State:
    """One downstream's mode and the requests it received (thread safe)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "healthy"
        self.count: int | None = None
        self.retry_after = 1
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()

    def switch(self, body: Any) -> None:
        """Apply an admin ``/admin/mode`` body whole, or nothing of it (an error naming the field)."""
        if not isinstance(body, dict):
            raise TypeError(f"the body must be a JSON object, not {body!r}")
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}: the fields are {FIELDS}")
        mode = body.get("mode", "healthy")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        count = body.get("count")
        if count is not None and type(count) is not int:
            raise TypeError(f"count must be an integer, not {count!r}")
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1, not {count!r}")
        retry_after = body.get("retry_after", self.retry_after)
        if type(retry_after) is not int:
            raise TypeError(f"retry_after must be an integer (seconds), not {retry_after!r}")
        if retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, not {retry_after!r}")
        with self.lock:
            self.mode, self.count, self.retry_after = mode, count, retry_after

    def answer(self, request: str) -> tuple[int, dict[str, str]]:
        """Count ``request`` and return the status and headers the current mode gives it."""
        with self.lock:
            self.requests[request] += 1
            mode, retry_after = self.mode, self.retry_after
            if self.count is not None:
                self.count -= 1
                if self.count <= 0:
                    self.mode, self.count = "healthy", None
        if mode == "down":
            return 503, {}
        if mode == "throttled":
            return 429, {"Retry-After": str(retry_after)}
        return 200, {}

    def stats(self) -> dict[str, Any]:
        """The admin ``/admin/stats`` answer."""
        with self.lock:
            return {"name": self.name, "mode": self.mode, "requests": dict(self.requests)}


def handler_for(state: State) -> type[BaseHTTPRequestHandler]:
    """A request handler class serving ``state``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for key, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:  # the client gave up: nothing to answer
                self.close_connection = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            if path == "/admin/stats":
                self._reply(200, state.stats(), {})
            elif path == "/admin/mode":
                try:
                    state.switch(json.loads(body or b"{}"))
                except (TypeError, ValueError) as error:  # not JSON, or a body it cannot apply
                    self._reply(400, {"error": str(error)}, {})
                else:
                    self._reply(200, state.stats(), {})
            else:
                status, headers = state.answer(f"{self.command} {path}")
                self._reply(status, {"name": state.name, "path": path, "status": status}, headers)

        do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 - http.server names

    return Handler


def serve(names: list[str]) -> list[ThreadingHTTPServer]:
    """Start one server per name on a free port of 127.0.0.1, each in a daemon thread."""
    servers = []
    for name in names:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(State(name)))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
        servers.append(server)
    return servers


def main(argv: list[str]) -> None:
    """Serve the named downstreams until stopped; print their ports as one JSON line first.

    With ``--parent-pipe`` (as ``run.py`` starts it) it also stops when its standard input closes:
    its parent ended, however it ended, so no downstream outlives the service.
    """
    watch_parent = "--parent-pipe" in argv
    names = [name for name in argv if name != "--parent-pipe"] or ["inventory", "pricing"]
    servers = serve(names)
    print(json.dumps({name: s.server_address[1] for name, s in zip(names, servers, strict=True)}), flush=True)
    stop = threading.Event()
    if watch_parent:

        def watch() -> None:
            sys.stdin.read()  # returns at end of file: the parent's end of the pipe is closed
            stop.set()

        threading.Thread(target=watch, name="parent pipe", daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
