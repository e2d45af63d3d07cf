"""Deadlines: the scopes that publish and enforce them, and what reads them.

Deadlines are absolute times on the pattern's :class:`~otel_resilience.engine.clock.Clock`
(``time.monotonic`` by default), kept in a :class:`contextvars.ContextVar` as a cell: a
three-item list, ``[deadline, owner, clock]``, the clock the deadline was computed on, on which
:func:`time_left` reads what is left of it (an HTTP client's timeout). A nested scope stores
``min(outer, inner)``, as trio's ``current_effective_deadline()`` does, so an outer deadline
bounds every inner one. Only the scope whose own deadline is the tightest is armed, however many
layers, as an entry of its loop's one shared timer (:mod:`otel_resilience.engine.timer`): a call
that ends in time leaves no cancelled timer behind on the loop. A looser scope is armed as well
when its task holds a cancellation it caught (``Task.cancelling()``): the tighter scope may have
fired already, its cancellation swallowed, and nothing else would end the block; and when the
tighter deadline is a :class:`SyncDeadline`'s held across an ``await``, which cancels nothing
(:class:`_Unenforced`). Otherwise it is
*held*: listed for its task, and armed, at its own deadline, as soon as a scope of that task
fires, for the block may catch that scope's cancellation too (:func:`_arm_held`). Its deadline
is enforced as ``asyncio.timeout``'s would be; only a scope that ends in time pays for the list.

**Two clocks.** Times of two clocks (a test's fake clock, the system's) are never compared or
subtracted: a scope under a deadline of its owner computed on another clock compares its timeout
with the seconds left of that deadline, and, when its own comes first, publishes it on the clock
of the deadline in force (``now + timeout`` there), so that a cell's deadline is always on the
cell's clock and a sync scope puts back only the deadline it replaced. What is left is read on
the cell's clock (:func:`time_left`): seconds, the same on every clock.

An async scope raises :class:`~otel_resilience.errors.OperationTimeoutError` only when *its own*
deadline expired; any other cancellation propagates untouched.

Sync code cannot be pre-empted: a sync scope checks the deadline when the call returns (a late
result is a timeout) and publishes it through :func:`current_deadline`, so that the callee can
pass what is left on as a socket timeout. A sync wait of the engine's own that the deadline cuts
short (:func:`sleep_sync_within_deadline`) raises :class:`DeadlineReachedError`, which the scope
that owns the deadline turns into its own timeout, as an async scope turns the cancellation it
caused. An error of the callee's own raised at or after the deadline (that socket's timeout)
goes through, and a step's scope that owns the deadline counts it expired
(:func:`deadline_ignored`), as an async scope whose block raised one in place of its cancellation.

**A deadline belongs to the task that set it** (outside any task: to the thread), as with
``asyncio.timeout``. The context variable holds the deadline together with its owner, and every
reader (:func:`current_deadline`, :func:`time_left`, the scopes themselves) ignores a
deadline owned by someone else. ``asyncio.create_task`` and ``asyncio.to_thread`` copy the
context into the new task or thread, but nothing would ever cancel it at that deadline: a task or
thread started inside a scope has no deadline of ours until it opens its own. A child that is
awaited (``gather``, ``TaskGroup``) is still bounded, through the cancellation of its parent. A
process forked inside a scope (a ``fork`` pool's worker) has none either: in the child, the
forking thread is a new owner.

**How a scope publishes its deadline.** An async scope sets a cell of its own and resets the
variable when it ends, leaving that cell nobody's: a copy of the context taken in its block
carries no deadline of it once it ended. A step's sync scope narrows its owner's cell in place
and puts the previous deadline back when it ends (it begins and ends in one call, so the scopes
of one owner end in the reverse order they began); where the context holds no cell of its owner
yet, the first sync scope sets one and leaves it there, deadline-free once it ends, for the next:
a thread's calls through a timeout set and reset no context variable (about a fifth of what a
sync scope cost). A :class:`SyncDeadline` object, which a generator can leave inside scopes
entered since, sets a narrowed cell of its own instead and puts back the cell it replaced, so
that the later scopes, putting back what they replaced as they leave, write to a cell no longer
in force (:meth:`SyncDeadline.__exit__`); a scope bound by its deadline then ends at its own
(:func:`_still_binds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import threading
import types
import weakref
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Final, cast

from otel_resilience.engine.calling import not_on_asyncio
from otel_resilience.engine.clock import check_clock
from otel_resilience.engine.timer import TimerEntry, loop_timer
from otel_resilience.engine.validation import check_duration, check_name
from otel_resilience.errors import ExecutionRejectedError, OperationTimeoutError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta
    from types import TracebackType

    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.timer import LoopTimer

__all__ = [
    "AsyncDeadline",
    "DeadlineIgnored",
    "DeadlineReachedError",
    "StepDeadline",
    "SyncDeadline",
    "WaitDeadlineReachedError",
    "cancel_alone",
    "cancelled_alone",
    "current_deadline",
    "deadline_ignored",
    "deadline_reached",
    "ended_by_deadline",
    "enforce_binding_deadline",
    "passes_to_its_scope",
    "publish_deadline",
    "scope_arguments",
    "sleep_sync_within_deadline",
    "time_left",
    "time_remaining",
    "wait_sync_within_deadline",
    "withdraw_deadline",
]

_NO_DEADLINE: Final = math.inf
_NO_OWNER: Final[object] = object()
"""The owner of "no deadline": never the current task or thread."""


_Cell = list[Any]
"""A cell: ``[deadline, owner, clock]``, an effective deadline, the task (or, outside any task, the
thread) that set it and the clock it is on: that of the owner's scope that set the first deadline
in force (a tighter scope on another clock publishes its deadline converted onto it, through the
seconds it has left: two clocks' times cannot be compared). A list, made in one instruction
where a class of two slots runs its ``__init__`` as a Python frame on every async scope.

A task is held by a weak reference (one per task: ``weakref.ref`` hands back the live one), so a
context copied before the task ended (a cancelled timer handle of the loop keeps one until its
time comes) does not keep the finished task, its exception and their frames alive. Only the
owner's own sync scopes change the deadline in place (:func:`publish_deadline`): whoever else
sees the cell, through a copied context, ignores it.
"""

_NOBODYS: Final[_Cell] = [_NO_DEADLINE, _NO_OWNER, None]
"""The cell of no deadline: nobody's, never changed (the context variable's default)."""

_DEADLINE: ContextVar[_Cell] = ContextVar("otel_resilience_deadline", default=_NOBODYS)
"""The effective deadline of the context's owner."""

_get_running_loop = asyncio._get_running_loop  # in asyncio.events.__all__: None outside a loop


def _task_finder() -> Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]:
    """Return the cheapest ``current_task(loop)``: asyncio's own, or its table's ``get`` (C).

    Up to Python 3.11 ``asyncio.current_task`` is Python code whose whole work, given the loop,
    is ``_current_tasks.get(loop)`` on asyncio's table of running tasks: a frame per look-up,
    two per deadline scope entered. The table's own ``get`` gives the same answer without one.
    Where ``current_task`` is C already (3.12 on), asyncio's function is used: from 3.14 its C
    code keeps the running task elsewhere, and the module's table, still a ``dict``, stays
    empty. Given ``None`` (no asyncio loop runs: trio), the table's ``get`` answers ``None`` and
    asyncio's function raises its bare ``RuntimeError``: a scope entered there says what the
    async API runs on either way (:meth:`AsyncDeadline.enter` of the first, ``async with`` or the
    pipeline's async driver of the second).
    """
    finder = asyncio.current_task
    table = getattr(asyncio.tasks, "_current_tasks", None)
    if isinstance(finder, types.FunctionType) and type(table) is dict:
        return table.get
    return finder


