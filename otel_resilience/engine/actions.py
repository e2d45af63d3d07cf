"""The actions a step decides, and the tokens that make a driver do something before a run.

What :meth:`~otel_resilience.engine.step.Step.on_success`, ``on_failure`` and ``on_expired``
return (:data:`Action`): ``None``, :class:`Answer`, :class:`Retry` or :class:`Call`; and what
:meth:`~otel_resilience.engine.step.Step.admit` may return in place of a plain token: a
:class:`Wait` (wait, then run), a :class:`~otel_resilience.engine.hedge.Hedge` (a ``Wait``
that runs the rest of the chain as a race of attempts) or a :class:`Counted` (a token whose
success the driver may count itself, with no call of ``on_success``). The drivers in
:mod:`otel_resilience.engine.step` perform them; :mod:`otel_resilience.engine.step` re-exports
every name.
"""

from __future__ import annotations

import functools
import inspect
from types import CoroutineType, FunctionType
from typing import TYPE_CHECKING, Any, ClassVar, Final

from otel_resilience.engine.validation import check_duration, describe, fail
from otel_resilience.errors import ExecutionRejectedError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from otel_resilience.engine.context import ExecutionContext

__all__ = ["Action", "Answer", "Call", "Counted", "Rejected", "Retry", "Wait"]


