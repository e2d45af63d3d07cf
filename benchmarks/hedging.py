"""Hedging against a heavy-tailed dependency: tail latency with and without hedges, and the load it costs.

The dependency is a real asyncio sleep: 5 % of its calls take 500 ms, the others 10 ms (a seeded
draw per call, hedges included: a hedge may be slow too). ``--requests`` requests run through it,
``--concurrency`` at a time (a closed loop), once per contender:

* ``no hedging``: ``await dependency()``;
* ``hedging, delay 50 ms``: ``Hedging(HedgingConfig(delay=0.05, max_attempts=2, budget=...))``
  with a :class:`~otel_resilience.RetryBudget` of ``ratio=0.1`` and no floor: hedges may add at
  most 10 % load;
* ``hedging, p90 delay``: the same with ``PercentileDelay(initial=0.05, percentile=90)``, which
  learns the 10 ms body of the distribution and hedges sooner.

For each: the latency percentiles a caller sees (p50, p90, p99, p99.9, max, in ms), the calls of
the dependency per request (the load: 1.00 without hedging), the hedges started and denied by
the budget, and the hedges that won. Run::

    python benchmarks/hedging.py                        # 2 000 requests, 50 at a time, ~5 s
    python benchmarks/hedging.py --requests 5000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
try:
    import otel_resilience  # noqa: F401 - installed (editable) or not
except ImportError:
    sys.path.insert(0, str(_HERE.parent))

from otel_resilience import Hedging, HedgingConfig, PercentileDelay, RetryBudget  # noqa: E402

SLOW_SHARE = 0.05
SLOW = 0.5
FAST = 0.01


class HeavyTail:
    """The dependency: ``SLOW`` seconds with probability ``SLOW_SHARE``, else ``FAST`` (seeded)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(SLOW if self._rng.random() < SLOW_SHARE else FAST)
        return "ok"


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0-100) of a sorted list."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


async def drive(call: Any, requests: int, concurrency: int) -> list[float]:
    """Run ``requests`` calls of ``call()``, ``concurrency`` at a time; return each one's latency (s)."""
    latencies: list[float] = []
    pending = iter(range(requests))

    async def worker() -> None:
        for _ in pending:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def contender(label: str, requests: int, concurrency: int, seed: int, delay: Any) -> dict[str, Any]:
    """Measure one contender: ``delay`` ``None`` for no hedging."""
    dependency = HeavyTail(seed)
    budget = RetryBudget(ratio=0.1, min_retries_per_second=0.0, window=60.0)
    hedging = None
    if delay is None:
        call = dependency
    else:
        hedging = Hedging(label, HedgingConfig(delay=delay, max_attempts=2, budget=budget))

        async def call() -> str:
            return await hedging.call(dependency)

    latencies = sorted(await drive(call, requests, concurrency))
    row: dict[str, Any] = {"contender": label}
    for p in (50, 90, 99, 99.9):
        row[f"p{p:g}_ms"] = round(percentile(latencies, p) * 1000, 1)
    row["max_ms"] = round(latencies[-1] * 1000, 1)
    row["calls_per_request"] = round(dependency.calls / requests, 3)
    if hedging is not None:
        stats = hedging.get_stats()
        row.update(hedges=stats["hedges"], denied=stats["hedges_denied"], hedge_wins=stats["hedge_wins"])
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    head = (
        "| contender | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | calls / request "
        "| hedges | denied | hedge wins |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        cells = [row["contender"], *(row[k] for k in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"))]
        cells.append(f"{row['calls_per_request']:.3f}")
        cells.extend(row.get(k, "-") for k in ("hedges", "denied", "hedge_wins"))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the three contenders in turn, the same seed for each."""
    contenders = (
        ("no hedging", None),
        ("hedging, delay 50 ms", 0.05),
        ("hedging, p90 delay", PercentileDelay(initial=0.05, percentile=90)),
    )
    return [await contender(label, args.requests, args.concurrency, args.seed, d) for label, d in contenders]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    print(
        f"{arguments.requests} requests, {arguments.concurrency} at a time; dependency: "
        f"{SLOW_SHARE:.0%} of calls {SLOW * 1000:g} ms, the others {FAST * 1000:g} ms; "
        "hedges draw on RetryBudget(ratio=0.1, min_retries_per_second=0)"
    )
    print(markdown(results))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
