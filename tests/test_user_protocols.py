"""What the library passes by position, a protocol a user implements and a step's hook take by position.

The library calls ``cache_service.get(key)``, ``clock.sleep(seconds)``, ``listener.on_event(source,
event, args)``, ``step.on_failure(ctx, token, error)`` and the rest with positional arguments, so
an implementation or an override may name its parameters as it likes. Type checkers compare the
names of parameters that may be passed by keyword: pyright refused a cache whose ``get`` names its
argument ``k``, a clock whose ``sleep`` names it ``delay`` and a step whose ``on_failure`` names
its error ``exc`` ("Parameter name mismatch"), although they run. Each such parameter is
positional-only, so that a checker compares its type alone (``tests/typing/user_code.py``).
"""

from __future__ import annotations

import inspect

import pytest

from otel_resilience import CacheService
from otel_resilience.engine.clock import Clock
from otel_resilience.engine.events import ExecutionListener, TelemetryListener
from otel_resilience.engine.step import Step
from otel_resilience.patterns.hedging import LatencyObserver
from otel_resilience.patterns.recovery import Isolatable

PROTOCOLS = (CacheService, Clock, Isolatable, LatencyObserver, TelemetryListener, ExecutionListener)
HOOKS = ("admit", "on_success", "on_failure", "on_expired", "on_expired_ignored", "on_cancel")


def _methods(protocol: type) -> list[str]:
    if protocol is Step:  # the hooks a step overrides (README: "Strategies of your own")
        return list(HOOKS)
    return [
        name
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("_")
    ]


@pytest.mark.parametrize("protocol", [*PROTOCOLS, Step], ids=lambda protocol: protocol.__name__)
def test_what_the_library_passes_by_position_is_positional_only(protocol: type) -> None:
    methods = _methods(protocol)
    assert methods
    by_keyword = [
        f"{protocol.__name__}.{name}({parameter.name})"
        for name in methods
        for parameter in list(inspect.signature(getattr(protocol, name)).parameters.values())[1:]
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    assert by_keyword == []