class Answer:
    """Action: return :attr:`value` in place of the outcome."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Retry:
    """Action: wait :attr:`delay` seconds, call :attr:`hook`, then run the rest of the chain again.

    Attributes:
        delay: Seconds to wait first (on the step's :attr:`~Step.clock`); ``0`` for none. A
            duration (``float``, ``int`` or ``timedelta``), finite and ``>= 0``: anything else
            is refused when the step decides it (``TypeError`` / ``ValueError`` naming
            ``Retry.delay``), never skipped as no wait or failed at every run.
        token: The token the next run is judged with (what ``admit`` would have returned).
        hook: Called with no argument after the wait, before the run (awaited if it returns an
            awaitable in the async driver); what it raises is a failure of that run. ``None``
            for none.
        hook_name: How an error message names the hook (``"recovery 'x': restart_hook"``).
    """

    __slots__ = ("delay", "hook", "hook_name", "token")

    def __init__(
        self, delay: float, token: Any, hook: Callable[[], Any] | None = None, hook_name: str = "hook"
    ) -> None:
        self.delay = check_duration("Retry", "delay", delay, allow_zero=True)
        self.token = token
        self.hook = hook
        self.hook_name = hook_name


class Call:
    """Action: call ``fn(*args, **kwargs)``, then ``then(ctx, state, value, error)``: the next action.

    The async driver awaits what ``fn`` returns when it is awaitable; the sync driver refuses an
    awaitable with ``TypeError`` (handed to ``then`` as the call's error). ``then`` receives the
    call's value and ``None``, or ``None`` and the ``Exception`` it raised; it returns an
    :class:`Answer`, a :class:`Retry` or another :class:`Call`, or raises. It runs inside the
    driver's handling of the failure that led to the call, so what it raises chains that failure
    as its ``__context__``.

    Attributes:
        what: How an error message names ``fn`` (``"fallback 'x': fallback_function"``).
        cancelled: Called as ``cancelled(ctx, state)`` when the call ends in a
            ``BaseException`` that is no ``Exception`` (a cancellation, an interrupt), before
            the step's ``on_cancel``; the exception is re-raised. ``None`` for nothing to do.
    """

    __slots__ = ("args", "cancelled", "fn", "kwargs", "state", "then", "what")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        then: Callable[[ExecutionContext, Any, Any, Exception | None], Action],
        *,
        state: Any = None,
        what: str = "a hook",
        cancelled: Callable[[ExecutionContext, Any], None] | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.then = then
        self.state = state
        self.what = what
        self.cancelled = cancelled


Action = Answer | Retry | Call | None
"""What a step decides after an outcome: ``None`` passes the outcome through."""


class Wait:
    """A token that says "not yet": the driver waits for the real one before running the rest.

    :meth:`Step.admit` returns a subclass instance when the step must wait before admitting (a
    bulkhead's queued call); the async driver awaits :meth:`wait`, the sync driver calls
    :meth:`wait_sync`, each returning the token or raising the rejection. A wait that returns an
    :class:`Answer` ends the execution of the step with its value: the rest of the chain does not
    run and no hook of the step is called (an injected outcome). A plain class (not an ABC), so
    the drivers' ``isinstance`` check stays cheap on every admitted call.
    """

    __slots__ = ()

    admission: ClassVar[bool] = True
    """Whether the wait holds the run back until the step admits it (a bulkhead's queue, a rate
    limiter's permit): an attempt of a hedging race stopped while it waits has run nothing
    (:attr:`~otel_resilience.engine.context.ExecutionContext.queued`). ``False`` for a wait that
    stands for the run itself (chaos's injected latency: the dependency being slow). Read only
    where an attempt of a race waits."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a :meth:`wait_sync` written ``async def``, with ``TypeError`` naming ``Class.wait_sync``.

        The sync driver calls it and never awaits it: its coroutine would be taken for the token
        and the run admitted (a queue or a rejection skipped), the coroutine dropped. Checked once
        per class, wherever it takes the method from (its body, a mixin, a ``staticmethod``).

        The async driver awaits what :meth:`wait` returns: an ``async def wait`` runs as written,
        and one written as a plain ``def`` (which may return an awaitable of its own) is called
        through :func:`_awaitable_wait`, so that one returning no awaitable is refused naming
        ``Class.wait`` rather than failing in the driver's ``await`` with Python's message.
        """
        super().__init_subclass__(**kwargs)
        fn = getattr(cls, "wait_sync", None)
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            rule = "a plain function (def): the sync driver calls it, never awaits it (wait is the async one)"
            raise fail(cls.__name__, "wait_sync", rule, fn, kind=TypeError)
        wait = inspect.getattr_static(cls, "wait")
        if (
            type(wait) is FunctionType
            and wait.__code__ is not _AWAITABLE_WAIT_CODE  # a base's, already called through it
            and not inspect.iscoroutinefunction(wait)
            and not wait.__code__.co_flags & inspect.CO_ITERABLE_COROUTINE  # types.coroutine
        ):
            cls.wait = _awaitable_wait(cls.__name__, wait)  # type: ignore[method-assign, assignment]

    async def wait(self) -> Any:
        """Wait on the running loop; return the token or raise the rejection (a subclass's)."""
        raise TypeError(f"{type(self).__name__} cannot wait on an event loop: it overrides no wait()")

    def wait_sync(self) -> Any:
        """Wait in this thread; return the token or raise the rejection (a subclass's)."""
        raise TypeError(f"{type(self).__name__} cannot wait in a thread: it overrides no wait_sync()")


def _awaitable_wait(owner: str, wait: Callable[[Wait], Any]) -> Callable[[Wait], Any]:
    """Return a :class:`Wait` subclass's plain ``def wait`` refusing what it returns unless awaitable.

    Raises:
        TypeError: (from the returned method) ``wait`` returned no awaitable, naming ``<owner>.wait``.
    """

    @functools.wraps(wait)
    def awaitable_wait(self: Wait) -> Any:
        awaitable = wait(self)
        if type(awaitable) is CoroutineType or inspect.isawaitable(awaitable):
            return awaitable
        msg = (
            f"{owner}.wait must return an awaitable (the async driver awaits it: write it async def), "
            f"got {describe(awaitable)} ({type(awaitable).__name__})"
        )
        raise TypeError(msg)

    return awaitable_wait


_AWAITABLE_WAIT_CODE: Final = _awaitable_wait(Wait.__name__, Wait.wait).__code__
"""The code of each method :func:`_awaitable_wait` returns: a ``wait`` of this code is not wrapped again."""


class Rejected(Wait):
    """A rejection returned by :meth:`Step.admit` in place of raised: waiting for it raises :attr:`error`.

    Raising the rejection in ``admit`` makes it pass the pipeline's handler, which counts the
    execution and re-raises it: a second exception handler, about 1 400 instructions. Returned,
    a call its pipeline admits early (:attr:`Step.admits_early`) is counted and its error raised
    before that handler (about 1 000 instructions less per rejection); anywhere else (a step
    inside another one, a guarded block) the token is a :class:`Wait` whose wait raises the
    error, so a step may return it wherever it may return a ``Wait`` (``admit_waits``).

    Attributes:
        error: The rejection, until it is raised (:meth:`take`): a raised error's traceback
            holds the frames that hold this object, so it keeps no reference to it after.
    """

    __slots__ = ("error",)

    def __init__(self, error: ExecutionRejectedError) -> None:
        if not isinstance(error, ExecutionRejectedError):  # a custom step's, checked at run time
            msg = f"Rejected needs an ExecutionRejectedError (a rejection), got {type(error).__name__}"  # type: ignore[unreachable]
            raise TypeError(msg)
        self.error: ExecutionRejectedError | None = error

    def take(self) -> ExecutionRejectedError:
        """Return the error, dropped from here (raise it: ``raise rejected.take() from None``)."""
        error, self.error = self.error, None
        if error is None:
            msg = "a Rejected token's error was already raised; admit returns a new one per call"
            raise RuntimeError(msg)
        return error

    async def wait(self) -> Any:
        """Raise the rejection."""
        raise self.take() from None

    def wait_sync(self) -> Any:
        """Raise the rejection."""
        raise self.take() from None


class Counted:
    """A token whose run, when it returns, needs nothing but a count while :attr:`count` is set.

    What :meth:`Step.admit` may hand out for a call whose success only bumps a counter (a closed
    breaker with no failure streak). When the run returns and :attr:`count` is set, the drivers
    bump it (``next(count)``) in place of calling :meth:`Step.on_success`: a Python call less on
    every such call. The step may clear :attr:`count` at any time, under its own rules, and set
    it back; the drivers read it when the run returns. Any iterator is a count: an
    ``itertools.count()``, or a :class:`~otel_resilience.engine.counting.Counter`, whose value
    reads exactly from any thread.

    Every other hook gets the ``Counted`` as the token (:attr:`of` is the step's own token for
    the call), and so does ``on_success`` when :attr:`count` is ``None``, or when a caller that
    is not a driver ends the run (a guarded block): a step's ``on_success`` must count such a
    success exactly as the drivers would, so that taking the shortcut never changes an outcome.
    """

    __slots__ = ("count", "of")

    def __init__(self, count: Iterator[object] | None, of: Any) -> None:
        self.count = count
        self.of = of


class _Acted:
    """What :meth:`Step._scoped` returns when :meth:`Step.on_expired` decided an action.

    Or, from :meth:`Step._scoped_sync`, with no action (``None``), a sync run's result that came
    after the step's own deadline (:attr:`late`) with the timeout it is (:attr:`error`), for a
    step that hears of late results (:meth:`Step.on_late`): judged by the driver outside the run.
    """

    __slots__ = ("action", "error", "late")

    def __init__(self, action: Action, error: Exception | None = None, late: object = None) -> None:
        self.action = action
        self.error = error
        self.late = late
