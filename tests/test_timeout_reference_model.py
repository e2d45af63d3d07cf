"""Nested deadlines against a small reference model of their documented rules, over seeded random runs.

The rules (README's timeout section, ``otel_resilience.patterns.timeout``): deadlines nest, the
effective one (``current_deadline()``) is the earliest of the scopes still open; only the scope
whose deadline is the one in force raises, as its own timeout (``OperationTimeoutError`` naming
it), or answers with its ``default``, or, for ``move_on_after``, goes on after its block; a
looser scope inside it passes the cancellation through untouched, and a fallback inside it does
not answer it (cancellation never triggers a fallback); a fallback outside the scope that timed
out answers its ``OperationTimeoutError``, under the deadlines still open. Only the scope whose
deadline fired counts it (``timeouts``, ``defaults_returned``). A block that catches its
cancellation goes on under the looser deadlines, its value or error goes through (the deadline
counted), and a later scope's cancellation is then reported as the timeout of the scope whose
cancellation is still pending, as with ``asyncio.timeout``. In a thread, a result at or after the
deadline in force is that deadline's timeout; the callee's own error then goes through, counted,
with no default. Scopes run on two clocks, compared by the seconds they have left. A policy
(``ResilienceManager``) nests a fallback outside its total timeout outside a retry whose attempts
have a timeout of their own: a backoff that would reach the deadline is not started.

Async runs use an event loop on virtual time that jumps to its next timer whenever it would
wait, with a clock on that time, so that every deadline fires at its exact virtual time. Sync
runs use a ``FakeClock`` moved by the callee: a result that comes at or after the deadline in
force is that deadline's timeout.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from otel_resilience import (
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Jitter,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    RetryStrategy,
    TimeoutHandler,
    current_deadline,
    time_left,
)
from otel_resilience.engine import SyncDeadline
from otel_resilience.patterns.timeout import fail_after, move_on_after
from otel_resilience.testing import FakeClock

OFFSETS = (0.0, 4096.0)
"""Two clocks that move together, 4096 s apart: a scope's deadline is on its own clock, and what
``current_deadline()`` returns is on the clock of the outermost scope still open (the one that
set the first deadline in force), what is left the same seconds on both."""


class Tie(Exception):
    """Two times of a run coincide: the run is drawn again (the rules say nothing of ties)."""


@dataclass
class Layer:
    kind: str  # "handler", "fail_after", "move_on_after", "fallback"; in threads "sync_deadline" too
    index: int
    seconds: float = 0.0  # a scope's timeout
    default: bool = False  # a handler's default answers its timeout
    after: float = 0.0  # what a fallback's function, or the code after a move_on_after block, sleeps
    clock: int = 0  # which of the two clocks a scope runs on (OFFSETS)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"


@dataclass
class Outcome:
    """What a layer hands the one above it."""

    kind: str  # "value", "timeout" (OperationTimeoutError of a scope), "cancel" (a scope's firing)
    payload: Any  # the value, the name of the scope that timed out, or the index of the one firing
    time: float


@dataclass
class Run:
    layers: list[Layer]
    body: float  # what the innermost callee sleeps
    body_fails: bool = False  # then it raises ConnectionError (its own error), else returns
    catch: float | None = None
    """Async: the body catches the first cancellation and goes on for that many seconds more."""
    seen: dict[str, tuple[float | None, float]] = field(default_factory=dict)
    """Where a deadline was read: (current_deadline(), time_left())."""
    timeouts: dict[int, int] = field(default_factory=dict)
    defaults: dict[int, int] = field(default_factory=dict)


def draw(rng: random.Random, sync: bool) -> Run:
    kinds = ["handler", "fallback"] if sync else ["handler", "fail_after", "move_on_after", "fallback"]
    layers = []
    for index in range(rng.randint(1, 5)):
        kind = rng.choice(kinds)
        layers.append(
            Layer(
                kind,
                index,
                seconds=rng.randint(1, 200) / 8,
                default=rng.random() < 0.4,
                after=rng.choice([0.0, rng.randint(1, 200) / 8]),
                clock=rng.choice([0, 0, 1]),
            )
        )
    catch = None if sync or rng.random() < 0.6 else rng.choice([0.0, rng.randint(1, 200) / 8])
    return Run(layers, body=rng.randint(1, 200) / 8, body_fails=rng.random() < 0.3, catch=catch)


# --- the model ---------------------------------------------------------------------------------


def earliest(open_scopes: list[tuple[float, int]]) -> tuple[float, int] | None:
    """The deadline in force and its scope: the earliest (an outer one on a tie, which never comes)."""
    if not open_scopes:
        return None
    deadlines = sorted(open_scopes)
    if len(deadlines) > 1 and deadlines[0][0] == deadlines[1][0]:
        raise Tie
    return deadlines[0]


def sleep_under(open_scopes: list[tuple[float, int]], now: float, seconds: float) -> Outcome:
    """An async sleep: it ends, or the deadline in force fires first and cancels it."""
    force = earliest(open_scopes)
    if force is None or now + seconds < force[0]:
        return Outcome("value", None, now + seconds)
    if now + seconds == force[0]:
        raise Tie
    return Outcome("cancel", force[1], force[0])


def model_async(run: Run, now: float) -> Outcome:
    """Scopes end as ``asyncio.timeout``'s do: each fires once, cancelling its task; a fired scope,
    on its way out, takes its cancellation back and reports its own timeout if no other is still
    pending (one the block caught stays pending: a later scope's cancellation is then reported
    as the timeout of the scope that fired first)."""
    expected: dict[str, tuple[float | None, float]] = {}
    fired: set[int] = set()
    pending = [0]  # the task's cancellations not taken back (``Task.cancelling()``)

    def read(where: str, open_scopes: list[tuple[float, int]], at: float) -> None:
        force = earliest(open_scopes)
        if force is None:
            expected[where] = (None, float("inf"))
        else:
            outermost = run.layers[open_scopes[0][1]].clock
            expected[where] = (force[0] + OFFSETS[outermost], force[0] - at)

    def sleep(open_scopes: list[tuple[float, int]], at: float, seconds: float) -> Outcome:
        """Sleep under the scopes that have not fired yet (each fires once)."""
        slept = sleep_under([scope for scope in open_scopes if scope[1] not in fired], at, seconds)
        if slept.kind == "cancel":
            fired.add(slept.payload)
            pending[0] += 1
        return slept

    def layer(position: int, open_scopes: list[tuple[float, int]], at: float) -> Outcome:  # noqa: PLR0911 - one return per rule
        if position == len(run.layers):
            read("body", open_scopes, at)
            slept = sleep(open_scopes, at, run.body)
            if slept.kind != "value" and run.catch is not None:
                slept = sleep(open_scopes, slept.time, run.catch)  # caught: it goes on
            if slept.kind != "value":
                return slept
            return Outcome("error" if run.body_fails else "value", "body", slept.time)
        this = run.layers[position]
        read(this.name, open_scopes, at)
        if this.kind == "fallback":
            inner = layer(position + 1, open_scopes, at)
            if inner.kind not in ("timeout", "error"):
                return inner
            read(f"{this.name} function", open_scopes, inner.time)
            slept = sleep(open_scopes, inner.time, this.after)
            return Outcome("value", this.name, slept.time) if slept.kind == "value" else slept
        deadline = at + this.seconds
        inner = layer(position + 1, [*open_scopes, (deadline, this.index)], at)
        if this.index not in fired:
            return inner
        pending[0] -= 1
        if inner.kind == "cancel" and pending[0] > 0:
            return inner  # reported as the timeout of the scope whose cancellation is pending
        run.timeouts[this.index] = run.timeouts.get(this.index, 0) + 1  # its deadline expired
        if inner.kind != "cancel":
            return inner  # what the block ended with (a value, an error of its own)
        if this.kind == "handler" and this.default:
            run.defaults[this.index] = 1
            return Outcome("value", f"default{this.index}", inner.time)
        if this.kind == "move_on_after":
            slept = sleep(open_scopes, inner.time, this.after)
            return Outcome("value", this.name, slept.time) if slept.kind == "value" else slept
        return Outcome("timeout", this.name, inner.time)

    outcome = layer(0, [], now)
    run.seen = expected
    return outcome


# --- the real thing, async ----------------------------------------------------------------------


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, which jumps to the next timer whenever the loop would wait."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 1000.0

    def time(self) -> float:
        return self.virtual_now

    def _run_once(self) -> None:
        if not self._ready:  # type: ignore[attr-defined] # asyncio's own loop
            due = [handle.when() for handle in self._scheduled if not handle.cancelled()]  # type: ignore[attr-defined]
            if due:
                self.virtual_now = max(self.virtual_now, min(due))
        super()._run_once()  # type: ignore[misc]


class LoopClock:
    """The clock of the running virtual-time loop (what the scopes' deadlines are read on)."""

    def __init__(self, loop: VirtualTimeLoop, offset: float = 0.0) -> None:
        self.loop = loop
        self.offset = offset

    def now(self) -> float:
        return self.loop.virtual_now + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        raise AssertionError("no sync sleep on the loop's clock")


def build_async(run: Run, clocks: list[LoopClock]) -> tuple[Any, dict[int, TimeoutHandler]]:
    handlers: dict[int, TimeoutHandler] = {}
    seen: dict[str, tuple[float | None, float]] = {}
    run.seen = seen

    def read(where: str) -> None:
        seen[where] = (current_deadline(), time_left())

    async def body() -> str:
        read("body")
        if run.catch is None:
            await asyncio.sleep(run.body)
        else:
            try:
                await asyncio.sleep(run.body)
            except asyncio.CancelledError:
                await asyncio.sleep(run.catch)  # a second cancellation is not caught
        if run.body_fails:
            raise ConnectionError("body")
        return "body"

    call: Any = body
    for this in reversed(run.layers):
        call = wrap_async(this, call, clocks[this.clock], read, handlers)
    return call, handlers


def wrap_async(
    this: Layer, inner: Any, clock: LoopClock, read: Any, handlers: dict[int, TimeoutHandler]
) -> Any:
    if this.kind == "handler":
        kwargs: dict[str, Any] = {"default": f"default{this.index}"} if this.default else {}
        handler = handlers[this.index] = TimeoutHandler(this.seconds, name=this.name, clock=clock, **kwargs)

        async def run_handler() -> Any:
            read(this.name)
            return await handler.with_timeout(inner)

        return run_handler
    if this.kind == "fail_after":

        async def run_fail_after() -> Any:
            read(this.name)
            async with fail_after(this.seconds, clock=clock, operation=this.name):
                return await inner()

        return run_fail_after
    if this.kind == "move_on_after":

        async def run_move_on_after() -> Any:
            read(this.name)
            async with move_on_after(this.seconds, clock=clock, operation=this.name) as scope:
                return await inner()
            assert scope.expired
            await asyncio.sleep(this.after)
            return this.name

        return run_move_on_after

    async def function(error: Exception) -> str:
        assert isinstance(error, (OperationTimeoutError, ConnectionError))
        read(f"{this.name} function")
        await asyncio.sleep(this.after)
        return this.name

    fallback = FallbackHandler(
        FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION,
            fallback_function=function,
            handle_exceptions=(OperationTimeoutError, ConnectionError),
        )
    )

    async def run_fallback() -> Any:
        read(this.name)
        return await fallback.execute_with_fallback(inner)

    return run_fallback


