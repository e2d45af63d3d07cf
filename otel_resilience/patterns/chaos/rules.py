"""The chaos pattern's rules: whether a run is injected, with what, and the counts (sans-I/O)."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import inspect
import logging
import random
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypedDict

from otel_resilience.engine.counting import Counter, read_all
from otel_resilience.engine.forking import fork_reseeded, fork_safe
from otel_resilience.engine.notes import InjectedNote, add_note
from otel_resilience.engine.validation import discard, verdict
from otel_resilience.patterns.chaos.config import UNRAISABLE

if TYPE_CHECKING:
    from otel_resilience.engine.context import ExecutionContext
    from otel_resilience.patterns.chaos.config import ChaosConfig

__all__ = ["FAULT", "LATENCY", "OUTCOME", "ChaosStatsDict", "SharedDraws"]

FAULT: Final = "fault"
LATENCY: Final = "latency"
OUTCOME: Final = "outcome"

_LOG: Final = logging.getLogger("otel_resilience.chaos")

Draw = Callable[[], float]
"""A random draw in ``[0, 1)``: the ``random`` method of a ``random.Random``."""


class SharedDraws:
    """The random generators of the chaos links of one policy: one per seed, shared by all its links.

    A keyed policy builds a chaos link per key (and builds them again at a reload, and a key
    evicted then used again anew), each from the same config. A generator per link, seeded alike,
    would draw the same sequence in every key: the keys would fail on the same runs (all or none
    of a run's keys), and a key made again would replay its first draws. The links built while
    :meth:`sharing` is on take their generator from here instead: a seeded ``fault_rate`` is then
    the share of the policy's runs, whatever their keys, and a seeded policy replays for the same
    sequence of runs. A seed a reload changes gets a generator of its own, from its start.

    A generator is kept for as long as a link draws from it, and no longer (the links hold it;
    this object refers to it weakly): the seeds a policy's reloads leave behind (a drill
    reseeded at each reload), or links made with a seed of their own per key, cost nothing once
    no link uses them. The policy's links of the seed in use (its unkeyed calls' among them)
    keep that one's sequence going.

    The links share the policy's one warning too (:meth:`first_failure`): a drill that fails
    (a predicate or factory that raises) is logged once for the policy, not once per key's link
    (each key made, and made again after its eviction, would log it with its traceback).

    Thread-safe: a generator is made under a lock (:data:`_DRAWING`, shared: drawing is only
    asked when a chaos link is built, and a failure when the drill fails); a draw
    (``random.Random.random``) is atomic. Every policy holds one, few build a chaos link: the
    table of generators is made by the first.
    """

    __slots__ = ("_draws", "_logged")

    def __init__(self) -> None:
        self._draws: weakref.WeakValueDictionary[int | None, Draw] | None = None
        self._logged = False

    def draw(self, seed: int | None) -> Draw:
        """Return the draw of the generator for ``seed`` (``None``: seeded from the operating system)."""
        with _DRAWING:
            draws = self._draws
            if draws is None:
                draws = self._draws = weakref.WeakValueDictionary()
            found = draws.get(seed)
            if found is None:
                found = draws[seed] = _new_draw(seed)
            return found

    def first_failure(self) -> bool:
        """Whether a failure of the drill's own code is the first of the policy's links: it is logged."""
        with _DRAWING:
            first, self._logged = not self._logged, True
            return first

    @contextlib.contextmanager
    def sharing(self) -> Iterator[None]:
        """Give the chaos links built in this block (in this context) the generators of this object."""
        token = _SHARED.set(self)
        try:
            yield
        finally:
            _SHARED.reset(token)


_DRAWING: Final = fork_safe(threading.Lock())
"""The lock of every :class:`SharedDraws`' generators (taken when a chaos link is built)."""
_SHARED: Final[contextvars.ContextVar[SharedDraws | None]] = contextvars.ContextVar(
    "chaos_draws", default=None
)
"""The draws of the policy whose links are being built (:meth:`SharedDraws.sharing`), else ``None``."""


