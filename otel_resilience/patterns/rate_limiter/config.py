"""The rate limiter's settings: :class:`RateLimiterConfig` and its defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Final, Literal

from otel_resilience.engine.shared import SharedStore, check_store
from otel_resilience.engine.validation import (
    MAX_COUNT,
    MAX_DURATION,
    check_duration,
    check_int,
    check_number,
    fail,
)

KIND: Final = "rate_limiter"
"""The pattern kind in telemetry."""

ALGORITHMS: Final = ("token_bucket", "sliding_window")
"""The algorithms a :class:`RateLimiterConfig` may name."""
DEFAULT_MAX_WAITING: Final = 100
"""Callers that may wait for a permit at once unless configured otherwise (a bounded queue)."""

STORE_FALLBACKS: Final = ("open", "closed", "local")
"""What a cluster rate limiter does while its store is unreachable (``store_fallback``)."""

Algorithm = Literal["token_bucket", "sliding_window"]
"""How permits are counted: see :attr:`RateLimiterConfig.algorithm`."""

MIN_RATE: Final = 1.0 / MAX_DURATION
"""The lowest ``rate``: one permit per :data:`~otel_resilience.engine.validation.MAX_DURATION`
seconds, so that the time until the next permit (a wait, a ``retry_after``) is a duration."""

_OWNER: Final = "RateLimiterConfig"


@dataclass(frozen=True, slots=True)
class RateLimiterConfig:
    """How many calls a :class:`RateLimiter` admits, how fast, and how long a caller may wait.

    Example::

        RateLimiterConfig(rate=50.0, burst=10)                  # 50/s, at most 10 at once
        RateLimiterConfig(rate=5.0, max_wait=2.0)               # wait up to 2 s for a permit
        RateLimiterConfig(rate=100 / 60, burst=100, algorithm="sliding_window")  # 100 a minute

    **From Resilience4j:** ``limitForPeriod`` permits every ``limitRefreshPeriod`` is
    ``burst=limitForPeriod, rate=limitForPeriod / limitRefreshPeriod`` (seconds), and
    ``timeoutDuration`` is ``max_wait``. Resilience4j refills the whole period's permits at each
    period boundary, so it can admit ``2 * limitForPeriod`` across a boundary; the token bucket
    refills continuously and never admits more than ``burst`` at once, and ``"sliding_window"``
    never admits more than ``burst`` in any ``limitRefreshPeriod``.

    Args:
        rate: See the attribute.
        burst: See the attribute; ``None`` (the default) for ``max(1, ceil(rate))``.
        algorithm: See the attribute.
        max_wait: See the attribute; a ``datetime.timedelta`` is accepted and stored as seconds.
        max_waiting: See the attribute.
        store: See the attribute.
        store_fallback: See the attribute.
        expected_replicas: See the attribute.

    Raises:
        TypeError: If a field has the wrong type (the message names ``RateLimiterConfig.<field>``).
        ValueError: If a field is out of range (the message names ``RateLimiterConfig.<field>``), or
            a setting that would be ignored is not its default: ``max_waiting`` beside ``max_wait=0``,
            ``store_fallback`` without a ``store``, ``expected_replicas`` beside another
            ``store_fallback`` than ``"local"``.
    """

    rate: float
    """Permits per second on average, a finite number ``> 0`` (required). ``rate=0.5`` is one
    permit every 2 s. At least :data:`MIN_RATE` (one permit per ``threading.TIMEOUT_MAX``
    seconds, so that a ``retry_after`` is a duration) and at most ``sys.maxsize`` (so that the
    default ``burst`` is a count)."""
    burst: int = None  # type: ignore[assignment] # None until __post_init__ computes the default
    """The most permits taken at once, an ``int >= 1``: the bucket's size (``"token_bucket"``),
    or the most admissions in any window of ``burst / rate`` seconds (``"sliding_window"``).
    The default is ``max(1, ceil(rate))``: one second's worth of permits, computed at
    construction and stored (``dataclasses.replace(config, rate=...)`` keeps it). With
    ``"sliding_window"``, the window ``burst / rate`` is at most ``threading.TIMEOUT_MAX`` seconds."""
    algorithm: Algorithm = "token_bucket"
    """``"token_bucket"`` (the default): a bucket of ``burst`` tokens refilled continuously at
    ``rate`` per second; a call takes one. Bursts up to ``burst``, then ``rate`` on average.
    ``"sliding_window"``: at most ``burst`` admissions in any window of ``burst / rate`` seconds,
    kept as an exact log of the last ``burst`` admission times (O(burst) memory, O(1) a call).
    It never exceeds ``burst`` in a window anywhere, where a fixed window admits twice that
    across a boundary; after a full burst it admits nothing until the window has passed."""
    max_wait: float = 0.0
    """The longest a caller may wait for a permit, in seconds, ``>= 0``. ``0`` (the default)
    rejects at once when no permit is free. A caller whose permit is due later than this (or
    later than the deadline of an enclosing timeout) is rejected at once, not after waiting;
    ``max_wait`` is measured to the clock's step (a permit due at the clock's reading just
    after ``now + max_wait``, where a permit's time rounds, is waited for)."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """Callers that may wait for a permit at once, an ``int >= 0``; a caller beyond them is
    rejected at once. The default is 100 (bounded, so that an overload cannot pile up waiting
    callers without limit). Read with a wait (``max_wait > 0``) only: beside ``max_wait=0``,
    where no caller waits, another value than the default is refused (``ValueError``)."""
    store: SharedStore | None = None
    """Where the replicas of a service share one budget (``RedisStore.from_url(url, ...)``):
    ``rate`` and ``burst`` are then the cluster's, each permit taken atomically in the store.
    ``None`` (the default): this process only."""
    store_fallback: Literal["open", "closed", "local"] = "open"
    """With a ``store``, while it is unreachable (or slower than its ``timeout``): ``"open"``
    (the default) admits every call (counted in ``fallback_admitted``), ``"closed"`` rejects
    every call, ``"local"`` admits ``rate / expected_replicas`` per second in this process.
    Without a ``store`` (nothing to be unreachable), another value than the default is refused
    (``ValueError``)."""
    expected_replicas: int = 1
    """With ``store_fallback="local"``: the replicas the cluster budget is split between while
    the store is unreachable (:meth:`local_share`). An ``int >= 1``, with a ``store`` small
    enough that the share is a limiter's (``rate / expected_replicas >= MIN_RATE``); the default is 1.
    Read with ``store_fallback="local"`` only: beside another fallback, another value than the
    default is refused (``ValueError``)."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds, None for the default burst), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            rate: float,
            burst: int | None = ...,
            algorithm: Algorithm = ...,
            max_wait: float | timedelta = ...,
            max_waiting: int = ...,
            store: SharedStore | None = ...,
            store_fallback: Literal["open", "closed", "local"] = ...,
            expected_replicas: int = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        rate = check_number(_OWNER, "rate", self.rate, minimum=0.0, min_inclusive=False)
        if rate < MIN_RATE:
            rule = f">= {MIN_RATE:.3g} (one permit per {MAX_DURATION:.0f} seconds, threading.TIMEOUT_MAX)"
            raise fail(_OWNER, "rate", rule, self.rate)
        # The default burst, one second's permits, is a count: of the rate as given (an int is
        # exact, where its float may round past sys.maxsize: 2**63 - 512 is 2.0**63).
        permits = math.ceil(self.rate)
        if permits > MAX_COUNT:
            raise fail(_OWNER, "rate", f"<= {MAX_COUNT} (sys.maxsize) per second", self.rate)
        object.__setattr__(self, "rate", rate)
        burst: object = self.burst
        if burst is None:
            object.__setattr__(self, "burst", max(1, permits))
        else:
            check_int(_OWNER, "burst", burst, minimum=1)
        if not isinstance(self.algorithm, str):
            raise fail(
                _OWNER, "algorithm", "'token_bucket' or 'sliding_window'", self.algorithm, kind=TypeError
            )
        if self.algorithm not in ALGORITHMS:
            raise fail(_OWNER, "algorithm", "'token_bucket' or 'sliding_window'", self.algorithm)
        if self.algorithm == "sliding_window" and self.burst / rate > MAX_DURATION:
            window = "its window, burst / rate, is a duration"
            rule = f"<= rate * {MAX_DURATION:.0f} with 'sliding_window' ({window})"
            raise fail(_OWNER, "burst", rule, self.burst)
        max_wait = check_duration(_OWNER, "max_wait", self.max_wait, allow_zero=True)
        object.__setattr__(self, "max_wait", max_wait)
        check_int(_OWNER, "max_waiting", self.max_waiting, minimum=0)
        if max_wait == 0 and self.max_waiting != DEFAULT_MAX_WAITING:
            # No wait, no waiter: the limit would be ignored. Its default cannot be told from a
            # value left out, so only another value is refused (as BulkheadConfig's timeout
            # beside max_waiting=0).
            rule = f"{DEFAULT_MAX_WAITING} (its default) unless max_wait > 0 (no caller waits without it)"
            raise fail(_OWNER, "max_waiting", rule, self.max_waiting)
        check_store(_OWNER, self.store)
        if self.store_fallback not in STORE_FALLBACKS:
            kind = ValueError if isinstance(self.store_fallback, str) else TypeError
            raise fail(
                _OWNER, "store_fallback", "'open', 'closed' or 'local'", self.store_fallback, kind=kind
            )
        check_int(_OWNER, "expected_replicas", self.expected_replicas, minimum=1)
        # Settings of a store's outage, ignored without one (a process-local limiter is never
        # unreachable) or beside another fallback: their defaults cannot be told from values
        # left out, so only another value is refused (as max_waiting beside max_wait=0).
        if self.store is None and self.store_fallback != "open":
            rule = "'open' (its default) unless store is set (without a store nothing is unreachable)"
            raise fail(_OWNER, "store_fallback", rule, self.store_fallback)
        if self.store_fallback != "local" and self.expected_replicas != 1:
            rule = "1 (its default) unless store_fallback is 'local' (only the local share splits the rate)"
            raise fail(_OWNER, "expected_replicas", rule, self.expected_replicas)
        if self.expected_replicas > 1:  # with a store and "local": the share must be a limiter's
            try:
                self.local_share()
            except ValueError as error:  # the share is no limiter's (a rate below MIN_RATE...)
                share = f"rate / expected_replicas ({rate:g} / {self.expected_replicas})"
                rule = f"small enough that {share} is a rate ({error})"
                raise fail(_OWNER, "expected_replicas", rule, self.expected_replicas) from None

    def local_share(self) -> RateLimiterConfig:
        """The config of this replica's share while its store is unreachable (``store_fallback="local"``).

        The cluster's ``rate`` and ``burst`` split between ``expected_replicas`` (a burst of at least
        1), with no store (and so the defaults of the store's settings).
        """
        replicas = self.expected_replicas
        rate, burst = self.rate / replicas, max(1, self.burst // replicas)
        return replace(self, rate=rate, burst=burst, store=None, store_fallback="open", expected_replicas=1)

    @property
    def window(self) -> float:
        """The sliding window's length, ``burst / rate`` seconds (the time a full bucket takes to refill)."""
        return self.burst / self.rate
