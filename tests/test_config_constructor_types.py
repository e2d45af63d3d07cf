"""The config classes' constructors, as type checkers see them, take what they take at run time.

A duration field holds seconds (a ``float``) but its constructor also takes a ``timedelta``; a
few fields take ``None`` for a computed default or a list for a tuple. Such a class declares its
constructor for type checkers under ``if TYPE_CHECKING:`` (the dataclass makes the real one).
These tests keep that declaration and the run-time constructor in step: the same parameters,
in the same order, with the same defaults, and ``timedelta`` in exactly the duration fields
that accept one. ``tests/typing/api.py`` checks the declarations with ``mypy --strict``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import pytest

import otel_resilience
from otel_resilience import (
    CircuitBreakerConfig,
    CountWindow,
    FallbackStrategy,
    HedgingConfig,
    Jitter,
    RecoveryStrategy,
    RetryPolicy,
    RetryStrategy,
)
from otel_resilience.integrations.http import HttpOptions
from otel_resilience.patterns import timeout
from otel_resilience.patterns.retry.policy import JitterName, StrategyName
from otel_resilience.testing import FakeClock

# Arguments a class needs to be valid at all, so that the field under test decides.
REQUIRED: dict[str, dict[str, Any]] = {
    "CircuitBreakerConfig": {"sliding_window": CountWindow(10)},
    "FallbackConfig": {
        "strategy": FallbackStrategy.CACHED_VALUE,
        "cache_key": "k",
        "cache_service": SimpleNamespace(get=print, set=print),
    },
    "HedgingConfig": {"delay": 0.5},
    "RateLimiterConfig": {"rate": 1.0},
    "RecoveryAction": {"strategy": RecoveryStrategy.RETRY},
}
# Where a field is used by another strategy than the required arguments' (a field another
# strategy does not use must stay at its default), the arguments that make it used.
REQUIRED_FOR: dict[tuple[str, str], dict[str, Any]] = {
    ("RecoveryAction", "isolate_duration"): {"strategy": RecoveryStrategy.ISOLATE},
}


NUMBER_TYPES = ("int", "float", "int | None", "float | None")
"""The declared types of the fields that hold a number."""


def config_classes() -> list[type]:
    """Every public dataclass a user constructs (``Alert`` is made by the library), the HTTP options too."""
    found: list[type] = [HttpOptions]
    for name in otel_resilience.__all__:
        value = getattr(otel_resilience, name)
        if isinstance(value, type) and dataclasses.is_dataclass(value) and name != "Alert":
            found.append(value)
    return found


def declared_init(cls: type) -> ast.FunctionDef | None:
    """Return the ``__init__`` that ``cls`` declares under ``if TYPE_CHECKING:``, if any."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    for node in body.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                if isinstance(inner, ast.FunctionDef) and inner.name == "__init__":
                    return inner
    return None


def annotations_of(function: ast.FunctionDef) -> dict[str, str]:
    args = function.args
    return {
        arg.arg: ast.unparse(arg.annotation) for arg in [*args.args[1:], *args.kwonlyargs] if arg.annotation
    }


def float_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [
        field for field in dataclasses.fields(cls) if field.init and field.type in ("float", "float | None")
    ]


def accepts_timedelta(cls: type, field: str) -> bool:
    """Whether the run-time constructor takes a ``timedelta`` for ``field``."""
    try:
        required = REQUIRED_FOR.get((cls.__name__, field), REQUIRED.get(cls.__name__, {}))
        cls(**{**required, field: timedelta(seconds=1)})
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("cls", config_classes(), ids=lambda cls: cls.__name__)
def test_a_declared_constructor_has_the_dataclass_parameters(cls: type) -> None:
    declared = declared_init(cls)
    if declared is None:
        return
    runtime = inspect.signature(cls).parameters
    args = declared.args
    names = [arg.arg for arg in args.args[1:]]
    assert names == [name for name, p in runtime.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [arg.arg for arg in args.kwonlyargs] == [
        name for name, p in runtime.items() if p.kind is p.KEYWORD_ONLY
    ]
    with_default = {arg.arg for arg in args.args[len(args.args) - len(args.defaults) :]}
    with_default |= {
        arg.arg for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True) if default
    }
    assert with_default == {name for name, p in runtime.items() if p.default is not p.empty}


