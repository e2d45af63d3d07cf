"""The bulkhead's settings: :class:`BulkheadConfig` and its defaults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from otel_resilience.engine.validation import check_duration, check_int, fail

DEFAULT_MAX_CONCURRENT: Final = 10
"""Calls that may run at once unless configured otherwise."""
DEFAULT_MAX_WAITING: Final = 100
"""Calls that may wait for a slot unless configured otherwise (a bounded queue)."""
DEFAULT_TIMEOUT: Final = 60.0
"""Seconds a call may wait in the queue unless configured otherwise."""


@dataclass(frozen=True, slots=True)
class BulkheadConfig:
    """How many calls a :class:`Bulkhead` runs at once, and how many may wait, for how long.

    Args:
        max_concurrent: See the attribute.
        max_waiting: See the attribute.
        timeout: See the attribute; a ``datetime.timedelta`` is accepted and stored as seconds.

    Raises:
        TypeError: If a field has the wrong type.
        ValueError: If a field is out of range (the message names ``BulkheadConfig.<field>``), or
            ``timeout`` is not its default beside ``max_waiting=0`` (it would be ignored).
    """

    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    """Calls that may run at once, ``>= 1``. The default value is 10."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """Calls that may wait for a slot, ``>= 0``; ``0`` rejects at once when every slot is busy.
    The default value is 100 (bounded, so that an overload cannot pile up without limit)."""
    timeout: float = DEFAULT_TIMEOUT
    """The longest a call may wait in the queue, in seconds, ``> 0`` and finite. The default
    value is 60.0; an enclosing deadline (the manager's total timeout) usually ends the wait
    sooner. Read with a queue (``max_waiting > 0``) only: beside ``max_waiting=0``, where no call
    waits, another value than the default is refused (``ValueError``)."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(
            self,
            max_concurrent: int = ...,
            max_waiting: int = ...,
            timeout: float | timedelta = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        owner = "BulkheadConfig"
        check_int(owner, "max_concurrent", self.max_concurrent, minimum=1)
        check_int(owner, "max_waiting", self.max_waiting, minimum=0)
        timeout = check_duration(owner, "timeout", self.timeout)
        if self.max_waiting == 0 and timeout != DEFAULT_TIMEOUT:
            # No queue, no wait: the timeout would be ignored. Its default cannot be told from a
            # value left out, so only another value is refused (as CircuitBreakerConfig's
            # failure_threshold beside a sliding window).
            rule = f"{DEFAULT_TIMEOUT} (its default) unless max_waiting > 0 (no call waits without a queue)"
            raise fail(owner, "timeout", rule, timeout)
        object.__setattr__(self, "timeout", timeout)


_DEFAULT_CONFIG: Final = BulkheadConfig()
"""The configuration of a bulkhead built without one (a frozen value, shared)."""
