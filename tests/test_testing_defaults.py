"""What a user's own test suite sees of process-wide state, and ``testing.fresh_defaults`` that resets it.

The suites below are run as a user runs theirs: two tests in one process (``pytester``, in a
process of its own), a ``@resilient`` function of their application, no manager given.
"""

from __future__ import annotations

import inspect
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import otel_resilience
from otel_resilience import (
    BulkheadConfig,
    BulkheadFullError,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
    get_resilience_manager,
    resilient,
    subscribe,
)
from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.patterns.alerts import default_alert_system
from otel_resilience.testing import FakeClock, fresh_defaults

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _the_package_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suites' own processes import this package, installed or not (run from a checkout)."""
    root = str(Path(otel_resilience.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))


_APP = """
from otel_resilience import CircuitBreakerConfig, ResilienceConfig, resilient

DOWN = {"down": False}


@resilient(ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=60.0)))
def fetch():
    if DOWN["down"]:
        raise ConnectionError("down")
    return "ok"
"""

_TWO_TESTS = """
import pytest

import app
from otel_resilience import CircuitOpenError


def test_an_outage_opens_the_breaker(monkeypatch):
    monkeypatch.setitem(app.DOWN, "down", True)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            app.fetch()
    with pytest.raises(CircuitOpenError):
        app.fetch()


def test_fetch_answers():
    assert app.fetch() == "ok"
"""

_FIXTURE = """
import pytest

from otel_resilience.testing import fresh_defaults


@pytest.fixture(autouse=True)
def _fresh_resilience():
    with fresh_defaults() as manager:
        yield manager
"""


