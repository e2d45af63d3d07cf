"""Bad input at every public entry point: a table of wrong kinds and edge values, fed to each parameter.

Each value is either taken or refused when it is given: a ``ValueError`` (a wrong value) or a
``TypeError`` (a wrong type) whose message names the owner and the parameter, never an
``OverflowError``, ``AttributeError``, ``KeyError``, ``ZeroDivisionError`` or a bare
``unhashable type`` from inside, and never later, at the first call. A configuration file and
the Python API take and refuse the same values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import sys
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest

import otel_resilience
from otel_resilience import (
    AlertSystem,
    Bulkhead,
    Chaos,
    CircuitBreaker,
    ErrorRecoverySystem,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    Jitter,
    PercentileDelay,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    TimeoutHandler,
    fail_after,
    move_on_after,
    resilient,
    retry,
)
from otel_resilience.config import ConfigError, loads
from otel_resilience.config.fields import COUNT_WINDOW, POLICY, RETRY_BUDGET, SECTIONS, TIME_WINDOW, Section
from otel_resilience.config.fields import Field as FileField
from otel_resilience.config.values import parse_integer
from otel_resilience.integrations.http import FailedResponseError, HttpOptions, HttpRetryAfter
from otel_resilience.testing import FakeClock


class _FloatOnly:
    """A number-like object that converts to a float, and is no ``int`` or ``float``."""

    def __float__(self) -> float:
        return 1.5

    def __repr__(self) -> str:
        return "_FloatOnly()"


class _IndexOnly:
    """An integer-like object (``__index__``, as NumPy's integers), and no ``int``."""

    def __index__(self) -> int:
        return 3

    def __repr__(self) -> str:
        return "_IndexOnly()"


class _NotAnException:
    """A class that is no exception."""


async def _async_hook(*_: object) -> None:
    return None


def _no_arguments() -> None:
    return None


def _three_arguments(a: object, b: object, c: object) -> None:
    return None


BAD: dict[str, object] = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "-0.0": -0.0,
    "0": 0,
    "-1": -1,
    "-1.0": -1.0,
    "10**400": 10**400,
    "-10**400": -(10**400),
    "maxsize+1": sys.maxsize + 1,
    "1e308": 1e308,
    "5e-324": 5e-324,
    "True": True,
    "False": False,
    "Decimal": Decimal("1.5"),
    "Fraction": Fraction(3, 2),
    "float-like": _FloatOnly(),
    "index-like": _IndexOnly(),
    "timedelta": timedelta(seconds=1),
    "negative-timedelta": timedelta(seconds=-1),
    "timedelta.max": timedelta.max,
    "number-string": "1.5",
    "nan-string": "nan",
    "empty-string": "",
    "control-characters": "a\x00\n\x1b",
    "long-string": "x" * 5000,
    "bytes": b"1",
    "None": None,
    "list-of-types": [ValueError],
    "list-of-lists": [[500]],
    "tuple-of-interrupts": (KeyboardInterrupt,),
    "class-int": int,
    "class-no-exception": _NotAnException,
    "exception-instance": ValueError(),
    "object": object(),
    "dict": {},
    "async-function": _async_hook,
    "no-argument-function": _no_arguments,
    "three-argument-function": _three_arguments,
}
"""Wrong kinds and edge values, by a readable id."""

NOT_A_NUMBER = (
    "nan", "inf", "-inf", "10**400", "-10**400", "True", "False", "Decimal", "Fraction", "float-like",
    "index-like", "number-string", "nan-string", "empty-string", "bytes", "list-of-types", "object",
)  # fmt: skip
"""Values that no number field takes: not finite, too large for a float, or not an ``int``/``float``."""

NUMBER_TYPES = ("int", "float", "int | None", "float | None")
"""The declared types of the fields that hold a number."""

REQUIRED: dict[str, dict[str, Any]] = {
    "FallbackConfig": {"strategy": FallbackStrategy.DEFAULT_VALUE, "default_value": 0},
    "HedgingConfig": {"delay": 0.5},
    "RateLimiterConfig": {"rate": 1.0},
    "RecoveryAction": {"strategy": RecoveryStrategy.RETRY},
}
"""Arguments a class needs to be valid at all, so that the field under test decides."""
REQUIRED_FOR: dict[tuple[str, str], dict[str, Any]] = {
    ("FallbackConfig", "cache_max_age"): {
        "strategy": FallbackStrategy.CACHED_VALUE,
        "cache_key": "k",
        "cache_service": SimpleNamespace(get=print, set=print),
    },
    ("RecoveryAction", "isolate_duration"): {"strategy": RecoveryStrategy.ISOLATE},
}
"""Where a field is read under another setting only (else it must stay at its default), that setting."""