def drawn(seed: int, sync: bool) -> tuple[Run, Outcome]:
    rng = random.Random(seed)
    while True:
        run = draw(rng, sync)
        try:
            return run, (model_sync(run, 1000.0) if sync else model_async(run, 1000.0))
        except Tie:
            continue


@pytest.mark.parametrize("seed", range(300))
def test_async_nested_deadlines_follow_the_reference_model(seed: int) -> None:
    run, expected = drawn(seed, sync=False)
    expected_seen, expected_timeouts, expected_defaults = run.seen, run.timeouts, run.defaults
    loop = VirtualTimeLoop()
    call, handlers = build_async(run, [LoopClock(loop, offset) for offset in OFFSETS])
    try:

        async def main() -> Outcome:
            try:
                value = await call()
            except OperationTimeoutError as error:
                return Outcome("timeout", error.operation, loop.virtual_now)
            except ConnectionError:
                return Outcome("error", "body", loop.virtual_now)
            return Outcome("value", value, loop.virtual_now)

        got = loop.run_until_complete(main())
    finally:
        loop.close()
    description = f"seed {seed}: {run.layers}, body {run.body} {run.body_fails} {run.catch}"
    assert (got.kind, got.payload, got.time) == (expected.kind, expected.payload, expected.time), description
    assert run.seen == expected_seen, description
    for index, handler in handlers.items():
        stats = handler.get_stats()
        assert stats["timeouts"] == expected_timeouts.get(index, 0), description
        assert stats["defaults_returned"] == expected_defaults.get(index, 0), description