def test_a_breaker_a_resilient_function_opened_in_one_test_rejects_the_next_tests_calls(
    pytester: pytest.Pytester,
) -> None:
    """The process-wide manager keeps a ``@resilient`` function's breaker from one test to the next."""
    pytester.makepyfile(app=_APP, test_app=_TWO_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*CircuitOpenError*circuit breaker 'fetch' is open*"])


def test_fresh_defaults_in_an_autouse_fixture_gives_each_test_a_closed_breaker(
    pytester: pytest.Pytester,
) -> None:
    """The README's fixture: each test runs in a new process-wide manager, the breaker of the one before gone."""
    pytester.makepyfile(app=_APP, test_app=_TWO_TESTS)
    pytester.makeconftest(_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


_BULKHEAD_TESTS = """
import threading

import pytest

from otel_resilience import BulkheadConfig, BulkheadFullError, ResilienceConfig, resilient, subscribe

HELD = threading.Event()
RELEASE = threading.Event()


@resilient(ResilienceConfig(name="pool", bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0)))
def work():
    HELD.set()
    RELEASE.wait(30)


@pytest.fixture
def alerts():
    seen = []
    unsubscribe = subscribe(lambda alert: seen.append((alert.kind.value, alert.subject)))
    yield seen
    unsubscribe()


def fill_the_pool():
    HELD.clear()
    RELEASE.clear()
    holder = threading.Thread(target=work)
    holder.start()
    HELD.wait(30)
    with pytest.raises(BulkheadFullError):
        work()
    RELEASE.set()
    holder.join()


def test_first(alerts):
    fill_the_pool()
    assert alerts == [("bulkhead_full", "pool")]


def test_second(alerts):
    fill_the_pool()
    assert alerts == [("bulkhead_full", "pool")]
"""


@pytest.mark.parametrize("fresh", [False, True], ids=["as-is", "fresh-defaults"])
def test_a_full_bulkhead_alerts_in_each_test_with_fresh_defaults(
    pytester: pytest.Pytester, fresh: bool
) -> None:
    """The process-wide alert system's cooldown of a bulkhead's name silenced the next test's alert; not with the fixture."""
    pytester.makepyfile(test_pool=_BULKHEAD_TESTS)
    if fresh:
        pytester.makeconftest(_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    if fresh:
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, failed=1)


def _fail() -> None:
    raise ConnectionError("down")


_CONFIG = ResilienceConfig(name="testing-defaults", circuit_breaker=CircuitBreakerConfig(failure_threshold=1))


@resilient(_CONFIG)
def _fetch(fail: bool) -> str:
    if fail:
        raise ConnectionError("down")
    return "ok"


def _open(manager: ResilienceManager) -> None:
    with pytest.raises(ConnectionError):
        _fetch(fail=True)
    assert manager.get_circuit_breaker("testing-defaults").get_stats()["state"] == "open"


def test_a_function_bound_before_the_block_runs_in_its_manager_then_in_the_one_before() -> None:
    """A ``@resilient`` function bound to the manager before looks its policy up again at either end."""
    before = get_resilience_manager()
    _fetch(fail=False)  # bound to the manager in place now
    with fresh_defaults() as manager:
        assert manager is not before
        assert get_resilience_manager() is manager
        _open(manager)
        with pytest.raises(CircuitOpenError):
            _fetch(fail=False)
    assert get_resilience_manager() is before
    assert _fetch(fail=False) == "ok"  # the breaker the block opened is the block's manager's


def test_the_blocks_manager_and_its_breakers_are_freed_after_it(caplog: pytest.LogCaptureFixture) -> None:
    """A ``@resilient`` function's dead entry kept the block's manager alive, and its open breaker with it.

    Until the function's next call: the next test's breaker of that name was then a second live
    one, logged as a namesake whose telemetry series are combined with the first's.
    """
    with fresh_defaults() as manager:
        _open(manager)
        gone = weakref.ref(manager)
        del manager
    assert gone() is None  # freed by reference counting: no cycle keeps it
    with fresh_defaults():
        assert _fetch(fail=False) == "ok"
    assert "a second live circuit_breaker" not in caplog.text


def test_blocks_nest_each_putting_back_the_manager_it_found() -> None:
    """An inner block's manager is the process-wide one inside it; the outer one's is back after it."""
    with fresh_defaults() as outer:
        _open(outer)
        with fresh_defaults() as inner:
            assert get_resilience_manager() is inner
            assert _fetch(fail=False) == "ok"
        assert get_resilience_manager() is outer
        with pytest.raises(CircuitOpenError):
            _fetch(fail=False)


def test_the_blocks_manager_runs_on_the_clock_given() -> None:
    """``fresh_defaults(clock=FakeClock())``: a ``@resilient`` function's breaker timeout passes with ``advance``."""
    clock = FakeClock()
    with fresh_defaults(clock=clock) as manager:
        _open(manager)
        with pytest.raises(CircuitOpenError):
            _fetch(fail=False)
        clock.advance(CircuitBreakerConfig().timeout)
        assert _fetch(fail=False) == "ok"


def test_the_block_starts_and_leaves_a_new_process_wide_alert_system() -> None:
    """The process-wide alert system (its cooldowns, history, counts) is closed as the block starts and ends."""
    before = default_alert_system()
    seen: list[str] = []
    unsubscribe = subscribe(lambda alert: seen.append(alert.subject))
    try:
        with fresh_defaults() as manager:
            inside = default_alert_system()
            assert before.closed
            assert inside is not before
            assert manager.alert_system is inside
            _open(manager)
        assert inside.closed
        assert seen == ["testing-defaults"]  # a subscription follows the process-wide system
    finally:
        unsubscribe()


def test_the_blocks_alert_system_runs_on_the_clock_given() -> None:
    """A full bulkhead alerts again once its cooldown passed on the block's clock; alerts are stamped on it.

    The block's alert system ran on the system clock: ``advance`` past ``bulkhead_cooldown`` left the
    second fill silent (1 alert for 2), and the alert's timestamp was a real time.
    """
    clock = FakeClock(start=1000.0)
    with fresh_defaults(clock=clock) as manager:
        bulkhead = manager.get_bulkhead(
            "testing-defaults-pool", BulkheadConfig(max_concurrent=1, max_waiting=0)
        )
        system = default_alert_system()
        for _ in range(2):
            with bulkhead.slot(), pytest.raises(BulkheadFullError), bulkhead.slot():
                pass
            clock.advance(system.config.bulkhead_cooldown)
        assert [(alert.subject, alert.timestamp) for alert in system.history] == [
            ("testing-defaults-pool", 1000.0),
            ("testing-defaults-pool", 1000.0 + system.config.bulkhead_cooldown),
        ]
    assert default_alert_system()._clock is SYSTEM_CLOCK  # the next one made, on the clock after the block


def test_an_alert_system_of_the_application_is_left_listening() -> None:
    """Only the process-wide alert system the library made is closed: the application's own is its own."""
    from otel_resilience import AlertSystem  # noqa: PLC0415 - made after the process-wide one closed

    default_alert_system().close()
    own = AlertSystem(name="application-alerts")
    try:
        with fresh_defaults() as manager:
            assert manager.alert_system is own
        assert not own.closed
    finally:
        own.close()


def test_a_bulkhead_call_running_as_the_block_ends_keeps_its_slot() -> None:
    """A call running in the block's manager when it ends finishes there; the next call runs in the manager before."""
    held, release = threading.Event(), threading.Event()
    config = ResilienceConfig(
        name="testing-defaults-pool", bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0)
    )

    @resilient(config)
    def work() -> None:
        held.set()
        release.wait(30)

    with fresh_defaults() as manager:
        holder = threading.Thread(target=work)
        holder.start()
        assert held.wait(30)
        with pytest.raises(BulkheadFullError):
            manager.get_bulkhead("testing-defaults-pool").run_sync(lambda: None)
    try:
        held.clear()
        other = threading.Thread(target=work)
        other.start()  # in the manager before: its own bulkhead, free
        assert held.wait(30)
    finally:
        release.set()
        holder.join()
        other.join()


@pytest.mark.parametrize("clock", [FakeClock, "now", 3.0], ids=["class", "str", "float"])
def test_fresh_defaults_refuses_a_clock_that_is_not_one(clock: object) -> None:
    """A clock that is not one is a ``TypeError`` naming the field, before anything is changed."""
    before = get_resilience_manager()
    with pytest.raises(TypeError, match=r"fresh_defaults\.clock"), fresh_defaults(clock=clock):  # type: ignore[arg-type]
        pass
    assert get_resilience_manager() is before


def test_a_config_file_that_cannot_be_loaded_changes_nothing(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OTEL_RESILIENCE_CONFIG`` is applied to the block's manager as at start-up; a broken file leaves the one before."""
    from otel_resilience.config import ConfigError  # noqa: PLC0415

    before = get_resilience_manager()
    broken = tmp_path / "broken.yaml"  # type: ignore[operator]
    broken.write_text("policies:\n  inventory:\n    circuit_breaker:\n      failure_threshold: 0\n")
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(broken))
    with pytest.raises(ConfigError), fresh_defaults(clock=FakeClock()):  # just written: no real wait
        pass
    assert get_resilience_manager() is before
    good = tmp_path / "good.yaml"  # type: ignore[operator]
    good.write_text("policies:\n  inventory:\n    circuit_breaker:\n      failure_threshold: 3\n")
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(good))
    with fresh_defaults(clock=FakeClock()) as manager:
        assert manager.policy("inventory").config.circuit_breaker is not None