LEAKED = (OverflowError, AttributeError, KeyError, ZeroDivisionError, IndexError, AssertionError)
"""What a refusal must never be: an error of the library's inside, not a check naming the field."""


def _config_classes() -> list[type]:
    """Every public config dataclass a user constructs, the HTTP options and ``HttpRetryAfter`` too."""
    found: list[type] = [HttpOptions, HttpRetryAfter]
    for name in otel_resilience.__all__:
        value = getattr(otel_resilience, name)
        # Made by the library (Alert, BulkheadStats), or placed by keywords of its own (ExtraStrategy).
        elsewhere = name in {"Alert", "BulkheadStats", "ExtraStrategy"}
        if isinstance(value, type) and dataclasses.is_dataclass(value) and not elsewhere:
            found.append(value)
    return found


def _fields() -> list[tuple[type, str]]:
    return [(cls, field.name) for cls in _config_classes() for field in dataclasses.fields(cls) if field.init]


def _base(cls: type, field: str) -> dict[str, Any]:
    return dict(REQUIRED_FOR.get((cls.__name__, field), REQUIRED.get(cls.__name__, {})))


@pytest.mark.parametrize(("cls", "field"), _fields(), ids=lambda item: getattr(item, "__name__", item))
def test_a_config_field_takes_a_bad_value_or_refuses_it_naming_the_field(cls: type, field: str) -> None:
    """Every field, given every value of the table, either takes it or raises ValueError/TypeError
    whose message starts with ``<Class>.`` and names the field (a rule that ties two fields
    names both): never another error from inside the constructor."""
    unnamed = []
    for label, value in BAD.items():
        try:
            cls(**{**_base(cls, field), field: value})
        except (ValueError, TypeError) as error:
            if not (str(error).startswith(f"{cls.__name__}.") and field in str(error)):
                unnamed.append((label, str(error)))
        except LEAKED as error:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{cls.__name__}.{field} <- {label}: {type(error).__name__}: {error}")
    assert unnamed == []


def _number_fields() -> list[tuple[type, str, str]]:
    return [
        (cls, field.name, str(field.type))
        for cls in _config_classes()
        for field in dataclasses.fields(cls)
        if field.init and field.type in NUMBER_TYPES
    ]


@pytest.mark.parametrize(
    ("cls", "field", "declared"), _number_fields(), ids=lambda item: getattr(item, "__name__", item)
)
def test_a_number_field_refuses_what_is_no_finite_int_or_float(cls: type, field: str, declared: str) -> None:
    """NaN, infinities, bools, ``Decimal``, ``Fraction``, objects with only ``__float__`` or
    ``__index__``, strings and ints too large for a float are refused, never clamped or converted
    (a seed, any int ``>= 0``, takes a large one)."""
    for label in NOT_A_NUMBER:
        if (cls.__name__, field, label) == ("ChaosConfig", "seed", "10**400"):
            continue
        value = BAD[label]
        kind = TypeError  # the wrong type: a float for an int, a bool, a string ...
        if label in {"10**400", "-10**400"} or (label in {"nan", "inf", "-inf"} and "float" in declared):
            kind = ValueError  # the right type, a value out of range
        with pytest.raises(kind, match=rf"^{cls.__name__}\.{field} must be "):
            cls(**{**_base(cls, field), field: value})


def _manager() -> ResilienceManager:
    return ResilienceManager(clock=FakeClock())


def _ok() -> str:
    return "ok"


