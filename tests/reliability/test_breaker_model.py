"""The circuit breaker checked against a small reference model, step by step (hypothesis).

Random calls (async, overlapping, and sync), outcomes (success, recorded failure, ignored error,
unrecorded error, cancellation), clock advances and manual control are applied to a real
breaker and to :class:`Model`; after every step the breaker's stats must equal the model's.
Async calls are tasks on a loop driven by hand, so several calls can be in flight at once and
finish in any order (a slow call admitted before a trip finishes after it).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from otel_resilience.errors import CircuitOpenError
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from otel_resilience.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
OUTCOMES = ("ok", "fail", "ignored", "unrecorded", "cancel")
WEIGHTED_OUTCOMES = ("ok", "ok", "fail", "fail", "fail", "ignored", "unrecorded", "cancel")


class RecordedError(Exception):
    """Counted as a failure."""


class IgnoredError(Exception):
    """Counted as neither success nor failure."""


class UnrecordedError(Exception):
    """Neither recorded nor ignored: the dependency answered, so it counts as a success."""


class Interrupt(BaseException):
    """A non-Exception escape: never an outcome, the permit is released."""


@dataclass
class Model:
    """The reference: the documented state machine, written as plainly as possible."""

    failure_threshold: int
    success_threshold: int
    timeout: float
    half_open_max_calls: int
    now: float
    state: str = CLOSED
    generation: int = 0
    failure_count: int = 0
    success_count: int = 0
    in_flight: int = 0
    opened_until: float = -math.inf
    totals: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("successes", "failures", "rejected", "ignored", "cancelled", "times_opened"), 0
        )
    )

    def transition(self, new: str, open_for: float | None = None) -> None:
        old = self.state
        self.state = new
        self.generation += 1
        self.in_flight = 0
        self.success_count = 0
        if new == OPEN:
            if old != OPEN:
                self.totals["times_opened"] += 1
            self.opened_until = self.now + (self.timeout if open_for is None else open_for)
        else:
            self.failure_count = 0

    def poll(self) -> None:
        if self.state == OPEN and self.now >= self.opened_until:
            self.transition(HALF_OPEN)

    def admit(self) -> int | None:
        """Return the generation of an admitted call, or ``None`` (rejected)."""
        self.poll()
        if self.state == CLOSED:
            return self.generation
        if self.state == HALF_OPEN and self.in_flight < self.half_open_max_calls:
            self.in_flight += 1
            return self.generation
        self.totals["rejected"] += 1
        return None

    def end(self, generation: int, outcome: str) -> None:
        current = generation == self.generation
        if outcome in {"ok", "unrecorded"}:
            self.totals["successes"] += 1
            if not current:
                return
            if self.state == CLOSED:
                self.failure_count = 0
                return
            self.in_flight -= 1
            self.success_count += 1
            if self.success_count >= self.success_threshold:
                self.transition(CLOSED)
        elif outcome == "fail":
            self.totals["failures"] += 1
            if not current:
                return
            if self.state == HALF_OPEN:
                self.transition(OPEN)
                return
            self.failure_count += 1
            if self.failure_count >= self.failure_threshold:
                self.transition(OPEN)
        else:
            self.totals["ignored" if outcome == "ignored" else "cancelled"] += 1
            if current and self.state == HALF_OPEN:
                self.in_flight -= 1


@dataclass
class Call:
    """One async call in flight."""

    task: asyncio.Task[object]
    generation: int | None
    future: asyncio.Future[object] | None = None


class BreakerMachine(RuleBasedStateMachine):
    """Drives a real breaker and the model with the same steps."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, object]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.clock = FakeClock(1000.0)
        self.calls: dict[int, Call] = {}
        self.next_id = 0
        self.breaker: CircuitBreaker
        self.model: Model

    @initialize(
        failure_threshold=st.integers(1, 4),
        success_threshold=st.integers(1, 3),
        timeout=st.integers(1, 5),
        half_open_max_calls=st.integers(1, 3),
    )
    def build(
        self, failure_threshold: int, success_threshold: int, timeout: int, half_open_max_calls: int
    ) -> None:
        config = CircuitBreakerConfig(
            failure_threshold=failure_threshold,
            success_threshold=success_threshold,
            timeout=float(timeout),
            half_open_max_calls=half_open_max_calls,
            record_exceptions=(RecordedError,),
            ignore_exceptions=(IgnoredError,),
        )
        self.breaker = CircuitBreaker("model", config, clock=self.clock)
        self.model = Model(
            failure_threshold, success_threshold, float(timeout), half_open_max_calls, self.clock.now()
        )

    # -- helpers ------------------------------------------------------------------------------

    def settle(self) -> None:
        async def spin() -> None:
            for _ in range(6):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())

    def in_flight_ids(self) -> list[int]:
        return sorted(i for i, call in self.calls.items() if call.future is not None and not call.task.done())

    # -- rules --------------------------------------------------------------------------------

    @rule(count=st.integers(1, 4))
    def start_async_calls(self, count: int) -> None:
        for _ in range(count):
            self.start_async_call()

    def start_async_call(self) -> None:
        call_id = self.next_id
        self.next_id += 1
        started: list[asyncio.Future[object]] = []

        async def dependency() -> object:
            future = self.loop.create_future()
            started.append(future)
            return await future

        task = self.loop.create_task(self.breaker.call(dependency))
        self.settle()
        generation = self.model.admit()
        if generation is None:
            assert not started, "a rejected call reached the dependency"
            assert task.done()
            assert isinstance(task.exception(), CircuitOpenError)
            return
        assert len(started) == 1, "an admitted call did not reach the dependency"
        self.calls[call_id] = Call(task, generation, started[0])

    @precondition(lambda self: bool(self.in_flight_ids()))
    @rule(data=st.data(), outcome=st.sampled_from(WEIGHTED_OUTCOMES))
    def finish_async_call(self, data: st.DataObject, outcome: str) -> None:
        call_id = data.draw(st.sampled_from(self.in_flight_ids()))
        call = self.calls.pop(call_id)
        assert call.future is not None
        assert call.generation is not None
        if outcome == "ok":
            call.future.set_result("value")
        elif outcome == "cancel":
            call.task.cancel()
        else:
            error = {"fail": RecordedError, "ignored": IgnoredError, "unrecorded": UnrecordedError}[outcome]
            call.future.set_exception(error())
        self.settle()
        assert call.task.done()
        if outcome == "cancel":
            assert call.task.cancelled()
        else:
            call.task.exception()  # retrieved: the outcome is checked through the stats
        self.model.end(call.generation, outcome)

    @rule(outcome=st.sampled_from(WEIGHTED_OUTCOMES))
    def sync_call(self, outcome: str) -> None:
        reached: list[bool] = []

        def dependency() -> str:
            reached.append(True)
            if outcome == "ok":
                return "value"
            if outcome == "cancel":
                raise Interrupt
            error = {"fail": RecordedError, "ignored": IgnoredError, "unrecorded": UnrecordedError}[outcome]
            raise error

        generation = self.model.admit()
        expected: type[BaseException] | None = {
            "ok": None,
            "fail": RecordedError,
            "ignored": IgnoredError,
            "unrecorded": UnrecordedError,
            "cancel": Interrupt,
        }[outcome]
        if generation is None:
            expected = CircuitOpenError
        if expected is None:
            assert self.breaker.call_sync(dependency) == "value"
        else:
            with pytest.raises(expected):
                self.breaker.call_sync(dependency)
        assert bool(reached) == (generation is not None)
        if generation is not None:
            self.model.end(generation, outcome)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0, 6.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now = self.clock.now()

    @rule(action=st.sampled_from(["reset", "open_forever", "open_1", "open_3"]))
    def manual_control(self, action: str) -> None:
        if action == "reset":
            self.breaker.reset()
            self.model.transition(CLOSED)
        elif action == "open_forever":
            self.breaker.force_open()
            self.model.transition(OPEN, math.inf)
        else:
            duration = float(action.removeprefix("open_"))
            self.breaker.force_open(duration)
            self.model.transition(OPEN, duration)

    # -- checks -------------------------------------------------------------------------------

    @invariant()
    def no_callback_failed(self) -> None:
        assert not self.loop_errors, self.loop_errors

    @invariant()
    def matches_model(self) -> None:
        if not hasattr(self, "model"):
            return
        model = self.model
        model.poll()
        stats = self.breaker.get_stats()
        assert stats["state"] == model.state
        assert stats["failure_count"] == model.failure_count
        assert stats["success_count"] == model.success_count
        assert stats["half_open_in_flight"] == model.in_flight
        assert stats["total_successes"] == model.totals["successes"]
        assert stats["total_failures"] == model.totals["failures"]
        assert stats["total_rejected"] == model.totals["rejected"]
        assert stats["total_ignored"] == model.totals["ignored"]
        assert stats["total_cancelled"] == model.totals["cancelled"]
        assert stats["times_opened"] == model.totals["times_opened"]
        expected_retry_after = max(0.0, model.opened_until - model.now) if model.state == OPEN else 0.0
        assert stats["retry_after"] == expected_retry_after
        assert stats["total_requests"] == sum(
            model.totals[k] for k in ("successes", "failures", "rejected", "ignored", "cancelled")
        )

    @invariant()
    def half_open_probes_are_bounded(self) -> None:
        if not hasattr(self, "model"):
            return
        current = [
            c for c in self.calls.values() if c.generation == self.model.generation and not c.task.done()
        ]
        if self.model.state == HALF_OPEN:
            assert len(current) <= self.model.half_open_max_calls

    def teardown(self) -> None:
        pending = [call.task for call in self.calls.values() if not call.task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()


BreakerMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_breaker_matches_reference_model = BreakerMachine.TestCase
test_breaker_matches_reference_model.__doc__ = (
    "After every random step the breaker's stats equal the model's."
)
