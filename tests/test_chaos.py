"""Tests for chaos: its config, what it injects and how often, when, and its run-time switches."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import functools
import inspect
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from forking_support import run_in_child
from support import add_note

from otel_resilience import Chaos, ChaosConfig, ChaosSwitch, ResilienceConfig, ResilienceManager
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.validation import MAX_DURATION

# --- helpers -------------------------------------------------------------------------------


def chaos_of(clock: Any, *, name: str = "drill", **config: Any) -> Chaos:
    """A chaos instance on ``clock`` with ``ChaosConfig(**config)``."""
    return Chaos(name, ChaosConfig(**config), clock=clock)


async def call(chaos: Chaos, driver: str, calls: list[str] | None = None, value: str = "real") -> Any:
    """One call through the async or the sync driver, recording that the dependency ran."""

    def fn() -> str:
        if calls is not None:
            calls.append(value)
        return value

    if driver == "sync":
        return chaos.call_sync(fn)

    async def afn() -> str:
        return fn()

    return await chaos.call(afn)


def kind_of(chaos: Chaos) -> str:
    """Run one sync call and say what it got: ``fault``, ``outcome`` or ``call``."""
    try:
        result = chaos.call_sync(lambda: "real")
    except ConnectionError:
        return "fault"
    return "call" if result == "real" else "outcome"


class Uncopyable(Exception):
    """An exception whose class needs an argument its copy does not get."""

    def __init__(self, code: int, *, detail: str) -> None:
        super().__init__(code)
        self.detail = detail


# --- config --------------------------------------------------------------------------------


def test_defaults_inject_nothing_and_are_pinned() -> None:
    """The signature the issue names, with every rate 0: a default config never injects."""
    config = ChaosConfig()
    assert (
        config.fault_rate,
        config.fault,
        config.latency_rate,
        config.latency,
        config.outcome_rate,
        config.outcome,
        config.enabled,
        config.seed,
    ) == (0.0, None, 0.0, 0.0, 0.0, None, True, None)
    assert not config.injects
    assert ChaosConfig(fault_rate=0.1, fault=OSError).injects
    assert ChaosConfig(latency_rate=0.1, latency=1.0, enabled=ChaosSwitch()).injects
    assert not ChaosConfig(fault_rate=1.0, fault=OSError, enabled=False).injects


@pytest.mark.parametrize("field", ["fault_rate", "latency_rate", "outcome_rate"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_rates_are_in_zero_to_one(field: str, bad: float) -> None:
    """A rate outside [0, 1] is refused naming its field."""
    extra = {"fault": OSError, "latency": 1.0}
    with pytest.raises(ValueError, match=rf"ChaosConfig\.{field} must be"):
        ChaosConfig(**{field: bad}, **extra)


@pytest.mark.parametrize("field", ["fault_rate", "latency_rate", "outcome_rate"])
def test_a_rate_must_be_a_number(field: str) -> None:
    """A bool or a string is a TypeError."""
    with pytest.raises(TypeError, match=rf"ChaosConfig\.{field} must be a number"):
        ChaosConfig(**{field: True})


def test_fault_and_outcome_rates_share_one_draw() -> None:
    """Their sum is at most 1 (rounding allowed, nothing more)."""
    assert ChaosConfig(fault_rate=0.7, fault=OSError, outcome_rate=0.3).outcome_rate == 0.3
    with pytest.raises(ValueError, match=r"ChaosConfig\.outcome_rate must be <= 1 - fault_rate \(0\.4\)"):
        ChaosConfig(fault_rate=0.6, fault=OSError, outcome_rate=0.5)


def test_a_fault_rate_needs_a_fault() -> None:
    """fault_rate > 0 without a fault would inject nothing: refused."""
    with pytest.raises(ValueError, match=r"ChaosConfig\.fault must be .* when fault_rate > 0"):
        ChaosConfig(fault_rate=0.5)


@pytest.mark.parametrize(
    "fault",
    [KeyboardInterrupt, KeyboardInterrupt(), SystemExit(1), "boom", 42],
    ids=["interrupt-class", "interrupt", "exit", "str", "int"],
)
def test_a_fault_is_an_exception_its_class_or_a_factory(fault: object) -> None:
    """Cancellation and interrupts are not faults; neither is a non-callable value."""
    with pytest.raises(TypeError, match=r"ChaosConfig\.fault must be"):
        ChaosConfig(fault_rate=0.5, fault=fault)  # type: ignore[arg-type]


class StopIterationOfMine(StopIteration):
    """A StopIteration of a class of its own: a coroutine cannot raise it either."""


@pytest.mark.parametrize("fault", [StopIteration, StopIteration(), StopIterationOfMine])
def test_a_stop_iteration_is_refused_as_a_fault(fault: object) -> None:
    """Python turns a StopIteration raised in a coroutine into RuntimeError (PEP 479): an async run
    failed with RuntimeError, a sync one with StopIteration, so a fallback or a retry on it answered
    the sync drill only. Refused, naming the field."""
    with pytest.raises(ValueError, match=r"^ChaosConfig\.fault must be an exception a coroutine can raise"):
        ChaosConfig(fault_rate=0.5, fault=fault)  # type: ignore[arg-type]


async def test_a_factory_returning_a_stop_iteration_skips_the_injection(clock: Any, driver: str) -> None:
    """What a factory returns is known at the injection only: as any fault it could not make, the run
    is not injected and ``errors`` counts it, in both drivers alike (the async one raised RuntimeError)."""
    chaos = chaos_of(clock, fault_rate=1.0, fault=lambda: StopIteration())
    assert await call(chaos, driver) == "real"
    assert (chaos.get_stats()["faults"], chaos.get_stats()["errors"]) == (0, 1)


def test_an_exception_that_cannot_be_copied_is_refused() -> None:
    """A copy is raised each time: an instance whose copy fails is refused with the way out."""
    with pytest.raises(TypeError, match=r"ChaosConfig\.fault must be an exception that copy\.copy\(\)"):
        ChaosConfig(fault_rate=0.5, fault=Uncopyable(3, detail="x"))


class NeedsACode(Exception):
    """An exception class that cannot be instantiated with no argument."""

    def __init__(self, code: int) -> None:
        super().__init__(code)


def test_an_exception_class_that_needs_arguments_is_refused() -> None:
    """A class is instantiated with no argument for each injection: one that cannot be would never inject."""
    with pytest.raises(
        TypeError, match=r"^ChaosConfig\.fault must be an exception class that .* no argument"
    ):
        ChaosConfig(fault_rate=0.5, fault=NeedsACode)
    with pytest.raises(TypeError, match=r"^ChaosConfig\.fault must be"):
        ChaosConfig(fault_rate=0.5, fault=UnicodeDecodeError)
    assert ChaosConfig(fault_rate=0.5, fault=lambda: NeedsACode(503)).fault_rate == 0.5


def test_an_async_factory_is_refused() -> None:
    """A coroutine function's result is a coroutine: as an outcome it would be the call's result."""

    async def fake() -> dict[str, int]:
        return {"status": 503}

    async def error() -> Exception:
        return OSError()

    class Fake:
        async def __call__(self) -> dict[str, int]:
            return {"status": 503}

    outcome = r"^ChaosConfig\.outcome must be a plain \(sync\) factory, not a coroutine function "
    for factory in (fake, Fake()):
        with pytest.raises(TypeError, match=outcome + r"\(to inject the function itself: lambda: fn\), got "):
            ChaosConfig(outcome_rate=0.5, outcome=factory)
    fault = r"^ChaosConfig\.fault must be a plain \(sync\) factory, not a coroutine function, got <function"
    with pytest.raises(TypeError, match=fault):
        ChaosConfig(fault_rate=0.5, fault=error)
    assert ChaosConfig(outcome_rate=0.5, outcome=lambda: fake).outcome_rate == 0.5  # the function itself


def test_a_generator_function_is_refused_as_a_fault_factory() -> None:
    """A generator function (or an object whose ``__call__`` is one) returns an iterator, never an
    exception: no run would be injected (each was skipped and counted in ``errors``)."""

    def faults() -> Iterator[Exception]:
        yield ConnectionError()

    async def async_faults() -> AsyncIterator[Exception]:
        yield ConnectionError()

    class Faults:
        def __call__(self) -> Iterator[Exception]:
            yield ConnectionError()

    rule = r"^ChaosConfig\.fault must be a factory that returns an exception, not a generator function "
    for factory in (faults, async_faults, functools.partial(faults), Faults()):
        with pytest.raises(TypeError, match=rule):
            ChaosConfig(fault_rate=1.0, fault=factory)  # type: ignore[arg-type]


def test_latency_is_a_duration_needed_by_its_rate() -> None:
    """A timedelta is stored as seconds; a latency rate with no latency is refused."""
    assert ChaosConfig(latency_rate=1.0, latency=timedelta(milliseconds=250)).latency == 0.25
    with pytest.raises(ValueError, match=r"ChaosConfig\.latency must be > 0 when latency_rate > 0"):
        ChaosConfig(latency_rate=0.5)
    with pytest.raises(ValueError, match=r"ChaosConfig\.latency must be"):
        ChaosConfig(latency_rate=0.5, latency=-1.0)
    with pytest.raises(ValueError, match=r"ChaosConfig\.latency must be"):
        ChaosConfig(latency_rate=0.5, latency=MAX_DURATION * 2)


def test_enabled_and_seed_types() -> None:
    """enabled is a bool or a callable; seed an int or None (never a bool)."""
    with pytest.raises(TypeError, match=r"ChaosConfig\.enabled must be a bool, a ChaosSwitch or a predicate"):
        ChaosConfig(enabled="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ChaosConfig\.seed must be an int or None"):
        ChaosConfig(seed=True)
    with pytest.raises(TypeError, match=r"ChaosConfig\.seed must be an int or None"):
        ChaosConfig(seed=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, -99, -(2**70)])
def test_a_negative_seed_is_refused(seed: int) -> None:
    """random.Random seeds with the absolute value: -1 would replay 1's draws, so it is refused by name."""
    with pytest.raises(ValueError, match=r"ChaosConfig\.seed must be >= 0 .*, got -"):
        ChaosConfig(fault_rate=0.5, fault=ConnectionError, seed=seed)
    assert ChaosConfig(seed=0).seed == 0


