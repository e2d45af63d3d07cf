"""Run N tasks through one bulkhead (or a semaphore, or nothing): for an instruction count.

Issue 14's item 5 compares 100 000 tasks through one ``Bulkhead`` (10 slots, a queue for all)
with ``asyncio.Semaphore(10)``. Its wall clock moves with the machine's load; the instructions
a task costs do not. Count the difference of two runs, so that start-up cancels::

    count() { PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/task_instructions.py "$1" "$2" 2>&1 | awk '/Collected/ {print $4}'; }
    echo $(( ($(count ours 3000) - $(count ours 1000)) / 4000 ))   # instructions per task

``KIND`` is ``none`` (each task awaits ``asyncio.sleep(0)``), ``semaphore`` (the same inside
``async with asyncio.Semaphore(10)``) or ``ours`` (inside ``Bulkhead.execute``); each run makes
and gathers its N tasks twice.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree beside this file

import otel_resilience as orr

KINDS = ("none", "semaphore", "ours")


async def _work() -> None:
    await asyncio.sleep(0)


async def run(kind: str, count: int) -> None:
    """Make ``count`` tasks of ``kind`` at once and gather them, twice."""
    bulkhead = orr.Bulkhead("tasks", orr.BulkheadConfig(max_concurrent=10, max_waiting=count))
    semaphore = asyncio.Semaphore(10)

    async def through_semaphore() -> None:
        async with semaphore:
            await _work()

    def through_bulkhead() -> Awaitable[None]:
        return bulkhead.execute(_work)

    calls: dict[str, Callable[[], Awaitable[None]]] = {
        "none": _work,
        "semaphore": through_semaphore,
        "ours": through_bulkhead,
    }
    call = calls[kind]
    for _ in range(2):
        await asyncio.gather(*[asyncio.ensure_future(call()) for _ in range(count)])
    stats = bulkhead.get_stats()
    if kind == "ours" and (stats["active"] or stats["waiting"] or stats["completed"] != 2 * count):
        raise RuntimeError(f"bulkhead leaked or lost calls: {stats}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("count", type=int, help="tasks per round (two rounds)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.kind, args.count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
