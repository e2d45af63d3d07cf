"""A state-change callback may call back into the policy or manager that holds the breaker.

Reading a breaker's ``state`` moves an OPEN breaker whose timeout elapsed to HALF_OPEN and runs
its callbacks there and then. The library's own readers that hold a lock (a policy's stats, the
eviction rules of a policy's keys and of the manager's policies) peek instead
(``peek_state``), so a callback that needs that lock again does not wait for it forever.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from otel_resilience import CircuitBreaker, CircuitBreakerConfig, ResilienceConfig, ResilienceManager
from otel_resilience.engine.registry import BREAKERS
from otel_resilience.patterns.circuit_breaker import CircuitState
from otel_resilience.testing import FakeClock


def _returns(fn: Callable[[], Any], within: float = 10.0) -> bool:
    """Run ``fn`` in a daemon thread; whether it returned within ``within`` seconds (a deadlock does not)."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as error:
            errors.append(error)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    returned = done.wait(within)
    assert errors == []
    return returned


def _fail() -> None:
    raise ConnectionError("down")


def _open_key(clock: FakeClock, **options: Any) -> tuple[Any, CircuitBreaker]:
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=30.0))
    handle = manager.policy("payments", config, **options)
    with contextlib.suppress(ConnectionError):
        handle.for_key("eu-1").execute_sync(_fail)
    breaker = handle.for_key("eu-1").circuit_breaker
    assert breaker is not None
    assert breaker.state is CircuitState.OPEN
    return handle, breaker


def test_peek_state_reads_half_open_without_moving_or_calling_back() -> None:
    """An OPEN breaker past its timeout peeks HALF_OPEN; only a read of ``state`` makes the move."""
    clock = FakeClock()
    breaker = CircuitBreaker("peeked", CircuitBreakerConfig(failure_threshold=1, timeout=30.0), clock=clock)
    changes: list[Any] = []
    breaker.on_state_change(changes.append)
    with contextlib.suppress(ConnectionError):
        breaker.call_sync(_fail)
    changes.clear()
    assert breaker.peek_state() is CircuitState.OPEN
    clock.advance(31.0)
    assert breaker.peek_state() is CircuitState.HALF_OPEN
    assert changes == []  # nothing moved, nothing reported
    assert breaker.state is CircuitState.HALF_OPEN
    assert [(change.old, change.new) for change in changes] == [("open", "half_open")]


def test_a_callback_reading_the_policys_stats_during_its_stats() -> None:
    """``get_stats`` counts the open keys under the policy's lock: a callback reading it again returns."""
    clock = FakeClock()
    handle, breaker = _open_key(clock)
    seen: list[int] = []
    breaker.on_state_change(lambda _change: seen.append(handle.get_stats()["keys"]))
    clock.advance(31.0)
    assert _returns(handle.get_stats)
    assert breaker.state is CircuitState.HALF_OPEN  # the move, made by this read
    assert seen == [1]


def test_a_callback_reading_the_policy_during_a_key_eviction() -> None:
    """A new key past ``max_keys`` looks at the old key's breaker under the key store's lock."""
    clock = FakeClock()
    handle, breaker = _open_key(clock, max_keys=1)
    seen: list[int] = []
    breaker.on_state_change(lambda _change: seen.append(handle.get_stats()["keys"]))
    clock.advance(31.0)
    assert _returns(lambda: handle.for_key("us-1").execute_sync(lambda: "ok"))
    assert _returns(lambda: handle.for_key("ap-1").execute_sync(lambda: "ok"))
    # The HALF_OPEN key with no probe is idle but holds state: the key holding none went instead.
    assert handle.get_stats()["evicted_keys"] == 1
    assert handle._keys.get("eu-1") is not None


def test_a_callback_reading_the_manager_during_a_policy_eviction() -> None:
    """The manager's bounded policies look at a breaker under their store's lock."""
    clock = FakeClock()
    manager = ResilienceManager(clock=clock, max_policies=1)
    config = ResilienceConfig(
        name="a", circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=30.0)
    )
    with contextlib.suppress(ConnectionError):
        manager.execute_with_resilience_sync(_fail, config)
    breaker = BREAKERS.get("a")
    assert breaker is not None
    seen: list[int] = []
    breaker.on_state_change(lambda _change: seen.append(len(manager.get_resilience_statistics())))
    clock.advance(31.0)

    def others() -> None:
        for name in "bcd":
            other = ResilienceConfig(name=name, circuit_breaker=CircuitBreakerConfig())
            manager.execute_with_resilience_sync(lambda: 1, other)

    assert _returns(others)
