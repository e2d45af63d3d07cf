"""The one table of what a configuration file may say: sections, their keys, how each value is read.

The reader (:mod:`otel_resilience.config.reader`) walks a file with it and the JSON Schema
(:mod:`otel_resilience.config.schema`) is generated from it, so the two cannot drift. Each
:class:`Section` is one config class; each :class:`Field` one keyword of that class, with the
kind of value the file writes (a duration string, exception classes by name ...). The bounds
stated here are for the schema (an editor's hints), the platform's maxima among them (a count's
:data:`~otel_resilience.engine.validation.MAX_COUNT`, a duration's
:data:`~otel_resilience.engine.validation.MAX_DURATION`, the largest float for a number that must
only be finite): the config classes remain the judges of every value, and a test checks that each
bound here is the class's. The longest name
(:data:`~otel_resilience.engine.validation.MAX_ATTRIBUTE_LENGTH`, the rule of every name that
becomes a telemetry attribute) is not repeated here: the schema adds it to the names it bounds.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import Final, Literal

from otel_resilience.engine.sliding import MIN_BUCKET_WIDTH
from otel_resilience.engine.validation import MAX_COUNT, MAX_DURATION
from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.patterns.bulkhead import BulkheadConfig
from otel_resilience.patterns.chaos import ChaosConfig
from otel_resilience.patterns.circuit_breaker import CircuitBreakerConfig, CountWindow, TimeWindow
from otel_resilience.patterns.circuit_breaker.window import MAX_BUCKETS, MAX_WINDOW_SIZE
from otel_resilience.patterns.fallback import FallbackConfig, FallbackStrategy
from otel_resilience.patterns.hedging import HedgingConfig
from otel_resilience.patterns.hedging.config import MAX_ATTEMPTS_LIMIT
from otel_resilience.patterns.hedging.config import MODES as HEDGING_MODES
from otel_resilience.patterns.rate_limiter import RateLimiterConfig
from otel_resilience.patterns.rate_limiter.config import ALGORITHMS, MIN_RATE
from otel_resilience.patterns.retry import Jitter, RetryBudget, RetryPolicy, RetryStrategy
from otel_resilience.patterns.retry.budget import BUDGET_BUCKETS

__all__ = [
    "EXTENSION_PREFIX",
    "FORMAT_VERSION",
    "POLICY",
    "RETRY_BUDGET",
    "SECTIONS",
    "Field",
    "Kind",
    "Section",
]

FORMAT_VERSION: Final = 1
"""The file format's version: a file may say ``version: 1``; no other version exists yet."""
EXTENSION_PREFIX: Final = "x-"
"""A top-level key that starts so is not read: a place for YAML anchors (``x-defaults: &defaults``)
that the policies merge (``<<: *defaults``), as in Compose and OpenAPI files."""

Kind = Literal[
    "int", "number", "duration", "bool", "name", "value", "exceptions", "exception", "choice", "section",
    "window", "budget", "rate",
]  # fmt: skip
"""How a value is read: ``duration`` (seconds or ``"250ms"``), ``exceptions`` (class names, one
or a list), ``exception`` (one), ``choice`` (one of ``Field.choices``, to an enum member when
``Field.enum`` is set), ``section`` (a nested mapping), ``window`` (a mapping whose ``kind``
picks the variant), ``budget`` (a name from ``retry_budgets``), ``rate`` (per second or
``"100/m"``), ``bool`` (``true`` or ``false``: a string such as ``"yes"`` is refused with how to
write it), ``int`` (a number with a zero fractional part, ``3.0``, is that int, as JSON Schema
counts it; anything else is passed as it is); ``number``, ``name`` (a string) and ``value``
(anything) are passed as they are, for the class to judge."""


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a section: the config class's keyword, how its value is read, its schema hints."""

    name: str
    """The keyword of the config class (the key a file writes, besides any alias)."""
    kind: Kind
    """How the value is read."""
    doc: str
    """One sentence for the schema's description (an editor shows it)."""
    minimum: float | None = None
    """The lowest value (schema hint; the class judges)."""
    maximum: float | None = None
    """The highest value (schema hint; the class judges)."""
    exclusive_minimum: bool = False
    """``minimum`` itself is refused."""
    nullable: bool = False
    """``null`` (YAML) is accepted and given to the class as ``None``."""
    nonempty: bool = False
    """``exceptions``: an empty list is refused (the class needs at least one class)."""
    required: bool = False
    """The section needs it (the class has no default)."""
    choices: tuple[str, ...] = ()
    """``choice``: the values accepted."""
    enum: type[enum.Enum] | None = None
    """``choice``: the enum whose member the value names (by its value); ``None`` keeps the string."""
    refused: tuple[tuple[str, str], ...] = ()
    """``choice``: values a file may not use, each with why (they need code)."""
    section: Section | None = None
    """``section``: what the nested mapping holds."""
    variants: tuple[Section, ...] = ()
    """``window``: the sections its ``kind`` picks from, by their ``tag``."""
    aliases: tuple[str, ...] = ()
    """Other keys for the same field (``retry`` for ``retry_policy``); one of them at most."""

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key a file may write for this field, the name first."""
        return (self.name, *self.aliases)


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping of the file that builds one config object (a ``CircuitBreakerConfig`` ...)."""

    build: type
    """The config class, called with the fields as keywords."""
    doc: str
    """One sentence for the schema."""
    fields: tuple[Field, ...]
    """What a file may write, in the order a summary lists it."""
    refused: tuple[tuple[str, str], ...] = ()
    """Keywords of the class a file may not write, each with why (they take code)."""
    tag: str | None = None
    """For a variant of a ``window`` field: the value of its ``kind`` key."""

    @property
    def owner(self) -> str:
        """The class name its validation errors start with (``"CircuitBreakerConfig"``)."""
        return self.build.__name__

    def field(self, key: object) -> Field | None:
        """Return the field a key names (by name or alias), or ``None``."""
        for field in self.fields:
            if key in field.keys:
                return field
        return None

    def refusal(self, key: object) -> str | None:
        """Return why a file may not write ``key``, or ``None`` when it is not refused."""
        return next((why for name, why in self.refused if name == key), None)


