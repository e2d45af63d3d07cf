"""The pipeline builder links strategies once, outer to inner, and counts outcomes."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from support import BrokenQualname

from otel_resilience.engine import (
    TERMINAL,
    ExecutionContext,
    Outcome,
    Pipeline,
    PipelineBuilder,
    Strategy,
    TelemetrySource,
    classify_error,
)
from otel_resilience.engine.context import new_context, start_context
from otel_resilience.engine.events import HUB
from otel_resilience.engine.pipeline import protect_with
from otel_resilience.errors import CircuitOpenError, OperationTimeoutError


class Tag(Strategy):
    """Appends its name to a log on the way in and out."""

    __slots__ = ("_log", "_name")
    kind: ClassVar[str] = "tag"

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self._name = name
        self._log = log

    @property
    def name(self) -> str:
        return self._name

    async def execute(self, ctx: ExecutionContext) -> Any:
        self._log.append(f"in:{self._name}")
        try:
            return await self.next.execute(ctx)
        finally:
            self._log.append(f"out:{self._name}")

    def execute_sync(self, ctx: ExecutionContext) -> Any:
        self._log.append(f"in:{self._name}")
        try:
            return self.next.execute_sync(ctx)
        finally:
            self._log.append(f"out:{self._name}")


class MarkOutcome(Strategy):
    """Answers in place of the call and marks the outcome as a fallback."""

    __slots__ = ()
    kind: ClassVar[str] = "mark"

    @property
    def name(self) -> str:
        return "mark"

    async def execute(self, ctx: ExecutionContext) -> Any:
        ctx.outcome = Outcome.FALLBACK
        return "answered"

    def execute_sync(self, ctx: ExecutionContext) -> Any:
        ctx.outcome = Outcome.FALLBACK
        return "answered"


async def run(pipeline: Pipeline, driver: str, fn_async: Any, fn_sync: Any, *args: Any) -> Any:
    if driver == "async":
        return await pipeline.execute(fn_async, *args)
    return pipeline.execute_sync(fn_sync, *args)


async def test_order_of_addition_runs_outer_to_inner(driver: str) -> None:
    """Strategies added first wrap the ones added after them."""
    log: list[str] = []
    pipeline = PipelineBuilder("p").add(Tag("a", log)).add(Tag("b", log)).build()

    async def fa(x: int) -> int:
        log.append("fn")
        return x * 2

    def fs(x: int) -> int:
        log.append("fn")
        return x * 2

    assert await run(pipeline, driver, fa, fs, 21) == 42
    assert log == ["in:a", "in:b", "fn", "out:b", "out:a"]
    assert pipeline.describe() == (("tag", "a", None), ("tag", "b", None))


def test_builder_refuses_add_after_build() -> None:
    """A built builder cannot be extended or built again."""
    builder = PipelineBuilder("p")
    builder.build()
    with pytest.raises(RuntimeError, match="already built"):
        builder.add(Tag("a", []))
    with pytest.raises(RuntimeError, match="already built"):
        builder.build()


def test_builder_refuses_linked_strategy_and_non_strategy() -> None:
    """A strategy can be linked into one pipeline only, and only strategies are accepted."""
    tag = Tag("a", [])
    PipelineBuilder("p1").add(tag).add(Tag("b", [])).build()
    with pytest.raises(ValueError, match="already linked"):
        PipelineBuilder("p2").add(tag)
    same = Tag("c", [])
    with pytest.raises(ValueError, match="already linked"):
        PipelineBuilder("p3").add(same).add(same)
    with pytest.raises(TypeError, match="needs a Strategy"):
        PipelineBuilder("p4").add(object())


class NeverSetUp(Strategy):
    """A custom step whose __init__ forgets ``super().__init__()``: the engine's part of it never ran."""

    kind: ClassVar[str] = "never_set_up"

    def __init__(self, name: str) -> None:
        self.label = name


