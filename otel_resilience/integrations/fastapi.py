"""FastAPI and Starlette: refusals as HTTP answers, a policy dependency, load shedding (extra ``fastapi``).

::

    app = FastAPI()
    add_exception_handlers(app)  # CircuitOpenError -> 503 + Retry-After, ...
    app.add_middleware(LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=100))

    @app.get("/pay")
    async def pay(policy: Annotated[PolicyHandle, Depends(resilience_policy("payments", config))]):
        return await policy.execute(call_payments)  # or policy.for_key(tenant).execute(...)

Only Starlette is imported (FastAPI is built on it); the handlers work on a plain Starlette app.

=====================================  ======  ===============================================
Error                                  Status  Headers
=====================================  ======  ===============================================
``CircuitOpenError``                   503     ``Retry-After``: the breaker's next probe
``BulkheadFullError``                  503     ``Retry-After``: :data:`BULKHEAD_RETRY_AFTER`
``RateLimitedError``                   429     ``Retry-After``: when the next permit is due
``OperationTimeoutError``              504
=====================================  ======  ===============================================

``Retry-After`` is whole seconds rounded up (at least 1, at most :data:`MAX_RETRY_AFTER`, the
largest delta-seconds RFC 9111 has caches keep); a breaker forced open (``inf``) gives none,
and so does a refusal made with a message alone (a test double: ``CircuitOpenError("down")``).
The JSON body is ``{"detail": ..., "error": ...}``: a public message of the error's kind ("A
service this one depends on is unavailable.", "Too many requests in progress.", "Too many
requests.", "The operation timed out.") and the error's class name. The error's own message is
not sent: it names the policy, the key whose instance refused (an HTTP client's per-host key,
``10.0.0.7:8443``: an internal address) and its limits, for the service's own telemetry (the
execution's span and events), not for its clients.

In a websocket endpoint, the handlers answer a refusal raised before ``accept()`` the same way
(Starlette's websocket denial response, where the server supports it; else the handshake is
closed); once the websocket is accepted, they close it with code 1013 (try again later) and the
answer's public message as the reason. A refusal raised in the body of a denial response the
endpoint started is raised to the server as Starlette's ``RuntimeError`` from it, as for an HTTP
response that started.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.engine.deadline import cancel_alone, cancelled_alone
from otel_resilience.engine.validation import check_callable, check_name, fail
from otel_resilience.errors import (
    BulkheadFullError,
    CircuitOpenError,
    ExecutionRejectedError,
    OperationTimeoutError,
    RateLimitedError,
)
from otel_resilience.manager import PolicyHandle, ResilienceConfig, ResilienceManager, get_resilience_manager
from otel_resilience.manager.decorator import check_manager
from otel_resilience.manager.policy import check_config
from otel_resilience.manager.stages import StageInputs, compose
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.patterns.rate_limiter import RateLimiter, RateLimiterConfig

__all__ = [
    "BULKHEAD_RETRY_AFTER",
    "CLIENT_CLOSED_REQUEST",
    "MAX_RETRY_AFTER",
    "LoadSheddingMiddleware",
    "Policy",
    "add_exception_handlers",
    "error_response",
    "resilience_policy",
]


MAX_RETRY_AFTER: Final = 2**31
"""The largest ``Retry-After`` sent (seconds): a longer wait is written as this (RFC 9111, 1.2.2)."""
BULKHEAD_RETRY_AFTER: Final = 1
"""The ``Retry-After`` (seconds) of a 503 for a full bulkhead, which cannot know when a slot frees."""

_HANDLED: Final = (CircuitOpenError, BulkheadFullError, RateLimitedError, OperationTimeoutError)

_TRY_AGAIN_LATER: Final = 1013
"""The websocket close code of a refusal after ``accept()`` (RFC 6455 registry: "Try Again Later")."""
_DENIAL: Final = "websocket.http.response"
"""The ASGI extension through which a server sends an HTTP answer to a websocket handshake."""


def _retry_after(seconds: object) -> dict[str, str]:
    """The ``Retry-After`` header of a wait of ``seconds``, rounded up; none for no finite number.

    No number: a breaker forced open until ``reset()`` (``inf``), or a rejection made with a
    message alone (an application's test double, ``CircuitOpenError("down")``), which holds none.
    An ``int`` is taken as it is: one past any float (``10**400``) is capped, never converted.
    """
    if isinstance(seconds, float):
        if not math.isfinite(seconds):
            return {}
    elif not isinstance(seconds, int):
        return {}
    return {"Retry-After": str(min(MAX_RETRY_AFTER, max(1, math.ceil(seconds))))}


def _answer(error: Exception) -> tuple[int, dict[str, str], str]:
    """The status, headers and public detail of the answer to ``error`` (the module's table).

    The detail says what happened in words of its own: an error's message names the policy,
    the key whose instance refused (an HTTP client's host, an internal address) and its limits,
    none of which is the public client's to read.

    Raises:
        TypeError: ``error`` is none of the four handled errors.
    """
    # getattr: a rejection made with a message alone has no retry_after (an AttributeError)
    if isinstance(error, CircuitOpenError):
        wait = getattr(error, "retry_after", None)
        return 503, _retry_after(wait), "A service this one depends on is unavailable."
    if isinstance(error, RateLimitedError):
        return 429, _retry_after(getattr(error, "retry_after", None)), "Too many requests."
    if isinstance(error, BulkheadFullError):
        return 503, _retry_after(BULKHEAD_RETRY_AFTER), "Too many requests in progress."
    if isinstance(error, OperationTimeoutError):
        return 504, {}, "The operation timed out."
    raise fail("error_response", "error", "a refusal or OperationTimeoutError", error, kind=TypeError)


def error_response(error: Exception) -> Response:
    """Return the HTTP answer for a refusal or a timeout (see the module's table).

    Its JSON body is ``{"detail": ..., "error": ...}``: a public message of the error's kind and
    the error's class name (its nearest public one); never the error's own message, which names
    the policy, the key whose instance refused (the per-host key of an HTTP client: an internal
    address) and its limits.

    Raises:
        TypeError: ``error`` is none of the four handled errors.
    """
    status, headers, detail = _answer(error)
    return JSONResponse({"detail": detail, "error": _public_name(type(error))}, status, headers)


def _public_name(kind: type[BaseException]) -> str:
    """The name of ``kind``, or of its nearest base whose name is public.

    An integration's private error (aiohttp's total timeout, raised as the policy's) answers as
    ``OperationTimeoutError``.
    """
    return next(base.__name__ for base in kind.__mro__ if not base.__name__.startswith("_"))


async def _handler(connection: HTTPConnection, error: Exception) -> Response | None:
    if isinstance(connection, WebSocket):
        return await _refuse_websocket(connection, error)
    return error_response(error)


async def _refuse_websocket(websocket: WebSocket, error: Exception) -> Response | None:
    """Answer a refusal in a websocket endpoint: the HTTP answer before ``accept()``, else a close.

    Returns the answer for Starlette to send (a denial response, only before ``accept()`` and
    where the server supports it), or ``None`` once the websocket is closed here (or was already).

    Raises:
        RuntimeError: From ``error``, raised in the body of a denial response the endpoint had
            started: as for an HTTP response started (Starlette's own error, which Starlette's
            handling raises for ``http.response.start`` only), the server gets it, and the
            unfinished denial is not left for its client to wait on.
    """
    state = websocket.application_state
    if state is WebSocketState.RESPONSE:
        raise RuntimeError("Caught handled exception, but response already started.") from error
    if state is WebSocketState.CONNECTING and _DENIAL in (websocket.scope.get("extensions") or {}):
        return error_response(error)
    if state in (WebSocketState.CONNECTING, WebSocketState.CONNECTED):
        reason = _answer(error)[2]  # the answer's public detail, never the error's message
        with contextlib.suppress(WebSocketDisconnect):  # the client is gone: nothing to tell it
            await websocket.close(_TRY_AGAIN_LATER, reason)
    return None


def add_exception_handlers(app: Starlette) -> None:
    """Register handlers on a FastAPI or Starlette ``app`` turning refusals into 503/429/504 answers.

    In a websocket endpoint: the same answer before ``accept()``, a close with code 1013 after
    (see the module's doc).

    A handler the app already has for one of the four errors (``@app.exception_handler(...)``,
    ``app.add_exception_handler`` or ``exception_handlers=``) is kept: only the others are
    added. A handler the app registers afterwards replaces this one, as in Starlette.

    Call it before the app runs: Starlette builds its handlers into the app's middleware stack
    when the app is first called (its lifespan's startup included) and never reads them again.

    Raises:
        TypeError: ``app`` is not a Starlette application (FastAPI's included).
        RuntimeError: The app has started (its middleware stack is built) and lacks a handler:
            one added now would never run (Starlette's ``add_middleware`` refuses a middleware
            then). With all four in place already, nothing is added and nothing is raised.
    """
    if not isinstance(app, Starlette):
        raise fail(
            "add_exception_handlers", "app", "a FastAPI or Starlette app (an instance)", app, kind=TypeError
        )
    missing = [error_type for error_type in _HANDLED if error_type not in app.exception_handlers]
    if missing and app.middleware_stack is not None:
        raise RuntimeError(
            "add_exception_handlers: the app has started (its middleware stack is built), so handlers "
            "added now would never run: call it before the app serves, not in its lifespan"
        )
    for error_type in missing:
        # one handler for requests and websockets: Starlette types a handler as one or the other
        app.add_exception_handler(error_type, _handler)  # type: ignore[arg-type]


Policy: TypeAlias = PolicyHandle
"""What :func:`resilience_policy` gives a handler: the manager's :class:`~otel_resilience.PolicyHandle`."""


def resilience_policy(
    name: str, config: ResilienceConfig | None = None, *, manager: ResilienceManager | None = None
) -> Callable[[], Awaitable[PolicyHandle]]:
    """Return a dependency (``Depends(resilience_policy("payments", config))``) giving the policy handle.

    The handler gets the manager's policy ``name``: ``await policy.execute(fn)`` shares the
    policy's breaker, bulkhead and limiter across requests, ``policy.for_key(tenant)`` gives a
    key its own, and ``manager.reconfigure(name, ...)`` changes it while requests run.

    ``config`` is what the policy is created with if no policy has that name yet (on the
    dependency's first request). A policy that exists is taken as it is, whoever made it (this
    dependency, another one, ``manager.policy``, a configuration file such as
    ``OTEL_RESILIENCE_CONFIG``) and whatever config it runs now: a reload never makes a
    dependency fail, and two dependencies of one name share one policy (the first to run creates
    it). Without ``config``, the dependency uses the policy as configured elsewhere (or creates
    it with an empty config, no pattern, if there is none). A config the manager refuses as it
    creates the policy (an extra link's factory that fails) fails the request with the manager's
    own error.

    The dependency is a coroutine function, so FastAPI runs it on the event loop, in ``async
    def`` and ``def`` endpoints alike: a plain function would be run in the threadpool, a thread
    hop per request, and an ``async def`` endpoint would wait for a worker thread whenever sync
    endpoints hold them all. A ``def`` endpoint gets the same handle and calls
    ``policy.execute_sync(fn)`` in its thread.

    Args:
        name: The policy name.
        config: The policy's config at creation (default: an empty one, no pattern); its
            ``name`` must be ``None`` or ``name``.
        manager: The manager (default: the process-wide one, looked up per request).

    Raises:
        TypeError: ``config`` is not a ResilienceConfig, or ``manager`` not a ResilienceManager.
        ValueError: ``name`` is empty, or ``config`` is named otherwise or has an extra strategy
            given as a ``Step`` instance (a policy needs a factory).
    """
    check_name("resilience_policy", "name", name)
    check_manager("resilience_policy", manager)
    if config is not None:
        check_config(name, config, "resilience_policy")
    made: list[tuple[ResilienceManager, PolicyHandle]] = []

    async def dependency() -> PolicyHandle:
        current = manager or get_resilience_manager()
        if made and made[0][0] is current:  # a manager keeps its handles for its lifetime
            return made[0][1]
        handle = _named_policy(current, name, config)
        made[:] = [(current, handle)]
        return handle

    dependency.__name__ = f"resilience_policy_{name}"
    return dependency


def _named_policy(manager: ResilienceManager, name: str, config: ResilienceConfig | None) -> PolicyHandle:
    """Return ``manager``'s policy ``name`` as it is, or create it with ``config`` if there is none.

    Raises:
        ValueError: The manager refused ``config`` when creating the policy (an extra link's
            factory failed): its own error, not a ``KeyError`` for the name.
    """
    with contextlib.suppress(KeyError):
        return manager.policy(name)
    try:
        return manager.policy(name, ResilienceConfig() if config is None else config)
    except ValueError:
        with contextlib.suppress(KeyError):  # created meanwhile (another thread) with another config
            return manager.policy(name)
        raise  # none was: the config itself was refused


class _InnerPolicyError(Exception):
    """A refusal or timeout the app raised (a policy inside it), carried through the middleware's pipeline.

    The pipeline counts what it sees by type: the app's own ``BulkheadFullError`` would count
    as a rejection of the middleware's policy. Carried in this plain error it counts as a failure
    of the app, as any error of the app does (named in telemetry as the error carried: see
    :func:`_carry`); the middleware then raises the original.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


_CARRIERS: Final[weakref.WeakKeyDictionary[type[BaseException], type[_InnerPolicyError]]] = (
    weakref.WeakKeyDictionary()
)
"""The carrier class of each error type the app raised (:func:`_carry`), kept while that type lives."""


def _carry(error: BaseException) -> _InnerPolicyError:
    """Return ``error`` in a carrier named as its type, so that the execution's ``error.type`` is the app's.

    Telemetry names an error by its type's module and qualified name: a carrier class of that
    name (a subclass of :class:`_InnerPolicyError`, so a failure) reports the error the app
    raised, never this module's wrapper. A type that cannot be hashed (its metaclass defines
    ``__eq__`` and no ``__hash__``) gets a carrier made each time, never cached: the app's error
    comes through, never the cache's ``TypeError``.
    """
    kind = type(error)
    try:
        carrier = _CARRIERS.get(kind)
    except TypeError:  # a type that cannot be hashed
        return _carrier_of(kind)(error)
    if carrier is None:
        carrier = _CARRIERS[kind] = _carrier_of(kind)
    return carrier(error)


def _carrier_of(kind: type[BaseException]) -> type[_InnerPolicyError]:
    """Make the carrier class of ``kind``: a :class:`_InnerPolicyError` named as ``kind`` (:func:`_carry`)."""
    names = {"__module__": kind.__module__, "__qualname__": kind.__qualname__, "__slots__": ()}
    return type(kind.__name__, (_InnerPolicyError,), names)


CLIENT_CLOSED_REQUEST: Final = 499
"""The status of the answer to a request whose client left while it waited for its turn (nginx's
"Client Closed Request"): no client reads it; the layers around the middleware do."""


async def _answer_departed(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request whose client left while it waited: a :data:`CLIENT_CLOSED_REQUEST`, with no body.

    The server drops it (its client is gone), but the layers around the middleware get an
    answer: Starlette's ``BaseHTTPMiddleware`` (an ``@app.middleware("http")`` added after this
    one) raises ``RuntimeError("No response returned.")`` from ``call_next`` for an app that
    sent none. A 4xx, not the 503 of a request shed: the middleware did not refuse it (its
    bulkhead or limiter counts a cancel), and a server span or access log around it shows no
    server error. A server that raises for a send on a closed connection (an ``OSError``, as
    ASGI 2.4 asks) says what is known already: the client left.
    """
    with contextlib.suppress(OSError):
        await Response(status_code=CLIENT_CLOSED_REQUEST)(scope, receive, send)


_READ_AHEAD: Final = 1 << 20
"""The most request body (bytes) read, and kept for the app, while a request waits for its turn."""
_READ_AHEAD_MESSAGES: Final = 1024
"""The most messages read, and kept for the app, while a request waits for its turn.

Each costs some 220 bytes to keep (a dict and a bytes object) whatever its body: a client that
sends its body a byte per packet would otherwise have one waiting request keep about 220 MiB
under :data:`_READ_AHEAD`. A body sent at the network's pace comes in fewer (a server gives what
it has received by each read: some 720 messages for a mebibyte in 1460-byte TCP segments).
"""


def _expects_continue(scope: Scope) -> bool:
    """Whether the request carries ``Expect: 100-continue``: its client waits to be asked for its body.

    The server asks (sends "100 Continue") at the first ``receive()``, so a request is read from
    only once the app runs: no reader watches its client while it waits (:class:`_Waiting`), and
    a request refused meanwhile is answered without its body ever being asked for.
    """
    return any(name == b"expect" and b"100-continue" in value.lower() for name, value in scope["headers"])


class _Waiting:
    """A request waiting for its turn (a bulkhead slot, a permit): notices its client leaving meanwhile.

    A task reads ``receive()`` while the request waits: each message read is kept and given
    back, in order, to the app's first calls of :meth:`receive` (the app reads the whole body).
    An ``http.disconnect`` cancels the waiting request (``left``): its queue place is given up,
    the app never runs, and the request is answered with a 499 nobody reads
    (:func:`_answer_departed`). Past :data:`_READ_AHEAD` bytes of body, or once it holds
    :data:`_READ_AHEAD_MESSAGES` messages, the task stops reading (the memory a waiting request
    holds is bounded; the app then sees the disconnect itself). A
    request with ``Expect: 100-continue`` is not watched (:func:`_expects_continue`).

    The task is made only once the request's task yields to the loop before its turn came (a
    callback scheduled with ``call_soon``, cancelled when the turn comes first): a request
    admitted at once, the usual case, makes no task, never waits for one to end, and has its
    headers read by nothing (:func:`_expects_continue` is asked then).
    """

    __slots__ = ("_cancel", "_error", "_loop", "_read", "_receive", "_request", "_start", "_watcher", "left")

    def __init__(self, receive: Receive, scope: Scope) -> None:
        self._receive = receive
        self._read: deque[Message] = deque()
        self._error: BaseException | None = None
        self.left = False
        self._request = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._watcher: asyncio.Task[None] | None = None
        self._start = self._loop.call_soon(self._begin, scope)

    def _begin(self, scope: Scope) -> None:
        """The request yielded before its turn: it waits, so watch its client from now on.

        Unless it carries ``Expect: 100-continue`` (:func:`_expects_continue`): it is not read from.
        """
        if not _expects_continue(scope):
            self._watcher = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        size = 0
        while size <= _READ_AHEAD and len(self._read) < _READ_AHEAD_MESSAGES:
            try:
                message = await self._receive()
            except Exception as error:  # noqa: BLE001 - the app's receive() raises it, in its turn
                self._error = error
                return
            self._read.append(message)
            if message["type"] == "http.disconnect":
                if self._request is not None:
                    self._cancel = cancel_alone(self._request, "the client left")
                    self.left = self._cancel is not None  # else another cancellation ends it
                return
            size += len(message.get("body", b""))

    async def stop(self) -> Receive:
        """Stop reading (the app's turn came, or the request was answered); return the app's ``receive()``.

        What was read is kept, and given back by :meth:`receive`; a request that never waited
        read nothing, and gets the server's own ``receive()``.
        """
        self.close()
        watcher = self._watcher
        if watcher is None:
            return self._receive
        await asyncio.wait((watcher,))  # its last message kept; a cancel of this task raises
        return self.receive

    def close(self) -> None:
        """Stop reading, not waiting for it (the request ends: nothing more is replayed)."""
        self._start.cancel()
        if self._watcher is not None:
            self._watcher.cancel()

    def gave_up(self) -> bool:
        """Whether the request was cancelled because its client left (and not by anyone else too)."""
        if not self.left or self._request is None:
            return False
        return cancelled_alone(self._request, self._cancel)

    async def receive(self) -> Message:
        """The app's ``receive()``: first the messages read while waiting, then the server's."""
        if self._read:
            return self._read.popleft()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return await self._receive()


class LoadSheddingMiddleware:
    """ASGI middleware that sheds load at the edge: a bulkhead and/or a rate limiter over every request.

    A request refused by either is answered at once (503 or 429, with ``Retry-After``) without
    reaching the app; the bulkhead holds its slot while the app runs, its background tasks
    included (run after the response is sent, they are still the server's work, which a load
    shedder counts). A request that waits for its turn (``max_waiting``, ``max_wait``) and whose
    client disconnects meanwhile gives up its place: the app does not run, and the request is
    answered with a :data:`CLIENT_CLOSED_REQUEST` (499, no body), which the server drops, for
    the layers around the middleware (Starlette's ``BaseHTTPMiddleware``, an
    ``@app.middleware("http")``, fails a request answered by nothing); the body read while it
    waited is given to the app when its turn comes. A request with
    ``Expect: 100-continue`` is not read from before its turn (the server would ask its client
    for the body, "100 Continue", for a request that may yet be refused): its client leaving
    meanwhile is seen once the app runs, as without a queue. Lifespan and websocket scopes pass
    through.

    Each middleware has a bulkhead and a rate limiter of its own: two apps that each add one (or
    an app and an app it mounts) never count each other's requests, whatever their names. To put
    several apps under one limit, add one middleware around them all (on the app that mounts
    them); only a rate limit kept in a store (``RateLimiterConfig(store=...)``) is shared by
    name, as the store shares every limiter's permits. ``name`` names the requests' executions,
    the bulkhead and the limiter in telemetry, nothing more: two live middlewares of one name
    (the default included) report as one, their series combined (the second bulkhead of one name
    is logged as a warning).

    The rate limiter is asked first, then the bulkhead (the manager's order: a request over the
    rate is shed before it queues for a slot, and none holds a slot while it waits for a permit).
    So a request the bulkhead refuses has spent its permit, as a call a policy's bulkhead
    refuses has: the limiter counts the requests it let through, and while the bulkhead is full
    its 503s draw on the rate too (a permit given back would be a permit result of its own in
    telemetry, which the limiter does not have). Size the rate for the requests that reach the
    middleware, not only for those the app runs.

    Add it before Starlette's ``CORSMiddleware`` (the middleware added last runs outermost): CORS
    then wraps it, so its 503 and 429 carry the CORS headers a browser needs to let a page read
    them, and a preflight is answered by CORS without asking for a slot or a permit.

    Only its own refusals become its answers. What the app raises (a refusal or timeout of a
    policy inside it included) goes on to the server as any error of the app does, the response
    started or not, and the execution counts it as a failure, never as a rejection of its own.

    Args:
        app: The ASGI app.
        bulkhead: The concurrency limit (``None``: none).
        rate_limiter: The rate limit (``None``: none).
        name: The policy name in telemetry (default ``"http.server"``).
        manager: The manager whose clock the bulkhead and limiter run on (default: the
            process-wide one's, the system clock). They are the middleware's, not the manager's:
            its statistics do not list them (read :attr:`bulkhead` and :attr:`rate_limiter`).

    Attributes:
        config: What each request runs under (``name``, the bulkhead and the rate limit).
        bulkhead: The middleware's :class:`~otel_resilience.Bulkhead`, or ``None``.
        rate_limiter: The middleware's :class:`~otel_resilience.RateLimiter`, or ``None``.

    Raises:
        TypeError: ``app`` is not callable, ``bulkhead`` is not a BulkheadConfig, ``rate_limiter``
            not a RateLimiterConfig, ``name`` not a str, or ``manager`` not a ResilienceManager.
        ValueError: Neither a bulkhead nor a rate limiter is given, or ``name`` is empty.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        bulkhead: BulkheadConfig | None = None,
        rate_limiter: RateLimiterConfig | None = None,
        name: str = "http.server",
        manager: ResilienceManager | None = None,
    ) -> None:
        check_callable("LoadSheddingMiddleware", "app", app)
        if bulkhead is None and rate_limiter is None:
            raise fail("LoadSheddingMiddleware", "bulkhead", "given (or rate_limiter)", bulkhead)
        for field, value, kind in (
            ("bulkhead", bulkhead, BulkheadConfig),
            ("rate_limiter", rate_limiter, RateLimiterConfig),
        ):
            if value is not None and not isinstance(value, kind):
                raise fail(
                    "LoadSheddingMiddleware", field, f"a {kind.__name__} or None", value, kind=TypeError
                )
        check_name("LoadSheddingMiddleware", "name", name)
        check_manager("LoadSheddingMiddleware", manager)
        self.app = app
        self.config = ResilienceConfig(
            name=name, bulkhead_config=bulkhead, rate_limiter=rate_limiter, record_duration=False
        )
        clock = SYSTEM_CLOCK if manager is None else manager._clock
        self.bulkhead = None if bulkhead is None else Bulkhead(name, bulkhead, clock=clock)
        self.rate_limiter = None if rate_limiter is None else RateLimiter(name, rate_limiter, clock=clock)
        self._pipeline, _ = compose(
            StageInputs(name, self.config, clock, None, self.bulkhead, None, None, self.rate_limiter)
        )
        # A request may wait for its turn: its client may leave meanwhile (see _Waiting).
        self._may_wait = (bulkhead is not None and bulkhead.max_waiting > 0) or (
            rate_limiter is not None and rate_limiter.max_wait > 0
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run an HTTP request under the bulkhead and limiter, or answer its refusal.

        A request whose client disconnects while it waits for its turn gives up its place in
        the queue: the app does not run, the execution counts a cancel, and the answer is a
        :data:`CLIENT_CLOSED_REQUEST` the server drops (:func:`_answer_departed`); one with
        ``Expect: 100-continue`` is not watched (:func:`_expects_continue`).
        """
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        waiting = _Waiting(receive, scope) if self._may_wait else None
        try:
            await self._pipeline.execute(self._run, scope, receive, send, waiting)
        except asyncio.CancelledError:
            if waiting is None or not waiting.gave_up():
                raise
            inner = None  # the client left while the request waited: answered below, for the layers around
        except (BulkheadFullError, RateLimitedError) as error:  # ours: the app's are carried
            if waiting is not None:
                receive = await waiting.stop()
            await error_response(error)(scope, receive, send)
            return
        except _InnerPolicyError as carried:
            inner = carried.error
        else:
            return
        finally:
            if waiting is not None:
                waiting.close()  # a request refused or cancelled: its reader too
        if inner is None:
            await _answer_departed(scope, receive, send)
            return
        try:
            raise inner  # the app's own error, outside the handler: no context added to it
        finally:
            del inner  # its traceback holds this frame

    async def _run(self, scope: Scope, receive: Receive, send: Send, waiting: _Waiting | None) -> None:
        """Run the app; a refusal or timeout it raises is carried, so that it is not counted as ours."""
        if waiting is not None:
            receive = await waiting.stop()  # the app's turn: it reads receive() from here on
        try:
            await self.app(scope, receive, send)
        except (ExecutionRejectedError, OperationTimeoutError) as error:
            raise _carry(error) from None
