"""Many keys through one named policy: memory stays flat, counts stay whole.

``--keys`` distinct keys (default 100 000) each make one call through
``manager.policy("tenants", config, max_keys=...)`` (default 1 000), with a breaker, a bulkhead
and a rate limiter per key. ``tracemalloc`` reports the memory traced at checkpoints (after a
warm-up of ``max_keys`` keys, so that the cap is reached and caches are warm), after a full
``gc.collect()``; the key count, the evicted keys and the executions the policy reports show that
nothing counted was lost. The time per new key (its breaker, bulkhead, limiter and pipeline
built, and one evicted) is measured in a second pass without ``tracemalloc``, which slows
allocation. Run::

    python benchmarks/policy_keys.py                    # ~1 min on 2 cores
    python benchmarks/policy_keys.py --keys 20000 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
try:
    import otel_resilience  # noqa: F401 - installed (editable) or not
except ImportError:
    sys.path.insert(0, str(_HERE.parent))

from otel_resilience import (  # noqa: E402
    BulkheadConfig,
    CircuitBreakerConfig,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
)

CONFIG = ResilienceConfig(
    circuit_breaker=CircuitBreakerConfig(failure_threshold=5),
    bulkhead_config=BulkheadConfig(max_concurrent=10),
    rate_limiter=RateLimiterConfig(rate=100.0, burst=10),
)


def ok() -> None:
    return None


def cycle(policy: Any, start: int, stop: int) -> None:
    for key in range(start, stop):
        policy.for_key(key).execute_sync(ok)


def memory_pass(keys: int, max_keys: int) -> list[dict[str, Any]]:
    """Cycle ``keys`` keys; the traced memory at checkpoints (tenths of the run)."""
    policy = ResilienceManager().policy("tenants", CONFIG, max_keys=max_keys)
    cycle(policy, 0, max_keys)  # warm up: the cap reached
    gc.collect()
    tracemalloc.start()
    rows = []
    done = max_keys
    try:
        for checkpoint in [max_keys + (keys - max_keys) * n // 10 for n in range(1, 11)]:
            cycle(policy, done, checkpoint)
            done = checkpoint
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
            stats = policy.get_stats()
            rows.append(
                {
                    "keys cycled": done,
                    "traced MB": round(current / 1e6, 2),
                    "peak MB": round(peak / 1e6, 2),
                    "keys kept": stats["keys"],
                    "evicted": stats["evicted_keys"],
                    "executions": stats["executions"]["total"],
                }
            )
    finally:
        tracemalloc.stop()
    return rows


def time_pass(keys: int, max_keys: int) -> float:
    """Microseconds per call on a new key (built, called, and one old key evicted)."""
    policy = ResilienceManager().policy("tenants-timed", CONFIG, max_keys=max_keys)
    cycle(policy, 0, max_keys)
    started = time.perf_counter()
    cycle(policy, max_keys, keys)
    return (time.perf_counter() - started) / (keys - max_keys) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--max-keys", type=int, default=1_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = memory_pass(args.keys, args.max_keys)
    per_key = time_pass(min(args.keys, 20_000), args.max_keys)
    print("| keys cycled | traced MB | peak MB | keys kept | evicted | executions |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(f"{value:,}" for value in row.values()) + " |")
    print(f"\nper new key (built, called, one evicted): {per_key:.1f} µs")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "us_per_new_key": per_key}, indent=2))


if __name__ == "__main__":
    main()
