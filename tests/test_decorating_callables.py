"""Every decorator picks its driver by what calling the function makes, and refuses method wrappers.

An object whose ``__call__`` is a coroutine function (and a ``functools.partial`` of one) is
async: its wrapper is a coroutine function that awaits it, as type checkers already assume. A
``staticmethod`` or ``classmethod`` object (the decorator written below ``@staticmethod`` or
``@classmethod``) is refused when decorated, with the fix in the message.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from support import BrokenQualname

from otel_resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    Hedging,
    HedgingConfig,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryPolicy,
    resilient,
    retry,
)
from otel_resilience.testing import FakeClock

Decorator = Callable[[Any], Any]
_NUMBERS = itertools.count()


class AsyncCallable:
    """A callable object whose ``__call__`` is async."""

    async def __call__(self, x: int) -> int:
        return x + 1


class SyncCallable:
    """A callable object whose ``__call__`` is plain."""

    def __call__(self, x: int) -> int:
        return x + 1


def decorators(manager: ResilienceManager, clock: FakeClock) -> dict[str, Decorator]:
    """Every public way to decorate a function, each with a manager or clock of the test's own."""
    name = f"decorated-{next(_NUMBERS)}"
    policy = manager.policy(name, ResilienceConfig())
    return {
        "resilient": resilient(ResilienceConfig(), manager=manager),
        "retry": retry(RetryPolicy(max_attempts=2), clock=clock),
        "Retry.protect": Retry(name, RetryPolicy(max_attempts=2), clock=clock).protect,
        "CircuitBreaker.protect": CircuitBreaker(name, clock=clock).protect,
        "PolicyHandle.protect": policy.protect,
        "KeyedPolicyView.protect": policy.for_key("k").protect,
    }


@pytest.fixture
def every_decorator(manager: ResilienceManager, clock: FakeClock) -> dict[str, Decorator]:
    return decorators(manager, clock)


@pytest.mark.parametrize(
    "fn",
    [
        AsyncCallable(),
        functools.partial(AsyncCallable()),
        functools.partial(functools.partial(AsyncCallable())),
    ],
    ids=["object", "partial", "partial of partial"],
)
async def test_an_object_with_an_async_call_is_decorated_as_async(
    every_decorator: dict[str, Decorator], fn: Callable[[int], Any]
) -> None:
    for name, decorate in every_decorator.items():
        wrapper = decorate(fn)
        assert inspect.iscoroutinefunction(wrapper), name
        assert await wrapper(1) == 2, name


def test_an_object_with_a_sync_call_stays_sync(every_decorator: dict[str, Decorator]) -> None:
    for name, decorate in every_decorator.items():
        wrapper = decorate(SyncCallable())
        assert not inspect.iscoroutinefunction(wrapper), name
        assert wrapper(1) == 2, name


async def test_hedging_and_a_hedging_policy_take_an_object_with_an_async_call(
    manager: ResilienceManager,
) -> None:
    config = HedgingConfig(delay=1.0)
    protected = Hedging("hedged-object", config, clock=manager._clock).protect(AsyncCallable())
    assert await protected(1) == 2
    decorated = resilient(ResilienceConfig(hedging=config), manager=manager)(AsyncCallable())
    assert await decorated(1) == 2
    with pytest.raises(TypeError, match="async only"):
        resilient(ResilienceConfig(hedging=config), manager=manager)(SyncCallable())


def plain(x: int) -> int:
    return x


async def coroutine(x: int) -> int:
    return x


@pytest.mark.parametrize("kind", [staticmethod, classmethod])
@pytest.mark.parametrize("fn", [plain, coroutine])
def test_a_staticmethod_or_classmethod_object_is_refused_with_the_fix(
    every_decorator: dict[str, Decorator], kind: Callable[[Any], Any], fn: Callable[[int], Any]
) -> None:
    for name, decorate in every_decorator.items():
        with pytest.raises(TypeError, match=rf"is a {kind.__name__} object.*write @{kind.__name__} above"):
            decorate(kind(fn))
            pytest.fail(f"{name} decorated a {kind.__name__} object")


def test_the_decorator_under_staticmethod_and_classmethod_works() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("methods", clock=clock)

    class Service:
        @staticmethod
        @breaker.protect
        def double(x: int) -> int:
            return 2 * x

        @classmethod
        @retry(clock=clock)
        def named(cls, suffix: str) -> str:
            return cls.__name__ + suffix

    assert Service.double(2) == Service().double(2) == 4
    assert Service.named("!") == Service().named("!") == "Service!"


def test_a_callable_whose_metadata_cannot_be_read_is_refused_alike_by_every_decorator(
    every_decorator: dict[str, Decorator], manager: ResilienceManager
) -> None:
    """Every decorator refuses it with the same TypeError, naming what could not be read.

    A pattern's ``protect`` and ``@retry`` did; a policy handle's, a key's and ``@resilient`` with
    a named config let the RuntimeError out of ``functools.wraps``.
    """
    named = resilient(ResilienceConfig(name="named-broken"), manager=manager)
    for name, decorate in {**every_decorator, "resilient(named)": named}.items():
        if name == "resilient":  # unnamed: the policy is named after the function, refused earlier
            continue
        with pytest.raises(
            TypeError, match=r"metadata .* cannot be read to decorate it: RuntimeError: no qualname"
        ):
            decorate(BrokenQualname())
            pytest.fail(f"{name} decorated it")


