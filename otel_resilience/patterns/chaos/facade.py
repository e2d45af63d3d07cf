"""The chaos pattern's public face: :class:`Chaos`."""

from __future__ import annotations

from typing import Final

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.events import StrategyTelemetry
from otel_resilience.engine.facade import Pattern, verb
from otel_resilience.engine.validation import fail
from otel_resilience.patterns.chaos.config import KIND, ChaosConfig
from otel_resilience.patterns.chaos.rules import ChaosStatsDict, _Rules
from otel_resilience.patterns.chaos.step import _ChaosStep

__all__ = ["Chaos"]


_RETURNS: Final = "What ``fn`` returned, or the injected result (``fn`` was not called)."
"""What both verbs of a chaos instance return."""


class Chaos(Pattern[ChaosConfig, _ChaosStep], kind=KIND):
    """Injects faults, delays and fake results into calls, before the real dependency is called.

    Example::

        chaos = Chaos("payments", ChaosConfig(fault_rate=0.1, fault=ConnectionError, seed=7))
        result = await chaos.call(charge, order)       # fails at once 1 time in 10
        result = chaos.call_sync(charge_sync, order)   # from a worker thread
        chaos.disable()                                # no more chaos, nothing rebuilt

    In a manager's policy, ``ResilienceConfig(chaos=ChaosConfig(...))`` places a chaos link of
    its own innermost, so that every other pattern reacts to what it injects as to the real
    dependency's behaviour. Elsewhere, place this instance's link yourself:
    ``ExtraStrategy(chaos.as_strategy, outside="retry")`` (then a fault is not retried).

    Every injection is marked as a drill: the ``resilience.chaos.injected`` span event (with its
    kind) on the current span, the ``resilience.chaos.injections`` counter, a note on an injected
    exception, and the counts of :meth:`get_stats`.

    Args:
        name: The instance's name (bounded: it becomes a telemetry attribute).
        config: What to inject and how often; ``None`` (the default) for ``ChaosConfig()``, which
            injects nothing.
        clock: The clock injected delays sleep on.

    Raises:
        TypeError: ``name``, ``config`` or ``clock`` has the wrong type.
        ValueError: ``name`` is empty.
    """

    __slots__ = ("_rules",)

    def __init__(self, name: str, config: ChaosConfig | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(name, config, clock, default=ChaosConfig())
        self._rules = _Rules(name, self._config)

    call = verb(
        Pattern.run,
        "Await ``fn(*args, **kwargs)``, unless chaos injects a fault or a result in its place.",
        returns=_RETURNS,
        raises=("Exception: The injected fault (``fn`` was not called), or whatever ``fn`` raised.",),
    )

    call_sync = verb(
        Pattern.run_sync,
        "Call ``fn(*args, **kwargs)`` in this thread, unless chaos injects a fault or a result.",
        more=(
            "An injected delay blocks the thread (until the deadline of an enclosing timeout scope at "
            "most; that timeout then raises)."
        ),
        returns=_RETURNS,
        raises=("Exception: As :meth:`call`.",),
    )

    @property
    def enabled(self) -> bool:
        """Whether this instance injects at all: its own run-time switch, on when created.

        Off, every link of the instance (its own pipeline's and those :meth:`as_strategy` gave)
        admits every run untouched and draws nothing; ``config.enabled`` still decides per run
        while it is on. Setting it is thread-safe and rebuilds nothing.
        """
        return self._rules.on

    @enabled.setter
    def enabled(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise fail("Chaos", "enabled", "a bool", on, kind=TypeError)
        self._rules.on = on

    def enable(self) -> None:
        """Turn this instance's chaos on (see :attr:`enabled`)."""
        self._rules.on = True

    def disable(self) -> None:
        """Turn this instance's chaos off (see :attr:`enabled`)."""
        self._rules.on = False

    def _link(self, telemetry: StrategyTelemetry) -> _ChaosStep:
        return _ChaosStep(self._rules, self._clock, telemetry)

    def get_stats(self) -> ChaosStatsDict:
        """Return the counts of every link of this instance.

        Returns:
            ``name``; ``enabled`` (:attr:`enabled`); ``runs`` (runs that reached a link,
            injected or not); ``faults``, ``latencies`` and ``outcomes`` (what was injected; a
            delayed fault counts in both ``latencies`` and ``faults``); ``errors`` (times the
            config's predicate or a factory raised, so that run was not injected).
        """
        return self._rules.snapshot()

    def __repr__(self) -> str:
        c = self._config
        rates = f"fault={c.fault_rate:g}, latency={c.latency_rate:g}, outcome={c.outcome_rate:g}"
        return f"Chaos({self._name!r}, {rates}, {'on' if self._rules.on else 'off'})"