def test_an_async_predicate_is_refused() -> None:
    """A coroutine function as enabled would say yes to every run (its coroutine is true)."""

    async def drilled(ctx: ExecutionContext) -> bool:
        return False

    class Drilled:
        async def __call__(self, ctx: ExecutionContext) -> bool:
            return False

    for predicate in (drilled, Drilled()):
        with pytest.raises(TypeError, match=r"^ChaosConfig\.enabled must be a plain \(sync\) predicate"):
            ChaosConfig(fault_rate=1.0, fault=OSError, enabled=predicate)


def test_a_class_as_enabled_is_refused() -> None:
    """ChaosSwitch (the class) as enabled would make a switch per run, never a verdict: refused by name."""
    with pytest.raises(
        TypeError,
        match=r"^ChaosConfig\.enabled must be a predicate \(a function or an instance\), not a class",
    ):
        ChaosConfig(fault_rate=1.0, fault=OSError, enabled=ChaosSwitch)  # type: ignore[arg-type]
    assert ChaosConfig(fault_rate=1.0, fault=OSError, enabled=ChaosSwitch()).injects


def test_configs_compare_by_value_and_switches_by_identity() -> None:
    """Equal settings are equal configs (a policy is shared); two switches are two configs."""
    switch = ChaosSwitch()
    assert ChaosConfig(fault_rate=0.1, fault=OSError, enabled=switch) == ChaosConfig(
        fault_rate=0.1, fault=OSError, enabled=switch
    )
    assert ChaosConfig(enabled=ChaosSwitch()) != ChaosConfig(enabled=ChaosSwitch())
    assert hash(ChaosConfig(fault_rate=0.1, fault=OSError, seed=3)) == hash(
        ChaosConfig(fault_rate=0.1, fault=OSError, seed=3)
    )