ENTRY_POINTS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "CircuitBreaker.name": (r"CircuitBreaker\.name", CircuitBreaker),
    "CircuitBreaker.config": (r"CircuitBreaker\.config", lambda v: CircuitBreaker("b", v)),
    "CircuitBreaker.clock": (r"CircuitBreaker\.clock", lambda v: CircuitBreaker("b", clock=v)),
    "Bulkhead.name": (r"Bulkhead\.name", Bulkhead),
    "Bulkhead.config": (r"Bulkhead\.config", lambda v: Bulkhead("b", v)),
    "Chaos.config": (r"Chaos\.config", lambda v: Chaos("c", v)),
    "RateLimiter.name": (r"RateLimiter\.name", lambda v: RateLimiter(v, RateLimiterConfig(rate=1.0))),
    "RateLimiter.config": (r"RateLimiter\.config", lambda v: RateLimiter("r", v)),
    "Hedging.config": (r"Hedging\.config", lambda v: Hedging("h", v)),
    "Hedging.deposit": (r"Hedging\.deposit", lambda v: Hedging("h", HedgingConfig(delay=0.1), deposit=v)),
    "Retry.policy": (r"Retry\.policy", lambda v: Retry("r", v)),
    "Retry.on_retry": (r"Retry\.on_retry", lambda v: Retry("r", on_retry=v)),
    "Retry.rng": (r"Retry\.rng", lambda v: Retry("r", rng=v)),
    "TimeoutHandler.timeout": (r"TimeoutHandler\.timeout", TimeoutHandler),
    "TimeoutHandler.scope": (r"TimeoutHandler\.scope", lambda v: TimeoutHandler(1.0, scope=v)),
    "ErrorRecoverySystem.pattern_threshold": (
        r"RecoveryConfig\.pattern_threshold",
        lambda v: ErrorRecoverySystem(pattern_threshold=v),
    ),
    "ErrorRecoverySystem.pattern_window": (
        r"RecoveryConfig\.pattern_window",
        lambda v: ErrorRecoverySystem(pattern_window=v),
    ),
    "ErrorRecoverySystem.max_fingerprints": (
        r"RecoveryConfig\.max_fingerprints",
        lambda v: ErrorRecoverySystem(max_fingerprints=v),
    ),
    "register_recovery_rule.exc_type": (
        r"ErrorRecoverySystem\.exc_type",
        lambda v: ErrorRecoverySystem().register_recovery_rule(
            v, RecoveryAction(strategy=RecoveryStrategy.RETRY)
        ),
    ),
    "register_recovery_rule.action": (
        r"ErrorRecoverySystem\.action",
        lambda v: ErrorRecoverySystem().register_recovery_rule(ValueError, v),
    ),
    "AlertSystem.config": (r"AlertSystem\.config", AlertSystem),
    "AlertSystem.subscribe": (r"AlertSystem\.subscribe\.callback", lambda v: AlertSystem().subscribe(v)()),
    "ResilienceManager.max_pipelines": (
        r"ResilienceManager\.max_pipelines",
        lambda v: ResilienceManager(max_pipelines=v),
    ),
    "ResilienceManager.max_policies": (
        r"ResilienceManager\.max_policies",
        lambda v: ResilienceManager(max_policies=v),
    ),
    "manager.policy.name": (
        r"ResilienceManager\.policy\.name",
        lambda v: _manager().policy(v, ResilienceConfig()),
    ),
    "manager.policy.max_keys": (
        r"ResilienceManager\.policy\.max_keys",
        lambda v: _manager().policy("p", ResilienceConfig(), max_keys=v),
    ),
    "manager.policy.idle_ttl": (
        r"ResilienceManager\.policy\.idle_ttl",
        lambda v: _manager().policy("p", ResilienceConfig(), idle_ttl=v),
    ),
    "manager.policy.key_attribute_limit": (
        r"ResilienceManager\.policy\.key_attribute_limit",
        lambda v: _manager().policy("p", ResilienceConfig(), key_attribute_limit=v),
    ),
    "manager.get_circuit_breaker.name": (
        r"(ResilienceManager\.get_circuit_breaker|CircuitBreaker)\.name",  # a str: the breaker's own check
        lambda v: _manager().get_circuit_breaker(v),
    ),
    "manager.get_bulkhead.name": (
        r"(ResilienceManager\.get_bulkhead|Bulkhead)\.name",
        lambda v: _manager().get_bulkhead(v),
    ),
    "manager.pipeline_for.name": (
        r"ResilienceManager\.pipeline_for\.name",
        lambda v: _manager().pipeline_for(ResilienceConfig(), v),
    ),
    "policy.for_key": (
        r"PolicyHandle\.for_key\.key",
        lambda v: _manager().policy("p", ResilienceConfig()).for_key(v),
    ),
    "PercentileDelay.initial": (r"PercentileDelay\.initial", PercentileDelay),
    "PercentileDelay.percentile": (
        r"PercentileDelay\.percentile",
        lambda v: PercentileDelay(1.0, percentile=v),
    ),
    "PercentileDelay.samples": (r"PercentileDelay\.samples", lambda v: PercentileDelay(1.0, samples=v)),
    "PercentileDelay.minimum": (r"PercentileDelay\.minimum", lambda v: PercentileDelay(1.0, minimum=v)),
    "RetryBudget.ratio": (r"RetryBudget\.ratio", lambda v: RetryBudget(ratio=v)),
    "RetryBudget.min_retries_per_second": (
        r"RetryBudget\.min_retries_per_second",
        lambda v: RetryBudget(min_retries_per_second=v),
    ),
    "RetryBudget.window": (r"RetryBudget\.window", lambda v: RetryBudget(window=v)),
    "RetryBudget.refund": (r"RetryBudget\.refund\.withdrawal", lambda v: RetryBudget().refund(v)),
    "fail_after.seconds": (r"fail_after\.seconds", fail_after),
    "move_on_after.seconds": (r"move_on_after\.seconds", move_on_after),
    "retry.policy": (r"retry\.policy", retry),
    "retry.on_retry": (r"retry\.on_retry", lambda v: retry(on_retry=v)),
    "retry.name": (r"retry\.name", lambda v: retry(name=v)),
    "retry()(fn)": (r"retry\.fn", lambda v: retry()(v)),
    "resilient.config": (r"resilient\.config", resilient),
    "resilient()(fn)": (r"resilient\.fn", lambda v: resilient()(v)),
    "breaker.force_open.duration": (
        r"CircuitBreaker\.force_open\.duration",
        lambda v: CircuitBreaker("f", clock=FakeClock()).force_open(v),
    ),
    "breaker.force_open.reason": (
        r"CircuitBreaker\.force_open\.reason",
        lambda v: CircuitBreaker("f", clock=FakeClock()).force_open(reason=v),
    ),
    "breaker.on_state_change": (
        r"CircuitBreaker\.callback",
        lambda v: CircuitBreaker("f").on_state_change(v)(),
    ),
    "compute_delay.attempt": (
        r"RetryPolicy\.compute_delay\.attempt",
        lambda v: RetryPolicy().compute_delay(v),
    ),
    "HttpRetryAfter.statuses": (r"HttpRetryAfter\.statuses", HttpRetryAfter),
}
"""Each parameter of a constructor, decorator or method, with the owner its refusal names."""


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_an_entry_point_takes_a_bad_value_or_refuses_it_naming_the_parameter(entry: str) -> None:
    """Every parameter, given every value of the table, either takes it or raises ValueError/TypeError
    naming ``<Owner>.<parameter>``: never an error from inside (``unhashable type``, a ``KeyError``)."""
    owner, call = ENTRY_POINTS[entry]
    unnamed = []
    for label, value in BAD.items():
        try:
            call(value)
        except (ValueError, TypeError) as error:
            if not re.match(owner, str(error)):
                unnamed.append((label, str(error)))
        except LEAKED as error:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{entry} <- {label}: {type(error).__name__}: {error}")
    assert unnamed == []


