"""The manager's order is a declared table of stages, and a config adds links of its own at declared places."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any

import pytest

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    resilient,
)
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.step import Answer, Step
from otel_resilience.manager import STAGES, ResilienceConfig, ResilienceManager, Stage, build_pipeline
from otel_resilience.patterns.retry import Jitter, RetryPolicy

RETRY_3 = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=Jitter.NONE)
"""Three attempts, no wait between them."""
_ids = itertools.count()


class Tally(Step):
    """A toy strategy of the user's own: counts the runs it admits and how they end, passes all through."""

    __slots__ = ("_name", "failures", "runs", "successes")

    kind = "tally"

    def __init__(self, name: str = "tally") -> None:
        super().__init__()
        self._name = name
        self.runs = self.successes = self.failures = 0

    @property
    def name(self) -> str:
        return self._name

    def admit(self, ctx: ExecutionContext) -> Any:
        self.runs += 1
        return ctx.attempt

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        self.successes += 1

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> None:
        self.failures += 1

    def get_stats(self) -> dict[str, int]:
        return {"runs": self.runs, "successes": self.successes, "failures": self.failures}


class Unnamed(Step):
    """A step whose __init__ takes no name: its class is no factory (``lambda name: Unnamed()`` is)."""

    kind = "unnamed"


class Tallies:
    """A factory of fresh tallies (one per policy), keeping each it made."""

    def __init__(self, prefix: str = "tally") -> None:
        self.prefix = prefix
        self.made: list[Tally] = []

    def __call__(self, name: str) -> Tally:
        self.made.append(Tally(f"{self.prefix}:{name}"))
        return self.made[-1]


def flaky(failures: int) -> Any:
    """A function that raises ConnectionError on its first ``failures`` calls, then returns "ok"."""
    errors = itertools.chain(itertools.repeat(ConnectionError, failures), itertools.repeat(None))

    def fn() -> str:
        error = next(errors)
        if error is not None:
            raise error("down")
        return "ok"

    return fn


async def in_async(behaviour: Any) -> Any:
    return behaviour()


async def call(manager: ResilienceManager, driver: str, config: ResilienceConfig, behaviour: Any) -> Any:
    """Run ``behaviour`` (a plain function) under ``config`` through the sync or the async driver."""
    if driver == "sync":
        return manager.execute_with_resilience_sync(behaviour, config)
    return await manager.execute_with_resilience(in_async, config, behaviour)


def kinds(manager: ResilienceManager, config: ResilienceConfig) -> list[str]:
    return [kind for kind, _, _ in manager.pipeline_for(config, config.name or "x").describe()]


def test_the_stage_table_is_the_documented_order() -> None:
    """STAGES lists the documented order, in rank order, each stage reading a ResilienceConfig field."""
    assert [stage.name for stage in STAGES] == [
        "fallback",
        "rate_limiter",
        "total_timeout",
        "recovery",
        "retry",
        "hedging",
        "circuit_breaker",
        "bulkhead",
        "attempt_timeout",
        "chaos",
    ]
    ranks = [stage.rank for stage in STAGES]
    assert ranks == sorted(set(ranks))
    fields = {field.name for field in dataclasses.fields(ResilienceConfig)}
    assert all(isinstance(stage, Stage) and stage.field.split(".")[0] in fields for stage in STAGES)


@pytest.mark.parametrize(
    ("place", "runs", "order"),
    [
        ({"inside": "retry"}, 3, ["retry", "tally", "circuit_breaker"]),
        ({"outside": "retry"}, 1, ["tally", "retry", "circuit_breaker"]),
        ({"outside": "circuit_breaker"}, 3, ["retry", "tally", "circuit_breaker"]),
        ({"inside": "circuit_breaker"}, 3, ["retry", "circuit_breaker", "tally"]),
        ({"rank": 400}, 3, ["retry", "tally", "circuit_breaker"]),  # a stage is outside at its own rank
        ({"rank": -1}, 1, ["tally", "retry", "circuit_breaker"]),
    ],
)
async def test_an_extra_strategy_runs_where_it_is_placed(
    driver: str, place: dict[str, Any], runs: int, order: list[str]
) -> None:
    """Placed inside retry, the toy sees each of retry's attempts; placed outside, the execution once."""
    tallies = Tallies()
    config = ResilienceConfig(
        name=f"placed-{next(_ids)}",
        retry_policy=RETRY_3,
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
        extra_strategies=(ExtraStrategy(tallies, **place),),
    )
    manager = ResilienceManager()
    assert await call(manager, driver, config, flaky(2)) == "ok"
    (tally,) = tallies.made
    assert (tally.runs, tally.successes, tally.failures) == (runs, 1, runs - 1)
    assert kinds(manager, config) == order
    assert tally.name == f"tally:{config.name}"