def model_sync(run: Run, now: float) -> Outcome:
    """Sync scopes cancel nothing: each is checked when its call returns, against the deadline in force."""
    expected: dict[str, tuple[float | None, float]] = {}

    def read(where: str, open_scopes: list[tuple[float, int]], at: float) -> None:
        force = earliest(open_scopes)
        if force is None:
            expected[where] = (None, float("inf"))
        else:
            outermost = run.layers[open_scopes[0][1]].clock
            expected[where] = (force[0] + OFFSETS[outermost], force[0] - at)

    def layer(position: int, open_scopes: list[tuple[float, int]], at: float) -> Outcome:  # noqa: PLR0911 - one return per rule
        if position == len(run.layers):
            read("body", open_scopes, at)
            return Outcome("error" if run.body_fails else "value", "body", at + run.body)
        this = run.layers[position]
        read(this.name, open_scopes, at)
        if this.kind == "fallback":
            inner = layer(position + 1, open_scopes, at)
            if inner.kind not in ("timeout", "error"):
                return inner
            read(f"{this.name} function", open_scopes, inner.time)
            return Outcome("value", this.name, inner.time + this.after)
        deadline = at + this.seconds
        scopes = [*open_scopes, (deadline, this.index)]
        inner = layer(position + 1, scopes, at)
        force = earliest(scopes)
        assert force is not None
        if force[1] != this.index:
            return inner  # a looser scope inside the one in force: not its timeout
        # A result at the deadline itself is late: a scope's deadline is reached at `now >= deadline`.
        if inner.time < deadline or inner.kind == "timeout":
            # An inner scope's timeout, late here too, is that scope's: counted once, by it
            # (as in a task, where it fired before this deadline came).
            return inner
        run.timeouts[this.index] = run.timeouts.get(this.index, 0) + 1
        if inner.kind == "error":
            return inner  # the callee's own error at or after the deadline: through, no default
        if this.default and this.kind == "handler":
            run.defaults[this.index] = 1
            return Outcome("value", f"default{this.index}", inner.time)
        return Outcome("timeout", this.name, inner.time)

    outcome = layer(0, [], now)
    run.seen = expected
    return outcome