def test_builder_refuses_a_step_whose_init_never_ran_the_steps() -> None:
    """A step whose class never called Step.__init__ is refused with a TypeError saying so, not an AttributeError."""
    with pytest.raises(TypeError, match=r"NeverSetUp.*super\(\)\.__init__\(\)"):
        PipelineBuilder("p").add(NeverSetUp("x"))
    with pytest.raises(TypeError, match=r"NeverSetUp.*super\(\)\.__init__\(\)"):
        PipelineBuilder("p").add(Tag("a", [])).add(NeverSetUp("x"))


class Named(Strategy):
    """A custom step whose ``name`` (and ``kind``) are what it is given: a user's own property."""

    __slots__ = ("_kind", "_name")

    def __init__(self, name: object, kind: object = "named") -> None:
        super().__init__()
        self._name = name
        self._kind = kind

    @property
    def name(self) -> Any:
        return self._name

    @property
    def kind(self) -> Any:  # type: ignore[override] # a user's property over the class's kind
        return self._kind


@pytest.mark.parametrize(
    ("name", "kind", "error", "message"),
    [
        (42, "named", TypeError, r"Named\.name must be a str, got 42 \(int\)"),
        (None, "named", TypeError, r"Named\.name must be a str"),
        ("", "named", ValueError, r"Named\.name must be a non-empty name"),
        ("  ", "named", ValueError, r"Named\.name must be a non-empty name"),
        ("n" * 257, "named", ValueError, r"Named\.name must be a name of at most 256 characters"),
        ("ok", 7, TypeError, r"Named\.kind must be a str, got 7 \(int\)"),
        ("ok", "", ValueError, r"Named\.kind must be a non-empty name"),
        ("ok", "k" * 257, ValueError, r"Named\.kind must be a name of at most 256 characters"),
    ],
)
def test_builder_refuses_a_step_whose_name_or_kind_is_no_name(
    name: object, kind: object, error: type[Exception], message: str
) -> None:
    """A step's ``name`` and ``kind`` are shown as names (statistics, messages, its telemetry): checked when linked."""
    with pytest.raises(error, match=message):
        PipelineBuilder("p").add(Named(name, kind))
    with pytest.raises(error, match=message):
        PipelineBuilder("p").add(Tag("a", [])).add(Named(name, kind))
    PipelineBuilder("p").add(Named("n" * 256, "k" * 256)).build()  # the longest name is taken


def test_builder_refuses_to_let_a_built_pipelines_innermost_strategy_wrap_another() -> None:
    """The innermost (or lone) strategy of a built pipeline may end or head another, never wrap one.

    Wrapping would set its next for both pipelines: the first one's calls would run the second's.
    """
    inner = Tag("inner", [])
    PipelineBuilder("p1").add(Tag("outer", [])).add(inner).build()
    with pytest.raises(ValueError, match="already linked into a pipeline as its innermost step"):
        PipelineBuilder("p2").add(inner).add(Tag("b", []))
    lone = Tag("lone", [])
    PipelineBuilder("p3").add(lone).build()
    with pytest.raises(ValueError, match="already linked into a pipeline as its innermost step"):
        PipelineBuilder("p4").add(Tag("outer", [])).add(lone).add(Tag("b", []))
    log: list[str] = []
    PipelineBuilder("p5").add(Tag("other", log)).add(inner).build()  # ending another is fine
    assert inner.next is TERMINAL


def test_builder_validates_its_name() -> None:
    """An empty or non-string pipeline name is refused at construction."""
    with pytest.raises(ValueError, match=r"PipelineBuilder\.name"):
        PipelineBuilder(" ")
    with pytest.raises(TypeError, match=r"PipelineBuilder\.name"):
        PipelineBuilder(3)  # type: ignore[arg-type]


def test_builder_validates_the_cap_on_attempts_in_total() -> None:
    """max_attempts is an int >= 1 or None, refused at construction otherwise, and reaches each execution."""
    with pytest.raises(ValueError, match=r"PipelineBuilder\.max_attempts"):
        PipelineBuilder("capped", max_attempts=0)
    with pytest.raises(TypeError, match=r"PipelineBuilder\.max_attempts"):
        PipelineBuilder("capped", max_attempts="2")  # type: ignore[arg-type]
    assert PipelineBuilder("capped", max_attempts=2).build().max_attempts == 2
    assert PipelineBuilder("uncapped").build().max_attempts is None