def _code(what: str) -> str:
    return (
        f"is {what}, which a file cannot express: set it in code on the loaded config (dataclasses.replace)"
    )


def _share(name: str, doc: str) -> Field:
    """A share of calls, in ``(0, 1]``; ``None`` for the default (a setting of a breaker's window)."""
    return Field(name, "number", doc, minimum=0.0, exclusive_minimum=True, maximum=1.0, nullable=True)


def _duration(name: str, doc: str, *, nullable: bool = False, zero: bool = False) -> Field:
    """A duration above zero, or from zero when ``zero`` (``None`` too when ``nullable``)."""
    return Field(
        name, "duration", doc, minimum=0, exclusive_minimum=not zero, maximum=MAX_DURATION, nullable=nullable
    )


def _count(name: str, doc: str, *, minimum: int, nullable: bool = False) -> Field:
    """A count: an int from ``minimum`` to :data:`~otel_resilience.engine.validation.MAX_COUNT`."""
    return Field(name, "int", doc, minimum=minimum, maximum=MAX_COUNT, nullable=nullable)


def _finite(name: str, doc: str, *, minimum: float) -> Field:
    """A number with no bound above but that it is finite (``check_number``): at most the largest float."""
    return Field(name, "number", doc, minimum=minimum, maximum=sys.float_info.max)


def _section(name: str, doc: str, section: Section, *aliases: str) -> Field:
    """A nested section, ``null`` for none."""
    return Field(name, "section", doc, nullable=True, section=section, aliases=aliases)


_ON_RESULT: Final = _code("a predicate on the result")
_BUDGET: Final = Field("budget", "budget", "The name of a retry budget from retry_budgets.", nullable=True)


COUNT_WINDOW: Final = Section(
    CountWindow,
    "A count-based sliding window: the last `size` calls.",
    (
        Field(
            "size",
            "int",
            "How many of the latest calls the window holds.",
            minimum=1,
            maximum=MAX_WINDOW_SIZE,
        ),
    ),
    tag="count",
)
TIME_WINDOW: Final = Section(
    TimeWindow,
    "A time-based sliding window: the calls of the last `seconds`, in `buckets` buckets.",
    (
        _duration("seconds", "The window's length."),
        Field("buckets", "int", "How many buckets the window is divided in.", minimum=1, maximum=MAX_BUCKETS),
    ),
    tag="time",
)