@pytest.mark.parametrize("kind", ["Future", "Task"])
async def test_a_plain_function_returning_an_asyncio_future_is_refused_not_counted_as_a_success(
    every_decorator: dict[str, Decorator], manager: ResilienceManager, kind: str
) -> None:
    """The sync driver refuses an asyncio Future or Task returned by a plain function, as it refuses a coroutine.

    Its work ends after the call returned: passed on, it was a success for a call that had not
    run, and its failure was never retried, nor seen by a breaker.
    """
    loop = asyncio.get_running_loop()
    made: list[asyncio.Future[None]] = []

    def schedules() -> asyncio.Future[None]:
        made.append(loop.create_future() if kind == "Future" else loop.create_task(asyncio.sleep(0)))
        return made[-1]

    for name, decorate in every_decorator.items():
        with pytest.raises(
            TypeError, match=rf"fn returned an asyncio {kind}, which the sync API cannot await"
        ):
            decorate(schedules)()
            pytest.fail(f"{name} passed the {kind} on")
    assert len(made) == len(every_decorator)  # each called once: not retried
    assert manager.get_resilience_statistics()["executions"]["successful"] == 0
    for future in made:
        future.cancel()
    await asyncio.gather(*made, return_exceptions=True)


def _plain_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Another library's decorator whose wrapper is a plain function, even around an async def."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def test_a_plain_wrapper_of_an_async_function_is_refused_with_the_fix(
    every_decorator: dict[str, Decorator],
) -> None:
    """A plain function that returns a coroutine is told apart from a coroutine function, and told the fix.

    The decorator picked the sync driver because the function is not a coroutine function: the
    message says so and how to fix it, rather than that it is one, to be given to an async variant.
    """

    @_plain_wrapper
    async def fetch(x: int) -> int:
        return x

    for name, decorate in every_decorator.items():
        with pytest.raises(
            TypeError, match=r"fn returned a coroutine.* or a plain function that returns one.*async def"
        ):
            decorate(fetch)(1)
            pytest.fail(f"{name} passed the coroutine on")


class GeneratorCallable:
    """A callable object whose ``__call__`` is a generator function."""

    def __call__(self) -> Any:
        raise AssertionError("never run")
        yield  # pragma: no cover - makes it a generator function


class AsyncGeneratorCallable:
    """A callable object whose ``__call__`` is an async generator function."""

    async def __call__(self) -> Any:
        raise AssertionError("never run")
        yield  # pragma: no cover - makes it an async generator function


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (GeneratorCallable(), "a generator function"),
        (AsyncGeneratorCallable(), "an async generator function"),
        (functools.partial(GeneratorCallable()), "a generator function"),
        (functools.partial(AsyncGeneratorCallable()), "an async generator function"),
    ],
    ids=["object", "async object", "partial", "async partial"],
)
def test_an_object_whose_call_is_a_generator_function_is_refused_when_decorated(
    every_decorator: dict[str, Decorator], manager: ResilienceManager, fn: Callable[[], Any], kind: str
) -> None:
    """Refused when decorated, as a generator function is, not on every call.

    What calling it makes decides, as it decides the driver: such an object returns an iterator
    before its body runs. It was decorated, and each call then failed with the ``TypeError``,
    counted a failed execution.
    """
    for name, decorate in every_decorator.items():
        with pytest.raises(TypeError, match=rf"fn is {kind}, which returns an iterator"):
            decorate(fn)
            pytest.fail(f"{name} decorated it")
    assert manager.get_resilience_statistics()["executions"]["total"] == 0


@pytest.mark.parametrize(("probes", "closes"), [(1, False), (3, True)])
def test_a_function_that_recurses_through_its_own_breaker_probes_once_per_nested_call(
    probes: int, closes: bool
) -> None:
    """A probe is the call's, as a bulkhead slot is: each nested call of a HALF_OPEN breaker's probe
    takes a probe of its own. Past ``half_open_max_calls`` the nested call is rejected, and its
    ``CircuitOpenError``, a rejection, is never counted: the probe is given back and the breaker
    stays HALF_OPEN, rejecting every such call however healthy the dependency: the README says so,
    and that probes above the depth let it close.
    """
    clock = FakeClock()
    manager = ResilienceManager(clock=clock)
    down = [True]
    breaker = CircuitBreakerConfig(failure_threshold=1, timeout=10.0, half_open_max_calls=probes)

    @resilient(ResilienceConfig(name=f"tree-{probes}", circuit_breaker=breaker), manager=manager)
    def walk(depth: int) -> int:
        if down[0]:
            raise ConnectionError("down")
        return 0 if depth == 0 else 1 + walk(depth - 1)

    with pytest.raises(ConnectionError):
        walk(2)
    down[0] = False  # the dependency is back
    outcomes = []
    for _ in range(3):
        clock.advance(10.0)
        try:
            outcomes.append(walk(2))
        except CircuitOpenError as error:
            outcomes.append(type(error).__name__)
    assert outcomes == ([2, 2, 2] if closes else ["CircuitOpenError"] * 3)