def test_a_switch_starts_off_and_flips() -> None:
    """ChaosSwitch() is off; enable/disable flip it; it answers as a predicate; on is a bool."""
    switch = ChaosSwitch()
    assert (switch.on, switch(None), repr(switch)) == (False, False, "ChaosSwitch(on=False)")  # type: ignore[arg-type]
    switch.enable()
    assert switch.on
    assert switch(None)  # type: ignore[arg-type]
    switch.disable()
    assert not switch.on
    assert ChaosSwitch(on=True).on
    with pytest.raises(TypeError, match=r"ChaosSwitch\.on must be a bool"):
        ChaosSwitch(on=1)  # type: ignore[arg-type]


def test_a_switch_set_by_assignment_takes_a_bool_only_as_chaos_enabled_does() -> None:
    """``switch.on = value`` is checked as ``ChaosSwitch(on=value)`` and ``chaos.enabled = value`` are.

    It took any value: ``switch.on = "no"`` (or ``"false"`` from an operator's form) was true, so
    the drill it meant to stop injected a fault into every call.
    """
    switch = ChaosSwitch(on=True)
    chaos = Chaos("switch-assigned", ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=switch))
    for value in ("no", 0, None):
        with pytest.raises(TypeError, match=r"ChaosSwitch\.on must be a bool"):
            switch.on = value  # type: ignore[assignment]
        assert switch.on is True
    switch.on = False
    assert chaos.call_sync(lambda: "real") == "real"
    switch.on = True
    with pytest.raises(ConnectionError):
        chaos.call_sync(lambda: "real")