async def test_resilient_runs_extra_strategies_in_both_drivers(driver: str) -> None:
    """@resilient takes the same config: the toy inside retry sees every attempt of a decorated call."""
    tallies = Tallies()
    config = ResilienceConfig(retry_policy=RETRY_3, extra_strategies=[ExtraStrategy(tallies, inside="retry")])
    manager = ResilienceManager()
    fn = flaky(1)

    @resilient(config, manager=manager)
    def sync_fetch() -> str:
        return str(fn())

    @resilient(config, manager=manager)
    async def async_fetch() -> str:
        return str(fn())

    assert (sync_fetch() if driver == "sync" else await async_fetch()) == "ok"
    assert [(t.runs, t.failures) for t in tallies.made] == [(2, 1)]
    name = tallies.made[0].name.removeprefix("tally:")
    assert name.endswith("_fetch")
    stats = manager.get_resilience_statistics()
    assert stats["extra_strategies"] == {
        name: [
            {
                "kind": "tally",
                "name": f"tally:{name}",
                "rank": 401,
                "stats": {"runs": 2, "successes": 1, "failures": 1},
            }
        ]
    }
    assert stats["policies"][name]["successful_after_failure"] == 1


async def test_extra_strategies_at_one_place_nest_in_the_order_given(driver: str) -> None:
    """Two links at one place nest in the order given; a place holds without its stage in the config."""
    first, second = Tallies("first"), Tallies("second")
    config = ResilienceConfig(
        name=f"two-{next(_ids)}",
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fb"),
        circuit_breaker=CircuitBreakerConfig(),
        extra_strategies=(ExtraStrategy(first, inside="retry"), ExtraStrategy(second, inside="retry")),
    )
    manager = ResilienceManager()
    assert await call(manager, driver, config, flaky(1)) == "fb"
    pipeline = manager.pipeline_for(config, config.name or "")
    assert [name for _, name, _ in pipeline.describe()][1:3] == [
        f"first:{config.name}",
        f"second:{config.name}",
    ]
    assert kinds(manager, config) == ["fallback", "tally", "tally", "circuit_breaker"]
    assert [t.failures for t in first.made + second.made] == [1, 1]


async def test_an_extra_strategy_may_answer_in_place_of_the_failure(driver: str) -> None:
    """The toy's actions are the engine's: an Answer from outside retry ends the execution."""

    class Shield(Step):
        kind = "shield"

        def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Answer:
            return Answer(f"shielded {type(error).__name__}")

    config = ResilienceConfig(
        name=f"shield-{next(_ids)}",
        retry_policy=dataclasses.replace(RETRY_3, max_attempts=2),
        extra_strategies=(ExtraStrategy(lambda _name: Shield(), outside="retry"),),
    )
    manager = ResilienceManager()
    assert await call(manager, driver, config, flaky(5)) == "shielded ConnectionError"
    stats = manager.get_resilience_statistics()
    assert stats["extra_strategies"][config.name] == [{"kind": "shield", "name": "shield", "rank": 399}]


def test_equal_configs_with_the_same_extra_strategy_share_one_policy() -> None:
    """The links take part in equality by identity: equal configs, even unhashable ones, share a policy."""
    tallies = Tallies()

    def config(factory: Any) -> ResilienceConfig:
        return ResilienceConfig(
            name="shared-extra",
            fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=[]),
            extra_strategies=[ExtraStrategy(factory, inside="retry")],
        )

    manager = ResilienceManager()
    for _ in range(3):
        assert manager.execute_with_resilience_sync(lambda: 1, config(tallies)) == 1
    assert len(tallies.made) == 1
    assert tallies.made[0].runs == 3
    assert config(tallies) == config(tallies)
    assert config(tallies) != config(Tallies())
    assert ExtraStrategy(tallies, inside="retry") == ExtraStrategy(tallies, rank=401)
    other = Tallies()
    manager.execute_with_resilience_sync(lambda: 1, config(other))
    assert len(other.made) == 1
    assert manager.get_resilience_statistics()["policies"]["shared-extra"]["total"] == 4


