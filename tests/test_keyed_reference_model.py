"""A keyed policy's keys against a small reference model of README's "Policies per key" rules.

The model (:class:`KeysModel`) keeps, for each key, its last use and its breaker (consecutive
failures, or OPEN until a time), and applies README's rules as they read:

* a key is its text (``1`` and ``"1"`` one key);
* a key unused for ``idle_ttl`` is evicted, whatever it holds, unless it is not idle (OPEN);
* past ``max_keys``, the least recently used idle key holding no state goes first; an idle key
  holding state (failures towards opening, or HALF_OPEN) goes only once more than
  ``min(max_keys, 16)`` of them are met, the least recently used of them first;
* an evicted key comes back fresh (a CLOSED breaker with no failures);
* what an evicted key counted stays in the policy's totals, and ``evicted_keys`` counts it.

Random seeded sequences of calls (succeeding or failing, sync or async) and clock steps run
through the model and a real policy handle side by side; after each step the keys kept, the
evictions, each key's failures and the totals must agree.
"""

from __future__ import annotations

import copy
import random
import threading
from dataclasses import dataclass

import pytest

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    PolicyHandle,
    RateLimitedError,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.patterns.circuit_breaker import CircuitState
from otel_resilience.testing import FakeClock

THRESHOLD = 3
OPEN_FOR = 30.0
CONFIG = ResilienceConfig(
    circuit_breaker=CircuitBreakerConfig(failure_threshold=THRESHOLD, timeout=OPEN_FOR),
)


def boom() -> None:
    raise ConnectionError("down")


def fail(view: object) -> None:
    with pytest.raises(ConnectionError):
        view.execute_sync(boom)  # type: ignore[attr-defined]


def test_a_key_set_aside_for_the_failures_it_holds_still_expires_after_idle_ttl(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """README: "``idle_ttl`` evicts a key unused that long whatever it holds."

    A key holding a failure, set aside by each eviction that met it (churn past ``max_keys``),
    counted as used at each of them: unused for 100 s with ``idle_ttl=10``, it was still kept,
    its failure carried on (``failure_count`` 1 on its next call, where a fresh key has 0).
    """
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=30.0))
    policy = manager.policy("set-aside", config, max_keys=2, idle_ttl=10.0)
    fail(policy.for_key("failing"))
    for turn in range(25):  # a new key every 4 s: each eviction meets "failing" first
        clock.advance(4.0)
        policy.for_key(f"new-{turn}").execute_sync(lambda: None)
    assert [key for key, _ in policy._keys.items()] == ["new-23", "new-24"]
    assert policy.get_stats()["evicted_keys"] == 24
    breaker = policy.for_key("failing").circuit_breaker
    assert breaker is not None
    assert breaker.get_stats()["failure_count"] == 0  # back fresh


def test_a_key_used_as_a_busy_key_expires_is_not_evicted_by_its_own_use(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """A use finds its key, then the expiry counts a busy key unused for ``idle_ttl`` as used now
    (moved to the young end, after the key used); the store, past ``max_keys``, then looked at
    its oldest entry: the very key being used, idle and holding nothing, evicted (``evicted_keys``
    1, the key built again, a churn no other key caused) before its call could count itself in."""
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=30.0))
    policy = manager.policy("used", config, max_keys=1, idle_ttl=10.0)
    fail(policy.for_key("down"))  # OPEN for 30 s: not idle, kept past max_keys
    policy.for_key("k").execute_sync(lambda: None)
    kept = policy._keys.get("k")
    clock.advance(11.0)  # "down" unused for 11 s, still OPEN
    policy.for_key("k").execute_sync(lambda: None)
    assert policy._keys.get("k") is kept
    assert policy.get_stats()["evicted_keys"] == 0


HELD = 16  # README: one eviction sets aside 16 keys holding state at most


@dataclass
class KeyModel:
    """One key's breaker as README describes it: consecutive failures, or OPEN until a time."""

    failures: int = 0
    open_until: float | None = None
    running: int = 0
    metric_key: str | None = None
    tokens: float = 0.0  # a rate limiter's bucket, as of ``stamp`` (unused without a limiter)
    stamp: float = 0.0
    rate: float = 0.0
    burst: int = 0

    def bucket(self, now: float) -> float:
        """The permits in the key's bucket now: it refills at ``rate`` up to ``burst``."""
        return min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)

    def state(self, now: float) -> CircuitState:
        if self.open_until is None:
            return CircuitState.CLOSED
        return CircuitState.OPEN if now < self.open_until else CircuitState.HALF_OPEN

    def idle(self, now: float) -> bool:
        """A key with a call running, or whose breaker is OPEN, is not idle."""
        return not self.running and self.state(now) is not CircuitState.OPEN

    def holds(self, now: float) -> bool:
        """Failures towards opening, not CLOSED, or a bucket not full (README's "holds state")."""
        breaker = self.state(now) is not CircuitState.CLOSED or self.failures > 0
        return breaker or (self.burst > 0 and self.bucket(now) < self.burst)