_current_task: Final = _task_finder()
"""``_current_task(loop)``: the task running on ``loop``, or ``None`` (:func:`_task_finder`)."""
_ref: Final = weakref.ref
_cancelling: Final[Callable[[asyncio.Task[Any]], int]] = getattr(asyncio.Task, "cancelling", lambda _task: 0)
"""``_cancelling(task)``: the task's pending cancellation requests (``Task.cancelling``, 3.11 on; else 0)."""


class _Unenforced(float):
    """A deadline in force that no scope of its task cancels at: a :class:`SyncDeadline`'s, in a task.

    A sync scope only checks its deadline when its block ends; a :class:`SyncDeadline` object
    held across an ``await`` publishes it in its task's cell all the same. An async scope no
    earlier than such a deadline cannot be held under it (no cancellation will come at it): it is
    armed, and keeps the deadline in force, marked so, for the scopes entered inside it
    (:meth:`AsyncDeadline.enter`). A ``float`` for every reader and every comparison.
    """

    __slots__ = ()


class _CancelMessage(str):  # noqa: SLOT000 - a str's subclass cannot have slots of its own
    """Python 3.10: the message a scope cancels its task with, compared by identity.

    It remembers the task's message it replaced (:attr:`before`), put back when the scope leaves,
    as ``Task.uncancel`` takes a request back on 3.11: while the task holds one of these, one of
    our scopes cancelled it and has not left (:func:`_holds_a_cancellation`).
    """

    before: object


def _ours_pending(task: asyncio.Task[Any]) -> int:  # pragma: no cover - Python 3.10
    """Python 3.10: 1 when a scope of ours cancelled ``task`` and has not left, else 0."""
    return int(type(getattr(task, "_cancel_message", None)) is _CancelMessage)


_holds_a_cancellation: Final = _cancelling if sys.version_info >= (3, 11) else _ours_pending
"""``_holds_a_cancellation(task)``: whether the task holds a cancellation it may have caught.

``Task.cancelling()`` from Python 3.11 (every request not taken back, as ``asyncio.timeout``
counts them); on 3.10, which counts none, whether a scope of ours cancelled the task and has not
left (:func:`_ours_pending`). A scope no earlier than the deadline in force is armed then: the
scope of that deadline may have fired already, its cancellation caught, and nothing else would
end the block.
"""


def _handling(task: asyncio.Task[Any]) -> tuple[int, object]:  # pragma: no cover - Python 3.10
    """Python 3.10: what a scope keeps where it is entered, to tell its cancellation from others.

    The ``id`` of the exception being handled (``id(None)``), and the request of a scope of ours
    the task holds (its message, :func:`_ours_pending`), if any. Its ``id``, not the exception:
    a scope kept after its block (``fail_after``'s) does not keep it, its traceback and their
    frames alive. It is still being handled, so alive, whenever the scope compares it (on the
    way out of its block).
    """
    message = getattr(task, "_cancel_message", None)
    return id(sys.exc_info()[1]), message if type(message) is _CancelMessage else None


_before_entry: Final[Callable[[asyncio.Task[Any]], Any]] = (
    _cancelling if sys.version_info >= (3, 11) else _handling
)
"""``_before_entry(task)``: what an armed scope keeps to tell its cancellation from earlier ones.

From Python 3.11 the task's pending requests (``Task.cancelling()``), as ``asyncio.timeout``
keeps them; on 3.10, which counts none, the exception being handled where the scope is entered
and the request of one of our scopes pending then (:func:`_handling`): a ``CancelledError``
raised in the block after it, that the block was still handling when the scope's own came, is a
cancellation that came first, and so is a request of another scope of ours pending when the
scope's own came but not when it was entered (:func:`_cancelled_only_by`).
"""


class _Thread(threading.local):
    """Per thread: the token that stands for the thread as a deadline's owner.

    A token object rather than the thread's ident, which the system reuses once a thread ended.
    ``forked_from``: in a forked child, the token the forking thread had in its parent
    (:func:`_new_owner_in_child`), else nobody's.
    """

    def __init__(self) -> None:
        self.owner = object()
        self.forked_from: object = _NO_OWNER


_THREAD: Final = _Thread()