def test_next_attempt_numbers_attempts_until_the_cap() -> None:
    """ExecutionContext.next_attempt hands out 2, 3 ... and refuses (None) once max_attempts were made."""
    ctx = ExecutionContext(print, (), {}, "op", 3)
    assert (ctx.attempt, ctx.next_attempt(), ctx.next_attempt(), ctx.next_attempt()) == (1, 2, 3, None)
    assert ctx.attempt == 3
    unbounded = ExecutionContext(print, (), {}, "op")
    assert [unbounded.next_attempt() for _ in range(3)] == [2, 3, 4]


async def test_outcomes_are_counted(driver: str) -> None:
    """Success, failure, rejection, timeout and marked fallback outcomes land in their counters."""
    pipeline = PipelineBuilder("p").build()
    errors: list[BaseException] = [
        ValueError("x"),
        CircuitOpenError("b", "open", 1.0),
        OperationTimeoutError("p", 1.0),
    ]

    async def ok_a() -> str:
        return "ok"

    def ok_s() -> str:
        return "ok"

    assert await run(pipeline, driver, ok_a, ok_s) == "ok"
    for error in errors:

        async def bad_a(e: BaseException = error) -> None:
            raise e

        def bad_s(e: BaseException = error) -> None:
            raise e

        with pytest.raises(type(error)):
            await run(pipeline, driver, bad_a, bad_s)
    fallback = PipelineBuilder("f").add(MarkOutcome()).build()
    assert await run(fallback, driver, ok_a, ok_s) == "answered"
    assert pipeline.stats.as_dict() == {
        "total": 4,
        "successful": 1,
        "successful_first_attempt": 1,
        "successful_after_failure": 0,
        "fallback": 0,
        "failed": 3,
        "rejected": 1,
        "timeouts": 1,
        "cancelled": 0,
    }
    assert fallback.stats.fallback == 1