@dataclass
class Totals:
    calls: int = 0
    successes: int = 0
    failures: int = 0
    rejected: int = 0
    opened: int = 0
    evicted: int = 0
    limited: int = 0


class KeysModel:
    """README's rules of a keyed policy's keys, over a plain list kept in the order of last use."""

    def __init__(
        self,
        max_keys: int,
        idle_ttl: float | None,
        key_attribute_limit: int = 0,
        limiter: tuple[float, int] | None = None,
    ) -> None:
        self.limiter = limiter
        self.max_keys = max_keys
        self.idle_ttl = idle_ttl
        self.attribute_limit = key_attribute_limit
        self.attributed: set[str] = set()  # the keys given their own resilience.key, for good
        self.threshold, self.open_for = THRESHOLD, OPEN_FOR
        self.limit = min(max_keys, HELD)
        self.order: list[str] = []  # oldest use first
        self.last: dict[str, float] = {}
        self.keys: dict[str, KeyModel] = {}
        self.totals = Totals()

    # -- which keys are kept
    def _evict(self, text: str) -> None:
        self.order.remove(text)
        del self.last[text], self.keys[text]
        self.totals.evicted += 1

    def _young(self, text: str, now: float, before: str | None = None) -> None:
        """A busy key met by an eviction counts as used now (moved to the young end)."""
        self.order.remove(text)
        self.order.append(text)
        if before is not None:
            self.order.remove(before)
            self.order.append(before)
        if self.idle_ttl is not None:
            self.last[text] = now

    def expire(self, now: float, using: str | None = None) -> None:
        """Keys unused for idle_ttl go if idle, whatever they hold; a busy one counts as used now."""
        if self.idle_ttl is None:
            return
        if using is not None:
            self._young(using, now)
        for text in [t for t in self.order if t != using]:
            if self.last[text] > now - self.idle_ttl:
                continue
            if self.keys[text].idle(now):
                self._evict(text)
            else:
                self._young(text, now)
        if using is not None:  # the key used stays the youngest
            self._young(using, now)

    def _trim(self, now: float) -> None:
        """Past max_keys: idle keys holding none go first, oldest first; keys holding state only
        once more than ``limit`` of them are met; busy keys stay (used now)."""
        excess = len(self.order) - self.max_keys
        if excess <= 0:
            return
        newest = self.order[-1]
        holding: list[str] = []
        busy: list[str] = []
        gone: list[str] = []
        for text in self.order[:-1]:
            key = self.keys[text]
            if not key.idle(now):
                busy.append(text)
                if len(busy) > HELD:
                    break
                continue
            if key.holds(now):
                holding.append(text)
                if len(holding) <= self.limit:
                    continue
                text = holding.pop(0)
            gone.append(text)
            if len(gone) == excess:
                break
        for text in gone:
            self._evict(text)
        for text in busy:
            self._young(text, now, before=newest)

    def _shrink(self, now: float) -> None:
        """A use past max_keys: the oldest idle key holding none goes, or the first busy one is made young."""
        for text in self.order[: min(len(self.order) - 1, self.limit + 1)]:
            key = self.keys[text]
            if not key.idle(now):
                self._young(text, now)
                return
            if not key.holds(now):
                self._evict(text)
                return

    def find(self, text: str, now: float) -> KeyModel:
        """The key a call of ``text`` runs with: found (a use), or made fresh."""
        if text in self.keys:
            if self.idle_ttl is None:
                self._young(text, now)
            else:
                self.expire(now, using=text)
            if len(self.order) > self.max_keys:
                self._shrink(now)
        if text not in self.keys:
            self.expire(now)
            self.order.append(text)
            self.last[text] = now
            key = self.keys[text] = KeyModel(metric_key=self._metric_key(text))
            if self.limiter is not None:  # a new key's bucket is full
                key.rate, key.burst = self.limiter
                key.tokens, key.stamp = float(key.burst), now
            self._trim(now)
        return self.keys[text]

    def _metric_key(self, text: str) -> str | None:
        """The first key_attribute_limit keys get their own attribute for good; later ones, and "_OTHER", "_OTHER"."""
        if not self.attribute_limit:
            return None
        if text in self.attributed:
            return text
        if len(self.attributed) >= self.attribute_limit or text == "_OTHER":
            return "_OTHER"
        self.attributed.add(text)
        return text

    def reload(self, threshold: float, open_for: float) -> None:
        """A reload applies to every live key: failures and OPEN periods carry over."""
        self.threshold, self.open_for = int(threshold), open_for

    # -- what a call does
    def call(self, text: str, ok: bool, now: float, inner: list[tuple[str, bool]] | None = None) -> str:
        """One call of ``text``; ``inner``: calls made while it runs (it holds its key meanwhile)."""
        key = self.find(text, now)
        totals = self.totals
        totals.calls += 1
        if key.burst:  # the rate limiter is outside the breaker
            key.tokens, key.stamp = key.bucket(now), now
            if key.tokens < 1:
                totals.limited += 1
                return "limited"
            key.tokens -= 1
        state = key.state(now)
        if state is CircuitState.OPEN:
            totals.rejected += 1
            return "rejected"
        key.running += 1
        for inner_text, inner_ok in inner or ():
            self.call(inner_text, inner_ok, now)
        key.running -= 1
        if ok:
            totals.successes += 1
            key.failures, key.open_until = 0, None
            return "ok"
        totals.failures += 1
        key.failures += 1
        if state is CircuitState.HALF_OPEN or key.failures >= self.threshold:
            key.open_until = now + self.open_for
            totals.opened += 1
        return "failed"