class TwinClocks:
    """Two fake clocks, OFFSETS apart, moved together."""

    def __init__(self, start: float) -> None:
        self.clocks = [FakeClock(start + offset) for offset in OFFSETS]

    def advance(self, seconds: float) -> None:
        for clock in self.clocks:
            clock.advance(seconds)

    def now(self) -> float:
        return self.clocks[0].now()


def build_sync(run: Run, clock: TwinClocks) -> tuple[Any, dict[int, TimeoutHandler]]:
    handlers: dict[int, TimeoutHandler] = {}
    seen: dict[str, tuple[float | None, float]] = {}
    run.seen = seen

    def read(where: str) -> None:
        seen[where] = (current_deadline(), time_left())

    def body() -> str:
        read("body")
        clock.advance(run.body)
        if run.body_fails:
            raise ConnectionError("body")
        return "body"

    call: Any = body
    for this in reversed(run.layers):
        call = wrap_sync(this, call, clock, read, handlers)  # each scope on its own of the two
    return call, handlers


def wrap_sync(
    this: Layer, inner: Any, clock: TwinClocks, read: Any, handlers: dict[int, TimeoutHandler]
) -> Any:
    if this.kind == "handler":
        kwargs: dict[str, Any] = {"default": f"default{this.index}"} if this.default else {}
        own = clock.clocks[this.clock]
        handler = handlers[this.index] = TimeoutHandler(this.seconds, name=this.name, clock=own, **kwargs)

        def run_handler() -> Any:
            read(this.name)
            return handler.with_timeout_sync(inner)

        return run_handler
    if this.kind == "sync_deadline":

        def run_sync_deadline() -> Any:
            read(this.name)
            with SyncDeadline(clock.clocks[this.clock], this.seconds, this.name):
                return inner()

        return run_sync_deadline

    def function(error: Exception) -> str:
        assert isinstance(error, (OperationTimeoutError, ConnectionError))
        read(f"{this.name} function")
        clock.advance(this.after)
        return this.name

    fallback = FallbackHandler(
        FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION,
            fallback_function=function,
            handle_exceptions=(OperationTimeoutError, ConnectionError),
        ),
        clock=clock.clocks[0],
    )

    def run_fallback() -> Any:
        read(this.name)
        return fallback.execute_with_fallback_sync(inner)

    return run_fallback