def _new_owner_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: the forking thread is a new owner in the child.

    A process forked during a call (a ``fork`` pool's worker started by a request, a worker of a
    pre-fork server) is no part of that call, and nothing in it ever ends at the call's deadline:
    the deadlines the forking thread held there are nobody's in the child, as those of a thread
    started inside a scope are.
    """
    _THREAD.forked_from = _THREAD.owner
    _THREAD.owner = object()


if hasattr(os, "register_at_fork"):  # POSIX: no fork elsewhere
    os.register_at_fork(after_in_child=_new_owner_in_child)


def _owner() -> object:
    """Return who a deadline set here belongs to: the running task, else the current thread."""
    loop = _get_running_loop()
    if loop is not None:
        task = _current_task(loop)
        if task is not None:
            return _ref(task)
    return _THREAD.owner


def _own_cell() -> _Cell:
    """Return the deadline cell of the current task or thread (:data:`_NOBODYS` when there is none).

    Every reader goes through here (the two scopes apply the same test to the owner they already
    hold): a deadline set by another task or thread, inherited through a copied context, does not
    apply.
    """
    cell = _DEADLINE.get()
    owner = cell[1]
    if owner is _NO_OWNER or owner is not _owner():  # no deadline at all: no owner to look up
        return _NOBODYS
    return cell


def current_deadline() -> float | None:
    """Return the effective absolute deadline of the current call, on its scope's clock.

    The clock is the one the scope that set the deadline runs on: ``time.monotonic`` for the
    default clock; :func:`time_left` reads what is left of it on that clock. A tighter scope on
    another clock than the enclosing ones' sets its deadline on theirs, through the seconds it
    has left (times of two clocks cannot be compared).

    A deadline binds the task (outside any task: the thread) whose scope set it. A task or thread
    started inside a scope does not inherit it: until it opens a scope of its own it has none.

    Returns:
        The earliest deadline of every enclosing timeout scope of the current task or thread, or
        ``None`` when there is none. A callee can pass :func:`time_left` on as a socket timeout.
    """
    deadline: float = _own_cell()[0]
    return None if deadline == _NO_DEADLINE else deadline


def time_left() -> float:
    """Return the seconds left before the effective deadline, on the clock it was computed on.

    The deadline is the one :func:`current_deadline` returns: that of the current task or thread
    (``inf`` when there is none). What a caller outside the engine's steps, with no clock of the
    deadline's own (an HTTP client's timeout), passes on: a deadline set on a test's fake clock
    is read on that clock, never on the system's. Seconds left are the same on every clock: the
    engine's steps read them here too, whatever clock they run on. Once the deadline has passed
    it is negative (by how much it was missed), which ``socket.settimeout`` refuses: check that
    it is above zero before passing it on.
    """
    deadline, _, clock = _own_cell()
    if deadline == _NO_DEADLINE:
        return _NO_DEADLINE
    return deadline - clock.now()  # type: ignore[no-any-return] # the clock of that cell


def time_remaining(clock: Clock) -> float:  # noqa: ARG001 - kept for its callers: seconds are the same on every clock
    """Return the seconds left before the effective deadline (``inf`` when there is none).

    The deadline is the one :func:`current_deadline` returns: that of the current task or thread.
    What is left is read on the clock the deadline was computed on (:func:`time_left`), never
    on ``clock``: a deadline of another clock (a policy on a test's fake clock inside one on the
    system's) is no time of ``clock``, its seconds left are the same on both.
    """
    return time_left()


class DeadlineReachedError(OperationTimeoutError):
    """Raised in a thread when the effective deadline of an enclosing scope was reached.

    By a wait that the deadline cut short (a thread cannot be cancelled), and by a sync scope
    whose block returned at or after a deadline that binds it but is not its own (an earlier
    one of an enclosing scope: :func:`enforce_binding_deadline`). The scope that owns that
    deadline turns it into its own :class:`OperationTimeoutError` (its limit, its scope) and
    counts as expired: a :class:`SyncDeadline` exactly as when the block returned after the
    deadline, an :class:`AsyncDeadline` as when its timer cancelled the block (sync code run in
    a task blocks the loop, so the timer could not fire). The steps between see it as a
    failure, as they would see the timeout of a callee that honoured :func:`current_deadline`.
    Raised by hand before any deadline passed, it stays what it is: an
    :class:`OperationTimeoutError` for the seconds waited.
    """

    __slots__ = ()


class WaitDeadlineReachedError(DeadlineReachedError, ExecutionRejectedError):
    """Raised in a thread whose engine wait (a bulkhead queue, a retry backoff) the deadline ended.

    The call never reached the dependency (again): the steps between the wait and the scope that
    owns the deadline see a rejection (a breaker ignores it, retry and recovery do not act on
    it), as they see nothing of the cancellation that ends an async wait, and that scope turns it
    into its own :class:`OperationTimeoutError`, as it does every :class:`DeadlineReachedError`.
    """

    __slots__ = ()


def passes_to_its_scope(error: Exception) -> bool:
    """Whether ``error`` is an enclosing scope's deadline, reached: no step before that scope answers it.

    A :class:`DeadlineReachedError` raised once the effective deadline passed (a sync wait the
    deadline cut, a block that returned past it) belongs to the scope that owns that deadline,
    which turns it into its own timeout. A step between the two that answers failures (a
    fallback, a recovery rule) lets it pass, as it lets pass the cancellation that ends an async
    execution at its deadline: the deadline's owner, and what encloses it, answer its timeout.
    Raised before any deadline passed (by hand), it is a failure like any other.
    """
    return isinstance(error, DeadlineReachedError) and time_left() <= 0.0


def ended_by_deadline(error: BaseException) -> bool:
    """Whether the effective deadline ended a run that ended in ``error``: both drivers' rule.

    In a task, an enclosing scope's timer cancels the run (a ``CancelledError``); in a thread,
    that scope's :class:`DeadlineReachedError` ends it (a wait the deadline cut, a block that
    returned past it: :func:`passes_to_its_scope`). Either once the deadline passed: any other
    cancellation (the caller's, a coroutine being closed) or error is not the deadline's.
    """
    return isinstance(error, (asyncio.CancelledError, DeadlineReachedError)) and time_left() <= 0.0


def sleep_sync_within_deadline(clock: Clock, seconds: float, operation: str) -> None:
    """Block this thread for ``seconds`` on ``clock``, or until the effective deadline if sooner.

    Args:
        clock: The clock to sleep on and read the deadline with.
        seconds: How long to sleep.
        operation: The operation's name, for :class:`DeadlineReachedError`.

    Raises:
        DeadlineReachedError: The deadline came first: the sleep lasted until it, not ``seconds``.
    """
    reached = wait_sync_within_deadline(clock, seconds, operation, DeadlineReachedError)
    if reached is not None:
        raise reached


def wait_sync_within_deadline(
    clock: Clock, seconds: float, operation: str, kind: type[DeadlineReachedError] = WaitDeadlineReachedError
) -> DeadlineReachedError | None:
    """Block this thread for ``seconds`` on ``clock``, or until the effective deadline if sooner.

    The rule of every sync sleep of the engine's that a deadline bounds. A wait that would end
    at the deadline reaches it, as every scope reads a deadline (reached at ``now >= deadline``,
    where the async scope's timer fires): it is cut there, so that nothing runs after it at the
    deadline (the dependency after an injected delay).

    Returns:
        ``None`` after ``seconds``; the error of ``kind`` to raise (:func:`deadline_reached`)
        when the deadline came first or at the same time (the wait lasted until it).
    """
    remaining = time_left()
    if remaining > seconds:
        clock.sleep_sync(seconds)
        return None
    return deadline_reached(clock, clock.now() + max(remaining, 0.0), max(remaining, 0.0), operation, kind)


def deadline_reached(
    clock: Clock,
    end: float,
    waited: float,
    operation: str,
    kind: type[DeadlineReachedError] = DeadlineReachedError,
) -> DeadlineReachedError:
    """End a sync wait that the effective deadline cut short: block until ``end``, return its error.

    The one rule for every engine wait in a thread that stops at a deadline (a sleep, a queue's
    wait): it lasts until the deadline on ``clock`` (a clock, or a lock's timeout, may wake a
    little early: never before ``end``), and on the clock of the deadline in force when that is
    another one (a test's fake clock around a pattern on the system's: its scope reads the
    deadline there), and then is a :class:`DeadlineReachedError`, which the scope that owns the
    deadline turns into its own timeout.

    Args:
        clock: The clock the wait is on.
        end: The deadline, on ``clock``.
        waited: The seconds the wait lasted, for the error.
        operation: The operation's name, for the error.
        kind: The error's class: :class:`WaitDeadlineReachedError` for a wait in a queue.

    Returns:
        The error to raise.
    """
    while (left := end - clock.now()) > 0:
        clock.sleep_sync(left)
    deadline, _, own = _own_cell()
    if own is not clock and deadline != _NO_DEADLINE:
        # The deadline is on another clock than the wait's (a test's fake clock around a pattern
        # on the system's): reached there too, where its scope reads it, so that the scope takes
        # the error for its own timeout, as in a task.
        while (left := deadline - own.now()) > 0:
            own.sleep_sync(left)
    return kind(operation, waited, "total")


def _left_elsewhere(scope: object, operation: str) -> RuntimeError:
    """Build the error for a deadline scope left by another task or thread than the one that entered it.

    Both scopes' rule: a deadline binds its owner (:func:`_owner`), the task (outside any task,
    the thread) that entered the scope, and only that owner leaves it. An async scope tells it by
    its context or its task, a :class:`SyncDeadline` object by its owner, looked up on leaving.
    A step's sync scope is no object: it begins and ends in one frame, never elsewhere.
    """
    return RuntimeError(
        f"{type(scope).__name__} {operation!r} was left by another task or thread than the one that "
        "entered it (or in another context): a deadline scope is left by the task or thread that entered it"
    )


def _closed_elsewhere(exc_type: type[BaseException] | None, task: asyncio.Task[Any] | None) -> bool:
    """Whether an async scope left outside its task is closed with its coroutine, not misplaced.

    Both async exits' rule (:meth:`AsyncDeadline.leave`, :meth:`AsyncDeadline._leave_held`). An
    async generator left unfinished is closed by its loop in a task of its own: ``GeneratorExit``
    thrown into it, or, when the loop shuts down and cancels that task before it ran, a
    ``CancelledError`` once the task that entered the scope ended (nothing can leave it in that
    task any more). Neither is an exit by another task than the one that entered the scope.
    """
    return exc_type is GeneratorExit or (exc_type is asyncio.CancelledError and (task is None or task.done()))


def _own_error(exc_type: type[BaseException]) -> bool:
    """Whether a block cut by its scope's deadline raised an error of its own in place of the cancellation.

    An ``Exception`` other than a timeout (which the scope's owner judges as its expiry): the
    block caught the ``CancelledError`` and raised, say, its client's error. That error goes
    through, as with ``asyncio.timeout``; the deadline still expired, as for a block that returned.
    Both drivers' rule: a sync block that raises such an error at or after its scope's own
    deadline (its socket's timeout, set to :func:`time_left`) ignored it alike
    (:func:`deadline_ignored`).
    """
    return issubclass(exc_type, Exception) and not issubclass(exc_type, OperationTimeoutError)


def deadline_ignored(clock: Clock, deadline: float, exc_type: type[BaseException]) -> bool:
    """Whether a sync block raised an error of its own (``exc_type``) at or after its own ``deadline``.

    The sync twin of an async block that caught its scope's cancellation and raised an error of
    its own in its place (:func:`_own_error`, the rule of both): its error goes through
    unchanged, and the deadline expired, for the step that owns it to count and report
    (:meth:`~otel_resilience.engine.step.Step.on_expired_ignored`). Asked by the sync driver on
    the failure path of a scope whose deadline is the effective one (the rule of
    :func:`withdraw_deadline` for the rest), never when the block returned.
    """
    return _own_error(exc_type) and clock.now() >= deadline


def scope_arguments(
    owner: str, clock: object, timeout: object, operation: object, field: str = "timeout"
) -> tuple[Clock, float, str]:
    """Return a deadline scope's clock, duration and operation, checked: the rule of every scope made.

    The duration is seconds or a ``timedelta``, ``>= 0`` (a zero one is due at once) and at most
    ``MAX_DURATION``: a NaN one would never be reached (and, in an async scope, would break the
    order of its loop's shared timer, on which every other scope of that loop waits). Checked
    when the scope is made, by its class (:class:`AsyncDeadline`, :class:`SyncDeadline`) or by
    what makes one for its caller (``fail_after``: its ``seconds``); a step's scope, made on
    every run, is given its step's checked timeout (:meth:`AsyncDeadline.start`).

    Raises:
        TypeError: ``clock`` is no clock, ``timeout`` no duration or ``operation`` no ``str``
            (the message names ``<owner>.<field>``).
        ValueError: ``timeout`` is negative, not finite or too long, or ``operation`` empty.
    """
    seconds = check_duration(owner, field, timeout, allow_zero=True)
    name = check_name(owner, "operation", operation)
    return check_clock(owner, clock), seconds, name


def _entered_twice(scope: object, operation: str) -> RuntimeError:
    """Build the error for a deadline scope entered a second time (scopes are single-use)."""
    return RuntimeError(
        f"{type(scope).__name__} {operation!r} has already been entered: a deadline scope is "
        "single-use, make a new one for each block"
    )


class DeadlineIgnored(Exception):  # noqa: N818 - a signal of the engine's, never an error a caller sees
    """Raised by :meth:`StepDeadline.leave` when its deadline fired and the block did not end by it.

    The block caught the scope's cancellation and returned, or raised an error of its own in its
    place: what it returned or raised goes through, as with ``asyncio.timeout``, but the deadline
    did expire. A step's driver (:meth:`~otel_resilience.engine.step.Step._scoped`) catches it to
    count and report the expiry (:meth:`~otel_resilience.engine.step.Step.on_expired_ignored`),
    then returns the block's result or raises its error. Raised on that rare path only: a block
    that ends in time pays nothing.
    """


class AsyncDeadline(TimerEntry):
    """An async context manager that cancels the task at an absolute deadline.

    ``async with AsyncDeadline(clock, timeout, operation, scope):`` sets the effective deadline to
    ``min(outer, now + timeout)``. If this scope's deadline is the tightest it is armed on its
    loop's shared timer (a looser one is held, and armed once a scope of its task fires); when
    it is due the task is cancelled and, on the way out, the cancellation is turned into
    :class:`OperationTimeoutError`. A cancellation that came from
    elsewhere (an outer scope, ``task.cancel()``) propagates as ``CancelledError``. A block that
    ends in time leaves nothing behind on the loop, however many calls run between two loop
    iterations.

    A scope is single-use, like ``asyncio.timeout``: entering it a second time raises
    ``RuntimeError``. Its deadline binds the task that entered it, not tasks spawned inside it.

    Attributes:
        expired: Whether this scope's own deadline fired.
    """

    __slots__ = (
        "_cancel_message",
        "_cancelling",
        "_cell",
        "_clock",
        "_deadline",
        "_entered",
        "_held_by",
        "_operation",
        "_published",
        "_scope",
        "_task",
        "_timeout",
        "_timer",
        "_token",
        "_waiting",
        "expired",
    )

    _held_by: LoopTimer
    """Held (:meth:`enter`): the timer of its loop, whose held scopes it is among until armed."""
    _waiting: list[TimerEntry] | None
    """Held: its task's held scopes, which it is in (and stays in once armed, until it leaves);
    ``None`` once armed (:func:`_arm_held`) or left."""
    _published: tuple[_Cell, float, Clock | None] | None
    """Held, then published once the scope it was held under ended first (:func:`_publish_held`):
    the cell it narrowed, and the deadline and clock to put back in it as it leaves. Unset otherwise."""

    def __init__(
        self, clock: Clock, timeout: float | timedelta, operation: str, scope: str = "total"
    ) -> None:
        owner = type(self).__name__
        checked = scope_arguments(owner, clock, timeout, operation)
        self.start(*checked, check_name(owner, "scope", scope))

    def start(self, clock: Clock, timeout: float, operation: str, scope: str) -> None:
        """Set the scope's first state from arguments already checked (:func:`scope_arguments`).

        What a scope made on every run is started with, allocated without its ``__init__``
        (:mod:`~otel_resilience.engine.allocation`): a step's, whose timeout its step checked.
        """
        self._clock = clock
        self._timeout = timeout
        self._operation = operation
        self._scope = scope
        self._timer: LoopTimer | None = None
        self._task: asyncio.Task[Any] | None = None
        self._token: Any = None
        self._entered = False
        self.expired = False

    async def __aenter__(self) -> AsyncDeadline:
        try:
            self.enter()
        except RuntimeError as error:  # asyncio's own, where no asyncio loop runs (3.12 on)
            if (outside := not_on_asyncio(error)) is not None:  # trio: say what the async API runs on
                raise outside from None
            raise
        return self

    def enter(self) -> None:
        """Enter the scope from a coroutine running in a task (what ``async with`` does first).

        A strategy calls :meth:`enter` and :meth:`leave` directly to spare the two coroutines of
        ``async with``; :meth:`leave` must then run on every way out of the block.

        Raises:
            RuntimeError: Outside an asyncio task, or when the scope was entered before.
        """
        if self._entered:
            raise _entered_twice(self, self._operation)
        self._entered = True
        clock = self._clock
        now = clock.now  # read, then called: a call of the attribute is not specialised
        deadline = now() + self._timeout
        # None under another event loop (trio): no task is found then, and the scope is refused.
        loop: asyncio.AbstractEventLoop = _get_running_loop()  # type: ignore[assignment]
        task = _current_task(loop)  # asyncio's, given None (3.12 on), raises: see __aenter__
        if task is None:
            if (outside := not_on_asyncio()) is not None:  # trio: say what the async API runs on
                raise outside
            msg = "AsyncDeadline must be used inside an asyncio task"  # pragma: no cover - a loop's callback
            raise RuntimeError(msg)
        outer, owner, outer_clock = _DEADLINE.get()
        task_ref = _ref(task)
        if owner is not task_ref or (outer_clock is clock and deadline < outer):
            cell = [deadline, task_ref, clock]  # the first of the task's (another's does not bind it)
        elif (
            outer_clock is not clock and (narrowed := _across(outer, outer_clock, self._timeout)) is not None
        ):
            # Two clocks: the scope whose deadline comes first, by the seconds left (none were).
            cell = [deadline, task_ref, clock] if outer == _NO_DEADLINE else [narrowed, task_ref, outer_clock]
        elif _holds_a_cancellation(task) or type(outer) is _Unenforced:
            # No earlier: armed all the same, as the earlier scope may have fired and its
            # cancellation been caught, or the earlier deadline is a sync scope's, which cancels
            # nothing; the earlier deadline stays the one in force (marked so, if it was).
            cell = [outer, task_ref, outer_clock]
        else:
            # An earlier deadline of the task binds the block: its scope's cancellation ends it.
            # Should the block catch that cancellation, nothing would: the scope is held, and
            # armed when a scope of its task fires (:func:`_arm_held`).
            self._task = task
            self._deadline = deadline
            self._cancelling = _before_entry(task)  # told from ours as an armed scope's are
            timer = self._held_by = loop_timer(loop)
            waiting = timer.held.get(task)
            if waiting is None:
                timer.held[task] = self._waiting = [self]
            else:
                waiting.append(self)
                self._waiting = waiting
            return
        self._cell = cell
        self._token = _DEADLINE.set(cell)
        self._task = task
        self._deadline = deadline
        # Cancellations the task already had pending (a caught one leaves its count up): ours
        # is told from them on the way out, as asyncio.timeout does (3.10: :func:`_handling`).
        self._cancelling = _before_entry(task)
        timer = self._timer = loop_timer(loop)
        timer.add(loop, self, timer.now() + self._timeout)

    def fire(self) -> None:
        """Timer callback: this scope's deadline is due, so cancel its task and arm its held scopes."""
        self.expired = True
        task = self._task
        if sys.version_info >= (3, 11):
            if task is not None:
                task.cancel()
        else:  # pragma: no cover - Python 3.10
            self._cancel_message = _cancel_with_message(
                task, _CancelMessage(f"deadline of {self._operation!r} reached")
            )
        if task is not None:
            _arm_held(task)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        timer = self._timer
        if timer is not None and (_DEADLINE.get() is not self._cell or self._task in timer.held):
            self._leave_before_later_scopes()
        self.leave(exc_type)

    def _leave_before_later_scopes(self) -> None:
        """Leave an armed scope while its task may hold scopes entered after it (an async generator's scope).

        An ``async with`` block may span a ``yield``: an async generator's scope, entered in one
        step of it, is left in a later one, inside a scope its consumer entered in between. The
        scopes of the task then no longer end in the reverse order they began, and the context
        variable's reset would put back the deadline this scope replaced over a later scope's
        still open (and, once that one left, this scope's dead cell instead of the deadline in
        force). So the later scope's cell stays in force, and this scope's cell takes the deadline
        it replaced, which the later scope puts back as it leaves (the scope of that deadline, finding
        a cell equal to its own in force, then leaves as usual). A scope held under this one's
        deadline relied on its cancellation, which will never come: the task's held scopes are
        armed, each at its own deadline (:func:`_arm_held`; one held under an earlier scope still
        open is armed too, which changes nothing: that scope fires first), and their deadlines,
        bound by this one's until now, are published in this scope's cell, kept in force
        (:func:`_publish_held`; deadline-free before them when no deadline of the task was in force
        before this scope). Only the scopes of
        ``async with`` come here (a step's scope begins and ends in one call); a scope left by
        another task is left to :meth:`leave`, which refuses it.
        """
        task = self._task
        loop = _get_running_loop()
        if task is None or loop is None or _current_task(loop) is not task:
            return
        cell = self._cell
        held = cast("list[AsyncDeadline]", loop_timer(loop).held.get(task, []))
        current = _DEADLINE.get()
        # A later scope's cell in force (not one equal to this scope's cell: the cell that took
        # the deadline of this scope, an outer one, from a generator's that ended)
        later = current is not cell and current != cell
        if later or held:
            kept = cell.copy()
            replaced = self._token.old_value
            if replaced is not Token.MISSING and replaced[1] is cell[1]:
                cell[:] = replaced  # in force again once the later scope leaves
            else:
                cell[0] = _NO_DEADLINE  # no deadline of the task before this scope: the held scopes' alone
            if _publish_held(cell, held) or later:
                self._cell = [_NO_DEADLINE, _NO_OWNER, None]  # what leave() marks nobody's
                self._token = _DEADLINE.set(current)  # leave()'s reset keeps the cell in force
            else:  # the held scopes are no later than the deadline before this one: left as usual
                cell[:] = kept
        _arm_held(task)

    def leave(self, exc_type: type[BaseException] | None) -> None:
        """Leave the scope (what ``async with`` does last), with the type of what escaped, if any.

        Raises:
            OperationTimeoutError: This scope's own deadline cancelled the block, or was reached
                by sync code in the block (a :class:`DeadlineReachedError` escaped after it).
            DeadlineIgnored: A :class:`StepDeadline` only: its own deadline cancelled the block,
                which caught the cancellation and returned (``exc_type`` ``None``), or raised an
                error of its own in its place (an ``Exception`` other than a timeout).
        """
        timer = self._timer
        if timer is not None:
            timer.cancel(self)
            self._timer = None
            self._cell[1] = _NO_OWNER  # a copy of the context taken in the block: the scope binds it no more
            try:
                _DEADLINE.reset(self._token)
            except ValueError:
                # A coroutine closed outside its task's context: a task that never ran again, freed
                # once its loop was closed. Nothing reads that context any more. Else: left by
                # another task (or in another context) than the one that entered it.
                if not _closed_elsewhere(exc_type, self._task):
                    raise self._left_elsewhere() from None
        elif self._task is None:
            return  # left already
        elif self._leave_held(exc_type):
            return  # held and never armed: an earlier deadline bound the block
        if self.expired:
            ours = self._uncancel()  # the cancellation that escaped, unless another one is pending
            if exc_type is asyncio.CancelledError and ours:
                raise OperationTimeoutError(self._operation, self._timeout, self._scope) from None
            if ours and (exc_type is None or _own_error(exc_type)):
                self._ignored()
        else:
            self._task = None
        reached = exc_type is not None and issubclass(exc_type, DeadlineReachedError)
        if reached and self._clock.now() >= self._deadline:
            self.expired = True  # reached by sync code before the timer could fire
            raise OperationTimeoutError(self._operation, self._timeout, self._scope) from None

    def leave_failed(self, exc_type: type[BaseException]) -> None:
        """:meth:`leave`, for a scope entered with :meth:`enter` whose block raised ``exc_type``.

        The scopes of its task held under it and still open (an async generator's, entered in
        the block and left unfinished) relied on its cancellation, which will never come: they
        are armed first, each at its own deadline (:func:`_arm_held`), as ``async with`` arms
        them (:meth:`_leave_before_later_scopes`). Held and never armed, they kept their task
        listed for good, and with it what its error's traceback holds: the generator, whose
        scope leaves only once the generator is freed. A block that returned arms none (asking
        would cost every call): a generator's scope entered in it and still open after it is
        not enforced then.

        Raises:
            OperationTimeoutError: As :meth:`leave`.
            DeadlineIgnored: As :meth:`leave`.
        """
        self._arm_held_scopes()  # in a frame of its own: this one, in the traceback of what leave raises,
        self.leave(exc_type)  # holds no task (its error, which the task holds, would hold it: a cycle)

    def _arm_held_scopes(self) -> None:
        """Arm the scopes of this scope's task held under it (:meth:`leave_failed`)."""
        task, timer = self._task, self._timer
        if task is not None and timer is not None and task in timer.held:
            _arm_held(task)

    def _ignored(self) -> None:
        """The block caught this scope's cancellation and returned, or raised an error of its own.

        What it returned or raised goes through, as with ``asyncio.timeout``; :attr:`expired`
        says the deadline fired. A step's scope (:class:`StepDeadline`) tells its driver.
        """

    def _leave_held(self, exc_type: type[BaseException] | None) -> bool:
        """Leave a held scope (see :meth:`enter`); return whether that is all there is to leaving it.

        Never armed: it leaves its task's held scopes, and an earlier deadline bound the block.
        Armed since (:func:`_arm_held`): its timer entry is cancelled, and :meth:`leave` judges
        what escaped as for any armed scope.

        Raises:
            RuntimeError: Left by another task than the one that entered it.
        """
        task = self._task
        waiting = self._waiting
        if waiting is None:
            timer = self._held_by
            timer.cancel(self)  # armed when a scope of its task fired
            listed = timer.held.get(task)  # type: ignore[arg-type] # held: its task is set
            if listed is not None:  # (None: its loop closed, its timer let go of it; or its task ended)
                listed.remove(self)
                if not listed:
                    del timer.held[task]  # type: ignore[arg-type]
            published = getattr(self, "_published", None)  # (set on that rare path only)
            if published is not None:  # published once the scope it was held under ended first
                self._published = None
                cell, deadline, clock = published
                cell[0], cell[2] = deadline, clock  # the deadline it replaced
        else:
            self._waiting = None
            if waiting[-1] is self:  # the scopes of a task end in the reverse order they began
                waiting.pop()
            else:  # an async generator's scope, left while its consumer's is open
                waiting.remove(self)
            if not waiting:
                del self._held_by.held[task]  # type: ignore[arg-type] # held: its task is set
        if (
            (loop := _get_running_loop()) is None or _current_task(loop) is not task
        ) and not _closed_elsewhere(exc_type, task):
            raise self._left_elsewhere()
        if waiting is None:
            return False
        self._task = None
        return True

    def _left_elsewhere(self) -> RuntimeError:
        """Forget the scope's task (its request taken back if it fired); return the misplaced exit's error."""
        if self.expired:
            self._uncancel()
        self._task = None
        return _left_elsewhere(self, self._operation)

    def _uncancel(self) -> bool:
        """Forget the task; return whether the cancellation that escaped is this scope's own.

        Called once the deadline fired, whatever escaped: the task's count of pending
        cancellations goes back down (as asyncio.timeout counts them). The task is never a
        local of :meth:`leave`: the error raised there holds its frame, and a task that ends
        with that error holds the error, a cycle only the cyclic garbage collector frees (and
        with it everything the frames of the call refer to: its pipeline, its breaker).
        """
        task = self._task
        self._task = None
        if sys.version_info >= (3, 11):
            return task is None or task.uncancel() <= self._cancelling
        else:  # pragma: no cover - Python 3.10  # noqa: RET505 - mypy checks the branch of its version
            return _cancelled_only_by(task, self._cancel_message, self._cancelling)


class StepDeadline(AsyncDeadline):
    """The :class:`AsyncDeadline` of a step's driver, which tells it a deadline the block ignored.

    A block that caught the scope's cancellation and returned raises :class:`DeadlineIgnored`
    from :meth:`leave`, for the driver to count the expiry. The scopes of ``async with``
    (:func:`~otel_resilience.patterns.timeout.fail_after`) are plain :class:`AsyncDeadline`
    objects: the block's value goes through, and :attr:`expired` says the deadline fired.
    """

    __slots__ = ()

    def _ignored(self) -> None:
        raise DeadlineIgnored


def _publish_held(cell: _Cell, held: list[AsyncDeadline]) -> bool:
    """Publish in ``cell`` the held scopes' deadlines, their earlier scope ended first: whether any was.

    An async generator's scope, left inside looser scopes its consumer entered since (held under
    its deadline: :meth:`AsyncDeadline.enter`), no longer bounds them: each of them still open,
    in the order they were entered, narrows ``cell`` (the task's, in force once the generator's
    scope left) as a sync scope does, and puts back the deadline it replaced as it leaves
    (:meth:`AsyncDeadline._leave_held`). A scope held under a deadline still in force narrows
    nothing. On two clocks, by the seconds left (:func:`_across`).
    """
    published = False
    for scope in held:
        if getattr(scope, "_published", None) is not None:
            continue  # published already, under a scope of its task that ended before
        deadline, _, clock = cell
        if clock is scope._clock or deadline == _NO_DEADLINE:
            if scope._deadline >= deadline:
                continue
            cell[0], cell[2] = scope._deadline, scope._clock
        else:
            narrowed = _across(deadline, clock, scope._deadline - scope._clock.now())
            if narrowed is None:
                continue
            cell[0] = narrowed
        scope._published = (cell, deadline, clock)
        published = True
    return published


def _arm_held(task: asyncio.Task[Any]) -> None:
    """Arm the held scopes of ``task``, for a scope of it fired: each at its own deadline.

    A held scope (:meth:`AsyncDeadline.enter`) relied on an earlier deadline's cancellation to
    end its block; once that came, the block may catch it, and only the scope's own deadline is
    left to end it, as each ``asyncio.timeout`` is armed. Each is armed at what is left of its
    deadline on its clock; one passed already fires at once. Its cancellation is then its own
    timeout only when no other request is pending (:meth:`AsyncDeadline._uncancel`): while the
    earlier scope's cancellation is on its way out, that scope reports it. They stay listed
    until they leave, for the scope they were held under may end first (an async generator's:
    :meth:`AsyncDeadline._leave_before_later_scopes` publishes their deadlines then); or until
    their task is done (a held scope armed before fires after it ended): nothing of it runs
    again, and the list, which the loop's timer keeps, kept the task and what its frames hold,
    its error's traceback an unfinished async generator whose scope is listed there, for good.
    A scope left after that finds its task's list gone, as on a closed loop's timer.
    """
    loop = task.get_loop()
    timer = loop_timer(loop)
    held = timer.held.get(task)
    if held is None:
        return
    now = timer.now()
    for scope in cast("list[AsyncDeadline]", held):
        if scope._waiting is not None:  # (else armed already)
            scope._waiting = None
            timer.add(loop, scope, now + max(scope._deadline - scope._clock.now(), 0.0))
    if task.done():
        del timer.held[task]


# Python 3.10: a task counts no cancellations (no ``Task.cancelling``/``uncancel``), and one
# requested while another is pending is merged into it. A scope cancels its task with a message
# of its own and, as anyio does there, reads the task's pending-cancellation state (private to
# asyncio: ``_must_cancel``, ``_fut_waiter``, ``_cancel_message``) to tell whether another
# request came before or after its own. The message stays the task's until the scope leaves and
# puts back the one it replaced: while the task holds one, a scope of ours cancelled it and has
# not left (3.11's count, :func:`_holds_a_cancellation`).


def _cancel_with_message(  # pragma: no cover
    task: asyncio.Task[Any] | None, message: _CancelMessage
) -> _CancelMessage | None:
    """Cancel ``task`` with ``message`` (compared by identity); return it, or ``None`` when not ours.

    When a cancellation requested earlier (from elsewhere, or by an enclosing scope) is still
    pending, ours would be merged into it: the task is left to that one, and the one
    ``CancelledError`` it gets is not this scope's timeout (3.11's count says the same).
    """
    if task is None:
        return None
    waiter = getattr(task, "_fut_waiter", None)
    if getattr(task, "_must_cancel", False) or (isinstance(waiter, asyncio.Future) and waiter.cancelled()):
        return None
    message.before = getattr(task, "_cancel_message", None)
    task.cancel(message)
    # Where the request went to the future the task waits on, the task keeps no message: set it,
    # so that a request made after ours (which sets its own there) shows.
    with contextlib.suppress(AttributeError):
        task._cancel_message = message  # type: ignore[attr-defined]
    return message


def _cancelled_only_by(  # pragma: no cover
    task: asyncio.Task[Any] | None, message: _CancelMessage | None, handled: tuple[int, object]
) -> bool:
    """Whether the cancellation being handled is the one made with ``message``, none came before or after.

    Called once the scope's deadline fired; the task's message goes back to the one ours
    replaced (as ``Task.uncancel`` takes a request back on 3.11). Another request after ours
    replaced the task's message, or, made while the task waited on a future, reached the block
    as a new ``CancelledError`` raised while it handled ours (a clean-up that awaited): ours is
    then that error's context, caught in a frame the new error went through. Ours reaches the
    block as the error being handled, or as the context of one raised elsewhere (a task
    awaited, a ``gather``: the awaited task was cancelled with ours, its awaiter gets a new
    error raised from it). Another request before ours reached the block as a ``CancelledError``
    it was still handling when ours came (a clean-up that awaited past the deadline): ours was
    raised with that one in its context, above the exception being handled where the scope was
    entered (``handled``, its ``id``: :func:`_came_after_another`). Another scope of ours whose
    request was pending when ours came, not when this scope was entered (``handled``, the
    pending request then: :func:`_handling`), fired before ours and has not left: as 3.11 counts
    that request above the scope's, the cancellation is that scope's. A block that caught ours
    and returned (nothing escapes), or raised an error of its own in its place (ours its
    context), ends with ours, as 3.11's count says: the loop's task shows no exception being
    handled then (a Python task, asyncio's or a backport's, shows the one it delivered).
    """
    handled_id, pending = handled
    if (
        message is None
        or task is None
        or not _take_back(task, message)
        or (type(message.before) is _CancelMessage and message.before is not pending)
    ):
        return False
    escaped = sys.exc_info()[1]
    if escaped is None or id(escaped) == handled_id:
        return True  # the block caught ours and returned: no request replaced its message since
    went_through = set()  # the frames of this task the escaping error went through
    trace = escaped.__traceback__
    while trace is not None:
        went_through.add(trace.tb_frame)
        trace = trace.tb_next
    # An error of the block's own raised in place of ours has it as its context.
    error = escaped if isinstance(escaped, asyncio.CancelledError) else escaped.__context__
    for _ in range(16):
        if not isinstance(error, asyncio.CancelledError):
            return False
        if error.args and _made_since(error.args[0], message):
            return not _came_after_another(error.__context__, handled_id)
        error = error.__context__
        trace = error.__traceback__ if error is not None else None
        if trace is not None and trace.tb_frame in went_through:
            return False  # caught in the block, which then got a cancellation requested after ours
    return False


def _take_back(task: asyncio.Task[Any], message: _CancelMessage) -> bool:  # pragma: no cover - Python 3.10
    """Take ``message``'s request back from those ``task`` holds; return whether it was the latest.

    The task's pending requests of our scopes are a chain, the latest first (the task's message,
    then each message's :attr:`~_CancelMessage.before`): ours leaves it wherever it is, as
    3.11's ``uncancel`` takes one request back whichever came last, so that the scope of one
    made before it finds its own at the head once the later ones left.
    """
    latest = getattr(task, "_cancel_message", message)
    if latest is message:
        with contextlib.suppress(AttributeError):
            task._cancel_message = message.before  # type: ignore[attr-defined]
        return True
    for _ in range(16):
        if type(latest) is not _CancelMessage:
            return False
        if latest.before is message:
            latest.before = message.before
            return False
        latest = latest.before
    return False


def _made_since(made: object, message: _CancelMessage) -> bool:  # pragma: no cover - Python 3.10
    """Whether ``made`` is ``message``, or the message of a request made while ``message``'s was pending.

    The request of an inner scope of ours whose deadline came once ours had fired (its
    :attr:`~_CancelMessage.before` leads to ours) was left to us by that scope: its
    ``CancelledError`` ends our block as ours would, as 3.11 counts both and the inner scope
    takes its own back.
    """
    for _ in range(16):
        if made is message:
            return True
        if type(made) is not _CancelMessage:
            return False
        made = made.before
    return False


def _came_after_another(context: BaseException | None, handled: int) -> bool:  # pragma: no cover
    """Whether our ``CancelledError`` was raised while the block handled one from elsewhere.

    ``context`` is our error's context; its chain is read down to the exception whose ``id`` is
    ``handled``, what was being handled where the scope was entered (every one of the chain is
    alive: no other has that ``id``): a cancellation caught before the scope does not count,
    as 3.11 keeps the count of those. One that a scope of ours made (its message a
    :class:`_CancelMessage`) was taken back by its scope, as 3.11's ``uncancel`` does.
    """
    for _ in range(16):
        if context is None or id(context) == handled:
            return False
        if isinstance(context, asyncio.CancelledError) and not (
            context.args and isinstance(context.args[0], _CancelMessage)
        ):
            return True
        context = context.__context__
    return False


def cancel_alone(task: asyncio.Task[Any], reason: str) -> object | None:
    """Cancel ``task`` for ``reason`` (not a deadline's); return the mark :func:`cancelled_alone` judges by.

    From Python 3.11 the task counts every request (its ``CancelledError`` carries no message).
    On 3.10, which merges a request into one pending, it is cancelled with ``reason`` as a
    message of its own, as a scope's deadline cancels it; ``None`` there when a cancellation
    requested earlier is still pending: the task is not cancelled, but left to that one.
    """
    if sys.version_info >= (3, 11):
        task.cancel()
        return True
    else:  # pragma: no cover - Python 3.10  # noqa: RET505 - mypy checks the branch of its version
        return _cancel_with_message(task, _CancelMessage(reason))


def cancelled_alone(task: asyncio.Task[Any], mark: object) -> bool:
    """Whether the cancellation ``task`` is handling is the one :func:`cancel_alone` made, and no other.

    Called in the ``except`` clause that caught it, in the task. Ours is taken back, as
    ``Task.uncancel`` does from 3.11, where no other request may be pending. On 3.10 no other
    may have come after ours (its message replaced) nor before (one being handled when ours
    came), told as a deadline's own is (:func:`_cancelled_only_by`).
    """
    if sys.version_info >= (3, 11):
        return task.uncancel() == 0
    else:  # pragma: no cover - Python 3.10  # noqa: RET505 - mypy checks the branch of its version
        message = mark if isinstance(mark, _CancelMessage) else None
        return _cancelled_only_by(task, message, (id(None), None))


def publish_deadline(clock: Clock, timeout: float) -> tuple[float, _Cell | None, float]:
    """Enter a sync deadline scope: publish ``now + timeout`` unless an earlier one of ours binds.

    The rule of :class:`SyncDeadline`'s entry, which the steps' sync driver applies without the
    object. Returns the scope's deadline, the owner's cell it narrowed (``None`` when an earlier
    deadline of the same task or thread bounds the block instead) and the deadline to put back
    (:func:`withdraw_deadline`). Where the context holds no cell of ours, a new one is set and
    left there, deadline-free once withdrawn, for the next scopes of the same owner. Under a
    deadline on another clock, :func:`_publish_across` decides.
    """
    now = clock.now  # read, then called: a call of the attribute is not specialised
    deadline = now() + timeout
    owner = _owner()
    cell = _DEADLINE.get()
    previous, outer_owner, outer_clock = cell
    if outer_owner is not owner:  # another's deadline (or none) does not bind us: a cell of our own
        cell = [deadline, owner, clock]
        _DEADLINE.set(cell)
        return deadline, cell, _NO_DEADLINE
    if deadline < previous:
        if outer_clock is not clock:
            if previous != _NO_DEADLINE:
                return _publish_across(cell, timeout, deadline)
            cell[2] = clock  # a deadline-free cell takes this scope's clock
        cell[0] = deadline
        return deadline, cell, previous
    if outer_clock is not clock and previous != _NO_DEADLINE:  # (none in force: an infinite timeout)
        return _publish_across(cell, timeout, deadline)
    return deadline, None, previous


def _across(outer: float, outer_clock: Clock, timeout: float) -> float | None:
    """Return a scope's deadline on ``outer_clock`` if it comes before ``outer``, else ``None``.

    The narrowing rule for two clocks: a deadline in force on another clock than the scope's
    (``outer``, on ``outer_clock``) is compared with the scope's ``timeout`` through the seconds
    it has left, and the scope's deadline is put on that clock (``now + timeout`` there).
    """
    now = outer_clock.now()
    return now + timeout if timeout < outer - now else None


def _publish_across(cell: _Cell, timeout: float, deadline: float) -> tuple[float, _Cell | None, float]:
    """:func:`publish_deadline` under a deadline of the owner's own on another clock (:func:`_across`).

    The cell stays on its clock: a scope whose deadline comes first narrows it there, and puts
    back the deadline it replaced; otherwise the deadline in force binds the block, returned
    on this scope's clock (``deadline - timeout``, when it began, plus the seconds left), on
    which :func:`enforce_binding_deadline` reads it.
    """
    previous, _, outer_clock = cell
    narrowed = _across(previous, outer_clock, timeout)
    if narrowed is not None:
        cell[0] = narrowed
        return deadline, cell, previous
    return deadline, None, deadline - timeout + (previous - outer_clock.now())


def enforce_binding_deadline(
    clock: Clock, binding: float, deadline: float, timeout: float, operation: str
) -> bool:
    """Leave a sync scope that an earlier deadline of its owner binds (:func:`publish_deadline`'s ``None``).

    Its block returned: at or after ``binding`` (the effective deadline when the scope, of
    ``deadline`` and ``timeout``, began), that is a :class:`DeadlineReachedError`, which the
    scope owning the deadline turns into its own timeout. An async scope cannot see a late
    return of sync code, and an outer sync scope would see it only after the steps between had
    taken it for a success. Unless the scope of that deadline ended first (a generator's,
    left inside this scope: :func:`_still_binds`): this scope's own deadline then binds it.

    Returns:
        Whether the block returned at or after the scope's own deadline, the earlier one having
        ended first: a timeout of the scope's own (``False`` on every other way out).
    """
    if clock.now() >= binding:
        if _still_binds(clock, binding):
            raise DeadlineReachedError(operation, max(binding - (deadline - timeout), 0.0), "total")
        return clock.now() >= deadline
    return False


def _still_binds(clock: Clock, binding: float) -> bool:
    """Whether ``binding``, on ``clock``, the deadline that bound a sync scope as it began, is still in force.

    While the scope of that deadline is open, the deadline in force is no later. Its scope may
    have ended first, out of order: a generator's, left inside scopes entered since. A later
    deadline in force (on ``clock``), or none, tells that. A deadline in force on another
    clock is taken to bind: two clocks' times are never compared.
    """
    in_force, _, in_force_clock = _own_cell()
    return in_force != _NO_DEADLINE and (in_force_clock is not clock or in_force <= binding)


def withdraw_deadline(
    cell: _Cell, previous: float, deadline: float, clock: Clock, escaped: type[BaseException] | None
) -> bool:
    """Leave a sync deadline scope (:func:`publish_deadline`); return whether it ended late.

    The deadline of ``cell`` is put back to ``previous``. Late: the block returned (``escaped``
    ``None``) or gave up an engine wait (:class:`DeadlineReachedError`) at or after ``deadline``:
    the scope then raises :class:`OperationTimeoutError` in place of the result. Anything else
    passes through.
    """
    cell[0] = previous
    now = clock.now  # read, then called: a call of the attribute is not specialised
    return (escaped is None or issubclass(escaped, DeadlineReachedError)) and now() >= deadline


class SyncDeadline:
    """A context manager that publishes a deadline to sync code and enforces it on return.

    A thread cannot be pre-empted: the callee should read :func:`current_deadline`. A block that
    returns after the deadline (or whose engine wait stopped at it) raises
    :class:`OperationTimeoutError` in place of its result (:func:`withdraw_deadline`), so that
    a result reported as a success always met its deadline.

    A scope is single-use: entering it a second time raises ``RuntimeError``. Its deadline binds
    the task (outside any task: the thread) that entered it, which leaves it: left by another
    thread or task, it withdraws its deadline and raises ``RuntimeError``, as an
    :class:`AsyncDeadline` left by another task does (:func:`_left_elsewhere`).

    Held across an ``await`` in a task, it cancels nothing either: an :class:`AsyncDeadline`
    entered in its block ends that block at its own deadline, however much earlier this scope's
    comes (:class:`_Unenforced`).

    Attributes:
        expired: Whether this scope raised for its own deadline.
    """

    __slots__ = (
        "_before",
        "_clock",
        "_entered",
        "_operation",
        "_owner",
        "_published",
        "_scope",
        "_timeout",
        "expired",
    )

    def __init__(
        self, clock: Clock, timeout: float | timedelta, operation: str, scope: str = "total"
    ) -> None:
        owner = type(self).__name__
        self._clock, self._timeout, self._operation = scope_arguments(owner, clock, timeout, operation)
        self._scope = check_name(owner, "scope", scope)
        self._published: tuple[float, _Cell | None, float] | None = None  # publish_deadline's, until left
        self._entered = False
        self.expired = False

    def __enter__(self) -> SyncDeadline:
        if self._entered:
            raise _entered_twice(self, self._operation)
        self._entered = True
        before = _DEADLINE.get()
        kept = before.copy()
        published = publish_deadline(self._clock, self._timeout)
        if published[1] is before:
            # Narrowed the owner's cell in place: a cell of its own instead, set over it, which the
            # scope can leave out of order (a generator's, left inside scopes entered since).
            mine = before.copy()
            before[:] = kept
            published = (published[0], mine, published[2])
            _DEADLINE.set(mine)
        self._published = published
        self._before = before
        self._owner = _DEADLINE.get()[1]  # the owner publish_deadline found: its cell is the context's
        if published[1] is not None and type(self._owner) is _ref:
            # A task's: its block may await, and no cancellation comes at this deadline (_Unenforced).
            published[1][0] = _Unenforced(published[1][0])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        published, self._published = self._published, None
        if published is None:
            return
        deadline, cell, previous = published
        before, self._before = self._before, _NOBODYS
        owner = self._owner
        if owner is not _owner() and owner is not _THREAD.forked_from:  # (a child leaves its parent's)
            if cell is not None:
                cell[1] = _Ended(before)  # the scope is gone: its deadline binds its owner no more
            if exc_type is not GeneratorExit:  # a generator closed elsewhere: nothing to tell
                raise _left_elsewhere(self, self._operation)
            return
        if cell is None:
            if exc_type is None and enforce_binding_deadline(
                self._clock, previous, deadline, self._timeout, self._operation
            ):
                self._expire()
            return
        current = _DEADLINE.get()
        while current is not cell and type(current[1]) is _Ended:  # scopes entered since, ended
            current = current[1].before
        if current is cell:
            while type(before[1]) is _Ended:  # a scope that ended while one entered since was open
                before = before[1].before
            _DEADLINE.set(before)
        # Nobody's from now on: a copy of the context taken in the block carries no deadline of
        # it. A scope entered since that set a cell of its own and is still open (this one, a
        # generator's, is left inside it) puts this cell back as it leaves: it then leads such a
        # scope on to the cell in force before this one.
        cell[1] = _Ended(before)
        if withdraw_deadline(cell, previous, deadline, self._clock, exc_type):
            self._expire()

    def _expire(self) -> None:
        """Raise this scope's own timeout: its block returned (or its engine wait stopped) too late."""
        self.expired = True
        raise OperationTimeoutError(self._operation, self._timeout, self._scope) from None


class _Ended:
    """The owner of the cell of a :class:`SyncDeadline` that ended: nobody's, no reader takes it for theirs.

    Such a cell may still be in force, or be put back: its scope ended while a scope entered
    since was open (a generator's), or was left by another thread or task. A
    :class:`SyncDeadline` leaving puts back the cell it replaced, or, when that one's scope
    ended, the cell in force before that scope (:attr:`before`); it finds its own cell in force
    behind the cells of such scopes entered since.
    """

    __slots__ = ("before",)

    def __init__(self, before: _Cell) -> None:
        self.before = before