async def test_cancellation_is_counted_as_cancelled_not_failed() -> None:
    """A cancelled execution is neither a success nor a failure."""
    pipeline = PipelineBuilder("p").build()
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(pipeline.execute(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pipeline.stats.cancelled == 1
    assert pipeline.stats.failed == 0


async def test_async_driver_rejects_sync_function() -> None:
    """The async driver explains that a plain function needs the sync variant."""
    pipeline = PipelineBuilder("p").build()

    def plain() -> int:
        return 1

    with pytest.raises(TypeError, match="_sync variant"):
        await pipeline.execute(plain)  # type: ignore[arg-type]


def test_sync_driver_rejects_coroutine_function() -> None:
    """The sync driver closes the coroutine it was handed and explains the mistake."""
    pipeline = PipelineBuilder("p").build()

    async def coro() -> int:
        return 1

    with pytest.raises(TypeError, match="coroutine function"):
        pipeline.execute_sync(coro)


def test_classify_error_maps_every_outcome() -> None:
    """Each error family maps to its outcome."""
    assert classify_error(CircuitOpenError("b", "open", 0.0)) is Outcome.REJECTED
    assert classify_error(OperationTimeoutError("x", 1.0)) is Outcome.TIMEOUT
    assert classify_error(KeyError("k")) is Outcome.FAILURE
    assert classify_error(asyncio.CancelledError()) is Outcome.CANCELLED
    assert classify_error(KeyboardInterrupt()) is Outcome.CANCELLED


def test_outcomes_are_kept_per_exception_type_up_to_a_bound() -> None:
    """The outcome of a type is computed once and kept; types made on the fly stay bounded."""
    from otel_resilience.engine import stats  # noqa: PLC0415

    made = [
        type(f"Made{i}", (CircuitOpenError if i % 2 else ValueError,), {})
        for i in range(2 * stats._MAX_TYPES)
    ]
    outcomes = [classify_error(kind.__new__(kind)) for kind in made]
    assert outcomes == [Outcome.REJECTED if i % 2 else Outcome.FAILURE for i in range(len(made))]
    assert len(stats.OUTCOME_OF) <= stats._MAX_TYPES
    assert stats.OUTCOME_OF[KeyError] is Outcome.FAILURE


class ScopeListener:
    """Records execution scopes."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.ended: list[tuple[str, Outcome, float, str | None]] = []

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        if self.fail:
            raise RuntimeError("broken listener")
        return operation

    def end_execution(
        self, handle: object, outcome: Outcome, duration: float, error: BaseException | None
    ) -> None:
        self.ended.append((str(handle), outcome, duration, type(error).__name__ if error else None))

    def start_attempt(self, source: TelemetrySource, operation: str, attempt: int) -> object:
        return None

    def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None) -> None:
        return None


async def test_execution_scope_gets_outcome_and_duration(driver: str, clock: Any) -> None:
    """An execution listener sees one scope per execution, with its outcome and clock duration."""
    listener = ScopeListener()
    HUB.add_listener(listener)
    try:
        pipeline = PipelineBuilder("scoped", clock=clock).build()

        async def slow_a() -> int:
            clock.advance(0.25)
            return 1

        def slow_s() -> int:
            clock.advance(0.25)
            return 1

        await run(pipeline, driver, slow_a, slow_s)

        async def bad_a() -> None:
            raise KeyError("k")

        def bad_s() -> None:
            raise KeyError("k")

        with pytest.raises(KeyError):
            await run(pipeline, driver, bad_a, bad_s)
    finally:
        HUB.remove_listener(listener)
    assert listener.ended == [
        ("scoped", Outcome.SUCCESS, 0.25, None),
        ("scoped", Outcome.FAILURE, 0.0, "KeyError"),
    ]


async def test_a_function_that_does_not_fit_the_driver_is_a_counted_failure_in_scope() -> None:
    """Both drivers count the refusal as a failure and close the scope with the TypeError."""
    listener = ScopeListener()
    HUB.add_listener(listener)
    try:
        pipeline = PipelineBuilder("misfit").build()

        def plain() -> int:
            return 1

        async def coro() -> int:
            return 1

        with pytest.raises(TypeError, match="_sync variant") as refused_async:
            await pipeline.execute(plain)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="coroutine function") as refused_sync:
            pipeline.execute_sync(coro)
    finally:
        HUB.remove_listener(listener)
    assert refused_async.value.__cause__ is None
    assert refused_async.value.__suppress_context__
    assert refused_sync.value.__cause__ is None
    assert pipeline.stats.errors == 2
    assert [(outcome, error) for _, outcome, _, error in listener.ended] == [
        (Outcome.FAILURE, "TypeError"),
        (Outcome.FAILURE, "TypeError"),
    ]


def test_execution_context_started_by_hand_or_by_a_driver_is_the_same() -> None:
    """``ExecutionContext(...)`` and the drivers' ``new_context`` + ``start_context`` agree."""
    by_hand = ExecutionContext(print, (1,), {"k": 2}, "op", 3, True)
    by_driver = new_context()
    start_context(by_driver, print, (1,), {"k": 2}, "op", 3, True)
    assert isinstance(by_driver, ExecutionContext)
    fields = ExecutionContext.__slots__
    # ``rejected`` is an attempt's (``fork``) only: an execution's own never reads it; ``late`` is set
    # only while a late sync result is handed on (``hand_late``), never on a call in time; ``queued``
    # only once an attempt of a race waits for its admission (not even by ``fork``); ``spared`` only
    # once an attempt that called nothing gives its place under the cap back (``spare``); ``answering``
    # only once a race records which attempt answered, on its rare paths (``answered_by``); ``branches``
    # and ``held`` only once a race inside an attempt starts a hedge or waits for an admission;
    # ``nested`` only once a race runs inside an attempt of another
    unset = object()
    assert [getattr(by_hand, f, unset) for f in fields] == [getattr(by_driver, f, unset) for f in fields]
    unset_fields = ["answering", "branches", "held", "late", "nested", "queued", "rejected", "spared"]
    assert [f for f in fields if getattr(by_hand, f, unset) is unset] == unset_fields
    assert by_hand.fork(new_attempt=False).rejected is False
    assert getattr(by_hand.fork(new_attempt=False), "queued", unset) is unset
    assert by_hand.attempt == 1
    assert by_hand.outcome is Outcome.SUCCESS
    assert by_hand.parent is None
    child = by_hand.fork()
    assert child is not None
    assert isinstance(child, ExecutionContext)
    assert child.parent is by_hand
    assert (child.attempt, child.operation, child.max_attempts, child.sync) == (2, "op", 3, True)


async def test_broken_listener_never_reaches_the_caller(driver: str) -> None:
    """A listener that raises is counted and the call's result is unchanged."""
    listener = ScopeListener(fail=True)
    before = HUB.errors
    HUB.add_listener(listener)
    try:
        pipeline = PipelineBuilder("p").build()

        async def ok_a() -> str:
            return "ok"

        def ok_s() -> str:
            return "ok"

        assert await run(pipeline, driver, ok_a, ok_s) == "ok"
    finally:
        HUB.remove_listener(listener)
    assert HUB.errors == before + 1


def test_terminal_is_its_own_next() -> None:
    """The shared terminal link ends every chain."""
    assert TERMINAL.next is TERMINAL
    assert Tag("x", []).next is TERMINAL


async def test_linked_links_run_the_chain() -> None:
    """Awaiting a pipeline runs each link's ``execute`` and the rest of the chain, in order."""
    log: list[str] = []
    pipeline = PipelineBuilder("aliased").add(Tag("a", log)).add(Tag("b", log)).build()

    async def fn() -> str:
        log.append("fn")
        return "ok"

    assert await pipeline.execute(fn) == "ok"
    assert log == ["in:a", "in:b", "fn", "out:b", "out:a"]


async def _numbers() -> Any:
    yield 1


def test_sync_driver_refuses_an_async_generator_function() -> None:
    """The sync driver refuses an async generator function instead of counting its iterator as a success."""
    pipeline = PipelineBuilder("p").build()
    with pytest.raises(TypeError, match="async generator function"):
        pipeline.execute_sync(_numbers)
    assert pipeline.stats.succeeded == 0
    assert pipeline.stats.errors == 1


async def test_async_driver_names_an_async_generator_function() -> None:
    """The async driver says that an async generator function cannot be protected (not "use _sync")."""
    pipeline = PipelineBuilder("p").build()
    with pytest.raises(TypeError, match="async generator function") as info:
        await pipeline.execute(_numbers)
    assert "_sync" not in str(info.value)


def test_protect_with_refuses_an_async_generator_function() -> None:
    """A protect decorator refuses an async generator function when it decorates, before any call."""
    pipeline = PipelineBuilder("p").build()
    with pytest.raises(TypeError, match=r"^'p': fn is an async generator function"):
        protect_with(pipeline, _numbers)


def test_protect_with_a_broken_qualname_is_a_clear_type_error() -> None:
    """Decorating a callable whose __qualname__ raises gives a TypeError that says so."""
    pipeline = PipelineBuilder("p").build()
    with pytest.raises(TypeError, match=r"^'p': fn's metadata .* RuntimeError: no qualname$"):
        protect_with(pipeline, BrokenQualname())


def test_guard_is_still_importable_from_the_pipeline_module() -> None:
    """``Guard`` lives in ``engine/guard.py``; its first home keeps exporting it."""
    from otel_resilience.engine import guard, pipeline  # noqa: PLC0415

    assert pipeline.Guard is guard.Guard
    assert "Guard" in pipeline.__all__


def test_the_engine_enums_hash_by_identity_in_c() -> None:
    """Outcome, Event and AlertKind key hot tables: their hash is object's, equal members stay one key."""
    import pickle  # noqa: PLC0415

    from otel_resilience.engine.events import Event, IdentityEnum  # noqa: PLC0415
    from otel_resilience.patterns.alerts.model import AlertKind  # noqa: PLC0415

    for enum_class in (Outcome, Event, AlertKind):
        assert issubclass(enum_class, IdentityEnum)
        assert enum_class.__hash__ is object.__hash__
        member = next(iter(enum_class))
        assert pickle.loads(pickle.dumps(member)) is member
        assert {member: 1}[pickle.loads(pickle.dumps(member))] == 1