def _new_draw(seed: int | None) -> Draw:
    """Return the draw of a new generator seeded with ``seed``.

    Unseeded (``None``), it is seeded from the operating system, and again in each process
    ``os.fork()`` makes (:func:`~otel_resilience.engine.forking.fork_reseeded`): the workers of a
    pre-fork server inject on runs of their own, not all on the same ones. Seeded, it replays: a
    child goes on with the sequence from where the fork found it, as every other child does.
    """
    generator = random.Random(seed)  # noqa: S311 - fault injection, not security
    if seed is None:
        fork_reseeded(generator)
    return generator.random


class ChaosStatsDict(TypedDict):
    """What :meth:`Chaos.get_stats <otel_resilience.patterns.chaos.Chaos.get_stats>` returns."""

    name: str
    enabled: bool
    """The instance's own switch (:meth:`~otel_resilience.patterns.chaos.Chaos.enable`)."""
    runs: int
    """Runs that reached the chaos link (injected or not)."""
    faults: int
    """Faults injected (exceptions raised in place of the call)."""
    latencies: int
    """Delays injected before the call."""
    outcomes: int
    """Results injected in place of the call."""
    errors: int
    """Times a predicate or a factory of the config raised (or a fault factory returned no
    ``Exception``, or an outcome factory an awaitable): the run went on without that injection."""