MODEL_CONFIG = ResilienceConfig(
    circuit_breaker=CircuitBreakerConfig(
        failure_threshold=THRESHOLD, timeout=OPEN_FOR, success_threshold=1, half_open_max_calls=1
    ),
)
KEYS: tuple[object, ...] = ("a", "b", "c", "d", "e", "f", 1, "1", 2.5, "_OTHER")
"""Keys drawn: ``1`` and ``"1"`` are one key (their text)."""


def _outcome_sync(view: object, ok: bool) -> str:
    try:
        if ok:
            view.execute_sync(lambda: None)  # type: ignore[attr-defined]
            return "ok"
        view.execute_sync(boom)  # type: ignore[attr-defined]
    except CircuitOpenError:
        return "rejected"
    except RateLimitedError:
        return "limited"
    except ConnectionError:
        return "failed"
    raise AssertionError("boom returned")


async def _outcome_async(view: object, ok: bool) -> str:
    async def fine() -> None:
        return None

    async def down() -> None:
        raise ConnectionError("down")

    try:
        await view.execute(fine if ok else down)  # type: ignore[attr-defined]
    except CircuitOpenError:
        return "rejected"
    except ConnectionError:
        return "failed"
    return "ok"


def _compare(policy: PolicyHandle, model: KeysModel, now: float, where: str) -> None:
    kept = [key for key, _ in policy._keys.items()]
    assert kept == model.order, where
    # README: resilience.policy.keys counts the keys kept, less those a call would evict now
    # (unused for idle_ttl, or idle past max_keys), evicting none.
    gauge = copy.deepcopy(model)
    gauge.expire(now)
    gauge._trim(now)
    assert policy.keys == len(gauge.order), where
    for text in kept:
        state = policy._keys.get(text)
        assert state is not None
        breaker = state.breaker
        assert breaker is not None
        expected = model.keys[text]
        assert breaker.peek_state() is expected.state(now), (where, text)
        if expected.state(now) is CircuitState.CLOSED:
            assert breaker.stats.failure_count == expected.failures, (where, text)
        assert state.metric_key == expected.metric_key, (where, text)


def _compare_stats(policy: PolicyHandle, model: KeysModel, now: float, where: str) -> None:
    model.expire(now)  # get_stats() evicts the keys unused for idle_ttl first
    stats = policy.get_stats()
    totals = model.totals
    assert stats["keys"] == len(model.order), where
    assert stats["evicted_keys"] == totals.evicted, where
    assert stats["executions"]["total"] == totals.calls, where
    breaker = stats["circuit_breaker"]
    assert breaker is not None
    seen = (
        breaker["total_successes"],
        breaker["total_failures"],
        breaker["total_rejected"],
        breaker["times_opened"],
    )
    assert seen == (totals.successes, totals.failures, totals.rejected, totals.opened), where
    assert breaker["open_keys"] == sum(key.state(now) is CircuitState.OPEN for key in model.keys.values()), (
        where
    )
    _compare(policy, model, now, where)


