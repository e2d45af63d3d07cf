"""Calling the protected function and user hooks: what each driver accepts, and the signals it raises.

A function that does not fit the driver (a plain function given to the async API, a coroutine
function given to the sync API, an async generator function to either) is a programming error,
signalled by :class:`WrongDriver`; a user hook called by the sync driver that returns an
awaitable is refused with ``TypeError`` (:func:`refuse_awaitable`). For type checkers, a sync API
given a coroutine function returns :data:`SyncCallOfCoroutineFunction`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Coroutine
from types import AsyncGeneratorType, CoroutineType, GeneratorType
from typing import Any, Final, NoReturn, TypeAlias, TypeVar, cast

from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.validation import check_callable, check_called_with, discard, fail

__all__ = [
    "NEVER_RUN",
    "NOT_SYNC",
    "NeverReturns",
    "Replay",
    "SyncCallOfCoroutineFunction",
    "UseTheAsyncVariant",
    "WrongDriver",
    "async_generator_refused",
    "awaitable_in_sync",
    "awaited",
    "check_notified",
    "coroutine_function_in_sync",
    "generator_refused",
    "handled_error",
    "not_awaitable",
    "not_callable",
    "not_on_asyncio",
    "not_sync_result",
    "notify",
    "refuse_awaitable",
    "refused",
]


class UseTheAsyncVariant:
    """Never made: the name type checkers show for what a sync API given a coroutine function returns.

    See :data:`SyncCallOfCoroutineFunction`.
    """


SyncCallOfCoroutineFunction: TypeAlias = "Coroutine[UseTheAsyncVariant, None, SyncCallOfCoroutineFunction]"
"""What a sync API (a ``_sync`` verb, ``retry_sync``, a pipeline's ``execute_sync``) given a coroutine
function returns, for type checkers: the call raises ``TypeError`` (the sync driver cannot await
the function's coroutine), so the overload each of them declares for a coroutine function returns
this instead of the coroutine. A ``Coroutine`` whose awaited value is one again: left unused,
or awaited and left unused, it is an error for mypy (``unused-coroutine``), and so is its use as
a value of the function's result type. A function typed as returning ``NoReturn`` (one that
always raises) matches the overload before it, which keeps its type (:data:`NeverReturns`).
"""

NeverReturns = TypeVar("NeverReturns", bound=NoReturn)
"""The result of a function that never returns, in the first overload of every sync API.

Only ``NoReturn`` and ``Any`` fit the bound: a function typed as returning ``NoReturn`` keeps it
(the code after the call is unreachable), and one typed ``Any`` (``json.loads``) gives ``Any``.
A plain ``Callable[..., NoReturn]`` would be matched by the latter too: pyright takes the first
overload whose parameters accept the arguments, and would type its call ``NoReturn`` (the code
after it unreachable, so unchecked), where mypy gives ``Any``.
"""

_LOG: Final = logging.getLogger("otel_resilience")
_FUTURES: Final = frozenset((asyncio.Future, asyncio.Task))
NEVER_RUN: Final = frozenset((CoroutineType, AsyncGeneratorType, GeneratorType))
"""What a call returns before its body ran, which runs only as it is awaited or iterated: a
notification callback that returns a generator (:func:`notify`, which runs a coroutine) never ran."""
NOT_SYNC: Final = frozenset((*NEVER_RUN, *_FUTURES))
"""What a sync function must not return: the sync driver cannot run it (an async function's
coroutine), or the work ends after the call (an asyncio Future or Task, which only an event loop
completes; a generator's, run only when it is iterated). Exact types: one set lookup per call."""
_PENDING: Final[dict[asyncio.AbstractEventLoop, set[asyncio.Task[Any]]]] = {}
"""Callback tasks still running, by loop (a task is only weakly held by its loop); a loop is here
only while it has some. A loop closed with some pending (``loop.close()`` without cancelling its
tasks) never runs them again: its entry is dropped when a callback task is made on another loop
(:func:`_keep`), so that the closed loop and its tasks are freed."""
_PENDING_LOCK: Final = fork_safe(threading.Lock())


def check_notified(owner: str, field: str, callback: object, argument: str) -> Any:
    """Return ``callback`` if :func:`notify` can run it, called with one argument.

    The rule of every notification callback when it is given (a breaker's ``on_state_change`` and
    ``on_rejection``, an alert system's subscribers): a function or an async function that takes
    one argument. A generator function, sync or async, or an object whose ``__call__`` is one, is
    refused: it returns an iterator nobody consumes, so its body would never run.

    Args:
        owner: The class (or method) name.
        field: The field name.
        callback: The callable given.
        argument: The name of the argument it is called with, for the message.

    Raises:
        TypeError: ``callback`` is not callable, cannot be called as ``<field>(<argument>)``, or is
            a generator function (sync or async) or an object whose ``__call__`` is one.
    """
    from otel_resilience.engine.protecting import makes_iterator  # noqa: PLC0415 - imports this module

    check_called_with(owner, field, check_callable(owner, field, callback), argument)
    if makes_iterator(callback):  # what a call makes: the rule of every decorator's function too
        raise fail(
            owner,
            field,
            "a function or an async function, not a generator function, sync or async (it makes "
            "an iterator nobody consumes: its body would never run)",
            callback,
            kind=TypeError,
        )
    return callback


def notify(
    callback: Callable[[Any], Any], argument: object, what: str, failed: Callable[[], object] | None = None
) -> None:
    """Call a user's notification callback with ``argument``; log what it raises, never raise.

    The one rule of every notification callback (a breaker's ``on_state_change`` and
    ``on_rejection``, an alert system's subscribers). An async callback (one that returns a
    coroutine) runs as a task of the running event loop, or, called from a thread with no running
    loop, to completion in a loop of its own there. One that returns a generator, sync or async,
    fails: nothing iterates it, so its body never runs (a generator function is refused when it is
    given: :func:`check_notified`).

    Args:
        callback: The user's function (sync or async).
        argument: What it is called with.
        what: How a log message names it (``"circuit breaker 'db': state change callback"``).
        failed: Called with no argument each time the callback fails (it raises, its coroutine
            raises, or it returns a generator), after the failure is logged: an alert system
            counts them. ``None``: logged only.
    """
    try:
        pending = callback(argument)
        if not inspect.iscoroutine(pending):
            if type(pending) in NEVER_RUN:  # a generator, sync or async: never driven
                msg = f"returned {pending!r}, whose body never runs: nothing iterates it"
                raise TypeError(msg)  # noqa: TRY301 - logged (and counted) as anything the callback raises
            return
        loop = _get_running_loop()  # None outside a loop: no RuntimeError for the callback's to chain to
        if loop is None:
            _run_alone(_logged(pending, what, failed))
            return
        _keep(loop, loop.create_task(_logged(pending, what, failed)))
    except Exception:  # noqa: BLE001 - a callback must never break the call that notified it
        _LOG.warning("%s raised (ignored)", what, exc_info=True)
        if failed is not None:
            failed()


def _run_alone(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion in an event loop of its own, leaving the thread's current loop as it was.

    As ``asyncio.run`` does (the tasks ``main`` left are cancelled, what one raises other than
    its cancellation reported to the loop's exception handler, async generators and the
    default executor shut down, the loop closed), except that the loop is never made the
    thread's current one: ``asyncio.run`` sets it, and none once it ends, so a thread that keeps
    a loop of its own as its current one (``set_event_loop``, run now and then with
    ``run_until_complete``) lost it to a callback, and ``asyncio.get_event_loop()`` raised there.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            for task in left:  # gathered, not raised: reported, never dropped
                if not task.cancelled() and task.exception() is not None:
                    loop.call_exception_handler(
                        {
                            "message": "unhandled exception of a task an async callback left",
                            "exception": task.exception(),
                            "task": task,
                        }
                    )
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _keep(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Hold ``task``, a callback task of ``loop``, until it ends (:data:`_PENDING`)."""
    with _PENDING_LOCK:
        tasks = _PENDING.get(loop)
        if tasks is None:
            for closed in [other for other in _PENDING if other.is_closed()]:  # their tasks never end
                del _PENDING[closed]
            tasks = _PENDING[loop] = set()
        tasks.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task[Any]) -> None:
    """Let go of a callback task that ended (a done callback, run by its loop)."""
    loop = task.get_loop()
    with _PENDING_LOCK:
        tasks = _PENDING.get(loop)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del _PENDING[loop]


async def _logged(
    pending: Coroutine[Any, Any, Any], what: str, failed: Callable[[], object] | None = None
) -> None:
    """Await an async callback's coroutine; log what it raises (and call ``failed``: :func:`notify`)."""
    try:
        await pending
    except Exception:  # noqa: BLE001 - a callback must never break the call that notified it
        _LOG.warning("%s raised (ignored)", what, exc_info=True)
        if failed is not None:
            failed()


def refuse_awaitable(what: str, value: Any) -> Any:
    """Return ``value``, or close it and raise ``TypeError`` when a sync call returned an awaitable.

    Args:
        what: The function that returned it, as the message names it.
        value: What it returned.

    Raises:
        TypeError: ``value`` is awaitable: the sync driver cannot await it.
    """
    if inspect.isawaitable(value):
        discard(value)
        msg = f"{what} returned an awaitable, which the sync driver cannot await; use the async API"
        raise TypeError(msg)
    return value


def not_callable(owner: str, fn: object) -> TypeError:
    """Return the ``TypeError`` for a ``fn`` that is not callable, given to ``owner`` (its verb).

    The one rule of every API that takes the function to protect. A coroutine given in place of
    its function (``execute(fetch())``) is closed (it would never run) and the message says to
    pass the function.
    """
    rule = "callable"
    if type(fn) is CoroutineType:  # closed by fail
        name = fn.__qualname__.rpartition(".")[2]
        rule += f" (pass {name}, not {name}(): the function, not a coroutine it made)"
    return cast("TypeError", fail(owner, "fn", rule, fn, kind=TypeError))


def not_awaitable(operation: str, value: object) -> WrongDriver:
    """Return the signal for a function given to an async driver that returned ``value``.

    A driver that calls the protected function itself raises it when ``value`` is neither a
    coroutine nor awaitable.
    """
    if type(value) is AsyncGeneratorType:
        return async_generator_refused(repr(operation))
    if type(value) is GeneratorType:  # refused by the sync API too: not sent there
        value.close()
        return generator_refused(repr(operation))
    msg = (
        f"{operation!r}: fn must return an awaitable for the async API, got "
        f"{type(value).__name__}; use the *_sync variant for plain functions"
    )
    return WrongDriver(msg)


def not_sync_result(operation: str, result: object) -> WrongDriver:
    """Return the signal for a sync driver's function that returned a coroutine, a future or a generator.

    A sync driver that calls the protected function itself raises it when ``type(result)`` is in
    :data:`NOT_SYNC`: a coroutine (closed here), an asyncio Future or Task (left to its loop: it
    may be running already) or a generator (closed too), sync or async, is no result: its work
    runs later, and passing it on would count a call that never ran as a success.
    """
    if type(result) is AsyncGeneratorType:
        return async_generator_refused(repr(operation))
    if type(result) is GeneratorType:
        result.close()
        return generator_refused(repr(operation))
    if type(result) in _FUTURES:
        msg = (
            f"{operation!r}: fn returned an asyncio {type(result).__name__}, which the sync API cannot "
            "await: its work ends after the call, so no call can be protected; protect an async "
            "function that awaits it (the async variant, without _sync, or a decorated async def)"
        )
        return WrongDriver(msg)
    return awaitable_in_sync(operation, cast("CoroutineType[Any, Any, Any]", result))


def async_generator_refused(where: str) -> WrongDriver:
    """Return the signal for an async generator function, which neither driver can protect.

    Args:
        where: What refuses it, shown first in the message (a quoted operation name).
    """
    return generator_refused(where, asynchronous=True)


def generator_refused(where: str, *, asynchronous: bool = False) -> WrongDriver:
    """Return the signal for a generator function (``asynchronous``: async), which no driver protects.

    Its body runs as it is iterated, after the call has returned: a retry, breaker or bulkhead
    around the call would protect nothing, and count a success for work not done yet.

    Args:
        where: What refuses it, shown first in the message (a quoted operation name).
        asynchronous: Whether it is an async generator function.
    """
    kind, consumer = (
        ("an async generator function", "a coroutine function that consumes it")
        if asynchronous
        else ("a generator function", "a function that consumes it (list(...) or a loop inside)")
    )
    msg = (
        f"{where}: fn is {kind}, which returns an iterator, not a result, so no call can be "
        f"protected; protect {consumer}"
    )
    return WrongDriver(msg)


def awaitable_in_sync(operation: str, coroutine: CoroutineType[Any, Any, Any]) -> WrongDriver:
    """Close ``coroutine`` (returned to a sync driver) and return the signal to raise.

    The function is a coroutine function given to a sync API, or a plain function that returns a
    coroutine (another decorator's plain wrapper of an async def, which a decorator takes for a
    plain function): the message names both, with the fix of each.
    """
    discard(coroutine)
    msg = (
        f"{operation!r}: fn returned a coroutine, which the sync API cannot await: fn is a "
        "coroutine function (use the async variant, without _sync, and await it), or a plain "
        "function that returns one (a decorator picks the async one for an async def, or an "
        "object whose __call__ is one: make the function that returns the coroutine an async "
        "def that awaits it)"
    )
    return WrongDriver(msg)


def coroutine_function_in_sync(operation: str) -> WrongDriver:
    """Return the signal for a coroutine function given to the sync API, refused before it runs."""
    msg = (
        f"{operation!r}: fn is a coroutine function, which the sync API "
        "cannot await; use the async variant (without _sync) and await it (a decorator picks the "
        "async one for an async def, or an object whose __call__ is one)"
    )
    return WrongDriver(msg)


class WrongDriver(BaseException):
    """Signal: the protected function does not fit the driver.

    Raised for a plain function given to the async API, or a coroutine function given to the
    sync API. It is a ``BaseException`` on purpose: a programming error is not an outcome of the
    dependency, so no step may hold it against the dependency, retry, recover or answer it (the
    drivers hand only ``Exception`` to the rules, and ``on_cancel`` gives permits and slots back
    on anything else). Nor is it a cancellation: a step's ``on_cancel`` tells it apart
    (:func:`refused`) where it counts one (a breaker ignores the call, a retry counts an error it
    does not retry, a recovery a failed re-run), and a hedging race counts the attempt and the
    execution failed, starting no hedge after it. The pipeline turns it into the ``TypeError``
    the caller gets.
    """

    def as_type_error(self) -> TypeError:
        """Return the ``TypeError`` to raise in place of this signal."""
        return TypeError(*self.args)


_get_running_loop: Final = asyncio._get_running_loop  # in asyncio.events.__all__: None outside a loop

_NOT_ON_ASYNCIO: Final = (
    "otel_resilience's async API runs on an asyncio event loop (asyncio's own, uvloop, or anyio's "
    "asyncio backend, which FastAPI and Starlette use), and none runs in this thread: trio and "
    "other event loops are not supported; from code with no asyncio event loop, call the _sync "
    "variant (in a worker thread of that loop)"
)


def not_on_asyncio(error: BaseException | None = None) -> RuntimeError | None:
    """The error an async call or scope ends with where no asyncio event loop runs in its thread.

    The async API waits, sleeps and cancels with asyncio's loop (a backoff, a bulkhead's queue, a
    rate limiter's permit, a deadline, a hedging race): under another event loop (trio, curio),
    or a coroutine driven by hand, asyncio's own ``RuntimeError("no running event loop")`` would
    reach the caller from deep inside, naming nothing the library supports. Asked only where an
    async execution, guard or scope already failed: ``error`` (``None``: the scope found no
    loop) is that failure; a ``RuntimeError`` raised while no asyncio loop runs gives the error
    to raise from it, anything else ``None`` (it goes through unchanged: a cancellation of the
    other loop, an error of the function's own, this error raised already by a scope inside).
    """
    if error is not None and (not isinstance(error, RuntimeError) or error.args == (_NOT_ON_ASYNCIO,)):
        return None
    return None if _get_running_loop() is not None else RuntimeError(_NOT_ON_ASYNCIO)


if sys.version_info >= (3, 11):
    handled_error: Final[Callable[[], BaseException]] = sys.exception  # type: ignore[assignment]
    """The exception being handled, for an ``except`` clause without ``as`` that re-raises it.

    ``except E as error:`` wraps its body in a clean-up handler (``del error``) that an error
    re-raised from the body passes as a second exception: about 450 instructions more per
    re-raised failure than reading it here (docs/benchmarks.md, Round 5). A handler that
    usually ends without re-raising (a driver deciding a retry) keeps ``as``: there the
    clean-up is four bytecodes and this call costs more.
    """
else:  # pragma: no cover - Python 3.10 has no sys.exception()

    def handled_error() -> BaseException:
        """The exception being handled (``sys.exc_info()[1]``)."""
        return sys.exc_info()[1]  # type: ignore[return-value]


def refused() -> WrongDriver | None:
    """The :class:`WrongDriver` signal being handled, or ``None`` when the exception being handled is another.

    The one test that tells a function the driver refused from a cancellation or an interrupt,
    for a step's ``on_cancel`` and a hedging race (called in an ``except`` clause, or in code it
    calls, while the exception is being handled). Not on a call's common path: only a run that
    ended in a ``BaseException`` asks.
    """
    signal = handled_error()
    return signal if type(signal) is WrongDriver else None


class Replay:
    """A call already made, handed to a driver in place of its first call of the function.

    A pipeline that makes its lone step's call itself (see
    :class:`~otel_resilience.engine.pipeline.Pipeline`) gives the step's driver the outcome to
    judge as the context's function: called once, it puts the real function back in the context,
    then returns what the call returned or raises what it raised. Every rule that follows is the
    driver's and the step's, as for a call the driver made; a further attempt calls the real
    function.

    Attributes:
        ctx: The context it stands in (its ``fn`` until called).
        fn: The protected function.
        value: What the call returned (for an async driver, what it awaits).
        error: What the call raised, or ``None``; dropped once raised (its traceback holds the
            frames that hold this object).
    """

    __slots__ = ("ctx", "error", "fn", "value")

    def __init__(self, fn: Callable[..., Any], value: Any, error: BaseException | None) -> None:
        self.fn = fn
        self.value = value
        self.error = error
        self.ctx: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ARG002 - the call was made
        """Put the real function back in the context; return the call's value or raise its error."""
        self.ctx.fn = self.fn
        error, self.error = self.error, None
        if error is None:
            return self.value
        try:
            raise error
        finally:
            del error


async def awaited(value: Any) -> Any:
    """Return ``value`` when awaited: an async call's result, handed to a driver that awaits it."""
    return value