class _Rules:
    """The shared state of one :class:`~otel_resilience.Chaos`: its switch, random draws and counts.

    Its generator is its own, seeded with ``config.seed``; or, built while a policy's
    :meth:`SharedDraws.sharing` is on, the policy's for that seed, and so is the warning that
    the drill failed (:meth:`SharedDraws.first_failure`).

    :meth:`decide` judges a run; :meth:`fault` and :meth:`outcome` make what is injected. A bug in
    the drill (a predicate or factory that raises) never fails the real call: that injection is
    skipped, counted in ``errors`` and logged the first time.
    """

    __slots__ = (
        "_draw",
        "_enabled",
        "_faults",
        "_latencies",
        "_lock",
        "_outcomes",
        "_runs",
        "_shared",
        "config",
        "errors",
        "name",
        "on",
    )

    def __init__(self, name: str, config: ChaosConfig) -> None:
        self.name = name
        self.config = config
        self.on = True
        self._enabled: Any = config.enabled
        self._shared = shared = _SHARED.get()
        self._draw = _new_draw(config.seed) if shared is None else shared.draw(config.seed)
        self._runs = Counter()
        self._faults = Counter()
        self._latencies = Counter()
        self._outcomes = Counter()
        self._lock = fork_safe(threading.Lock())
        self.errors = 0

    def decide(self, ctx: ExecutionContext) -> tuple[float, str | None] | None:
        """Judge one run: ``None`` (no chaos), or the delay (``0.0``: none) and what replaces the call.

        What replaces the call is :data:`FAULT`, :data:`OUTCOME` or ``None`` (the call runs).
        Draws happen only when the switch is on and the predicate says yes: one for the latency
        (when ``latency_rate > 0``), then one for fault or outcome (when either rate is above 0).
        """
        next(self._runs)
        enabled = self._enabled
        if not self.on or (enabled is not True and (enabled is False or not self._asked(enabled, ctx))):
            return None
        config, draw = self.config, self._draw
        delay = config.latency if config.latency_rate and draw() < config.latency_rate else 0.0
        replaced = None
        if config.fault_rate or config.outcome_rate:
            roll = draw()
            if roll < config.fault_rate:
                replaced = FAULT
            elif roll < config.fault_rate + config.outcome_rate:
                replaced = OUTCOME
        if replaced is None and not delay:
            return None
        return delay, replaced

    def _asked(self, predicate: Any, ctx: ExecutionContext) -> bool:
        """Ask the ``enabled`` predicate about a run; one that raises says no."""
        try:
            enabled = predicate(ctx)
            return (
                enabled
                if enabled is True or enabled is False
                else verdict(enabled, "ChaosConfig.enabled", self.name)
            )
        except Exception:  # noqa: BLE001 - a broken drill must not fail the real call
            self._failed("its enabled predicate")
            return False

    def delayed(self) -> None:
        """Count an injected delay."""
        next(self._latencies)

    def fault(self) -> Exception | None:
        """Make and count the exception to inject, noted as chaos's; ``None`` when making it failed."""
        fault = self.config.fault
        try:
            if isinstance(fault, BaseException):
                error: object = copy.copy(fault)
                notes = getattr(error, "__notes__", None)
                if isinstance(notes, list):  # the copy's own list: the original gathers no notes
                    error.__notes__ = list(notes)  # type: ignore[attr-defined]
            else:
                error = fault() if fault is not None else None
        except Exception:  # noqa: BLE001 - a broken drill must not fail the real call
            self._failed("its fault factory")
            return None
        if not isinstance(error, Exception) or isinstance(error, UNRAISABLE):
            discard(error)
            returned = type(error).__name__
            unraisable = isinstance(error, UNRAISABLE)
            what = "a StopIteration, which a coroutine cannot raise" if unraisable else "not an Exception"
            self._failed(f"its fault factory (it returned {returned}, {what})", trace=False)
            return None
        # An object a factory returns again (a module-level exception) starts each injection anew:
        # its traceback is not the last raise's for this one to chain onto, and its note replaces
        # the last injection's, so that it gathers neither per run of a drill. An exception that
        # refuses notes (a frozen dataclass) is injected without.
        error.with_traceback(None)
        prefix = f"injected by chaos {self.name!r}:"
        add_note(error, InjectedNote(f"{prefix} a drill, the dependency was not called"), replacing=prefix)
        next(self._faults)
        return error

    def outcome(self) -> tuple[bool, Any]:
        """Make and count the result to inject: ``(True, value)``; ``(False, None)`` if its factory failed.

        A factory fails when it raises, or returns an awaitable (closed: neither driver awaits
        an injected result, so it would be the call's result, never run).
        """
        outcome = self.config.outcome
        if callable(outcome):
            try:
                outcome = outcome()
            except Exception:  # noqa: BLE001 - a broken drill must not fail the real call
                self._failed("its outcome factory")
                return False, None
            if inspect.isawaitable(outcome):  # no driver awaits a result injected in place of the call
                discard(outcome)
                returned = f"it returned a {type(outcome).__name__}, an awaitable, which is never awaited"
                self._failed(f"its outcome factory ({returned})", trace=False)
                return False, None
        next(self._outcomes)
        return True, outcome

    def _failed(self, what: str, *, trace: bool = True) -> None:
        """Count a failure of the drill's own code; log the first one (inside its ``except`` block).

        The first of its policy's links, when it is a policy's (:meth:`SharedDraws.first_failure`).
        """
        with self._lock:
            self.errors += 1
            first = self.errors == 1
        shared = self._shared
        if first and (shared is None or shared.first_failure()):
            _LOG.warning(
                "chaos %r: %s failed, so that run was not injected (logged once; counted in "
                "get_stats()['errors'])",
                self.name,
                what,
                exc_info=trace,
            )

    def snapshot(self) -> ChaosStatsDict:
        """Return the counts (see :class:`ChaosStatsDict`)."""
        with self._lock:
            errors = self.errors
        # What was injected is read before the runs: a run is counted before its injection, so
        # no snapshot shows more injections than runs, however many threads run meanwhile.
        faults, latencies, outcomes = read_all((self._faults, self._latencies, self._outcomes))
        return {
            "name": self.name,
            "enabled": self.on,
            "runs": self._runs.value,
            "faults": faults,
            "latencies": latencies,
            "outcomes": outcomes,
            "errors": errors,
        }
