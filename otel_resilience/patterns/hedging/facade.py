"""The hedging's public face: :class:`Hedging`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.facade import Pattern, verb
from otel_resilience.engine.protecting import is_async_callable
from otel_resilience.engine.validation import fail
from otel_resilience.patterns.hedging.config import KIND, HedgingConfig
from otel_resilience.patterns.hedging.step import HedgingStatsDict, _HedgingCore, _HedgingStep

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from otel_resilience.engine.events import StrategyTelemetry

__all__ = ["Hedging"]

P = ParamSpec("P")
R = TypeVar("R")


class Hedging(Pattern[HedgingConfig, _HedgingStep], kind=KIND):
    """Races attempts of a call, the original and hedges, and answers with the first acceptable outcome.

    Example::

        hedging = Hedging("search", HedgingConfig(delay=0.05, max_attempts=2))
        result = await hedging.call(search, query)   # a 2nd call if the 1st takes over 50 ms

    Every way of using it goes through one link: :meth:`call`, :meth:`protect` (async functions
    only), and :meth:`as_strategy` in a pipeline (or ``ResilienceConfig(hedging=...)``). Async
    only: the attempts run side by side as tasks of the event loop; under the sync driver
    (``run_sync``, a sync function) an execution raises ``TypeError`` before anything runs, and
    :meth:`protect` refuses a sync function when it decorates it.

    Args:
        name: The hedging's name (bounded: it becomes a telemetry attribute).
        config: Mode, delay, attempts, actions, what is acceptable, budget. Required (for type
            checkers too; ``None`` raises ``TypeError``), as the latency delay has no safe default.
        clock: The clock hedge delays run on (and latencies are measured on).
        deposit: Whether each execution deposits one first attempt in ``config.budget``
            (default ``True``). ``False`` when a retry that shares the budget runs around the
            hedging in the same pipeline: it deposits for the execution, and a second deposit
            would double the allowance (the manager decides this itself).

    Raises:
        TypeError: ``name``, ``config``, ``clock`` or ``deposit`` has the wrong type (``config`` is
            ``None``).
        ValueError: ``name`` is empty.
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        name: str,
        config: HedgingConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        deposit: bool = True,
    ) -> None:
        if not isinstance(config, HedgingConfig):  # None too: the latency delay has no default
            raise fail("Hedging", "config", "a HedgingConfig", config, kind=TypeError)
        if not isinstance(deposit, bool):
            raise fail("Hedging", "deposit", "a bool", deposit, kind=TypeError)
        super().__init__(name, config, clock)
        self._core = _HedgingCore(name, config, clock, deposits=deposit)

    call = verb(
        Pattern.run,
        "Await ``fn(*args, **kwargs)`` hedged: the first acceptable outcome of the attempts.",
        more="Attempts 2, 3 ... call ``config.actions`` when given, with the same arguments.",
        returns="The first acceptable result; with none, the original's result.",
        raises=(
            (
                "Exception: An error ``config.hedge_on`` does not match (accepted: raised at once); "
                "with no acceptable outcome, the original's error."
            ),
        ),
    )

    def _check_protectable(self, fn: Callable[..., Any]) -> None:
        """Refuse a sync function: hedging is async only."""
        if not is_async_callable(fn):
            raise self._core.sync_refusal().as_type_error()

    if TYPE_CHECKING:  # the refusal above, for type checkers: a sync function is no argument

        def protect(  # type: ignore[override] # narrower than Pattern.protect: async only
            self, fn: Callable[P, Coroutine[Any, Any, R]]
        ) -> Callable[P, Coroutine[Any, Any, R]]:
            """Decorate an async ``fn`` so that every call is hedged (see :meth:`Pattern.protect`)."""

    def _link(self, telemetry: StrategyTelemetry) -> _HedgingStep:
        return _HedgingStep(self._core, telemetry)

    def get_stats(self) -> HedgingStatsDict:
        """Return a snapshot of the counts.

        Returns:
            ``name``, ``mode``, ``max_attempts``, ``executions`` (that entered the hedging),
            ``hedges`` (attempts after the original that ran: a hedge whose race was won or ended
            before its task ran is not counted), ``hedges_denied`` (hedges that were due but refused: by the
            budget, an HTTP request that may be sent only once, the execution's cap in total, the
            deadline or a rejection by the policy's own breaker, bulkhead or rate limiter),
            ``original_wins`` and ``hedge_wins``
            (executions answered by the original, by a hedge), ``failed`` (executions with no
            acceptable outcome, ended by a ``hedge_on`` or ``hedge_on_result`` that raised (its
            error, which answers nothing), or ended by an attempt of a function that does not
            fit the driver: the ``TypeError`` the caller gets, after which no hedge starts) and
            ``cancelled`` (executions whose caller was cancelled before an attempt won: one
            cancelled once an attempt had won counts as that win, as the
            ``resilience.hedging.wins`` counter does).
        """
        return self._core.snapshot()

    def __repr__(self) -> str:
        config = self._config
        return f"Hedging({self._name!r}, mode={config.mode!r}, max_attempts={config.max_attempts})"
