"""Helpers the test modules share (importable as ``support``: pytest puts ``tests/`` on the path)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn

import pytest

from otel_resilience import RetryPolicy
from otel_resilience.engine import pipeline as pipeline_module
from otel_resilience.engine import timer as engine_timer
from otel_resilience.engine.clock import SystemClock
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import HUB, Outcome, TelemetrySource

needs_task_cancelling = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Task.cancelling() is Python 3.11+: on 3.10 a task keeps no count of its cancellation "
    "requests, so an error a call raised on its way out of one cannot be told from a failure",
)
"""An error a call raised on its way out of its task's cancellation is that cancellation's end (3.11 on)."""


async def converted_cancellation(message: str = "connection aborted") -> NoReturn:
    """Wait until the task is cancelled, then raise ``ConnectionError(message)`` in its place.

    What some client libraries do: the cancellation of their task becomes an error of their own.
    """
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise ConnectionError(message) from None
    raise AssertionError("an endless wait ended")


async def until(condition: Callable[[], object], steps: int = 500) -> None:
    """Yield to the loop until ``condition()`` holds (bounded)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def run(driver: str, pipeline: Any, body: Callable[[], Any]) -> Any:
    """Run the plain function ``body`` through ``pipeline`` with the named driver (``"async"``: wrapped)."""
    if driver == "sync":
        return pipeline.execute_sync(body)

    async def fn() -> Any:
        return body()

    return asyncio.run(pipeline.execute(fn))


def until_sync(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``condition()`` from a thread until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


async def invoke(runner: Any, driver: str, fn: Callable[[], Any]) -> Any:
    """Run the plain function ``fn`` through ``runner`` (a ``Retry`` or a pipeline) with ``driver``."""
    if driver == "sync":
        return runner.execute_sync(fn)

    async def afn() -> Any:
        return fn()

    return await runner.execute(afn)


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, or on Python 3.10 (no ``add_note``) the ``__notes__`` list it keeps."""
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:
        error.__dict__.setdefault("__notes__", []).append(note)


FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=1.0, jitter="none")
"""Three attempts 10 ms apart: what the HTTP integrations' tests retry with."""


class ScriptedHTTPServer:
    """A real HTTP/1.1 server on 127.0.0.1, in a thread, answering from a script per path.

    ``script(path, *answers)`` queues answers for ``path``: ``(status, headers)`` or
    ``(status, headers, delay)``; once a path's queue is empty it answers ``200 ok``. Every
    request is recorded in ``requests`` as ``(method, path, headers, body)``. ``host`` is the
    loopback address it listens on (``"::1"`` for IPv6).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        import http.server  # noqa: PLC0415 - test helper, loaded by the HTTP tests only
        import socket  # noqa: PLC0415
        import threading  # noqa: PLC0415

        self.scripts: dict[str, list[tuple[Any, ...]]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner.lock:
                    owner.requests.append((self.command, self.path, dict(self.headers), body))
                    queue = owner.scripts.get(self.path.split("?")[0])
                    answer = queue.pop(0) if queue else (200, {})
                status, headers, *rest = answer
                if rest:
                    time.sleep(rest[0])
                payload = f"{status}".encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:  # the client gave up (its deadline): nothing to answer
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

            def handle_error(self, request: Any, client_address: Any) -> None:
                """A client that reset its connection (tests cut requests on purpose): no traceback."""
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.host = host
        self.server = Server((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def script(self, path: str, *answers: tuple[Any, ...]) -> None:
        with self.lock:
            self.scripts.setdefault(path, []).extend(answers)

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for _, p, _, _ in self.requests if p.split("?")[0] == path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5.0)


@contextlib.contextmanager
def listeners_removed() -> Iterator[None]:
    """Take every telemetry listener off the global hub (the import-time one too), then put them back."""
    saved = tuple(
        {id(x): x for x in (*HUB.event_listeners, *HUB.execution_listeners)}.values()
    )  # a weak proxy: no hash
    for listener in saved:
        HUB.remove_listener(listener)
    try:
        yield
    finally:
        for listener in saved:
            HUB.add_listener(listener)


def counting_contexts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the execution contexts pipelines make from now on (``[n]``, read after the calls)."""
    made = [0]
    real = pipeline_module.new_context

    def counted() -> ExecutionContext:
        made[0] += 1
        return real()

    monkeypatch.setattr(pipeline_module, "new_context", counted)
    return made


class Scopes:
    """An execution listener that records the outcome each scope it opened ended with."""

    def __init__(self) -> None:
        self.ended: list[Outcome] = []

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        return operation

    def end_execution(
        self, handle: object, outcome: Outcome, duration: float, error: BaseException | None
    ) -> None:
        self.ended.append(outcome)

    def start_attempt(self, source: TelemetrySource, operation: str, attempt: int) -> object:
        return None

    def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None) -> None:
        """Attempt scopes are not recorded."""