@pytest.fixture(autouse=True)
def _leave_the_process_wide_manager() -> Iterator[None]:
    """Each test here finds and leaves one process-wide manager (its own, so the file's others are not disturbed)."""
    with fresh_defaults():
        yield


def test_a_call_reaching_a_dead_entry_of_a_manager_gone_runs_in_the_process_wide_one() -> None:
    """A call that read a live entry as the block ended, its manager freed since, is not lost."""
    from otel_resilience.manager.core import _Moved  # noqa: PLC0415 - the race's stand-in, reached directly

    manager = ResilienceManager()
    moved = _Moved(manager, _CONFIG, "testing-defaults")
    del manager
    assert moved.execute_packed_sync(_fetch.__wrapped__, (), {"fail": False}) == "ok"
    assert get_resilience_manager().get_circuit_breaker("testing-defaults").get_stats()["total_requests"] == 1


def test_a_watch_of_the_blocks_manager_stops_with_the_block(tmp_path: pytest.TempPathFactory) -> None:
    """A watch a test's start-up code left running kept polling, and kept the block's manager alive, after it."""
    path = tmp_path / "resilience.yaml"  # type: ignore[operator]
    path.write_text("policies:\n  inventory:\n    circuit_breaker:\n      failure_threshold: 3\n")
    with fresh_defaults() as manager:
        watch = get_resilience_manager().watch(path, interval=60.0)
        thread = watch._thread
        gone = weakref.ref(manager)
        del manager
    assert not thread.is_alive()
    del watch
    assert gone() is None