# ---------------------------------------------------------------- the file and the API agree

FILE_VALUES: list[tuple[str, object]] = [
    ("0", 0), ("-0.0", -0.0), ("1", 1), ("3.0", 3.0), ("3.5", 3.5), ("-1", -1), (".nan", math.nan),
    (".inf", math.inf), ("-.inf", -math.inf), ("1e308", 1e308), ("5e-324", 5e-324),
    (str(10**400), 10**400), (str(2**63), 2**63), (str(2**63 - 1), 2**63 - 1), ("9.3e18", 9.3e18),
    ("true", True), ("false", False), ('""', ""), ('"3"', "3"), ("[]", []), ("{}", {}),
    ('"a\\tb"', "a\tb"), ('"' + "x" * 300 + '"', "x" * 300), ("0.5", 0.5), ("1e-9", 1e-9),
]  # fmt: skip
"""A YAML scalar (or collection) and the Python value it reads as."""

_REQUIRED_IN_A_FILE: dict[str, tuple[str, dict[str, Any]]] = {
    "FallbackConfig": ("strategy: default_value, default_value: 0", REQUIRED["FallbackConfig"]),
    "RateLimiterConfig": ("rate: 1", {"rate": 1}),
    "HedgingConfig": ("delay: 0.5", {"delay": 0.5}),
}


def _section_key(section: Section) -> str:
    return next(f.name for f in POLICY.fields if f.section is section)