Step = tuple[str, object, float, list[tuple[object, bool]]]


def _steps(seed: int, count: int) -> list[Step]:
    """A seeded sequence of calls (some making calls of other keys while they run), waits,
    reloads and stats reads."""
    draw = random.Random(seed)
    max_keys = SHAPES[seed % len(SHAPES)][0]
    # Beyond max_keys + 16 keys: past the 16 keys holding state one eviction sets aside.
    keys = KEYS if max_keys < 10 else (*KEYS, *(f"k{number}" for number in range(max_keys + 20)))
    steps: list[Step] = []
    for _ in range(count):
        roll = draw.random()
        if roll < 0.55:
            steps.append(("call", draw.choice(keys), float(draw.random() < 0.55), []))
        elif roll < 0.65:  # held open while 1 to 4 calls of other keys run (and evict)
            outer = draw.choice(keys)
            others = [key for key in keys if str(key) != str(outer)]
            inner = [(draw.choice(others), draw.random() < 0.5) for _ in range(draw.randint(1, 4))]
            steps.append(("call", outer, float(draw.random() < 0.7), inner))
        elif roll < 0.88:
            steps.append(("wait", None, draw.choice((0.5, 2.0, 5.0, 9.0, 14.0, 31.0)), []))
        elif roll < 0.92:
            steps.append(("reload", None, draw.choice((2.0, 3.0, 4.0)), []))
        else:
            steps.append(("stats", None, 0.0, []))
    return steps


SHAPES = [(1, None, 0), (2, 12.0, 2), (3, 20.0, 0), (3, None, 4), (5, 40.0, 1), (18, None, 0), (20, 60.0, 3)]
"""``max_keys``, ``idle_ttl`` and ``key_attribute_limit`` of the policies under test."""


def _reload_config(threshold: float) -> ResilienceConfig:
    open_for = {2.0: 20.0, 3.0: OPEN_FOR, 4.0: 45.0}[threshold]
    return ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=int(threshold), timeout=open_for, success_threshold=1, half_open_max_calls=1
        ),
    )


def _start(manager: ResilienceManager, seed: int) -> tuple[PolicyHandle, KeysModel]:
    max_keys, idle_ttl, limit = SHAPES[seed % len(SHAPES)]
    policy = manager.policy(
        f"model-{seed}", MODEL_CONFIG, max_keys=max_keys, idle_ttl=idle_ttl, key_attribute_limit=limit
    )
    return policy, KeysModel(max_keys, idle_ttl, limit)


def _other_step(
    manager: ResilienceManager,
    policy: PolicyHandle,
    model: KeysModel,
    clock: FakeClock,
    step: Step,
    *,
    where: str,
) -> None:
    kind, _, value, _ = step
    if kind == "wait":
        clock.advance(value)
    elif kind == "reload":
        config = _reload_config(value)
        manager.reconfigure(policy.name, config)
        model.reload(value, config.circuit_breaker.timeout)  # type: ignore[union-attr]
    else:
        _compare_stats(policy, model, clock.now(), where)


@pytest.mark.parametrize("seed", range(28))
def test_keys_agree_with_the_reference_model_sync(
    manager: ResilienceManager, clock: FakeClock, seed: int
) -> None:
    """Sync calls through a key view: kept keys, their order, breakers, metric attributes,
    evictions and totals, across reloads and calls held open while others evict."""
    policy, model = _start(manager, seed)

    def run(key: object, ok: bool, inner: list[tuple[object, bool]]) -> str:
        if not inner:
            return _outcome_sync(policy.for_key(key), ok)

        def body() -> None:
            for inner_key, inner_ok in inner:
                _outcome_sync(policy.for_key(inner_key), inner_ok)
            if not ok:
                raise ConnectionError("down")

        try:
            policy.for_key(key).execute_sync(body)
        except CircuitOpenError:
            return "rejected"
        except ConnectionError:
            return "failed"
        return "ok"

    for number, step in enumerate(_steps(seed, 400)):
        kind, key, value, inner = step
        where = f"seed {seed} step {number} {kind} {key!r} {value} {inner}"
        if kind == "call":
            expected = model.call(str(key), bool(value), clock.now(), [(str(k), o) for k, o in inner])
            assert run(key, bool(value), inner) == expected, where
            _compare(policy, model, clock.now(), where)
        else:
            _other_step(manager, policy, model, clock, step, where=where)
    _compare_stats(policy, model, clock.now(), f"seed {seed} end")