def test_a_step_instance_serves_one_policy() -> None:
    """A Step instance is linked into the first policy; a second one is refused, naming the field."""
    tally = Tally()
    config = ResilienceConfig(
        retry_policy=dataclasses.replace(RETRY_3, max_attempts=2),
        extra_strategies=(ExtraStrategy(tally, outside="retry"),),
    )
    manager = ResilienceManager()
    assert manager.execute_with_resilience_sync(lambda: 1, dataclasses.replace(config, name="one")) == 1
    assert tally.runs == 1
    with pytest.raises(ValueError, match=r"ResilienceConfig\.extra_strategies\[0\].*give a factory"):
        manager.execute_with_resilience_sync(lambda: 1, dataclasses.replace(config, name="two"))


def test_a_step_instance_linked_innermost_serves_one_policy() -> None:
    """An instance innermost in its first policy (nothing inside it) is refused by a second one too.

    Linking it again would point it at the second policy's inner links, so that the first
    policy's calls ran through them (its retry, under its name).
    """
    tally = Tally()
    manager = ResilienceManager()
    first = ResilienceConfig(name="first", extra_strategies=(ExtraStrategy(tally, inside="retry"),))
    assert manager.execute_with_resilience_sync(lambda: 1, first) == 1
    second = ResilienceConfig(
        name="second", retry_policy=RETRY_3, extra_strategies=(ExtraStrategy(tally, outside="retry"),)
    )
    with pytest.raises(ValueError, match=r"ResilienceConfig\.extra_strategies\[0\].*give a factory"):
        manager.execute_with_resilience_sync(lambda: 1, second)
    calls: list[int] = []

    def failing() -> int:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        manager.execute_with_resilience_sync(failing, first)
    assert len(calls) == 1  # the first policy has no retry


def test_one_step_instance_given_twice_in_a_config_is_refused_naming_the_second() -> None:
    tally = Tally()
    config = ResilienceConfig(
        name="twice", extra_strategies=(ExtraStrategy(tally, inside="retry"), ExtraStrategy(tally, rank=5))
    )
    with pytest.raises(ValueError, match=r"ResilienceConfig\.extra_strategies\[1\].*given twice"):
        ResilienceManager().execute_with_resilience_sync(lambda: 1, config)


def test_build_pipeline_places_extra_strategies() -> None:
    """build_pipeline walks the same table: an extra link between the total timeout and the fallback."""
    config = ResilienceConfig(
        timeout=5.0,
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0),
        extra_strategies=(ExtraStrategy(Tally, inside="fallback"),),
    )
    pipeline = build_pipeline("built", config, breaker=None, bulkhead=None, recovery=None)
    assert [(kind, name) for kind, name, _ in pipeline.describe()] == [
        ("fallback", "built"),
        ("tally", "built"),
        ("timeout", "built"),
    ]


def test_build_pipeline_runs_the_breaker_the_config_names_as_the_manager_does() -> None:
    """build_pipeline given the config's breaker trips on the first failure, as the manager's policy does."""
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1))
    breaker = CircuitBreaker("built-breaker", config.circuit_breaker)
    pipeline = build_pipeline("built-breaker", config, breaker=breaker, bulkhead=None, recovery=None)
    manager = ResilienceManager()
    runs = {
        "manager": functools.partial(manager.execute_with_resilience_sync, _down, config),
        "build_pipeline": functools.partial(pipeline.execute_sync, _down),
    }
    seen = {}
    for form, run in runs.items():
        outcomes = []
        for _ in range(2):
            try:
                run()
            except Exception as error:
                outcomes.append(type(error).__name__)
        seen[form] = outcomes
    assert seen["manager"] == seen["build_pipeline"] == ["ConnectionError", "CircuitOpenError"]


@pytest.mark.parametrize(
    ("config", "parts", "message"),
    [
        (
            ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1)),
            {},
            r"build_pipeline\.breaker must be a CircuitBreaker .*config\.circuit_breaker is set, got None",
        ),
        (
            ResilienceConfig(),
            {"breaker": CircuitBreaker("unasked")},
            r"build_pipeline\.breaker must be None .*config\.circuit_breaker is None",
        ),
        (
            ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=5)),
            {"breaker": CircuitBreaker("other", CircuitBreakerConfig(failure_threshold=1))},
            r"build_pipeline\.breaker must be a CircuitBreaker whose config is config\.circuit_breaker",
        ),
        (
            ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1)),
            {},
            r"build_pipeline\.bulkhead must be a Bulkhead .*config\.bulkhead_config is set, got None",
        ),
        (
            ResilienceConfig(),
            {"bulkhead": Bulkhead("unasked")},
            r"build_pipeline\.bulkhead must be None .*config\.bulkhead_config is None",
        ),
        (
            ResilienceConfig(enable_recovery=True),
            {},
            r"build_pipeline\.recovery must be an ErrorRecoverySystem .*config\.enable_recovery is set, got None",
        ),
    ],
)
def test_build_pipeline_refuses_parts_the_config_does_not_match(
    config: ResilienceConfig, parts: dict[str, Any], message: str
) -> None:
    """A pattern the config names with no instance to run it (or the reverse) is refused, never left out."""
    given: dict[str, Any] = {"breaker": None, "bulkhead": None, "recovery": None, **parts}
    with pytest.raises(ValueError, match=message):
        build_pipeline("mismatched", config, **given)


