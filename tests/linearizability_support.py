"""The linearizability checker and the breaker's reference model, shared by the thread and async histories.

An operation's invocation and response are stamped from one process-wide sequence; a history
linearizes when some order of its operations keeps real-time order and the sequential model
gives every recorded result (Wing and Gong's search, with explored states remembered).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from otel_resilience import CircuitBreakerConfig, RateLimiterConfig


@dataclass
class Op:
    """One operation of a history: what was asked, what it answered, when it started and ended."""

    thread: int
    name: str
    arg: Any
    start: int
    end: int = -1
    result: Any = None
    after: int | None = None
    """The index of an operation that must be linearized before this one (a call's admission)."""
    seen: Any = None
    """What else the operation saw, where the model checks it (a rejection's ``retry_after``)."""


Model = Callable[[Hashable, Op], Iterable[Hashable]]
"""The sequential rules: the states an operation may leave ``state`` in, given its recorded
result (none: the result is impossible there)."""


_STAMPS = itertools.count()


def stamp() -> int:
    """The next stamp of the one sequence every invocation and response is ordered by."""
    return next(_STAMPS)  # one call into C: atomic under the GIL


def linearizations(states: Iterable[Hashable], ops: Sequence[Op], model: Model) -> set[Hashable]:
    """Return every state a linearization of ``ops`` may end in, from any of ``states`` (empty: none).

    Exhaustive: an operation may come next when no remaining one ended before it started (and
    its ``after`` is done); explored ``(remaining, state)`` pairs are remembered.
    """
    count = len(ops)
    must_follow = [frozenset(j for j in range(count) if ops[j].end < ops[i].start) for i in range(count)]
    seen: dict[tuple[frozenset[int], Hashable], frozenset[Hashable]] = {}

    def search(done: frozenset[int], state: Hashable) -> frozenset[Hashable]:
        if len(done) == count:
            return frozenset((state,))
        key = (done, state)
        known = seen.get(key)
        if known is not None:
            return known
        ends: set[Hashable] = set()
        for i in range(count):
            if i in done or not must_follow[i] <= done:
                continue
            after = ops[i].after
            if after is not None and after not in done:
                continue
            for following in model(state, ops[i]):
                ends |= search(done | {i}, following)
        found = seen[key] = frozenset(ends)
        return found

    result: set[Hashable] = set()
    for state in states:
        result |= search(frozenset(), state)
    return result


def run_round(threads: int, body: Callable[[int, list[Op]], None]) -> list[Op]:
    """Run ``body(thread, ops)`` in ``threads`` threads started together; return every op recorded."""
    start_line = threading.Barrier(threads)
    recorded: list[list[Op]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start_line.wait(timeout=30.0)
            body(index, recorded[index])
        except BaseException as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60.0)
        assert not worker.is_alive(), "a thread hung"
    assert not errors, errors[:3]
    ops = [op for ops in recorded for op in ops]
    for op in ops:
        assert op.end >= 0, op
    return ops


def renumber(ops: list[Op]) -> list[Op]:
    """Turn each op's ``after`` (the op object's id) into its index in ``ops``."""
    index = {id(op): i for i, op in enumerate(ops)}
    for op in ops:
        if op.after is not None:
            op.after = index[op.after]
    return ops


def check_history(
    start: Hashable,
    rounds: int,
    threads: int,
    body: Callable[[int, int, list[Op]], None],
    model: Model,
    *,
    between: Callable[[int], Callable[[Hashable], Hashable]],
) -> list[Op]:
    """Run ``rounds`` rounds of ``threads`` threads, each checked against ``model`` (:func:`check_rounds`)."""

    def run(number: int) -> list[Op]:
        return run_round(threads, lambda index, out: body(number, index, out))

    return check_rounds(start, rounds, run, model, between=between)


def check_rounds(
    start: Hashable,
    rounds: int,
    run: Callable[[int], list[Op]],
    model: Model,
    *,
    between: Callable[[int], Callable[[Hashable], Hashable]],
) -> list[Op]:
    """Run ``run(r)`` for each round ``r``, each history checked against ``model``; ``between(r)`` is the sequential move after it.

    Returns every op recorded (for the counts).
    """
    states: set[Hashable] = {start}
    everything: list[Op] = []
    for number in range(rounds):
        ops = renumber(run(number))
        ends = linearizations(states, ops, model)
        assert ends, f"round {number}: no linearization from {sorted(map(repr, states))[:4]}: " + "; ".join(
            f"t{op.thread} {op.name}({op.arg})={op.result} [{op.start},{op.end}]" for op in ops
        )
        move = between(number)
        states = {move(state) for state in ends}
        everything.extend(ops)
    return everything


class Boom(Exception):
    """The protected call's failure."""


class Ignored(Exception):
    """An error the breaker ignores (``ignore_exceptions``)."""


class Stop(BaseException):
    """An interrupt of the protected call: a cancellation, counted as neither outcome."""


RAISED: dict[object, type[BaseException]] = {True: Boom, "ignore": Ignored, "cancel": Stop}
ENDED: dict[object, str] = {True: "failed", False: "ok", "ignore": "ignored", "cancel": "cancelled"}


@dataclass(frozen=True)
class BreakerState:
    """The model: state, period, consecutive failures, probes in flight and their successes, calls' periods."""

    mode: str = "closed"
    period: int = 0
    failures: int = 0
    in_flight: int = 0
    successes: int = 0
    opened_until: Fraction = Fraction(-1)
    now: Fraction = Fraction(0)
    admitted: frozenset[tuple[int, int]] = field(default_factory=frozenset)
    """(call, period) of each call admitted and not yet ended."""


def breaker_model(config: CircuitBreakerConfig) -> Model:
    threshold, probes, closing = (
        config.failure_threshold,
        config.half_open_max_calls,
        config.success_threshold,
    )
    timeout = Fraction(config.timeout)

    def opened(s: BreakerState, admitted: frozenset[tuple[int, int]], failures: int = 0) -> BreakerState:
        """OPEN: the count keeps the failures that tripped it (none for a failed probe)."""
        return BreakerState("open", s.period + 1, failures, 0, 0, s.now + timeout, s.now, admitted)

    def step(state: Hashable, op: Op) -> Iterable[Hashable]:  # noqa: PLR0911 - one return per rule
        s = state
        assert isinstance(s, BreakerState)
        if op.name == "reset":  # an operator's: CLOSED, its counts cleared
            return (BreakerState("closed", s.period + 1, 0, 0, 0, s.opened_until, s.now, s.admitted),)
        if op.name == "disable":  # an operator's: every call goes through and is counted, from 0
            return (BreakerState("disabled", s.period + 1, 0, 0, 0, s.opened_until, s.now, s.admitted),)
        if op.name == "force_open":  # an operator's: OPEN for 1 s, the count kept
            return (opened(s, s.admitted, s.failures),)
        if op.name in {"state", "stats"}:  # a read: an elapsed OPEN period moves to HALF_OPEN
            if s.mode == "open" and s.now >= s.opened_until:
                s = BreakerState("half_open", s.period + 1, 0, 0, 0, s.opened_until, s.now, s.admitted)
            if op.name == "stats":  # get_stats(): the state and the counts of one moment
                return (s,) if op.result == (s.mode, s.failures, s.successes, s.in_flight) else ()
            return (s,) if op.result == s.mode else ()
        call = op.arg[0]
        if op.name == "admit":
            if s.mode == "open" and s.now >= s.opened_until:
                s = BreakerState("half_open", s.period + 1, 0, 0, 0, s.opened_until, s.now, s.admitted)
            if s.mode in {"closed", "disabled"}:
                return (
                    (s.__class__(**{**s.__dict__, "admitted": s.admitted | {(call, s.period)}}),)
                    if op.result == "admitted"
                    else ()
                )
            if s.mode == "half_open" and s.in_flight < probes:
                if op.result != "admitted":
                    return ()
                return (
                    BreakerState(
                        s.mode,
                        s.period,
                        s.failures,
                        s.in_flight + 1,
                        s.successes,
                        s.opened_until,
                        s.now,
                        s.admitted | {(call, s.period)},
                    ),
                )
            if op.result != "rejected":
                return ()
            # retry_after: what is left of the OPEN period, else the opening a failed probe would start
            waited = s.opened_until - s.now if s.mode == "open" else timeout
            return (s,) if op.seen is None or op.seen == waited else ()
        # the outcome of an admitted call, judged by the period that admitted it
        (period,) = [p for c, p in s.admitted if c == call]
        admitted = s.admitted - {(call, period)}
        failed = op.arg[1]
        if period != s.period:  # a stale period's outcome is only counted
            return (
                BreakerState(
                    s.mode, s.period, s.failures, s.in_flight, s.successes, s.opened_until, s.now, admitted
                ),
            )
        if failed in {"ignore", "cancel"}:  # neither outcome: a probe's place is given back
            in_flight = s.in_flight - 1 if s.mode == "half_open" else s.in_flight
            return (
                BreakerState(
                    s.mode, s.period, s.failures, in_flight, s.successes, s.opened_until, s.now, admitted
                ),
            )
        if s.mode == "disabled":  # counts, never opens
            failures = s.failures + 1 if failed is True else 0 if failed is False else s.failures
            return (BreakerState(s.mode, s.period, failures, 0, 0, s.opened_until, s.now, admitted),)
        if s.mode == "closed":
            if failed:
                if s.failures + 1 >= threshold:
                    return (opened(s, admitted, s.failures + 1),)
                return (
                    BreakerState("closed", s.period, s.failures + 1, 0, 0, s.opened_until, s.now, admitted),
                )
            return (BreakerState("closed", s.period, 0, 0, 0, s.opened_until, s.now, admitted),)
        assert s.mode == "half_open", s
        if failed:
            return (opened(s, admitted),)
        if s.successes + 1 >= closing:
            return (BreakerState("closed", s.period + 1, 0, 0, 0, s.opened_until, s.now, admitted),)
        return (
            BreakerState(
                s.mode, s.period, 0, s.in_flight - 1, s.successes + 1, s.opened_until, s.now, admitted
            ),
        )

    return step


def waiting_limiter_model(
    rate: Fraction, burst: int, max_wait: Fraction, max_waiting: int, *, bucket: bool
) -> Model:
    """A rate limiter whose callers may reserve a permit and wait: FIFO reservations, exact times.

    Operations: ``request`` (its result ``"now"``, ``("wait", due)`` or ``("refused", retry_after)``),
    the ``claim`` of a reserved permit once due, its ``abandon`` (a waiter interrupted: its
    reservation left as a hole, the latest holes rolled back) and the clock's ``tick``.
    """
    window = burst / rate

    def refill(tokens: Any, seconds: Fraction) -> Any:
        """A move of the clock: a bucket refills (a sliding log forgets only when asked, below)."""
        return min(Fraction(burst), tokens + rate * seconds) if bucket else tokens

    def due_of(tokens: Any, now: Fraction, pending: tuple[Any, ...]) -> tuple[Fraction, Any]:
        """When the next permit is due, and the algorithm's state brought up to ``now``."""
        if bucket:
            return (now if tokens >= 1 else now + (1 - tokens) / rate), tokens
        log = tuple(at for at in tokens if at + window > now)
        latest = pending[-1][1] if pending and pending[-1][1] > now else now
        if len(log) < burst:
            return latest, log
        return max(log[-burst] + window, latest), log

    def taken(tokens: Any, at: Fraction) -> Any:
        return tokens - 1 if bucket else (*tokens, at)

    def given_back(tokens: Any, now: Fraction, at: Fraction, before: Any) -> Any:
        return refill(before, now - at) if bucket else tokens[:-1]

    def lapsed(tokens: Any, due: Fraction) -> Any:
        if bucket or due not in tokens:
            return tokens
        log = list(tokens)
        log.remove(due)
        return tuple(log)

    def model(state: Hashable, op: Op) -> Iterable[Hashable]:  # noqa: PLR0911 - one return per rule
        """Tokens, time, waiters, and the reservations ``(waiter or None for a hole, due, time, tokens before)``."""
        tokens, now, waiting, pending = state  # type: ignore[misc]
        if op.name == "tick":
            return ((refill(tokens, op.arg), now + op.arg, waiting, pending),)
        if op.name in {"claim", "abandon"}:
            (place,) = [i for i, held in enumerate(pending) if held[0] == op.arg]
            due = pending[place][1]
            if op.name == "claim":
                if now < due:
                    return ()
                return ((tokens, now, waiting - 1, pending[:place] + pending[place + 1 :]),)
            left = [*pending[:place], (None, *pending[place][1:]), *pending[place + 1 :]]
            while left and left[-1][0] is None and left[-1][1] > now:  # the latest holes: rolled back
                _, _, at, before = left.pop()
                tokens = given_back(tokens, now, at, before)
            return ((tokens, now, waiting - 1, tuple(left)),)
        left = list(pending)
        for place, (owner, due, at, before) in enumerate(pending):
            if owner is not None:
                continue
            if due < now:  # lapsed: a bucket's token stays spent, a log's entry leaves
                left.remove((owner, due, at, before))
                tokens = lapsed(tokens, due)
                continue
            place = left.index((owner, due, at, before))
            if due <= now:
                return (
                    ((tokens, now, waiting, tuple(left[:place] + left[place + 1 :])),)
                    if op.result == "now"
                    else ()
                )
            if due > now + max_wait or waiting >= max_waiting:
                return ((tokens, now, waiting, tuple(left)),) if op.result == ("refused", due - now) else ()
            if op.result != ("wait", due):
                return ()
            left[place] = (op.arg, due, at, before)  # the hole taken over
            return ((tokens, now, waiting + 1, tuple(left)),)
        pending = tuple(left)
        due, tokens = due_of(tokens, now, pending)
        if due <= now:
            return ((taken(tokens, now), now, waiting, pending),) if op.result == "now" else ()
        if due > now + max_wait or waiting >= max_waiting:
            return ((tokens, now, waiting, pending),) if op.result == ("refused", due - now) else ()
        if op.result != ("wait", due):
            return ()
        return ((taken(tokens, due), now, waiting + 1, (*pending, (op.arg, due, now, tokens))),)

    return model


@dataclass(frozen=True)
class WaitingLimiter:
    """A waiting rate limiter's drawn settings: its config and the model of its histories."""

    rate: Fraction
    burst: int
    max_wait: Fraction
    max_waiting: int
    algorithm: str

    @classmethod
    def draw(cls, rng: Any, algorithm: str) -> WaitingLimiter:
        """Draw the settings of one history (the thread and the task histories draw them alike)."""
        rate, burst = Fraction(rng.choice([1, 2, 4])), rng.choice([1, 2])
        max_wait, max_waiting = Fraction(rng.choice([1, 2, 4]), 4), rng.choice([1, 2, 3])
        return cls(rate, burst, max_wait, max_waiting, algorithm)

    @property
    def bucket(self) -> bool:
        """Whether it is a token bucket (else a sliding log)."""
        return self.algorithm == "token_bucket"

    def config(self) -> RateLimiterConfig:
        """The limiter's config."""
        return RateLimiterConfig(
            rate=float(self.rate),
            burst=self.burst,
            max_wait=float(self.max_wait),
            max_waiting=self.max_waiting,
            algorithm=self.algorithm,
        )

    def model(self) -> Model:
        """The model of its histories (:func:`waiting_limiter_model`)."""
        return waiting_limiter_model(
            self.rate, self.burst, self.max_wait, self.max_waiting, bucket=self.bucket
        )


def keyed_breaker_model(config: CircuitBreakerConfig, *, evicting: bool) -> Model:
    """One breaker per key (the state a sorted tuple of ``(key, BreakerState)``; ``op.arg[2]`` the key).

    ``evicting``: fewer keys kept than used. A key's breaker that is idle and holds state (HALF_OPEN
    with no probe in flight, or OPEN with its period over) may be evicted and come back CLOSED
    (README, "Bounded"); a key with a call in flight never is.
    """
    single = breaker_model(config)

    def fresh(state: BreakerState) -> BreakerState:
        return BreakerState("closed", state.period + 1, now=state.now)

    def model(state: Hashable, op: Op) -> Iterable[Hashable]:
        per_key = dict(state)  # type: ignore[call-overload]
        key = op.arg[2]
        mine = per_key[key]
        starts = [mine]
        due = mine.mode == "half_open" or (mine.mode == "open" and mine.now >= mine.opened_until)
        if evicting and due and not mine.in_flight and not mine.admitted:
            starts.append(fresh(mine))  # evicted while idle: the key's next call makes a new breaker
        found = []
        for start in starts:
            for following in single(start, op):
                per_key[key] = following
                found.append(tuple(sorted(per_key.items())))
        return found

    return model