@pytest.mark.parametrize("seed", range(100, 114))
async def test_keys_agree_with_the_reference_model_async(
    manager: ResilienceManager, clock: FakeClock, seed: int
) -> None:
    """The same through ``await view.execute(fn)``."""
    policy, model = _start(manager, seed)

    async def run(key: object, ok: bool, inner: list[tuple[object, bool]]) -> str:
        if not inner:
            return await _outcome_async(policy.for_key(key), ok)

        async def body() -> None:
            for inner_key, inner_ok in inner:
                await _outcome_async(policy.for_key(inner_key), inner_ok)
            if not ok:
                raise ConnectionError("down")

        try:
            await policy.for_key(key).execute(body)
        except CircuitOpenError:
            return "rejected"
        except ConnectionError:
            return "failed"
        return "ok"

    for number, step in enumerate(_steps(seed, 400)):
        kind, key, value, inner = step
        where = f"seed {seed} step {number} {kind} {key!r} {value} {inner}"
        if kind == "call":
            expected = model.call(str(key), bool(value), clock.now(), [(str(k), o) for k, o in inner])
            assert await run(key, bool(value), inner) == expected, where
            _compare(policy, model, clock.now(), where)
        else:
            _other_step(manager, policy, model, clock, step, where=where)
    _compare_stats(policy, model, clock.now(), f"seed {seed} end")


def test_keys_used_by_many_threads_count_every_call_once(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """Threads churning through more keys than max_keys (one failing in three): whatever the
    interleaving, each call is counted once in the totals, evicted keys' included, and once the
    threads are done no key is busy and the kept keys are the store's live ones."""
    policy = manager.policy("threads", MODEL_CONFIG, max_keys=3, idle_ttl=30.0, key_attribute_limit=2)
    per_thread, threads_count = 300, 4
    outcomes: list[list[str]] = [[] for _ in range(threads_count)]
    start = threading.Barrier(threads_count)

    def work(number: int) -> None:
        draw = random.Random(number)
        start.wait()
        for _ in range(per_thread):
            key = draw.choice(KEYS)
            outcomes[number].append(_outcome_sync(policy.for_key(key), draw.random() < 0.67))

    threads = [threading.Thread(target=work, args=(number,)) for number in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60.0)
    assert not any(thread.is_alive() for thread in threads)
    seen = [outcome for done in outcomes for outcome in done]
    assert len(seen) == per_thread * threads_count
    stats = policy.get_stats()
    breaker = stats["circuit_breaker"]
    assert breaker is not None
    assert stats["executions"]["total"] == len(seen)
    assert breaker["total_successes"] == seen.count("ok")
    assert breaker["total_failures"] == seen.count("failed")
    assert breaker["total_rejected"] == seen.count("rejected")
    states = policy._keys.values()
    assert all(state.live and not state.running for state in states)
    assert stats["keys"] == len(states)
    own = {state.metric_key for state in states if state.metric_key != "_OTHER"}
    assert len(policy._metric_keys) == 2  # the first two keys built, for good
    assert own <= set(policy._metric_keys)


LIMITED = ResilienceConfig(
    circuit_breaker=MODEL_CONFIG.circuit_breaker,
    rate_limiter=RateLimiterConfig(rate=0.5, burst=2),
)


@pytest.mark.parametrize("seed", range(200, 214))
def test_keys_with_a_rate_limiter_agree_with_the_reference_model(
    manager: ResilienceManager, clock: FakeClock, seed: int
) -> None:
    """A key whose bucket is not full holds state (kept past max_keys after the idle keys holding
    none); an evicted key comes back with a full bucket; rate-limited calls are counted."""
    max_keys, idle_ttl, _ = SHAPES[seed % len(SHAPES)]
    policy = manager.policy(f"limited-{seed}", LIMITED, max_keys=max_keys, idle_ttl=idle_ttl)
    model = KeysModel(max_keys, idle_ttl, limiter=(0.5, 2))
    for number, step in enumerate(_steps(seed, 400)):
        kind, key, value, _ = step
        where = f"seed {seed} step {number} {kind} {key!r} {value}"
        if kind == "call":
            expected = model.call(str(key), bool(value), clock.now())
            assert _outcome_sync(policy.for_key(key), bool(value)) == expected, where
            _compare(policy, model, clock.now(), where)
        elif kind == "wait":
            clock.advance(value)
        elif kind == "stats":
            _compare_stats(policy, model, clock.now(), where)
            limiter = policy.get_stats()["rate_limiter"]
            assert limiter is not None
            assert limiter["rejected"] == model.totals.limited, where
    _compare_stats(policy, model, clock.now(), f"seed {seed} end")