@pytest.mark.parametrize("part", ["breaker", "bulkhead", "recovery"])
def test_build_pipeline_refuses_a_part_of_another_type(part: str) -> None:
    """A config given where the instance goes is a TypeError naming the argument, not an AttributeError later."""
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(), bulkhead_config=BulkheadConfig(), enable_recovery=True
    )
    given: dict[str, Any] = {
        "breaker": CircuitBreaker("typed", config.circuit_breaker),
        "bulkhead": Bulkhead("typed", config.bulkhead_config),
        "recovery": ErrorRecoverySystem(),
    }
    given[part] = CircuitBreakerConfig()
    with pytest.raises(TypeError, match=rf"build_pipeline\.{part} must be"):
        build_pipeline("typed", config, **given)


def _down() -> None:
    raise ConnectionError("down")


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: ExtraStrategy(3, inside="retry"), TypeError, r"ExtraStrategy\.link must be a Step"),
        (lambda: ExtraStrategy(Tally), TypeError, "exactly one place"),
        (lambda: ExtraStrategy(Tally, inside="retry", rank=3), TypeError, "exactly one place"),
        (lambda: ExtraStrategy(Tally, inside="retries"), ValueError, r"ExtraStrategy\.inside must be one of"),
        (lambda: ExtraStrategy(Tally, outside=4), TypeError, r"ExtraStrategy\.outside must be a stage name"),
        (lambda: ExtraStrategy(Tally, rank=1.5), TypeError, r"ExtraStrategy\.rank must be an int"),
        (lambda: ExtraStrategy(Tally, rank=True), TypeError, r"ExtraStrategy\.rank must be an int"),
        (
            lambda: ExtraStrategy(Unnamed, inside="retry"),
            TypeError,
            r"ExtraStrategy\.link must be a factory called with the policy name",
        ),
        (
            lambda: ExtraStrategy(lambda: Tally(), rank=0),
            TypeError,
            r"ExtraStrategy\.link must be a factory called with the policy name",
        ),
        (
            lambda: ExtraStrategy(Step, rank=0),
            TypeError,
            r"ExtraStrategy\.link must be a factory called with the policy name",
        ),
        (
            lambda: ResilienceConfig(extra_strategies=Tally()),
            TypeError,
            r"ResilienceConfig\.extra_strategies ",
        ),
        (
            lambda: ResilienceConfig(extra_strategies=(Tally(),)),
            TypeError,
            r"ResilienceConfig\.extra_strategies\[0\] must be an ExtraStrategy",
        ),
    ],
)
def test_bad_extra_strategies_are_refused_naming_the_field(
    make: Any, error: type[Exception], message: str
) -> None:
    """Bad input raises at construction, naming the field."""
    with pytest.raises(error, match=message):
        make()


async def test_a_factory_that_returns_no_step_is_refused_naming_the_field(driver: str) -> None:
    """A factory's result is checked when the policy is built, before any call runs."""
    config = ResilienceConfig(
        name=f"bad-{next(_ids)}", extra_strategies=(ExtraStrategy(lambda _n: "step", rank=0),)
    )
    with pytest.raises(TypeError, match=r"ResilienceConfig\.extra_strategies\[0\] must be a Step"):
        await call(ResilienceManager(), driver, config, flaky(0))


def test_a_factory_that_takes_the_policy_name_is_accepted_however_it_takes_it() -> None:
    """A class or function taking one positional argument, with a default or among *args, is a factory."""

    def star(*args: Any) -> Tally:
        return Tally(*args)

    for factory in (Tally, Tallies(), star, lambda name, extra=1: Tally(name), functools.partial(Tally)):
        assert ExtraStrategy(factory, rank=0).link is factory