CIRCUIT_BREAKER: Final = Section(
    CircuitBreakerConfig,
    "How the circuit breaker trips and recovers.",
    (
        _count("failure_threshold", "Consecutive failures that open the breaker.", minimum=1),
        _count("success_threshold", "Probe successes in HALF_OPEN that close it.", minimum=1),
        _duration("timeout", "How long it stays OPEN before a probe."),
        _count("half_open_max_calls", "Probes in flight at once in HALF_OPEN.", minimum=1),
        Field("record_exceptions", "exceptions", "Exception classes counted as failures.", nonempty=True),
        Field("ignore_exceptions", "exceptions", "Exception classes counted as neither success nor failure."),
        Field(
            "sliding_window",
            "window",
            "Open on a failure or slow-call rate over a window (kind: count or time) instead of "
            "consecutive failures.",
            nullable=True,
            variants=(COUNT_WINDOW, TIME_WINDOW),
        ),
        _share("failure_rate_threshold", "Needs a window: the failure share that opens it (default 0.5)."),
        Field(
            "minimum_calls",
            "int",
            "Needs a window: the calls it must hold before a rate counts (default 10, at most a count "
            "window's size).",
            minimum=1,
            maximum=MAX_COUNT,
            nullable=True,
        ),
        _duration("slow_call_duration", "Needs a window: a call at least this long is slow.", nullable=True),
        _share(
            "slow_call_rate_threshold",
            "Needs slow_call_duration: the slow share that opens it, or re-opens it from HALF_OPEN "
            "(of the probes that succeeded; default 1.0).",
        ),
        _duration(
            "max_half_open_wait",
            "How long a HALF_OPEN probe may run before it counts as failed.",
            nullable=True,
        ),
    ),
    refused=(
        ("record_result", _ON_RESULT),
        ("break_duration", _code("a function of the openings")),
        ("store", _code("a connection (RedisStore.from_url)")),
    ),
)

RETRY_BUDGET: Final = Section(
    RetryBudget,
    "A budget of retries shared by the retry policies that name it.",
    (
        _finite("ratio", "Retries allowed per first attempt in the window.", minimum=0),
        _finite("min_retries_per_second", "Retries per second always allowed.", minimum=0),
        Field(
            "window",
            "duration",
            "The window's length.",
            minimum=MIN_BUCKET_WIDTH * BUDGET_BUCKETS,  # check_bucket_width: a microsecond per bucket
            maximum=MAX_DURATION,
        ),
    ),
    refused=(("clock", _code("a time source")),),
)

RETRY: Final = Section(
    RetryPolicy,
    "Which failures are retried, how often, and the backoff between attempts.",
    (
        _count("max_attempts", "Attempts in total, the first included.", minimum=1),
        Field(
            "strategy",
            "choice",
            "How delays grow.",
            choices=tuple(m.value for m in RetryStrategy),
            enum=RetryStrategy,
        ),
        _duration(
            "initial_delay",
            "The delay before the first retry (default 1s, or a max_delay written shorter).",
            zero=True,
        ),
        _finite("multiplier", "Growth factor of exponential delays.", minimum=1),
        _duration(
            "max_delay",
            "The cap of every delay, the top of a random one (default 60s, or an initial_delay "
            "written longer).",
            zero=True,
        ),
        Field(
            "jitter",
            "choice",
            "How each delay is randomised.",
            choices=tuple(m.value for m in Jitter),
            enum=Jitter,
        ),
        Field(
            "jitter_ratio",
            "number",
            "Spread of proportional jitter.",
            minimum=0,
            exclusive_minimum=True,
            maximum=1,
        ),
        _duration("attempt_timeout", "How long one attempt may take.", nullable=True),
        Field("retry_on", "exceptions", "Exception classes that are retried.", nonempty=True),
        Field("no_retry_on", "exceptions", "Exception classes never retried (replaces the default)."),
        _BUDGET,
    ),
    refused=(
        ("retry_on_result", _ON_RESULT),
        ("delay_from", _code("a function of the outcome")),
    ),
)

FALLBACK: Final = Section(
    FallbackConfig,
    "What answers in place of a failed call: a default value (other strategies take code).",
    (
        Field(
            "strategy",
            "choice",
            "How to answer; only default_value in a file.",
            required=True,
            choices=(FallbackStrategy.DEFAULT_VALUE.value,),
            enum=FallbackStrategy,
            refused=(
                ("alternative_function", "needs fallback_function, a function"),
                ("multiple_attempts", "needs fallback_functions, a list of functions"),
                ("cached_value", "needs cache_service, an object"),
            ),
        ),
        Field("default_value", "value", "The value returned in place of the failed call.", nullable=True),
        Field(
            "handle_exceptions", "exceptions", "Exception classes that trigger the fallback.", nonempty=True
        ),
    ),
    refused=(
        ("fallback_function", _code("a function")),
        ("fallback_functions", _code("a list of functions")),
        ("cache_service", _code("an object")),
        ("cache_key", "is for the cached_value strategy, which takes code (a cache_service)"),
        ("cache_max_age", "is for the cached_value strategy, which takes code (a cache_service)"),
        ("cache_by_arguments", "is for the cached_value strategy, which takes code (a cache_service)"),
        ("handle_result", _ON_RESULT),
    ),
)

