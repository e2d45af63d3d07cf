"""Seeded random scenarios of one breaker shared by several replicas, checked against README's promises.

Each replica is a store of its own (on a real redis-server, some behind a fault proxy) and a
breaker of the same settings, called from two threads. A scripted dependency goes down, slow and
up again; operators act on random replicas; Redis goes away briefly. Every call is recorded, and
the cluster-wide invariants of "Shared state on Redis" are checked with the tolerances it states.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from redis_support import RedisServer
from shared_workers import wait_for
from tcp_proxy import TcpFaultProxy

from otel_resilience import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, CircuitState, RedisStore
from otel_resilience.engine.registry import namesakes_expected

BREAK = 0.3
"""Seconds a trip keeps the breakers OPEN (the config's ``timeout``)."""
SLOW = 0.15
"""Seconds a slow probe takes."""
PACE = 0.01
"""Seconds between two calls of one thread."""


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a replica: whether its breaker admitted it, and what the dependency was then."""

    replica: int
    admitted: bool
    mode: str
    started: float
    ended: float


class Dependency:
    """The scripted dependency: ``up``, ``down`` (fails at once) or ``slow`` (fails after :data:`SLOW`)."""

    def __init__(self) -> None:
        self.mode = "up"
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def __call__(self) -> str:
        mode = self.mode
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if mode == "slow":
                time.sleep(SLOW)
            if mode != "up":
                message = "down"
                raise RuntimeError(message)
            return mode
        finally:
            with self.lock:
                self.in_flight -= 1


class Cluster:
    """Replicas calling one shared breaker from their threads, every call recorded."""

    def __init__(self, breakers: list[CircuitBreaker], dependency: Dependency) -> None:
        self.breakers = breakers
        self.dependency = dependency
        self.calls: list[Call] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True)
            for i in range(len(breakers))
            for _ in range(2)
        ]

    def _run(self, replica: int) -> None:
        breaker = self.breakers[replica]
        while not self.stopping.is_set():
            mode, started = self.dependency.mode, time.monotonic()
            admitted = True
            try:
                breaker.call_sync(self.dependency)
            except CircuitOpenError:
                admitted = False
            except RuntimeError:
                pass
            except BaseException as error:  # reported by the test
                self.errors.append(error)
                return
            with self.lock:
                self.calls.append(Call(replica, admitted, mode, started, time.monotonic()))
            time.sleep(PACE)

    def __enter__(self) -> Cluster:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(5.0)

    def states(self) -> list[CircuitState]:
        return [b.state for b in self.breakers]

    def all_in(self, state: CircuitState) -> Callable[[], bool]:
        return lambda: all(s is state for s in self.states())

    def admitted_since(self, since: float, mode: str) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c.admitted and c.mode == mode and c.started >= since)


@pytest.fixture
def stores(redis_server: RedisServer, redis_url: str) -> Iterator[Callable[[str], RedisStore]]:
    made: list[RedisStore] = []

    def make(url: str) -> RedisStore:
        store = RedisStore.from_url(url, namespace="model", timeout=0.25, probe_lease_ttl=2.0)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.mark.parametrize("seed", range(1, 9))
def test_seeded_scenarios_keep_the_cluster_wide_promises(
    seed: int,
    redis_server: RedisServer,
    redis_url: str,
    proxy: TcpFaultProxy,
    stores: Callable[[str], RedisStore],
) -> None:
    rng = random.Random(seed)
    count = rng.choice([3, 4])
    threshold = rng.randint(3, 6)
    probes = rng.randint(1, 2)
    successes = rng.randint(1, 3)
    proxied = f"redis://127.0.0.1:{proxy.port}/0"
    urls = [proxied if rng.random() < 0.5 else redis_url for _ in range(count)]
    config = CircuitBreakerConfig(
        failure_threshold=threshold, timeout=BREAK, half_open_max_calls=probes, success_threshold=successes
    )
    group = [stores(url) for url in urls]
    with namesakes_expected():
        breakers = [CircuitBreaker("dep", dataclasses.replace(config, store=s)) for s in group]
    assert all(s.wait_synced(10.0) for s in group)
    dependency = Dependency()
    print(f"seed {seed}: {count} replicas, threshold {threshold}, probes {probes}, successes {successes}")

    with Cluster(breakers, dependency) as cluster:
        wait_for(lambda: len(cluster.calls) > 20 * count, 10.0, "calls flowing")

        # Redis away briefly (for the proxied replicas, or stopped for all): calls go on; the
        # stores come back.
        fault = rng.choice(["drop", "delay", "stop"])
        calls = len(cluster.calls)
        if fault == "stop":
            redis_server.stop()
        else:
            proxy.set(fault, 0.4)
        time.sleep(rng.uniform(0.1, 0.5))
        if fault == "stop":
            redis_server.start()
        proxy.set("pass")
        assert len(cluster.calls) > calls
        print(f"fault: {fault}")
        wait_for(lambda: not any(s.degraded for s in group), 15.0, "every store healthy again")
        assert all(s.wait_synced(10.0) for s in group)
        assert cluster.all_in(CircuitState.CLOSED)()

        # The dependency goes down: about failure_threshold calls in total reach it.
        down = time.monotonic()
        dependency.mode = "down"
        wait_for(cluster.all_in(CircuitState.OPEN), 10.0, "every replica OPEN")
        reached = cluster.admitted_since(down, "down")
        print(f"calls that reached the dependency while down, before all OPEN: {reached}")
        # failure_threshold, plus the calls in flight (two a replica), plus one a replica while the
        # opening travels: never the failure_threshold a replica of breakers counting alone.
        assert reached <= threshold + 3 * count

        # Slow failing probes: never more than half_open_max_calls at once across the cluster.
        # (Redis slow, below the store's timeout, for the proxied replicas.)
        lag = rng.choice([0.0, 0.03, 0.08])
        proxy.set("delay", lag)
        print(f"redis lag {lag}")
        dependency.mode = "slow"
        with dependency.lock:
            dependency.most_in_flight = 0
        slow = time.monotonic()
        degraded = set()
        while time.monotonic() < slow + 2.0:
            degraded |= {i for i, s in enumerate(group) if s.degraded}
            time.sleep(0.01)
        with cluster.lock:
            spans = [
                (c.started, c.ended, c.replica) for c in cluster.calls if c.admitted and c.mode == "slow"
            ]
        worst = max((sorted(r for a, b, r in spans if a <= t < b) for t, _, _ in spans), key=len, default=[])
        print(f"most probes at once: {dependency.most_in_flight} (replicas {worst})")
        assert not degraded  # the leases hold while Redis is reachable
        assert dependency.most_in_flight <= probes
        proxy.set("pass")

        closings: list[float] = []
        for breaker in breakers:
            breaker.on_state_change(
                lambda event: closings.append(time.monotonic()) if event.new == "closed" else None
            )
        up = time.monotonic()
        dependency.mode = "up"
        wait_for(cluster.all_in(CircuitState.CLOSED), 10.0, "every replica CLOSED")
        first = min(closings)
        with cluster.lock:
            probed = sum(
                1 for c in cluster.calls if c.admitted and c.mode == "up" and up <= c.started <= first
            )
        print(f"probe successes before the first replica closed: {probed}")
        assert probed >= successes  # no replica closes before the cluster's successes reach the threshold

        # Operators on random replicas: each action reaches every replica.
        for _ in range(3):
            action = rng.choice(["force_open", "isolate"])
            acted = rng.choice(breakers)
            if action == "force_open":
                acted.force_open()
            else:
                acted.force_open(reason="isolated")
            wait_for(cluster.all_in(CircuitState.OPEN), 5.0, f"{action} reached every replica")
            if rng.random() < 0.5:  # a replica starting now reads the opening and never resets it
                store = stores(redis_url)
                with namesakes_expected():
                    joined = CircuitBreaker("dep", dataclasses.replace(config, store=store))
                assert store.wait_synced(10.0)
                assert joined.state is CircuitState.OPEN
                with pytest.raises(CircuitOpenError):
                    joined.call_sync(dependency)
                time.sleep(0.2)
                assert cluster.all_in(CircuitState.OPEN)()
            rng.choice(breakers).reset()
            wait_for(cluster.all_in(CircuitState.CLOSED), 5.0, "reset reached every replica")
    assert not cluster.errors


@pytest.mark.parametrize("second", ["force_open", "reset"])
def test_an_operators_action_right_after_anothers_on_another_replica_applies_to_all(
    second: str, stores: Callable[[str], RedisStore], redis_url: str, proxy: TcpFaultProxy
) -> None:
    """force_open() on one OPEN replica, then force_open(0.3) or reset on another before the first reached it.

    The later action (Redis 50 ms away from its replica, below the store's timeout: it reaches
    the server second) is the operator's last word: it applies to every replica, the one it was
    made on included, rather than being dropped for the earlier one (all OPEN until a reset).
    """
    group = [stores(redis_url), stores(f"redis://127.0.0.1:{proxy.port}/0")]
    config = CircuitBreakerConfig(failure_threshold=3, timeout=30.0)
    with namesakes_expected():
        a, b = (CircuitBreaker("dep", dataclasses.replace(config, store=s)) for s in group)
    assert all(s.wait_synced(10.0) for s in group)
    a.force_open(30.0)  # an opening both replicas know of; the actions below end it
    wait_for(lambda: a.state is b.state is CircuitState.OPEN, 5.0, "both OPEN")
    proxy.set("delay", 0.05)
    a.force_open()
    if second == "reset":
        b.reset()
    else:
        b.force_open(0.3)
    time.sleep(1.0)
    assert not any(s.degraded for s in group)
    assert [a.state, b.state] != [CircuitState.OPEN, CircuitState.OPEN]
    wait_for(lambda: a.state is b.state, 5.0, "both in the later action's state")