@pytest.mark.parametrize("cls", config_classes(), ids=lambda cls: cls.__name__)
def test_a_duration_field_is_typed_as_taking_a_timedelta_exactly_when_it_does(cls: type) -> None:
    declared = declared_init(cls)
    typed = annotations_of(declared) if declared is not None else {}
    for field in float_fields(cls):
        takes = accepts_timedelta(cls, field.name)
        annotation = typed.get(field.name, str(field.type))
        assert ("timedelta" in annotation) is takes, (
            f"{cls.__name__}.{field.name}: the constructor {'takes' if takes else 'refuses'} a timedelta, "
            f"but type checkers see {annotation!r}"
        )


DURATION_ARGUMENTS: list[tuple[Callable[..., object], str, Callable[[timedelta], object]]] = [
    (otel_resilience.RetryBudget, "window", lambda td: otel_resilience.RetryBudget(window=td)),
    (otel_resilience.PercentileDelay, "initial", lambda td: otel_resilience.PercentileDelay(td)),
    (otel_resilience.PercentileDelay, "minimum", lambda td: otel_resilience.PercentileDelay(1.0, minimum=td)),
    (
        otel_resilience.ErrorRecoverySystem,
        "pattern_window",
        lambda td: otel_resilience.ErrorRecoverySystem(pattern_window=td),
    ),
    (otel_resilience.TimeoutHandler, "timeout", lambda td: otel_resilience.TimeoutHandler(td)),
    (otel_resilience.fail_after, "seconds", lambda td: otel_resilience.fail_after(td)),
    (otel_resilience.move_on_after, "seconds", lambda td: otel_resilience.move_on_after(td)),
    *(
        (
            otel_resilience.RedisStore.from_url,
            name,
            lambda td, name=name: otel_resilience.RedisStore.from_url(
                "redis://127.0.0.1:1/0", namespace="durations", **{"timeout": 0.1, name: td}
            ).close(),
        )
        for name in ("timeout", "flush_interval", "probe_lease_ttl", "key_ttl", "resync_interval")
    ),
    (
        otel_resilience.ResilienceManager.policy,
        "idle_ttl",
        lambda td: otel_resilience.ResilienceManager().policy(
            "p", otel_resilience.ResilienceConfig(), idle_ttl=td
        ),
    ),
]


@pytest.mark.parametrize(
    ("function", "argument", "call"),
    DURATION_ARGUMENTS,
    ids=[f"{getattr(f, '__qualname__', f)}.{a}" for f, a, _ in DURATION_ARGUMENTS],
)
def test_a_duration_argument_outside_a_dataclass_is_typed_as_taking_the_timedelta_it_takes(
    function: Callable[..., object], argument: str, call: Callable[[timedelta], object]
) -> None:
    """Seconds or a timedelta at run time, and so for type checkers (README: "for type checkers too")."""
    call(timedelta(seconds=1))  # taken at run time
    annotation = inspect.signature(function).parameters[argument].annotation
    assert "timedelta" in str(annotation), (
        f"{argument} takes a timedelta, but type checkers see {annotation!r}"
    )


