"""The chaos pattern's step: :meth:`_ChaosStep.admit` decides; the engine's drivers wait and inject.

A run that draws no chaos is admitted at once (``admit`` returns ``None``). One that draws chaos
gets an :class:`_Injection`, a :class:`~otel_resilience.engine.step.Wait` that the drivers
perform before the rest of the chain: it sleeps the delay (async: on the loop, so cancellation
and an enclosing deadline cut it; sync: in the thread, until the deadline at most), then raises
the fault, or returns an :class:`~otel_resilience.engine.step.Answer` (the injected result: the
drivers return it without running the rest of the chain), or lets the call run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from otel_resilience.engine.context import sleep_sync_within_deadline
from otel_resilience.engine.events import ChaosInjected, Event, StrategyTelemetry, error_type_name
from otel_resilience.engine.facade import Link
from otel_resilience.engine.step import Answer, Wait
from otel_resilience.patterns.chaos.config import KIND, ChaosConfig
from otel_resilience.patterns.chaos.rules import FAULT, LATENCY, OUTCOME, ChaosStatsDict

_CHAOS_INJECTED: Final = Event.CHAOS_INJECTED
"""Read on hot paths, bound once: reading a member off its enum class costs ~55 ns (Python 3.11)."""

if TYPE_CHECKING:
    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.context import ExecutionContext
    from otel_resilience.patterns.chaos.rules import _Rules


class _ChaosStep(Link[ChaosConfig]):
    """A pipeline link bound to a chaos instance's switch, draws and counts, with its own telemetry.

    Only :meth:`admit` is a hook: chaos acts before the call and never judges its outcome.
    """

    __slots__ = ("_rules",)

    kind: ClassVar[str] = KIND

    def __init__(self, rules: _Rules, clock: Clock, telemetry: StrategyTelemetry) -> None:
        super().__init__(rules.name, rules.config, clock, telemetry)
        self._rules = rules

    def admit(self, ctx: ExecutionContext) -> _Injection | None:
        """Admit the run at once, or return the injection the drivers perform before it."""
        plan = self._rules.decide(ctx)
        if plan is None:
            return None
        return _Injection(self, ctx.operation, *plan)

    def get_stats(self) -> ChaosStatsDict:
        """Return the instance's counts (shared by all its links), as :meth:`Chaos.get_stats` does."""
        return self._rules.snapshot()

    def _report(self, kind: str, error: Exception | None = None, delay: float | None = None) -> None:
        """Report one injection (``chaos_injected``): its span event and counter mark it as a drill."""
        telemetry = self._telemetry
        if telemetry.enabled:
            telemetry.report(_CHAOS_INJECTED, ChaosInjected(kind, error_type_name(error), delay))

    def _delaying(self, delay: float) -> None:
        """Count and report a delay about to be injected."""
        self._rules.delayed()
        self._report(LATENCY, delay=delay)

    def _inject(self, replaced: str | None) -> Answer | None:
        """Raise the fault, or return the injected result as an :class:`Answer`; ``None``: the call runs."""
        rules = self._rules
        if replaced == FAULT:
            error = rules.fault()
            if error is not None:
                self._report(FAULT, error)
                try:
                    raise error
                finally:
                    del error  # its traceback holds this frame: not bound here (a cycle)
        elif replaced == OUTCOME:
            made, value = rules.outcome()
            if made:
                self._report(OUTCOME)
                return Answer(value)
        return None


class _Injection(Wait):
    """What one run gets injected: a delay first (``0.0`` for none), then a fault, a result or the call."""

    __slots__ = ("_delay", "_operation", "_replaced", "_step")

    admission: ClassVar[bool] = False  # the injected latency stands for the dependency's own

    def __init__(self, step: _ChaosStep, operation: str, delay: float, replaced: str | None) -> None:
        self._step = step
        self._operation = operation
        self._delay = delay
        self._replaced = replaced

    async def wait(self) -> Any:
        """Sleep the delay on the event loop (cancellable), then inject."""
        step = self._step
        if self._delay:
            step._delaying(self._delay)
            await step.clock.sleep(self._delay)
        return step._inject(self._replaced)

    def wait_sync(self) -> Any:
        """Block for the delay (up to the deadline: then the timeout owning it raises), then inject."""
        step = self._step
        if self._delay:
            step._delaying(self._delay)
            sleep_sync_within_deadline(step.clock, self._delay, self._operation)
        return step._inject(self._replaced)

    def __repr__(self) -> str:
        return f"<chaos injection delay={self._delay!r} then {self._replaced or 'the call'}>"