class CountingLock:
    """A lock that counts how often it is taken: put in place of a pattern core's lock in a test."""

    def __init__(self) -> None:
        self.taken = 0
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        self.taken += 1
        return self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_threads(count: int, target: Callable[[], None]) -> None:
    """Run ``target`` in ``count`` threads at once; fail if one raised or did not end within 10 s."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


def collect_inside(
    lock: Any,
    what: str,
    around: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> None:
    """Run a garbage collection in a thread that holds ``lock``, as an allocation under it would.

    ``around`` makes what the thread runs it in (a scope of its own: a deadline of that thread).
    Fails if the collection blocked (on ``lock``, whose holder it runs in: ``what`` says whose).
    """

    def collect_inside_the_lock() -> None:
        with around(), lock:
            gc.collect()

    collector = threading.Thread(target=collect_inside_the_lock, daemon=True)
    collector.start()
    collector.join(timeout=10)
    assert not collector.is_alive(), f"the freed waiter blocked on {what}"


def freed_on_a_closed_loop(
    call: Callable[[], Awaitable[Any]],
    ready: Callable[[], object] | None,
    lock: Any,
    what: str,
    around: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> None:
    """Run ``call()`` as a task of a loop of its own, close the loop with it pending, and free it.

    The loop runs until ``ready()`` holds (``None``: for one turn only, so that the tasks the
    call made in it never start). The task never runs again, and only the garbage collector
    frees it (its frame refers to it), closing its coroutine: here in a thread that holds
    ``lock`` (:func:`collect_inside`, inside what ``around()`` makes), as an allocation under it
    would. Fails if that blocked (``what`` says on what), or if the task was not freed.
    """

    async def holding_its_task() -> Any:
        me = asyncio.current_task()  # noqa: F841 - its frame refers to its task: only the collector frees it
        return await call()

    gc.disable()  # the collection below is the one that frees the task
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(holding_its_task())
        if ready is None:
            # stop() before run_forever(): one turn, on asyncio's loop and uvloop's alike (uvloop's
            # stop() is a callback of its own: called from a callback, it lets the tasks made meanwhile start)
            loop.stop()
            loop.run_forever()
        else:
            loop.run_until_complete(until(ready))
        loop.close()  # its task never runs again
        freed, closed = weakref.ref(task), weakref.ref(loop)
        del task, loop
        engine_timer._drop_closed()  # the closed loop's timer lets go of it: the task is garbage
        collect_inside(lock, what, around)
        assert freed() is None
        assert closed() is None, "the closed loop was kept (by what the call opened on it)"
        # What the call opened on the loop is freed with the loop, here: a loop closed with its
        # calls pending never closed it, which is the point of the test, and its transport's
        # warning must not reach whichever test the next collection runs in.
        collect_quietly()
    finally:
        gc.enable()


def collect_quietly() -> None:
    """Collect, ignoring the ``ResourceWarning`` of what a loop closed with its calls pending left open."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server the tests started: terminate it, kill it if it lingers, close its stderr."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    if process.stderr:
        process.stderr.close()


class BrokenQualname:
    """A callable whose ``__qualname__`` raises when read (its metadata cannot be copied)."""

    def __getattr__(self, name: str) -> object:
        if name == "__qualname__":
            raise RuntimeError("no qualname")
        raise AttributeError(name)

    def __call__(self) -> str:
        return "ok"


class BackoffCheck(SystemClock):
    """The real clock, whose backoff runs (or awaits) ``during()`` in place of sleeping; its outcome is kept.

    What the retry holds while it backs off is what ``during`` finds: a request sent then on the
    same pool of one gets the connection only if the response the retry dropped let it go.
    """

    def __init__(self, during: Any) -> None:
        super().__init__()
        self.during = during
        self.outcomes: list[Any] = []

    def sleep_sync(self, seconds: float) -> None:
        try:
            self.outcomes.append(self.during())
        except Exception as error:
            self.outcomes.append(error)

    async def sleep(self, seconds: float) -> None:
        try:
            self.outcomes.append(await self.during())
        except Exception as error:
            self.outcomes.append(error)


def refused_unchanged(error: BaseException, message: str) -> None:
    """A function the driver refused reaches the caller as its ``TypeError``: no note, nothing chained."""
    assert type(error) is TypeError
    assert message in str(error)
    assert not getattr(error, "__notes__", None)
    assert error.__cause__ is None