def test_the_facade_validates_its_arguments(clock: Any) -> None:
    """Name and config are checked; no config is ChaosConfig(), which never injects."""
    assert Chaos("quiet", clock=clock).config == ChaosConfig()
    with pytest.raises(TypeError, match=r"Chaos\.config must be a ChaosConfig or None"):
        Chaos("bad", {"fault_rate": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Chaos\.name"):
        Chaos("")
    chaos = chaos_of(clock, name="shown", fault_rate=0.25, fault=OSError)
    assert repr(chaos) == "Chaos('shown', fault=0.25, latency=0, outcome=0, on)"


# --- what is injected ----------------------------------------------------------------------


async def test_a_fault_is_raised_before_the_dependency_is_called(clock: Any, driver: str) -> None:
    """fault_rate=1: every call fails with the fault, noted as a drill; the dependency never runs."""
    chaos, calls = chaos_of(clock, fault_rate=1.0, fault=ConnectionError), []
    with pytest.raises(ConnectionError) as caught:
        await call(chaos, driver, calls)
    assert calls == []
    assert caught.value.__notes__ == ["injected by chaos 'drill': a drill, the dependency was not called"]
    assert chaos.get_stats() == {
        "name": "drill",
        "enabled": True,
        "runs": 1,
        "faults": 1,
        "latencies": 0,
        "outcomes": 0,
        "errors": 0,
    }


async def test_an_exception_instance_is_copied_for_each_injection(clock: Any, driver: str) -> None:
    """Each call gets its own copy: same class and args, its own note; the original stays untouched."""
    original = ConnectionError("reset by chaos")
    add_note(original, "kept")
    chaos = chaos_of(clock, fault_rate=1.0, fault=original)
    raised = []
    for _ in range(3):
        with pytest.raises(ConnectionError) as caught:
            await call(chaos, driver)
        raised.append(caught.value)
    assert len({id(error) for error in raised}) == 3
    assert all(error is not original and error.args == ("reset by chaos",) for error in raised)
    assert all(len(error.__notes__) == 2 for error in raised)
    assert original.__notes__ == ["kept"]
    assert original.__traceback__ is None


async def test_concurrent_calls_of_a_per_call_config_never_share_an_injected_instance(
    manager: ResilienceManager,
) -> None:
    """Calls running together, each with a config of its own around one exception instance, each
    get their own copy: one traceback (one injection's), one chaos note, the original untouched."""
    original = ConnectionError("reset by chaos")
    raised: list[BaseException] = []

    async def dependency() -> str:
        await asyncio.sleep(0)
        return "real"

    async def one(i: int) -> None:
        config = ResilienceConfig(name=f"per-call-{i % 2}", chaos=ChaosConfig(fault_rate=1.0, fault=original))
        with pytest.raises(ConnectionError) as caught:
            await manager.execute_with_resilience(dependency, config)
        raised.append(caught.value)

    def in_thread(i: int) -> None:
        config = ResilienceConfig(name=f"per-call-{i % 2}", chaos=ChaosConfig(fault_rate=1.0, fault=original))
        for _ in range(20):
            with pytest.raises(ConnectionError) as caught:
                manager.execute_with_resilience_sync(lambda: "real", config)
            raised.append(caught.value)

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    await asyncio.gather(*(one(i) for i in range(40)))
    for thread in threads:
        thread.join()
    assert len(raised) == len({id(error) for error in raised}) == 120
    assert all(error is not original and len(error.__notes__) == 1 for error in raised)
    assert len({traceback_length(error) for error in raised}) <= 2  # one injection's, per driver
    assert original.__traceback__ is None
    assert not hasattr(original, "__notes__")


@dataclasses.dataclass(frozen=True)
class FrozenFault(Exception):
    """A fault that is a frozen dataclass: it takes no note (``add_note`` sets an attribute)."""

    code: int = 503


async def test_a_fault_that_refuses_notes_is_injected_without_one(clock: Any, driver: str) -> None:
    """The drill injects the fault its factory made, unnoted, never the note's ``FrozenInstanceError``."""
    chaos, calls = chaos_of(clock, fault_rate=1.0, fault=FrozenFault), []
    with pytest.raises(FrozenFault) as caught:
        await call(chaos, driver, calls)
    assert calls == []
    assert not hasattr(caught.value, "__notes__")
    assert (chaos.get_stats()["faults"], chaos.get_stats()["errors"]) == (1, 0)


async def test_a_fault_factory_is_called_for_each_injection(clock: Any, driver: str) -> None:
    """A factory (or a class) makes a new exception each time."""
    made = []

    def factory() -> Exception:
        made.append(1)
        return TimeoutError(f"chaos {len(made)}")

    chaos = chaos_of(clock, fault_rate=1.0, fault=factory)
    for expected in ("chaos 1", "chaos 2"):
        with pytest.raises(TimeoutError, match=expected):
            await call(chaos, driver)
    classed = chaos_of(clock, fault_rate=1.0, fault=PermissionError)
    with pytest.raises(PermissionError):
        await call(classed, driver)


def traceback_length(error: BaseException) -> int:
    """How many frames ``error``'s traceback holds."""
    length, entry = 0, error.__traceback__
    while entry is not None:
        length, entry = length + 1, entry.tb_next
    return length


async def test_an_exception_a_factory_returns_again_gathers_nothing_per_injection(
    clock: Any, driver: str
) -> None:
    """One object injected again and again keeps one chaos note and one injection's traceback."""
    shared = ConnectionError("down")
    add_note(shared, "the user's")
    chaos = chaos_of(clock, fault_rate=1.0, fault=lambda: shared)
    lengths = []
    for _ in range(5):
        with pytest.raises(ConnectionError) as caught:
            await call(chaos, driver)
        assert caught.value is shared
        lengths.append(traceback_length(shared))
    assert shared.__notes__ == [
        "the user's",
        "injected by chaos 'drill': a drill, the dependency was not called",
    ]
    assert len(set(lengths)) == 1


async def test_an_outcome_replaces_the_call(clock: Any, driver: str) -> None:
    """outcome_rate=1: the value is returned and the dependency never runs; a callable is a factory."""
    calls: list[str] = []
    assert await call(chaos_of(clock, outcome_rate=1.0, outcome={"status": 503}), driver, calls) == {
        "status": 503
    }
    counter = iter(range(10))
    factory = chaos_of(clock, outcome_rate=1.0, outcome=lambda: f"fake {next(counter)}")
    assert [await call(factory, driver, calls) for _ in range(2)] == ["fake 0", "fake 1"]
    assert await call(chaos_of(clock, outcome_rate=1.0), driver, calls) is None
    assert calls == []
    assert factory.get_stats()["outcomes"] == 2


async def test_a_delay_comes_before_the_call(clock: Any, driver: str) -> None:
    """latency_rate=1: the clock sleeps the latency, then the dependency runs."""
    chaos, calls = chaos_of(clock, latency_rate=1.0, latency=2.5), []
    assert await call(chaos, driver, calls) == "real"
    assert (clock.sleeps, calls, chaos.get_stats()["latencies"]) == ([2.5], ["real"], 1)


async def test_a_delay_comes_before_an_injected_fault_or_result(clock: Any, driver: str) -> None:
    """A slow failure: the delay, then the fault (both counted); the same for a result."""
    slow_fault = chaos_of(clock, latency_rate=1.0, latency=1.0, fault_rate=1.0, fault=BrokenPipeError)
    with pytest.raises(BrokenPipeError):
        await call(slow_fault, driver)
    slow_answer = chaos_of(clock, latency_rate=1.0, latency=2.0, outcome_rate=1.0, outcome="late fake")
    assert await call(slow_answer, driver) == "late fake"
    assert clock.sleeps == [1.0, 2.0]
    stats = slow_fault.get_stats()
    assert (stats["latencies"], stats["faults"]) == (1, 1)


async def test_a_broken_factory_skips_the_injection_and_is_counted_and_logged_once(
    clock: Any, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The drill's own bug never fails the real call: the call runs, errors counts, one warning."""

    def broken() -> Exception:
        raise RuntimeError("bug in the drill")

    chaos, calls = chaos_of(clock, fault_rate=1.0, fault=broken), []
    with caplog.at_level(logging.WARNING, logger="otel_resilience.chaos"):
        assert [await call(chaos, driver, calls) for _ in range(3)] == ["real"] * 3
    assert calls == ["real"] * 3
    assert chaos.get_stats()["errors"] == 3
    assert chaos.get_stats()["faults"] == 0
    assert len([r for r in caplog.records if "fault factory failed" in r.getMessage()]) == 1
    not_an_error = chaos_of(clock, fault_rate=1.0, fault=lambda: "not an exception")  # type: ignore[arg-type,return-value]
    assert await call(not_an_error, driver) == "real"
    assert not_an_error.get_stats()["errors"] == 1
    bad_outcome = chaos_of(clock, outcome_rate=1.0, outcome=lambda: 1 / 0)
    assert await call(bad_outcome, driver) == "real"
    assert bad_outcome.get_stats()["errors"] == 1


async def test_an_outcome_factory_that_returns_an_awaitable_is_refused_and_closed(
    clock: Any, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An awaitable made by the outcome factory is never the call's result, in either driver.

    A plain function that returns an async function's coroutine passes the check of the
    factory itself: what it returns is refused (closed, so that no never-awaited warning
    follows), counted as an error of the drill, and the call runs.
    """
    made: list[Any] = []

    async def fake() -> dict[str, int]:
        return {"status": 503}

    def factory() -> Any:
        made.append(fake())
        return made[-1]

    chaos, calls = chaos_of(clock, outcome_rate=1.0, outcome=factory), []
    with caplog.at_level(logging.WARNING, logger="otel_resilience.chaos"):
        assert await call(chaos, driver, calls) == "real"
    assert calls == ["real"]
    assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED
    stats = chaos.get_stats()
    assert (stats["outcomes"], stats["errors"]) == (0, 1)
    logged = [r.getMessage() for r in caplog.records if "outcome factory" in r.getMessage()]
    expected = (
        "chaos 'drill': its outcome factory (it returned a coroutine, an awaitable, which is never "
        "awaited) failed, so that run was not injected (logged once; counted in get_stats()['errors'])"
    )
    assert logged == [expected]


def test_an_awaitable_outcome_is_refused_and_closed() -> None:
    """An awaitable given as the outcome itself would be every injected call's result: refused."""

    async def fake() -> dict[str, int]:
        return {"status": 503}

    pending = fake()
    rule = r"^ChaosConfig\.outcome must be a value or a plain \(sync\) factory, not an awaitable"
    with pytest.raises(TypeError, match=rule):
        ChaosConfig(outcome_rate=0.5, outcome=pending)
    assert inspect.getcoroutinestate(pending) == inspect.CORO_CLOSED


# --- how often -----------------------------------------------------------------------------


def test_the_rates_are_the_shares_of_runs(clock: Any) -> None:
    """Over 4 000 seeded runs each share is its rate (within 5 standard deviations)."""
    chaos = chaos_of(
        clock,
        fault_rate=0.2,
        fault=ConnectionError,
        outcome_rate=0.3,
        outcome="fake",
        latency_rate=0.5,
        latency=0.001,
        seed=17,
    )
    runs = 4000
    kinds = [kind_of(chaos) for _ in range(runs)]
    stats = chaos.get_stats()
    assert stats["runs"] == runs
    for share, rate in (
        (kinds.count("fault") / runs, 0.2),
        (kinds.count("outcome") / runs, 0.3),
        (kinds.count("call") / runs, 0.5),
        (stats["latencies"] / runs, 0.5),
    ):
        sigma = (rate * (1 - rate) / runs) ** 0.5
        assert abs(share - rate) < 5 * sigma, (share, rate)
    assert (stats["faults"], stats["outcomes"]) == (kinds.count("fault"), kinds.count("outcome"))


def test_rate_one_always_and_rate_zero_never(clock: Any) -> None:
    """The bounds are exact: 1 injects every run, 0 none."""
    always = chaos_of(clock, fault_rate=1.0, fault=ConnectionError, seed=1)
    assert {kind_of(always) for _ in range(200)} == {"fault"}
    never = chaos_of(clock, fault_rate=0.0, fault=ConnectionError, outcome_rate=1.0, outcome="x", seed=1)
    assert {kind_of(never) for _ in range(200)} == {"outcome"}


def test_a_seed_reproduces_the_injections(clock: Any) -> None:
    """The same seed gives the same sequence; another seed another one."""
    config = {"fault_rate": 0.3, "fault": ConnectionError, "outcome_rate": 0.3, "outcome": "x"}
    one, two, other = (chaos_of(clock, seed=seed, **config) for seed in (99, 99, 100))
    sequence = [kind_of(one) for _ in range(60)]
    assert sequence == [kind_of(two) for _ in range(60)]
    assert sequence != [kind_of(other) for _ in range(60)]
    assert {"fault", "outcome", "call"} == set(sequence)


def injections(run: Callable[[], object], runs: int = 64) -> str:
    """Run ``run`` ``runs`` times: ``x`` for each injected fault, ``.`` for each call that ran."""
    marks = []
    for _ in range(runs):
        try:
            run()
        except ConnectionError:
            marks.append("x")
        else:
            marks.append(".")
    return "".join(marks)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
@pytest.mark.parametrize("seed", [None, 21], ids=["unseeded", "seeded"])
@pytest.mark.parametrize("where", ["instance", "policy"])
def test_a_forked_child_draws_a_sequence_of_its_own_unless_seeded(
    clock: Any, tmp_path: Path, where: str, seed: int | None
) -> None:
    """After os.fork(), unseeded chaos injects on runs of the child's own; seeded chaos replays the parent's."""
    config = ChaosConfig(fault_rate=0.5, fault=ConnectionError, seed=seed)
    if where == "instance":
        chaos = Chaos("forked", config, clock=clock)
        run: Callable[[], object] = lambda: chaos.call_sync(lambda: "real")  # noqa: E731
    else:
        policy = ResilienceManager().policy(f"forked-chaos-{where}-{seed}", ResilienceConfig(chaos=config))
        run = lambda: policy.execute_sync(lambda: "real")  # noqa: E731
    injections(run, runs=3)  # the generator is made, and drawn from, before the fork
    drawn_in_child = tmp_path / "child"
    assert run_in_child(lambda: drawn_in_child.write_text(injections(run), encoding="utf-8")) == 0
    in_parent = injections(run)
    assert "x" in in_parent
    assert "." in in_parent
    assert (drawn_in_child.read_text(encoding="utf-8") == in_parent) is (seed is not None)


# --- when ----------------------------------------------------------------------------------


async def test_a_predicate_gets_the_runs_context_and_decides(clock: Any, driver: str) -> None:
    """enabled=predicate: asked with the ExecutionContext of each run; injects only when it says yes."""
    seen: list[tuple[str, int, tuple[Any, ...]]] = []

    def only_drills(ctx: ExecutionContext) -> bool:
        seen.append((ctx.operation, ctx.attempt, ctx.args))
        return ctx.kwargs.get("tenant") == "drill"

    chaos = chaos_of(clock, name="tenant-chaos", fault_rate=1.0, fault=ConnectionError, enabled=only_drills)

    def handle(order: str, *, tenant: str) -> str:
        return f"{order} for {tenant}"

    async def handle_async(order: str, *, tenant: str) -> str:
        return handle(order, tenant=tenant)

    def run(tenant: str) -> Any:
        if driver == "sync":
            return chaos.call_sync(handle, "o1", tenant=tenant)
        return chaos.call(handle_async, "o1", tenant=tenant)

    result = run("acme")
    assert (result if driver == "sync" else await result) == "o1 for acme"
    with pytest.raises(ConnectionError):
        result = run("drill")
        if driver == "async":
            await result
    assert seen == [("tenant-chaos", 1, ("o1",))] * 2


async def test_a_predicate_can_read_the_callers_context_variables(clock: Any, driver: str) -> None:
    """Only for a tenant (or a header) set by the caller in a context variable."""
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")
    chaos = chaos_of(
        clock, outcome_rate=1.0, outcome="drill answer", enabled=lambda _: tenant.get() == "drill"
    )
    assert await call(chaos, driver) == "real"
    token = tenant.set("drill")
    try:
        assert await call(chaos, driver) == "drill answer"
    finally:
        tenant.reset(token)


def test_a_predicate_is_asked_before_any_draw(clock: Any) -> None:
    """Runs the predicate refuses draw nothing: the enabled runs see the seed's sequence unchanged."""
    config = {"fault_rate": 0.5, "fault": ConnectionError, "seed": 5}
    plain = chaos_of(clock, **config)
    expected = [kind_of(plain) for _ in range(40)]
    flips = iter([True, False] * 40)
    gated = chaos_of(clock, enabled=lambda _: next(flips), **config)
    got = [kind_of(gated) for _ in range(80)]
    assert got[1::2] == ["call"] * 40
    assert got[0::2] == expected


def test_a_predicate_that_raises_says_no(clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A broken predicate never fails the call: no injection, counted, logged once."""

    def broken(ctx: ExecutionContext) -> bool:
        raise LookupError("no request in context")

    chaos = chaos_of(clock, fault_rate=1.0, fault=ConnectionError, enabled=broken)
    with caplog.at_level(logging.WARNING, logger="otel_resilience.chaos"):
        assert [kind_of(chaos) for _ in range(3)] == ["call"] * 3
    assert chaos.get_stats()["errors"] == 3
    assert len([r for r in caplog.records if "enabled predicate failed" in r.getMessage()]) == 1


async def test_the_instance_switch_turns_every_link_off_and_on(clock: Any, driver: str) -> None:
    """disable()/enable() and the enabled property act on the instance's own pipeline and its other links."""
    chaos = chaos_of(clock, fault_rate=1.0, fault=ConnectionError)
    link_stats = chaos.as_strategy("elsewhere")
    chaos.disable()
    assert (chaos.enabled, await call(chaos, driver)) == (False, "real")
    assert link_stats.get_stats()["enabled"] is False
    chaos.enable()
    with pytest.raises(ConnectionError):
        await call(chaos, driver)
    chaos.enabled = False
    assert await call(chaos, driver) == "real"
    with pytest.raises(TypeError, match=r"Chaos\.enabled must be a bool"):
        chaos.enabled = 0  # type: ignore[assignment]


async def test_a_switch_in_the_config_flips_chaos_without_rebuilding(clock: Any, driver: str) -> None:
    """The same instance (and pipeline) injects while the switch is on, not while it is off."""
    switch = ChaosSwitch()
    chaos = chaos_of(clock, outcome_rate=1.0, outcome="drill", enabled=switch)
    assert await call(chaos, driver) == "real"
    switch.enable()
    assert await call(chaos, driver) == "drill"
    switch.disable()
    assert await call(chaos, driver) == "real"


def test_counts_are_exact_under_threads_while_the_switch_flips(clock: Any) -> None:
    """8 threads x 300 calls against a switch flipped throughout: every run and injection counted once."""
    switch = ChaosSwitch(on=True)
    chaos = chaos_of(clock, fault_rate=1.0, fault=ConnectionError, enabled=switch)
    results: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def worker() -> None:
        mine = [kind_of(chaos) for _ in range(300)]
        with lock:
            results.extend(mine)

    def flipper() -> None:
        while not done.is_set():
            switch.disable()
            switch.enable()

    flipping = threading.Thread(target=flipper)
    flipping.start()
    workers = [threading.Thread(target=worker) for _ in range(8)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    flipping.join()
    stats = chaos.get_stats()
    assert stats["runs"] == len(results) == 2400
    assert stats["faults"] == results.count("fault")
    assert set(results) <= {"fault", "call"}


def test_a_config_shared_by_two_instances_keeps_their_draws_apart(clock: Any) -> None:
    """Each instance has its own generator: one's calls do not shift the other's sequence."""
    config = ChaosConfig(fault_rate=0.5, fault=ConnectionError, seed=11)
    one, two = Chaos("one", config, clock=clock), Chaos("two", copy.copy(config), clock=clock)
    first = [kind_of(one) for _ in range(30)]
    assert [kind_of(two) for _ in range(30)] == first
