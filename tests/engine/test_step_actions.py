"""What a step's hooks may decide: ``None``, an ``Answer``, a ``Retry`` or a ``Call``; anything else is refused.

A hook of a user's own step that returns something else (``True`` for "handled", the result
itself, a ``Call`` continuation's ``None``) is a ``TypeError`` naming the step and the value, in
both drivers: never a run of the chain nobody decided, and never a loop that asks the step again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import pytest

from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.guard import Guard
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.step import Answer, Call, Rejected, Retry, Step, Wait
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.testing import FakeClock

_DECIDES = r"Decides\('decides'\) decided {}: a step's hook returns None, an Answer, a Retry or a Call"


class Decides(Step):
    """Decides ``decision`` once after a failure (and after a success); asked again, it fails the test."""

    __slots__ = ("asked", "decision")

    kind: ClassVar[str] = "decides"

    def __init__(self, decision: object) -> None:
        super().__init__()
        self.decision = decision
        self.asked = 0

    def _decide(self) -> Any:
        self.asked += 1
        if self.asked > 1:
            msg = f"asked {self.asked} times"
            raise AssertionError(msg)
        return self.decision

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Any:
        return self._decide()

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> Any:
        return self._decide()


def _continued_with(value: Any) -> Call:
    """A ``Call`` whose continuation decides ``value``."""
    return Call(lambda: None, (), {}, lambda _ctx, _state, _value, _error: value)


async def _run(driver: str, step: Step, *, fails: bool) -> tuple[Any, list[int]]:
    calls: list[int] = []

    def body() -> str:
        calls.append(1)
        if fails:
            msg = "down"
            raise ConnectionError(msg)
        return "ok"

    async def body_async() -> str:
        return body()

    pipeline = PipelineBuilder(f"decides-{driver}").add(step).build()
    result = pipeline.execute_sync(body) if driver == "sync" else await pipeline.execute(body_async)
    return result, calls


@pytest.mark.parametrize("fails", [True, False], ids=["on_failure", "on_success"])
@pytest.mark.parametrize("decision", [True, "ok", 0.5], ids=repr)
async def test_a_hook_that_decides_no_action_is_refused_naming_the_step(
    driver: str, decision: object, *, fails: bool
) -> None:
    """Not a loop asking the step again and again (each time about an AttributeError of the engine's)."""
    step = Decides(decision)
    with pytest.raises(TypeError, match=_DECIDES.format(repr(decision).replace(".", r"\."))) as caught:
        await _run(driver, step, fails=fails)
    assert step.asked == 1
    if fails:
        assert isinstance(caught.value.__context__, ConnectionError)


@pytest.mark.parametrize("fails", [True, False], ids=["on_failure", "on_success"])
async def test_a_call_continuation_that_decides_none_runs_nothing_again(driver: str, *, fails: bool) -> None:
    """A continuation returns an Answer, a Retry or a Call: its ``None`` is refused, not a silent re-run."""
    step = Decides(_continued_with(None))
    with pytest.raises(TypeError, match=_DECIDES.format("None")):
        await _run(driver, step, fails=fails)
    assert step.asked == 1


@pytest.mark.parametrize("fails", [True, False], ids=["on_failure", "on_success"])
@pytest.mark.parametrize("continued", [False, True], ids=["hook", "continuation"])
async def test_a_coroutine_decided_in_place_of_an_action_is_closed_when_refused(
    driver: str, *, fails: bool, continued: bool
) -> None:
    """An ``async def`` helper's coroutine returned by a hook or a continuation never runs: closed, no warning."""

    async def helper() -> Answer:
        return Answer("never")

    decided = helper()
    step = Decides(_continued_with(decided) if continued else decided)
    with pytest.raises(TypeError, match=_DECIDES.format("<coroutine object .*helper at 0x[0-9a-f]+>")):
        await _run(driver, step, fails=fails)
    assert decided.cr_frame is None  # closed: no "coroutine ... was never awaited" at collection


@pytest.mark.parametrize("fails", [True, False], ids=["on_failure", "on_success"])
async def test_the_actions_still_act(driver: str, *, fails: bool) -> None:
    """An Answer (direct or from a continuation) answers; a Retry runs the chain again."""
    assert (await _run(driver, Decides(Answer("answered")), fails=fails))[0] == "answered"
    assert (await _run(driver, Decides(_continued_with(Answer("called"))), fails=fails))[0] == "called"
    with pytest.raises(AssertionError, match="asked 2 times"):  # the re-run was judged again
        await _run(driver, Decides(Retry(0.0, None)), fails=fails)


class Timed(Step):
    """A user's step that opens a deadline of its own around each run (``seconds``, set after ``__init__``)."""

    kind: ClassVar[str] = "timed"

    def __init__(self, seconds: object) -> None:
        super().__init__()
        self.seconds = seconds  # type: ignore[assignment] # what a user may set


@pytest.mark.parametrize(
    ("seconds", "error", "message"),
    [
        (float("nan"), ValueError, r"Timed\.seconds must be a finite duration, got nan"),
        (float("inf"), ValueError, r"Timed\.seconds must be a finite duration, got inf"),
        (-1.0, ValueError, r"Timed\.seconds must be >= 0 seconds, got -1\.0"),
        (
            "1",
            TypeError,
            r"Timed\.seconds must be a duration in seconds \(float or timedelta\), got '1' \(str\)",
        ),
    ],
)
def test_a_step_s_own_deadline_is_checked_when_it_is_linked(
    seconds: object, error: type[Exception], message: str
) -> None:
    """Not a NaN that silently opens no deadline, a negative one that times every call out, or a TypeError per call."""
    with pytest.raises(error, match=message):
        PipelineBuilder("timed").add(Timed(seconds)).build()


async def test_a_step_s_own_deadline_may_be_a_timedelta(driver: str) -> None:
    """As every duration the library takes: a ``timedelta`` is its seconds."""
    pipeline = PipelineBuilder(f"timed-{driver}").add(Timed(timedelta(seconds=30))).build()
    assert pipeline.describe() == (("timed", "timed", None),)

    async def fn() -> str:
        return "ok"

    assert (pipeline.execute_sync(lambda: "ok") if driver == "sync" else await pipeline.execute(fn)) == "ok"


class HearsLate(Timed):
    """A user's step with a 1 s deadline on a fake clock that records how a run past it is judged."""

    def __init__(self, clock: FakeClock, decision: object = None) -> None:
        super().__init__(1.0)
        self.clock = clock
        self.decision = decision
        self.heard: list[tuple[str, object]] = []

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Any:
        self.heard.append(("on_failure", type(error).__name__))


class HearsLateResults(HearsLate):
    """:class:`HearsLate` that hears of the result a sync run returned past its deadline (``on_late``)."""

    def on_late(self, ctx: ExecutionContext, token: Any, error: OperationTimeoutError, result: Any) -> Any:
        self.heard.append(("on_late", (error.timeout, result)))
        return self.decision


def test_a_sync_run_past_the_step_s_own_deadline_is_judged_by_on_late_with_its_result() -> None:
    """The sync driver drops a result that came after the step's own deadline (the run is a timeout):
    a step that overrides ``on_late`` judges that timeout in place of ``on_failure``, told of the result,
    and what it decides ends the run (``None`` re-raises the timeout); any other step's ``on_failure``
    judges the timeout, as before."""
    clock = FakeClock()

    def late() -> str:
        clock.advance(5.0)
        return "late"

    answered = HearsLateResults(clock, Answer("judged"))
    assert PipelineBuilder("late-answered").add(answered).build().execute_sync(late) == "judged"
    assert answered.heard == [("on_late", (1.0, "late"))]

    passed = HearsLateResults(clock)
    with pytest.raises(OperationTimeoutError):
        PipelineBuilder("late-passed").add(passed).build().execute_sync(late)
    assert passed.heard == [("on_late", (1.0, "late"))]

    unheard = HearsLate(clock)
    with pytest.raises(OperationTimeoutError):
        PipelineBuilder("late-unheard").add(unheard).build().execute_sync(late)
    assert unheard.heard == [("on_failure", "OperationTimeoutError")]


@pytest.mark.parametrize(
    "hook", ["admit", "on_success", "on_failure", "on_expired", "on_late", "on_cancel", "get_stats"]
)
def test_a_step_whose_hook_is_a_coroutine_function_is_refused_in_its_class_statement(hook: str) -> None:
    """The drivers call hooks and never await them: an ``async def`` hook would never run (an admit that admits all)."""

    async def coroutine_hook(self: Step, *args: Any, **kwargs: Any) -> None:
        return None

    async def generator_hook(self: Step, *args: Any, **kwargs: Any) -> Any:
        yield None

    for body in (coroutine_hook, generator_hook):
        with pytest.raises(
            TypeError, match=rf"Awaits\.{hook} must be a plain function \(def\): a step's hooks and get_stats"
        ):
            type("Awaits", (Step,), {hook: body, "kind": "awaits"})


@pytest.mark.parametrize(
    "hook", ["admit", "on_success", "on_failure", "on_expired", "on_late", "on_cancel", "get_stats"]
)
def test_an_async_hook_a_step_inherits_or_wraps_is_refused_in_its_class_statement(hook: str) -> None:
    """A mixin's ``async def`` hook, or a static one, would never run either: the class statement refuses it."""

    async def coroutine_hook(*args: Any, **kwargs: Any) -> None:
        return None

    mixin = type("AsyncMixin", (), {hook: coroutine_hook})
    with pytest.raises(
        TypeError, match=rf"Inherits\.{hook} must be a plain function \(def\): a step's hooks and get_stats"
    ):
        type("Inherits", (mixin, Step), {"kind": "inherits"})
    with pytest.raises(
        TypeError, match=rf"Static\.{hook} must be a plain function \(def\): a step's hooks and get_stats"
    ):
        type("Static", (Step,), {hook: staticmethod(coroutine_hook), "kind": "static"})


def test_a_wait_whose_wait_sync_is_a_coroutine_function_is_refused_in_its_class_statement() -> None:
    """The sync driver calls ``wait_sync`` and never awaits it: its coroutine would be the token, and the run ran."""

    async def coroutine_wait(self: Wait) -> Any:
        return None

    async def generator_wait(self: Wait) -> Any:
        yield None

    for body in (coroutine_wait, generator_wait):
        with pytest.raises(
            TypeError, match=r"Holds\.wait_sync must be a plain function \(def\): the sync driver calls it"
        ):
            type("Holds", (Wait,), {"wait_sync": body, "__slots__": ()})


@pytest.mark.parametrize(
    ("delay", "error", "message"),
    [
        (-1.0, ValueError, r"Retry\.delay must be >= 0 seconds, got -1\.0"),
        (float("nan"), ValueError, r"Retry\.delay must be a finite duration, got nan"),
        (
            "1",
            TypeError,
            r"Retry\.delay must be a duration in seconds \(float or timedelta\), got '1' \(str\)",
        ),
    ],
)
def test_a_retry_s_delay_is_a_duration_refused_when_the_step_decides_it(
    delay: object, error: type[Exception], message: str
) -> None:
    """Not a negative or NaN wait silently skipped, nor a TypeError per run handed back to the step as a failure."""
    with pytest.raises(error, match=message):
        Retry(delay, None)  # type: ignore[arg-type]
    assert Retry(timedelta(milliseconds=1500), None).delay == 1.5  # type: ignore[arg-type]
    assert Retry(0, None).delay == 0.0


async def test_a_step_that_decides_a_malformed_retry_ends_the_execution(driver: str) -> None:
    """The refusal escapes the step's hook with the failure as its context; the chain is not run again."""

    class Again(Decides):
        def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Any:
            self._decide()
            return Retry("soon", None)  # type: ignore[arg-type]

    step = Again(None)
    with pytest.raises(TypeError, match=r"Retry\.delay must be a duration") as caught:
        await _run(driver, step, fails=True)
    assert isinstance(caught.value.__context__, ConnectionError)
    assert step.asked == 1


class _PlainWait(Wait):
    """A wait written as a plain ``def`` that returns what it was given (an awaitable, or not)."""

    __slots__ = ("returns",)

    def __init__(self, returns: Any) -> None:
        self.returns = returns

    def wait(self) -> Any:
        return self.returns

    def wait_sync(self) -> Any:
        return "token"


class _WaitsPlainly(Step):
    __slots__ = ("returns",)

    kind: ClassVar[str] = "waits_plainly"

    def __init__(self, returns: Any) -> None:
        super().__init__()
        self.returns = returns

    def admit(self, ctx: ExecutionContext) -> Any:
        return _PlainWait(self.returns)


async def test_a_plain_wait_that_returns_no_awaitable_is_refused_naming_its_class() -> None:
    """The async driver awaits what ``wait`` returns: a plain ``def wait`` returning the token
    failed with Python's "object str can't be used in 'await' expression", naming nothing of
    the step. Refused naming ``Class.wait`` and the value, in a call and in a guarded block; a
    plain ``wait`` returning an awaitable still runs, and an ``async def wait`` is not touched."""

    async def body() -> str:
        return "ok"

    refused = r"_PlainWait\.wait must return an awaitable .*, got 'token' \(str\)"
    pipeline = PipelineBuilder("waits-plainly").add(_WaitsPlainly("token")).build()
    with pytest.raises(TypeError, match=refused):
        await pipeline.execute(body)
    with pytest.raises(TypeError, match=refused):
        async with Guard(PipelineBuilder("guards-plainly").add(_WaitsPlainly("token")).build()):
            pass

    async def admitted() -> str:
        return "token"

    pipeline = PipelineBuilder("waits-plainly-right").add(_WaitsPlainly(admitted())).build()
    assert await pipeline.execute(body) == "ok"
    assert Rejected.wait is Rejected.__dict__["wait"]  # an async def wait runs as written