@pytest.mark.parametrize("seed", range(300))
def test_sync_nested_deadlines_follow_the_reference_model(seed: int) -> None:
    run, expected = drawn(seed, sync=True)
    expected_seen, expected_timeouts, expected_defaults = run.seen, run.timeouts, run.defaults
    clock = TwinClocks(1000.0)
    call, handlers = build_sync(run, clock)
    try:
        got = Outcome("value", call(), clock.now())
    except OperationTimeoutError as error:
        got = Outcome("timeout", error.operation, clock.now())
    except ConnectionError:
        got = Outcome("error", "body", clock.now())
    description = f"seed {seed}: {run.layers}, body {run.body} {run.body_fails} {run.catch}"
    assert (got.kind, got.payload, got.time) == (expected.kind, expected.payload, expected.time), description
    assert run.seen == expected_seen, description
    for index, handler in handlers.items():
        stats = handler.get_stats()
        assert stats["timeouts"] == expected_timeouts.get(index, 0), description
        assert stats["defaults_returned"] == expected_defaults.get(index, 0), description


# --- a policy: fallback outside the total timeout, a retry whose attempts have their own ----------


@dataclass
class Policy:
    total: float | None  # ResilienceConfig.timeout
    attempt: float | None  # RetryPolicy.attempt_timeout
    attempts: int
    backoff: float  # FIXED, no jitter
    durations: list[float]  # each attempt's time
    fails: list[bool]  # each attempt raises ConnectionError at its end (else returns)
    fallback: bool
    fallback_time: float
    outer: float | None  # a fail_after (SyncDeadline) around the whole call
    seen: list[tuple[str, float | None]] = field(default_factory=list)
    """(where, current_deadline()) in order: each attempt, the fallback function."""
    fallback_saw: tuple[str, str] | None = None
    """(error type, its scope) the fallback function was given."""


def draw_policy(rng: random.Random) -> Policy:
    attempts = rng.randint(1, 4)
    return Policy(
        total=rng.choice([None, rng.randint(1, 400) / 8]),
        attempt=rng.choice([None, rng.randint(1, 120) / 8]),
        attempts=attempts,
        backoff=rng.randint(1, 80) / 8,
        durations=[rng.randint(1, 200) / 8 for _ in range(attempts)],
        fails=[rng.random() < 0.6 for _ in range(attempts)],
        fallback=rng.random() < 0.6,
        fallback_time=rng.choice([0.0, rng.randint(1, 80) / 8]),
        outer=rng.choice([None, None, rng.randint(1, 400) / 8]),
    )


def pick(deadlines: dict[str, float]) -> tuple[str, float]:
    """The deadline in force and whose it is; a tie between two is drawn again."""
    ordered = sorted(deadlines.items(), key=lambda item: item[1])
    if len(ordered) > 1 and ordered[0][1] == ordered[1][1] and ordered[0][1] != math.inf:
        raise Tie
    return ordered[0]


def model_policy(policy: Policy, start: float, sync: bool) -> Outcome:
    """Outcome kinds: "value" (payload the value), "timeout" (payload (operation, scope)), "error" (ConnectionError)."""
    total = start + policy.total if policy.total is not None else math.inf
    outer = start + policy.outer if policy.outer is not None else math.inf
    expected: list[tuple[str, float | None]] = []
    now = start
    result: Outcome | None = None
    for number in range(policy.attempts):
        attempt = now + policy.attempt if policy.attempt is not None else math.inf
        whose, force = pick({"outer": outer, "total": total, "attempt": attempt})
        expected.append((f"attempt {number + 1}", None if force == math.inf else force))
        end = now + policy.durations[number]
        if end == force and not sync:  # in a thread, a result at the deadline is late
            raise Tie
        if end < force:
            result = Outcome("error" if policy.fails[number] else "value", "dependency", end)
            if result.kind == "value":
                break
        elif sync and policy.fails[number]:
            # A thread is not cut: its own error at or after the deadline goes through unchanged
            # (past the total or the outer deadline, no time is left for a backoff: below).
            result = Outcome("error", "dependency", end)
        elif whose == "attempt":
            result = Outcome("timeout", ("policy", "attempt"), force if not sync else end)
        else:
            # The total or the outer deadline: no retry hears of it (a cancellation; in a thread,
            # the deadline reached), its scope raises its own timeout.
            when = force if not sync else end
            operation = "policy" if whose == "total" else "outer"
            result = Outcome("timeout", (operation, "total"), when)
            break
        if number == policy.attempts - 1:
            break
        if min(total, outer) - result.time <= policy.backoff:
            break  # no more time left than the backoff: the retry gives up at once
        now = result.time + policy.backoff
    assert result is not None
    if policy.fallback and result.kind != "value" and result.payload != ("outer", "total"):
        kind = "ConnectionError" if result.kind == "error" else "OperationTimeoutError"
        policy.fallback_saw = (kind, "" if result.kind == "error" else result.payload[1])
        expected.append(("fallback", None if outer == math.inf else outer))
        end = result.time + policy.fallback_time
        if end == outer and not sync:
            raise Tie
        if end < outer:
            result = Outcome("value", "fallback", end)
        elif sync:
            result = Outcome("timeout", ("outer", "total"), end)
        else:
            result = Outcome("timeout", ("outer", "total"), outer)
    policy.seen = expected
    return result


