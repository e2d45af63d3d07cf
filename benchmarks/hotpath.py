"""Run one scenario's operation in a loop, for a profiler.

Usage::

    python benchmarks/hotpath.py breaker_open --driver sync --cprofile
    python benchmarks/hotpath.py full --driver async --line otel_resilience.engine.pipeline:Pipeline.execute
    py-spy record -r 2000 -o flame.svg -- python benchmarks/hotpath.py full --seconds 10
    pyinstrument benchmarks/hotpath.py retry_fail_twice --driver sync

It runs the primary ("ours") contender of the scenario, or another one with ``--contender``
(a substring of its label, e.g. ``circuitbreaker``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import inspect
import pstats
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
try:
    import otel_resilience  # noqa: F401
except ImportError:
    sys.path.insert(1, str(_HERE.parent))

from _peers import load_peers  # noqa: E402
from _scenarios import SCENARIOS, build_groups  # noqa: E402


def _resolve(spec: str) -> Any:
    """``package.module:Class.method`` -> the function object."""
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return getattr(obj, "__func__", obj)


def main(argv: list[str] | None = None) -> int:
    """Loop the chosen operation for ``--seconds`` (optionally under cProfile/line_profiler)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--driver", choices=("async", "sync"), default="async")
    parser.add_argument("--contender", default="", help="substring of the row label (default: ours, primary)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cprofile", action="store_true", help="print the top functions by own time")
    parser.add_argument("--line", action="append", default=[], help="module:qualname to line-profile")
    args = parser.parse_args(argv)

    groups = [g for g in build_groups(load_peers(set()), {args.scenario}) if g.driver == args.driver]
    group = groups[0]
    if args.contender:
        contender = next(c for c in group.contenders if args.contender in c.label)
    else:
        contender = next(c for c in group.contenders if c.primary)
    chunk = contender.chunk

    async def loop() -> int:
        if contender.prepare is not None:
            prepared = contender.prepare()
            if inspect.isawaitable(prepared):
                await prepared
        if contender.before is not None:
            contender.before()
        calls = 0
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            result = chunk(1000)
            if inspect.isawaitable(result):
                await result
            calls += 1000
        if contender.after is not None:
            contender.after()
        return calls

    profiler: Any = None
    if args.line:
        from line_profiler import LineProfiler  # noqa: PLC0415 - optional tool

        profiler = LineProfiler(*(_resolve(spec) for spec in args.line))
        profiler.enable_by_count()
    elif args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    calls = asyncio.run(loop())
    elapsed = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
    per_call = elapsed / calls * 1e6
    print(
        f"{contender.label}: {calls} calls, {per_call:.2f} us per call (profiler on: {profiler is not None})"
    )
    if args.line:
        profiler.print_stats(output_unit=1e-9)
    elif args.cprofile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