def test_a_watch_interval_is_typed_as_taking_the_timedelta_it_takes(tmp_path: Path) -> None:
    """ResilienceManager.watch(interval=...) takes a timedelta, for type checkers too."""
    path = tmp_path / "resilience.yaml"
    path.write_text("policies: {}\n", encoding="utf-8")
    manager = otel_resilience.ResilienceManager(clock=FakeClock())  # the file just written: no wait
    with manager.watch(path, interval=timedelta(seconds=1)) as watch:
        assert watch.interval == 1.0
    annotation = inspect.signature(otel_resilience.ResilienceManager.watch).parameters["interval"].annotation
    assert "timedelta" in str(annotation)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda judge: RetryPolicy(retry_on_result=judge), "RetryPolicy.retry_on_result"),
        (lambda judge: CircuitBreakerConfig(record_result=judge), "CircuitBreakerConfig.record_result"),
        (lambda judge: HedgingConfig(delay=0.1, hedge_on_result=judge), "HedgingConfig.hedge_on_result"),
    ],
)
def test_an_async_result_predicate_is_refused_naming_the_field(make: Any, field: str) -> None:
    """A result predicate is called, never awaited: an async one's coroutine is true for every result."""

    async def judge(result: object) -> bool:
        return result is None

    with pytest.raises(TypeError, match=re.escape(field)):
        make(judge)


def accepts_list(cls: type, field: str) -> bool:
    """Whether the run-time constructor takes a list (of exception types) for ``field``."""
    try:
        cls(**{**REQUIRED.get(cls.__name__, {}), field: [ValueError]})
    except (TypeError, ValueError):
        return False
    return True


@pytest.mark.parametrize("cls", config_classes(), ids=lambda cls: cls.__name__)
def test_a_field_that_takes_a_list_is_typed_as_taking_one(cls: type) -> None:
    """A list (or set) the constructor normalises to a tuple is in the declared type (``retry_on=[...]``)."""
    declared = declared_init(cls)
    typed = annotations_of(declared) if declared is not None else {}
    for field in dataclasses.fields(cls):
        if not field.init or not accepts_list(cls, field.name):
            continue
        annotation = typed.get(field.name, str(field.type))
        assert re.search(r"\blist\[|ExceptionTypeCollection|^(Any|object)$", annotation), (
            f"{cls.__name__}.{field.name}: the constructor takes a list, but type checkers see {annotation!r}"
        )


def test_the_names_a_constructor_takes_for_an_enum_or_a_scope_are_its_values() -> None:
    """The string values typed for ``strategy``, ``jitter`` and ``scope`` are exactly those accepted."""
    assert get_args(StrategyName) == tuple(member.value for member in RetryStrategy)
    assert get_args(JitterName) == tuple(member.value for member in Jitter)
    assert get_args(timeout.Scope) == timeout.SCOPES
    for name in get_args(StrategyName):
        assert RetryPolicy(strategy=name, initial_delay=0.5, max_delay=2.0).strategy.value == name
    for name in get_args(JitterName):
        assert RetryPolicy(jitter=name).jitter.value == name


@pytest.mark.parametrize(
    "cls", [cls for cls in config_classes() if hasattr(cls, "__post_init__")], ids=lambda cls: cls.__name__
)
def test_dataclasses_replace_validates_as_the_constructor_does(cls: type) -> None:
    """``dataclasses.replace`` runs the class's checks: a number field given a string is refused, named."""
    valid = cls(**REQUIRED.get(cls.__name__, {}))
    assert dataclasses.replace(valid) == valid
    numbers = [field.name for field in dataclasses.fields(cls) if field.init and field.type in NUMBER_TYPES]
    for name in numbers:
        with pytest.raises(TypeError, match=rf"^{cls.__name__}\.{name} "):
            dataclasses.replace(valid, **{name: "1"})


def test_dataclasses_replace_refuses_a_retry_policy_of_no_attempts() -> None:
    """``replace(policy, max_attempts=-1)`` is refused as ``RetryPolicy(max_attempts=-1)`` is."""
    with pytest.raises(ValueError, match=r"^RetryPolicy\.max_attempts must be >= 1, got -1$"):
        dataclasses.replace(RetryPolicy(), max_attempts=-1)