def run_policy(policy: Policy, sync: bool) -> Outcome:
    """Run ``policy`` through a manager (on the loop's virtual time, or a fake clock in a thread)."""
    seen: list[tuple[str, float | None]] = []
    policy.seen = seen
    count = iter(range(policy.attempts))

    def fallback_function(error: Exception) -> str:
        scope = getattr(error, "scope", "") if isinstance(error, OperationTimeoutError) else ""
        policy.fallback_saw = (type(error).__name__, scope)
        seen.append(("fallback", current_deadline()))
        return "fallback"

    def config() -> ResilienceConfig:
        retry = RetryPolicy(
            max_attempts=policy.attempts,
            strategy=RetryStrategy.FIXED,
            initial_delay=policy.backoff,
            jitter=Jitter.NONE,
            attempt_timeout=policy.attempt,
        )
        fallback = None
        if policy.fallback:
            fallback = FallbackConfig(
                strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=answer
            )
        return ResilienceConfig(
            name="policy", timeout=policy.total, retry_policy=retry, fallback_config=fallback
        )

    def result_of(number: int) -> str:
        if policy.fails[number]:
            raise ConnectionError("dependency")
        return "dependency"

    if sync:
        clock = FakeClock(1000.0)

        def answer(error: Exception) -> str:
            value = fallback_function(error)
            clock.advance(policy.fallback_time)
            return value

        def dependency() -> str:
            number = next(count)
            seen.append((f"attempt {number + 1}", current_deadline()))
            clock.advance(policy.durations[number])
            return result_of(number)

        manager = ResilienceManager(clock=clock)
        try:
            if policy.outer is None:
                value = manager.execute_with_resilience_sync(dependency, config())
            else:
                with SyncDeadline(clock, policy.outer, "outer"):
                    value = manager.execute_with_resilience_sync(dependency, config())
        except OperationTimeoutError as error:
            return Outcome("timeout", (error.operation, error.scope), clock.now())
        except ConnectionError:
            return Outcome("error", "dependency", clock.now())
        return Outcome("value", value, clock.now())

    loop = VirtualTimeLoop()
    loop_clock = LoopClock(loop)

    async def answer(error: Exception) -> str:
        value = fallback_function(error)
        await asyncio.sleep(policy.fallback_time)
        return value

    async def async_dependency() -> str:
        number = next(count)
        seen.append((f"attempt {number + 1}", current_deadline()))
        await asyncio.sleep(policy.durations[number])
        return result_of(number)

    async def main() -> Outcome:
        manager = ResilienceManager(clock=loop_clock)
        try:
            if policy.outer is None:
                value = await manager.execute_with_resilience(async_dependency, config())
            else:
                async with fail_after(policy.outer, clock=loop_clock, operation="outer"):
                    value = await manager.execute_with_resilience(async_dependency, config())
        except OperationTimeoutError as error:
            return Outcome("timeout", (error.operation, error.scope), loop.virtual_now)
        except ConnectionError:
            return Outcome("error", "dependency", loop.virtual_now)
        return Outcome("value", value, loop.virtual_now)

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def drawn_policy(seed: int, sync: bool) -> tuple[Policy, Outcome]:
    rng = random.Random(seed)
    while True:
        policy = draw_policy(rng)
        if policy.attempt is not None and policy.total is not None and policy.attempt >= policy.total:
            continue  # refused by ResilienceConfig: an attempt timeout is below the total one
        try:
            return policy, model_policy(policy, 1000.0, sync)
        except Tie:
            continue


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("seed", range(300))
def test_a_policys_deadlines_follow_the_reference_model(seed: int, sync: bool) -> None:
    policy, expected = drawn_policy(seed, sync)
    expected_seen, expected_saw = policy.seen, policy.fallback_saw
    policy.fallback_saw = None
    got = run_policy(policy, sync)
    description = f"seed {seed}: {policy}"
    assert (got.kind, got.payload, got.time) == (expected.kind, expected.payload, expected.time), description
    assert policy.seen == expected_seen, description
    assert policy.fallback_saw == expected_saw, description