def _file_text(section: Section, field: FileField, text: str) -> str:
    """A file that gives ``field`` of ``section`` the YAML ``text``, and what else the section needs."""
    if section is POLICY:
        return f"policies:\n  p: {{{field.name}: {text}}}\n"
    if section is RETRY_BUDGET:
        return f"retry_budgets:\n  b: {{{field.name}: {text}}}\npolicies: {{}}\n"
    if section in {COUNT_WINDOW, TIME_WINDOW}:
        window = f"{{kind: {section.tag}, {field.name}: {text}}}"
        return f"policies:\n  p:\n    circuit_breaker:\n      sliding_window: {window}\n"
    required = _REQUIRED_IN_A_FILE.get(section.owner, ("", {}))[0]
    body = f"{required}, {field.name}: {text}" if required else f"{field.name}: {text}"
    return f"policies:\n  p:\n    {_section_key(section)}: {{{body}}}\n"


def _python_takes(section: Section, field: FileField, value: object) -> bool:
    """Whether the class takes ``value`` as the file's reader would hand it (seconds as a float ...)."""
    if field.kind == "duration" and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            return False
    if field.kind == "int":
        value = parse_integer(value)  # 3.0 is the int 3, in a file as in JSON Schema
    arguments = dict(_REQUIRED_IN_A_FILE.get(section.owner, ("", {}))[1])
    if section is POLICY:
        arguments["name"] = "p"
    try:
        section.build(**{**arguments, field.name: value})
    except (ValueError, TypeError):
        return False
    return True


def _scalar_fields() -> list[tuple[Section, FileField]]:
    skipped = {"section", "window", "budget", "exceptions", "exception", "choice", "value"}
    return [
        (section, field)
        for section in SECTIONS
        for field in section.fields
        if field.kind not in skipped and field.name not in _REQUIRED_IN_A_FILE.get(section.owner, ("", {}))[1]
    ]


@pytest.mark.parametrize(
    ("section", "field"),
    _scalar_fields(),
    ids=lambda item: item.owner if isinstance(item, Section) else item.name,
)
def test_a_file_and_the_api_take_and_refuse_the_same_values(section: Section, field: FileField) -> None:
    """A value written in a file is refused exactly when the class refuses it given in code."""
    for text, value in FILE_VALUES:
        try:
            loads(_file_text(section, field, text))
        except ConfigError:
            in_file = False
        else:
            in_file = True
        assert in_file is _python_takes(section, field, value), (text, in_file)


# ---------------------------------------------------------------- the defects this probe found


@pytest.mark.parametrize(
    ("value", "kind", "rule"),
    [
        (math.nan, TypeError, "a set"),
        (None, TypeError, "a set"),
        ("429", TypeError, "a set"),
        ({600}, ValueError, r"HTTP statuses \(ints 100\.\.599\)"),
        ([[429]], ValueError, r"HTTP statuses \(ints 100\.\.599\)"),
        ({True}, ValueError, r"HTTP statuses \(ints 100\.\.599\)"),
    ],
)
def test_http_retry_after_refuses_what_is_no_set_of_statuses_when_made(
    value: object, kind: type[Exception], rule: str
) -> None:
    """``HttpRetryAfter(statuses)`` is checked as ``HttpOptions.retry_after_statuses`` is, when made.

    It took anything, and failed at the first failed response its retry asked about, with
    ``argument of type 'float' is not iterable`` (or answered wrongly: a status of a set of lists).
    """
    with pytest.raises(kind, match=rf"^HttpRetryAfter\.statuses must be {rule}, got "):
        HttpRetryAfter(value)  # type: ignore[arg-type]


def test_http_retry_after_holds_its_statuses_as_a_frozenset_and_reads_them() -> None:
    """A list of statuses is taken as the frozenset the field declares, and decides whose header counts."""
    delay_from = HttpRetryAfter([503])  # type: ignore[arg-type]
    assert delay_from.statuses == frozenset({503})
    assert type(delay_from.statuses) is frozenset
    assert delay_from(FailedResponseError(object(), 429)) is None  # another status: the policy's backoff


@pytest.mark.parametrize(
    ("field", "value", "kind", "rule"),
    [
        ("failure_statuses", [[500]], ValueError, r"HTTP statuses \(ints 100\.\.599\)"),
        ("retry_after_statuses", [{}], ValueError, r"HTTP statuses \(ints 100\.\.599\)"),
        ("retry_methods", [["GET"]], TypeError, r"method names \(str\)"),
    ],
)
def test_http_options_refuses_an_unhashable_item_naming_the_field(
    field: str, value: object, kind: type[Exception], rule: str
) -> None:
    """A list holding a list is refused naming the field, as a wrong item is (was: ``unhashable type``)."""
    with pytest.raises(kind, match=rf"^HttpOptions\.{field} must be {rule}, got "):
        HttpOptions(**{field: value})