BULKHEAD: Final = Section(
    BulkheadConfig,
    "How many calls run at once, and how many may wait, for how long.",
    (
        _count("max_concurrent", "Calls that may run at once.", minimum=1),
        _count("max_waiting", "Calls that may wait for a slot.", minimum=0),
        _duration("timeout", "The longest a call may wait."),
    ),
)

RATE_LIMITER: Final = Section(
    RateLimiterConfig,
    "How many calls are admitted, how fast, and how long a caller may wait.",
    (
        Field(
            "rate",
            "rate",
            "Permits per second (or '100/m').",
            minimum=MIN_RATE,
            maximum=MAX_COUNT,  # a second's permits are a count
            required=True,
        ),
        _count("burst", "The most permits taken at once.", minimum=1, nullable=True),
        Field("algorithm", "choice", "How permits are counted.", choices=ALGORITHMS),
        _duration("max_wait", "The longest a caller may wait for a permit.", zero=True),
        _count("max_waiting", "Callers that may wait at once.", minimum=0),
    ),
    refused=(
        ("store", _code("a connection (RedisStore.from_url)")),
        ("store_fallback", _code("a choice that needs a store")),
        ("expected_replicas", _code("a count that needs a store")),
    ),
)

CHAOS: Final = Section(
    ChaosConfig,
    "Faults, latency and results injected before the dependency is called.",
    (
        Field("fault_rate", "number", "Share of runs that fail with fault.", minimum=0, maximum=1),
        Field(
            "fault", "exception", "The exception class raised (instantiated with no argument).", nullable=True
        ),
        Field("latency_rate", "number", "Share of runs delayed by latency.", minimum=0, maximum=1),
        _duration("latency", "The injected delay.", zero=True),
        Field("outcome_rate", "number", "Share of runs answered with outcome.", minimum=0, maximum=1),
        Field("outcome", "value", "The injected result.", nullable=True),
        Field("enabled", "bool", "Whether the link injects (a switch takes code)."),
        Field("seed", "int", "Seeds the random draws.", minimum=0, nullable=True),
    ),
)

HEDGING: Final = Section(
    HedgingConfig,
    "Further attempts started beside a slow or failed one; the first acceptable outcome wins.",
    (
        _duration(
            "delay",
            "Latency mode: how long an attempt runs before the next starts (a function takes code).",
            nullable=True,
        ),
        Field(
            "max_attempts",
            "int",
            "Attempts at most, the original included.",
            minimum=1,
            maximum=MAX_ATTEMPTS_LIMIT,
        ),
        Field("mode", "choice", "When further attempts start.", choices=HEDGING_MODES),
        Field("hedge_on", "exceptions", "Exception classes that are not an acceptable outcome."),
        _BUDGET,
    ),
    refused=(
        ("actions", _code("a list of functions")),
        ("hedge_on_result", _ON_RESULT),
    ),
)

POLICY: Final = Section(
    ResilienceConfig,
    "A policy: which patterns protect a call, and how. Its key is its name.",
    (
        _section("circuit_breaker", "Circuit breaker settings.", CIRCUIT_BREAKER),
        _section("retry_policy", "Retry settings.", RETRY, "retry"),
        _section("fallback_config", "Fallback settings.", FALLBACK, "fallback"),
        _duration("timeout", "Total deadline of the whole execution.", nullable=True),
        _section("bulkhead_config", "Bulkhead settings.", BULKHEAD, "bulkhead"),
        _section("rate_limiter", "Rate limiter settings.", RATE_LIMITER),
        _section("hedging", "Hedging settings (async calls only).", HEDGING),
        _section("chaos", "Chaos injection settings.", CHAOS),
        Field("enable_recovery", "bool", "Run the manager's error recovery rules on errors."),
        Field(
            "max_attempts_total",
            "int",
            "Calls of the dependency one execution may make.",
            minimum=1,
            maximum=MAX_COUNT,
            nullable=True,
        ),
        Field(
            "circuit_breaker_name",
            "name",
            "The breaker to use or create (default: the policy's name).",
            nullable=True,
        ),
        Field(
            "bulkhead_name",
            "name",
            "The bulkhead to use or create (default: the policy's name).",
            nullable=True,
        ),
        Field("spans", "bool", "Open spans for executions under this policy."),
        Field("record_duration", "bool", "Record the execution-duration histogram."),
    ),
    refused=(
        ("name", "is the policy's key in the file: rename the key"),
        ("extra_strategies", _code("a list of Step links")),
    ),
)

SECTIONS: Final = (
    POLICY, CIRCUIT_BREAKER, COUNT_WINDOW, TIME_WINDOW, RETRY, RETRY_BUDGET, FALLBACK, BULKHEAD,
    RATE_LIMITER, HEDGING, CHAOS,
)  # fmt: skip
"""Every section, the policy first."""
