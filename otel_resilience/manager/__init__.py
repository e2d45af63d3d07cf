"""The resilience manager: one orchestrator that composes every pattern around a call.

:mod:`~otel_resilience.manager.stages` states the order in which the patterns nest (the table
:data:`STAGES`) and places the links a config adds (:class:`ExtraStrategy`);
:mod:`~otel_resilience.manager.config` holds :class:`ResilienceConfig`;
:mod:`~otel_resilience.manager.core` the :class:`ResilienceManager` (policies, shared breakers
and bulkheads, statistics); :mod:`~otel_resilience.manager.decorator` ``@resilient``;
:mod:`~otel_resilience.manager.policy` the named policies (:class:`PolicyHandle`, keys and
reloads; :mod:`~otel_resilience.manager.keyed` what a key means to each stage).
"""

from __future__ import annotations

from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.manager.core import DEFAULT_MAX_PIPELINES, DEFAULT_MAX_POLICIES, ResilienceManager
from otel_resilience.manager.decorator import get_resilience_manager, resilient
from otel_resilience.manager.policy import (
    DEFAULT_IDLE_TTL,
    DEFAULT_MAX_KEYS,
    OVERFLOW_KEY,
    KeyedPolicyView,
    PolicyHandle,
)
from otel_resilience.manager.policy_stats import PolicyStatsDict
from otel_resilience.manager.stages import STAGES, ExtraStrategy, Stage, StageInputs, build_pipeline

__all__ = [
    "DEFAULT_IDLE_TTL",
    "DEFAULT_MAX_KEYS",
    "DEFAULT_MAX_PIPELINES",
    "DEFAULT_MAX_POLICIES",
    "OVERFLOW_KEY",
    "STAGES",
    "ExtraStrategy",
    "KeyedPolicyView",
    "PolicyHandle",
    "PolicyStatsDict",
    "ResilienceConfig",
    "ResilienceManager",
    "Stage",
    "StageInputs",
    "build_pipeline",
    "get_resilience_manager",
    "resilient",
]