def test_a_watch_of_another_manager_is_left_running(tmp_path: pytest.TempPathFactory) -> None:
    """Only the block's manager leaves: a watch of a manager the test holds goes on."""
    path = tmp_path / "resilience.yaml"  # type: ignore[operator]
    path.write_text("policies:\n  inventory:\n    circuit_breaker:\n      failure_threshold: 3\n")
    own = ResilienceManager()
    with own.watch(path, interval=60.0) as watch:
        with fresh_defaults():
            pass
        assert watch._thread.is_alive()


def test_an_http_client_given_no_manager_takes_its_policy_from_the_blocks_manager() -> None:
    """An HTTP integration made at import (no ``manager``) runs each test's requests in that test's manager."""
    from otel_resilience.integrations.sending import HttpPolicy  # noqa: PLC0415 - the integrations' shared part

    client = HttpPolicy(ResilienceConfig(name="testing-defaults-http"), None, None, (ConnectionError,))
    with fresh_defaults() as first:
        assert client.handle() is first.policy("testing-defaults-http")
    with fresh_defaults() as second:
        assert client.handle() is second.policy("testing-defaults-http")


def test_a_function_decorated_with_the_block_runs_in_it_sync_or_async() -> None:
    """``@fresh_defaults(...)`` on a test: each call runs in a block of its own, an async one's body too.

    An async function's block ended as its coroutine was made, before its body ran: the body ran
    in the manager before, on the system clock, silently (pytest failed the test as an async one
    no plugin supports).
    """
    import asyncio  # noqa: PLC0415

    before = get_resilience_manager()
    clock = FakeClock()
    seen: list[tuple[bool, bool]] = []

    @fresh_defaults(clock=clock)
    def sync_test(marker: str) -> str:
        manager = get_resilience_manager()
        seen.append((manager is not before, manager._clock is clock))
        return marker

    @fresh_defaults(clock=clock)
    async def async_test(marker: str) -> str:
        await asyncio.sleep(0)
        manager = get_resilience_manager()
        seen.append((manager is not before, manager._clock is clock))
        return marker

    assert sync_test("sync") == "sync"
    assert asyncio.run(async_test("async")) == "async"
    assert seen == [(True, True), (True, True)]
    assert get_resilience_manager() is before


def test_a_generator_function_cannot_be_decorated_with_the_block() -> None:
    """Its block would end before its body ran: a ``TypeError`` says to enter the block in its body."""

    def fixture() -> Iterator[None]:
        yield

    async def async_fixture() -> AsyncIterator[None]:
        yield

    for function in (fixture, async_fixture):
        with pytest.raises(
            TypeError, match=r"fresh_defaults\.function must be .* not a generator function.*fixture"
        ):
            fresh_defaults()(function)


def test_an_object_whose_call_is_async_runs_in_its_block_as_an_async_function_does() -> None:
    """Decided as every decorator decides (``is_async_callable``): its coroutine runs in the block.

    An object whose ``__call__`` is a coroutine function got the sync wrapper: the block ended as
    the coroutine was made, and its body ran in the manager before, on the system clock.
    """
    import asyncio  # noqa: PLC0415

    before = get_resilience_manager()
    clock = FakeClock()

    class Case:
        async def __call__(self) -> tuple[bool, bool]:
            await asyncio.sleep(0)
            manager = get_resilience_manager()
            return manager is not before, manager._clock is clock

    decorated = fresh_defaults(clock=clock)(Case())
    assert inspect.iscoroutinefunction(decorated)
    assert asyncio.run(decorated()) == (True, True)
    assert get_resilience_manager() is before


def test_an_object_whose_call_is_a_generator_function_cannot_be_decorated_with_the_block() -> None:
    """Its iterator is made before its body runs, as a generator function's: refused alike."""

    class Fixture:
        def __call__(self) -> Iterator[None]:
            yield

    class AsyncFixture:
        async def __call__(self) -> AsyncIterator[None]:
            yield

    for function in (Fixture(), AsyncFixture()):
        with pytest.raises(TypeError, match=r"fresh_defaults\.function must be .* not a generator function"):
            fresh_defaults()(function)


def test_one_block_is_entered_once_at_a_time_and_again_after_its_end() -> None:
    """A second ``with`` of a block in place is refused (call ``fresh_defaults()`` for another); after, it is a new block."""
    before = get_resilience_manager()
    block = fresh_defaults()
    with block as first:
        with pytest.raises(RuntimeError, match="entered already"), block:
            pass
        assert get_resilience_manager() is first
    with block as second:
        assert second is not first
    assert get_resilience_manager() is before
