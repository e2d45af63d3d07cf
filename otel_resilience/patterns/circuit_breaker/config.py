"""The breaker's settings: :class:`CircuitBreakerConfig`, its defaults and its validation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, cast

from otel_resilience.engine.shared import SharedStore, check_store
from otel_resilience.engine.validation import (
    Derived,
    ExceptionTypeCollection,
    check_disjoint,
    check_duration,
    check_error_selector,
    check_int,
    check_number,
    check_predicate,
    check_sync_callable,
    fail,
)
from otel_resilience.errors import ExecutionRejectedError
from otel_resilience.patterns.circuit_breaker.window import CountWindow, TimeWindow

KIND: Final = "circuit_breaker"
"""The pattern kind in telemetry and in :data:`~otel_resilience.engine.registry.BREAKERS`."""

DEFAULT_FAILURE_THRESHOLD: Final = 5
"""Consecutive counted failures that open the breaker."""
DEFAULT_SUCCESS_THRESHOLD: Final = 2
"""Probe successes in HALF_OPEN that close the breaker."""
DEFAULT_TIMEOUT: Final = 60.0
"""Seconds OPEN before a probe is let through."""
DEFAULT_HALF_OPEN_MAX_CALLS: Final = 1
"""Probes allowed in flight at once in HALF_OPEN (bounded: a recovering service is not flooded)."""
DEFAULT_RECORD_EXCEPTIONS: Final[tuple[type[Exception], ...]] = (Exception,)
"""Exceptions counted as failures: every ``Exception``."""
DEFAULT_IGNORE_EXCEPTIONS: Final[tuple[type[Exception], ...]] = ()
"""Exceptions counted as neither success nor failure: none."""
ALWAYS_IGNORED: Final[tuple[type[Exception], ...]] = (ExecutionRejectedError,)
"""Exceptions never counted, whatever the config: an inner layer's rejection (a bulkhead, an inner
breaker, a rate limiter) never called the dependency. ``record_exceptions`` may not name one."""
DEFAULT_FAILURE_RATE_THRESHOLD: Final = 0.5
"""Share of failed calls in the sliding window that opens a windowed breaker (Resilience4j's default)."""
DEFAULT_MINIMUM_CALLS: Final = 10
"""Calls the sliding window must hold before its rates can open the breaker (at most a
``CountWindow``'s ``size``, as Resilience4j caps it: a window of 5 calls judges from the 5th)."""
DEFAULT_SLOW_CALL_RATE_THRESHOLD: Final = 1.0
"""Share of slow calls in the sliding window that opens the breaker (all of them, by default)."""

_WINDOW_ONLY: Final[tuple[tuple[str, object, str], ...]] = (
    ("failure_rate_threshold", DEFAULT_FAILURE_RATE_THRESHOLD, "sliding_window"),
    ("minimum_calls", DEFAULT_MINIMUM_CALLS, "sliding_window"),
    ("slow_call_duration", None, "sliding_window"),
    ("slow_call_rate_threshold", DEFAULT_SLOW_CALL_RATE_THRESHOLD, "slow_call_duration"),
)
"""The settings that act only through a sliding window: each with what ``None`` is where it
acts (``minimum_calls``' is capped by a count window: :meth:`CircuitBreakerConfig._default`), and
the field it acts through (the slow-call rate, through ``slow_call_duration``)."""

ExceptionTypes = type[Exception] | tuple[type[Exception], ...]
"""One exception class or a tuple of them."""
ExceptionSelector = ExceptionTypes | Callable[[BaseException], bool]
"""Exception classes, or a predicate that returns ``True`` for an error to record."""

_OWNER: Final = "CircuitBreakerConfig"
_NEVER: Final = "cancellation and exits are never counted"


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """How a :class:`CircuitBreaker` trips and recovers. Validated once, at construction.

    Raises:
        TypeError: A field has the wrong type (the message names ``CircuitBreakerConfig.<field>``).
        ValueError: A field is out of range, or ``ignore_exceptions`` covers a recorded type.
    """

    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    """Consecutive counted failures in CLOSED that open the breaker; a success resets the
    count. An ``int >= 1``; the default is 5. Read without a ``sliding_window`` only: beside one,
    whose rates open the breaker, another value than the default is refused (``ValueError``)."""
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    """Probe successes in HALF_OPEN that close the breaker (with ``slow_call_duration``, unless
    the slow ones among them are at ``slow_call_rate_threshold``: it re-opens then). An
    ``int >= 1``; the default is 2."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds the breaker stays OPEN before it lets a probe through. A finite number ``> 0`` or
    a ``timedelta`` (normalised to ``float`` seconds); the default is 60.0 s."""
    half_open_max_calls: int = DEFAULT_HALF_OPEN_MAX_CALLS
    """Probes allowed in flight at the same time in HALF_OPEN; the rest are rejected with
    reason ``"half_open_full"``. An ``int >= 1``; the default is 1."""
    record_exceptions: ExceptionSelector = DEFAULT_RECORD_EXCEPTIONS
    """Which errors count as failures: ``Exception`` subclasses (one or a tuple), or a
    predicate ``(error) -> bool``. An error neither recorded nor ignored counts as a success
    (the dependency answered). The default is ``(Exception,)``: every error is a failure. A
    rejection (:class:`~otel_resilience.errors.ExecutionRejectedError` or a subclass) is always
    ignored, so naming one is refused (``ValueError``): it would never be recorded."""
    ignore_exceptions: ExceptionTypes = DEFAULT_IGNORE_EXCEPTIONS
    """``Exception`` subclasses that count as neither success nor failure (the probe permit is
    given back); they win over ``record_exceptions``. The default is ``()``.
    :class:`~otel_resilience.errors.ExecutionRejectedError` is always ignored."""
    sliding_window: CountWindow | TimeWindow | None = None
    """What opens the breaker in CLOSED. ``None`` (the default): ``failure_threshold``
    consecutive failures. :class:`~otel_resilience.CountWindow` (the last N calls) or
    :class:`~otel_resilience.TimeWindow` (the last T seconds, in buckets): the failure rate (or
    the slow-call rate) of the calls in the window, once it holds ``minimum_calls``. The four
    settings below act only through a window: without one, setting any of them is refused
    (``ValueError``), as it would be ignored."""
    failure_rate_threshold: float | None = None
    """With a ``sliding_window``: open when ``failures / calls >= failure_rate_threshold``. A
    number in ``(0, 1]``; ``None`` (the default) is 0.5 with a window, resolved at construction
    and stored (``dataclasses.replace`` keeps it), and stays ``None`` without one."""
    minimum_calls: int | None = None
    """With a ``sliding_window``: the calls it must hold before a rate can open the breaker. An
    ``int >= 1``, at most a ``CountWindow``'s ``size``; ``None`` (the default) is 10 with a
    window, capped at a ``CountWindow``'s ``size`` (resolved and stored, and resolved again by
    ``dataclasses.replace`` from the window then), and stays ``None`` without one."""
    slow_call_duration: float | None = None
    """With a ``sliding_window``: a call that takes at least this long (seconds or a
    ``timedelta``) counts as slow, whether it succeeded or failed; ``None`` (the default) counts
    no call as slow. A slow success is still a success for the caller and in spans."""
    slow_call_rate_threshold: float | None = None
    """With ``slow_call_duration``: open when ``slow / calls >= slow_call_rate_threshold``, and
    re-open from HALF_OPEN when the probe successes reach ``success_threshold`` and the slow
    ones among them are at this share (rather than close). A
    number in ``(0, 1]``; ``None`` (the default) is 1.0 with ``slow_call_duration`` (resolved and
    stored), and stays ``None`` without it (set, it is refused: no call would be slow)."""
    record_result: Callable[[Any], bool] | None = None
    """A predicate on what the call returned: ``True`` counts the returned value as a failure
    of the dependency (``lambda r: r.status_code >= 500``). Sync; the value is still returned to
    the caller. ``None`` (the default): every returned value is a success. A block run under
    ``guard()`` returns no value: it is not judged (its success is one)."""
    break_duration: Callable[[int], float] | None = None
    """Seconds to stay OPEN as a function of the number of consecutive openings (1 for the
    first, 2 when a probe failed once ...); overrides ``timeout`` when given. A plain function
    (an async one is refused: ``TypeError``). It is called once at construction with 1, and must
    return a finite number of seconds ``> 0`` (``timeout`` is used, and the error logged, for a
    call that raises or returns anything else later)."""
    max_half_open_wait: float | None = None
    """Seconds a HALF_OPEN probe may run before it counts as failed and the breaker re-opens,
    so that one hung call cannot keep the breaker half-open for ever; ``None`` (the default)
    waits for the probe however long it takes."""
    store: SharedStore | None = None
    """Where the breaker shares its state with the other replicas of the service
    (``RedisStore.from_url(url, namespace=...)``); ``None`` (the default): this process only.
    Calls never wait on the store: see the README's "Shared state on Redis"."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            failure_threshold: int = ...,
            success_threshold: int = ...,
            timeout: float | timedelta = ...,
            half_open_max_calls: int = ...,
            record_exceptions: ExceptionSelector | ExceptionTypeCollection = ...,
            ignore_exceptions: ExceptionTypes | ExceptionTypeCollection = ...,
            sliding_window: CountWindow | TimeWindow | None = ...,
            failure_rate_threshold: float | None = ...,
            minimum_calls: int | None = ...,
            slow_call_duration: float | timedelta | None = ...,
            slow_call_rate_threshold: float | None = ...,
            record_result: Callable[[Any], bool] | None = ...,
            break_duration: Callable[[int], float | timedelta] | None = ...,
            max_half_open_wait: float | timedelta | None = ...,
            store: SharedStore | None = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        check_int(_OWNER, "failure_threshold", self.failure_threshold, minimum=1)
        check_int(_OWNER, "success_threshold", self.success_threshold, minimum=1)
        object.__setattr__(self, "timeout", check_duration(_OWNER, "timeout", self.timeout))
        check_int(_OWNER, "half_open_max_calls", self.half_open_max_calls, minimum=1)
        record = check_error_selector(_OWNER, "record_exceptions", self.record_exceptions, _NEVER)
        object.__setattr__(self, "record_exceptions", record)
        ignore = check_error_selector(
            _OWNER, "ignore_exceptions", self.ignore_exceptions, _NEVER, predicate=False
        )
        object.__setattr__(self, "ignore_exceptions", ignore)
        self._check_window()
        check_store(_OWNER, self.store)
        if isinstance(record, tuple):
            if not record:
                raise fail(_OWNER, "record_exceptions", "at least one exception type", record)
            rejections = tuple(t for t in record if issubclass(t, ALWAYS_IGNORED))
            if rejections:
                expected = f"errors of the dependency ({rejections!r} never called it: always ignored)"
                raise fail(_OWNER, "record_exceptions", expected, record)
            check_disjoint(
                _OWNER,
                "ignore_exceptions",
                ignore,
                other="record_exceptions",
                covered=record,
                verb="ignores the recorded",
            )

    def _default(self, field: str, default: object) -> object:
        """The one place a window setting's default is decided: ``default``, but ``minimum_calls``'.

        ``minimum_calls`` left unset is at most a ``CountWindow``'s ``size`` (Resilience4j's cap),
        marked as derived so that ``dataclasses.replace`` derives it again from its window.
        """
        if field != "minimum_calls":
            return default
        window = self.sliding_window
        calls = cast("int", default)
        return _DerivedCalls(min(calls, window.size) if isinstance(window, CountWindow) else calls)

    def _check_window(self) -> None:
        """Validate the sliding-window fields, the result predicate and the break durations."""
        window: object = self.sliding_window
        if window is not None and not isinstance(window, (CountWindow, TimeWindow)):
            expected = "None, a CountWindow or a TimeWindow"
            raise fail(_OWNER, "sliding_window", expected, window, kind=TypeError)
        if window is not None and self.failure_threshold != DEFAULT_FAILURE_THRESHOLD:
            # The converse of _WINDOW_ONLY: with a window its rates open the breaker, and a
            # streak of failures is never judged. Its default cannot be told from a value left out.
            rule = f"{DEFAULT_FAILURE_THRESHOLD} (its default) unless sliding_window is None"
            rule += " (the window's rates open it)"
            raise fail(_OWNER, "failure_threshold", rule, self.failure_threshold)
        for field, default, needs in _WINDOW_ONLY:  # slow_call_duration before the rate it needs
            value = getattr(self, field)
            acts = getattr(self, needs) is not None
            if value is None or isinstance(value, _DerivedCalls):  # unset, or derived for other fields
                object.__setattr__(self, field, self._default(field, default) if acts else None)
                continue
            if field == "minimum_calls":
                value = check_int(_OWNER, field, value, minimum=1)
            elif field == "slow_call_duration":
                value = check_duration(_OWNER, field, value)
            else:  # a share in (0, 1]
                value = check_number(_OWNER, field, value, minimum=0.0, min_inclusive=False, maximum=1.0)
            if not acts:
                raise fail(_OWNER, field, f"None unless {needs} is set", getattr(self, field))
            object.__setattr__(self, field, value)
        minimum = self.minimum_calls
        if isinstance(window, CountWindow) and minimum is not None and minimum > window.size:
            raise fail(_OWNER, "minimum_calls", f"<= sliding_window.size ({window.size})", minimum)
        if self.max_half_open_wait is not None:
            wait = check_duration(_OWNER, "max_half_open_wait", self.max_half_open_wait)
            object.__setattr__(self, "max_half_open_wait", wait)
        check_predicate(_OWNER, "record_result", self.record_result, "result", optional=True)
        if self.break_duration is not None:
            check_sync_callable(_OWNER, "break_duration", self.break_duration, what="function")
            try:
                break_seconds(self.break_duration, 1)
            except Exception as error:
                expected = "a function returning a finite number of seconds > 0 (called with 1)"
                raise fail(_OWNER, "break_duration", expected, self.break_duration) from error


class _DerivedCalls(Derived, int):
    """:attr:`CircuitBreakerConfig.minimum_calls` left unset: derived from the ``sliding_window``."""

    __slots__ = ()
    plain = int


def break_seconds(break_duration: Callable[[int], float], openings: int) -> float:
    """Return ``break_duration(openings)`` in seconds (a ``timedelta`` is accepted).

    Raises:
        ValueError: It returned no finite number of seconds ``> 0``.
        TypeError: It returned something that is not a number of seconds.
        Exception: What ``break_duration`` raised.
    """
    return check_duration(_OWNER, "break_duration", break_duration(openings))


_DEFAULT_CONFIG: Final = CircuitBreakerConfig()
"""The configuration of a breaker built without one (a frozen value, shared)."""
