"""The manager's statistics: execution counts per policy and in total, and the extra links."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from otel_resilience.engine.logging_rate import LogRate
from otel_resilience.engine.validation import describe

if TYPE_CHECKING:
    from otel_resilience.engine.pipeline import Pipeline, PipelineStats
    from otel_resilience.engine.step import Step

__all__ = ["EXECUTION_KEYS", "add_counts", "executions", "extra_links", "policy_counts"]

EXECUTION_KEYS: Final = (
    "total",
    "successful",
    "successful_first_attempt",
    "successful_after_failure",
    "fallback",
    "failed",
    "rejected",
    "timeouts",
    "cancelled",
)
"""The counts of ``executions`` and of each ``policies`` entry (see :meth:`PipelineStats.as_dict`)."""
_LOG: Final = logging.getLogger("otel_resilience")
_STATS_FAILED: Final = LogRate()
"""How often an extra link's ``get_stats()`` that raised is logged, by the link's kind."""


class PolicyView(Protocol):
    """What the statistics read of a live policy."""

    @property
    def name(self) -> str: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def extras(self) -> tuple[tuple[int, Step], ...]: ...


def add_counts(into: dict[str, Any], counts: Mapping[str, object]) -> None:
    """Add each of the :data:`EXECUTION_KEYS` counts of ``counts`` to ``into``."""
    for key in EXECUTION_KEYS:
        into[key] += counts[key]


def policy_counts(live: Iterable[PolicyView], totals: dict[str, int]) -> dict[str, dict[str, int]]:
    """Return the execution counts of each live policy name, and add them to ``totals``.

    Each pipeline's counts are read once, so the totals are the sum of what is returned.
    """
    policies: dict[str, dict[str, int]] = {}
    for policy in live:
        counts = policy.pipeline.stats.as_dict()
        add_counts(policies.setdefault(policy.name, dict.fromkeys(EXECUTION_KEYS, 0)), counts)
        add_counts(totals, counts)
    return policies


def executions(retiring: Iterable[PipelineStats], totals: dict[str, int]) -> dict[str, Any]:
    """Return the ``executions`` statistics: ``totals`` plus the retiring pipelines' counts, and rates."""
    result: dict[str, Any] = dict(totals)
    for stats in retiring:
        add_counts(result, stats.as_dict())
    total, successful = result["total"], result["successful"]
    result["success_rate"] = successful / total if total else 1.0
    result["availability"] = (successful + result["fallback"]) / total if total else 1.0
    return result


def extra_links(
    live: Iterable[PolicyView],
    named: Iterable[tuple[str, str | None, tuple[tuple[int, Step], ...]]] = (),
) -> dict[str, list[dict[str, Any]]]:
    """Return the extra links of each live policy name, outer to inner, in one shape for every kind.

    Each is ``{"kind", "name", "rank"}``, plus ``"stats"``: the link's ``get_stats()`` when it
    has one (a link says what it counts; the manager knows no kind of extra link). A
    ``get_stats()`` that raises (user code) gives ``"stats_error"``, the error's repr, in place
    of ``"stats"``, and is logged (the first time, then at most once a minute for its kind): one
    broken link must not break the statistics of every policy.

    Args:
        live: The live policies run by config.
        named: The named policies' links: ``(policy name, key, links)`` for the unkeyed calls
            (key ``None``) and each live key (its text), whose entries carry that ``"key"``
            too (a keyed policy has the links of its config once per key).
    """
    found: dict[str, list[dict[str, Any]]] = {}
    for policy in live:
        for rank, link in policy.extras:
            found.setdefault(policy.name, []).append(_link_entry(policy.name, rank, link))
    for name, key, links in named:
        for rank, link in links:
            found.setdefault(name, []).append({**_link_entry(name, rank, link), "key": key})
    return found


def _link_entry(policy: str, rank: int, link: Step) -> dict[str, Any]:
    """Return one extra link's entry: ``kind``, ``name``, ``rank``, and its ``stats`` (or ``stats_error``)."""
    entry: dict[str, Any] = {"kind": link.kind, "name": link.name, "rank": rank}
    get_stats = getattr(link, "get_stats", None)
    if callable(get_stats):
        try:
            entry["stats"] = get_stats()
        except Exception as error:  # noqa: BLE001 - reported in the entry, and logged
            entry["stats_error"] = describe(error)
            _stats_failed(policy, link)
    return entry


def _stats_failed(policy: str, link: Step) -> None:
    """Log the error being handled, an extra link's ``get_stats()``'s, unless its kind's was just logged."""
    left_out = _STATS_FAILED.due(link.kind)
    if left_out is not None:
        _LOG.warning(
            "policy %r: get_stats() of the extra %s link %r raised; its statistics are left out "
            "(%d such failures of its kind not logged since the last)",
            policy,
            link.kind,
            link.name,
            left_out,
            exc_info=True,
        )