async def test_a_factory_s_step_whose_init_never_ran_the_steps_is_refused_saying_so(driver: str) -> None:
    """A factory's step whose class forgot super().__init__() is a TypeError saying so, when the policy is built."""

    class Forgetful(Step):
        kind = "forgetful"

        def __init__(self, name: str) -> None:
            self.label = name

    config = ResilienceConfig(
        name=f"forgetful-{next(_ids)}", extra_strategies=(ExtraStrategy(Forgetful, rank=0),)
    )
    with pytest.raises(TypeError, match=r"Forgetful.*super\(\)\.__init__\(\)"):
        await call(ResilienceManager(), driver, config, flaky(0))


async def test_a_factory_s_step_whose_name_is_no_name_is_refused_naming_its_field(driver: str) -> None:
    """A step's name is shown (statistics, its telemetry): one that is no name is refused when the policy is built."""
    config = ResilienceConfig(
        name=f"misnamed-{next(_ids)}", extra_strategies=(ExtraStrategy(lambda _n: Tally(""), rank=0),)
    )
    with pytest.raises(ValueError, match=r"Tally\.name must be a non-empty name"):
        await call(ResilienceManager(), driver, config, flaky(0))
    config = ResilienceConfig(
        name=f"misnamed-{next(_ids)}",
        extra_strategies=(ExtraStrategy(lambda _n: Tally("t" * 257), inside="retry"),),
    )
    with pytest.raises(ValueError, match=r"Tally\.name must be a name of at most 256 characters"):
        await call(ResilienceManager(), driver, config, flaky(0))


def test_a_list_of_extra_strategies_is_kept_as_a_tuple() -> None:
    """The config stays hashable: a list becomes a tuple."""
    extra = ExtraStrategy(Tally, rank=0)
    config = ResilienceConfig(extra_strategies=[extra])
    assert config.extra_strategies == (extra,)
    assert hash(config) == hash(ResilienceConfig(extra_strategies=(extra,)))


class BrokenStats(Tally):
    """A user's link whose ``get_stats()`` raises."""

    __slots__ = ()

    kind = "broken-stats"

    def get_stats(self) -> dict[str, int]:
        raise RuntimeError("stats backend down")


def test_an_extra_link_whose_get_stats_raises_breaks_no_statistics(caplog: pytest.LogCaptureFixture) -> None:
    """One broken user link gives an error entry, logged once: the rest of the statistics come back.

    Its error used to escape ``get_resilience_statistics()``, so one broken link broke every
    reader of the statistics (a health endpoint, the demo).
    """
    manager = ResilienceManager()
    broken = ResilienceConfig(name="broken-stats", extra_strategies=[ExtraStrategy(BrokenStats, rank=401)])
    sound = ResilienceConfig(name="sound-stats", extra_strategies=[ExtraStrategy(Tally, rank=401)])
    assert manager.execute_with_resilience_sync(lambda: "ok", broken) == "ok"
    assert manager.execute_with_resilience_sync(lambda: "ok", sound) == "ok"
    with caplog.at_level("WARNING", logger="otel_resilience"):
        first = manager.get_resilience_statistics()
        second = manager.get_resilience_statistics()
    assert (
        first["extra_strategies"]
        == second["extra_strategies"]
        == {
            "broken-stats": [
                {
                    "kind": "broken-stats",
                    "name": "broken-stats",
                    "rank": 401,
                    "stats_error": "RuntimeError('stats backend down')",
                }
            ],
            "sound-stats": [
                {
                    "kind": "tally",
                    "name": "sound-stats",
                    "rank": 401,
                    "stats": {"runs": 1, "successes": 1, "failures": 0},
                }
            ],
        }
    )
    assert first["policies"]["broken-stats"]["successful"] == 1
    logged = [r for r in caplog.records if "get_stats() of the extra broken-stats link" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None


def test_the_statistics_list_the_extra_links_of_named_policies_per_key() -> None:
    """``extra_strategies`` lists every live policy's links: a named policy's were left out."""
    tallies = Tallies()
    config = ResilienceConfig(extra_strategies=(ExtraStrategy(tallies, inside="retry"),))
    manager = ResilienceManager()
    policy = manager.policy("named-extras", config)
    policy.execute_sync(lambda: "unkeyed")
    policy.for_key("k1").execute_sync(lambda: "keyed")
    policy.for_key("k1").execute_sync(lambda: "keyed")
    entry = {"kind": "tally", "name": "tally:named-extras", "rank": 401}
    assert manager.get_resilience_statistics()["extra_strategies"] == {
        "named-extras": [
            {**entry, "stats": {"runs": 1, "successes": 1, "failures": 0}, "key": None},
            {**entry, "stats": {"runs": 2, "successes": 2, "failures": 0}, "key": "k1"},
        ]
    }