@pytest.mark.parametrize("name", [[1], {}, {"a"}], ids=["list", "dict", "set"])
@pytest.mark.parametrize("method", ["get_circuit_breaker", "get_bulkhead"])
def test_a_manager_refuses_an_unhashable_breaker_or_bulkhead_name_naming_it(
    method: str, name: object
) -> None:
    """The name is checked before it is looked up (was: ``TypeError: unhashable type: 'list'``)."""
    with pytest.raises(TypeError, match=rf"^ResilienceManager\.{method}\.name must be a str, got "):
        getattr(_manager(), method)(name)


@pytest.mark.parametrize(
    "selector",
    [KeyboardInterrupt, (SystemExit,), [GeneratorExit], asyncio.CancelledError],
    ids=["KeyboardInterrupt", "SystemExit", "GeneratorExit", "CancelledError"],
)
def test_no_retry_on_refuses_what_is_no_exception_as_retry_on_does(selector: object) -> None:
    """``no_retry_on`` names ``Exception`` subclasses, as its type says and ``retry_on`` requires.

    It took ``KeyboardInterrupt`` (never retried anyway: the setting did nothing), as a breaker's
    ``ignore_exceptions`` does not.
    """
    rule = r"Exception subclasses or a predicate \(cancellation is never retried\)"
    with pytest.raises(ValueError, match=rf"^RetryPolicy\.no_retry_on must be {rule}, got "):
        RetryPolicy(no_retry_on=selector)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"policies\.p\.retry\.no_retry_on must be {rule}, got "):
        loads("policies:\n  p:\n    retry: {no_retry_on: [KeyboardInterrupt]}\n")


@pytest.mark.parametrize("value", [1, None, 2.5, b"fixed", Jitter.FULL], ids=repr)
def test_a_retry_strategy_of_the_wrong_type_is_a_type_error(value: object) -> None:
    """``strategy`` and ``jitter`` take a member or its string value; another type is a TypeError.

    As every field of ``RetryPolicy`` does (its docstring), and ``HedgingConfig.mode``,
    ``TimeoutConfig.scope`` and ``RateLimiterConfig.algorithm``: it was a ValueError.
    """
    with pytest.raises(TypeError, match=r"^RetryPolicy\.strategy must be a RetryStrategy \(or one of "):
        RetryPolicy(strategy=value)  # type: ignore[arg-type]
    if not isinstance(value, Jitter):
        with pytest.raises(TypeError, match=r"^RetryPolicy\.jitter must be a Jitter \(or one of "):
            RetryPolicy(jitter=value)  # type: ignore[arg-type]


def test_a_retry_strategy_string_that_names_no_member_is_a_value_error() -> None:
    """A ``str`` is the right type: one that is no member's value is a ValueError, the member's taken."""
    with pytest.raises(ValueError, match=r"^RetryPolicy\.strategy must be a RetryStrategy \(or one of "):
        RetryPolicy(strategy="EXPONENTIAL")  # type: ignore[arg-type]
    assert RetryPolicy(strategy="linear", initial_delay=0.5, max_delay=2.0).strategy is RetryStrategy.LINEAR
    assert RetryPolicy(jitter="full").jitter is Jitter.FULL


@pytest.mark.parametrize("reason", [None, 1, b"forced", ["forced"]], ids=repr)
def test_a_force_open_reason_of_the_wrong_type_is_a_type_error(reason: object) -> None:
    """``reason`` is a ``str`` (``"forced"`` or ``"isolated"``): another type is a TypeError, as a
    scope's, a mode's or an algorithm's is (it was a ValueError); the breaker stays as it was."""
    breaker = CircuitBreaker("forced-by-type", clock=FakeClock())
    with pytest.raises(
        TypeError, match=r"^CircuitBreaker\.force_open\.reason must be 'forced' or 'isolated', got "
    ):
        breaker.force_open(1.0, reason=reason)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^CircuitBreaker\.force_open\.reason must be 'forced' or 'isolated', got "
    ):
        breaker.force_open(1.0, reason="whim")  # type: ignore[arg-type]
    assert breaker.peek_state() is otel_resilience.CircuitState.CLOSED
