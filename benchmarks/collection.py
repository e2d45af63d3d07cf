"""Time one metrics collection with many live policies, beside the SDK's own floor for the same series.

Usage::

    PYTHONPATH=$PWD python benchmarks/collection.py 10000
    PYTHONPATH=$PWD python benchmarks/collection.py 1000 --kind guarded --cprofile

For each kind of policy (``plain``: no breaker, no bulkhead; ``guarded``: a breaker and a
bulkhead), ``count`` policy names are each called once through one manager whose cap is raised
so that all stay live; then one ``reader.collect()`` of a real SDK ``MeterProvider`` with an
``InMemoryMetricReader`` is timed (median of ``--repeats``), with every instrument of ours.

The *floor* is the SDK's own cost for the same work: a second provider whose observable
instruments have the same names and kinds, each with one callback that returns the very
observations ours returned (attribute dicts built beforehand, a new ``Observation`` per value
per collection), and whose counters hold the same synchronous series. ``ours / floor`` is what
our callbacks add above what any observable instrument of that many series costs.

Instruction counts (callgrind; noise on a shared machine does not move them): ``--loops ours K``
(or ``floor``) collects K times with the garbage collector off and prints nothing, ``--loops
callbacks K`` calls our observable callbacks alone K times; the difference of K=5 and K=1,
divided by 4, is one collection::

    count() { PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/collection.py 100 --kind "$1" --loops "$2" "$3" 2>&1 \\
        | awk '/Collected/ {print $4}'; }
    echo $(( ($(count plain ours 5) - $(count plain ours 1)) / 4 ))
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
try:
    import otel_resilience  # noqa: F401
except ImportError:
    sys.path.insert(1, str(_HERE.parent))

from _policies import _fill, _guarded, _plain, collect_ms, instrumented_reader  # noqa: E402
from opentelemetry.metrics import CallbackOptions, Observation  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

import otel_resilience as orr  # noqa: E402
from otel_resilience.telemetry import current_listener  # noqa: E402
from otel_resilience.telemetry import semconv as sc  # noqa: E402
from otel_resilience.telemetry.observables import Observables  # noqa: E402

KINDS = {"plain": _plain, "guarded": _guarded}


class _Recorder:
    """A stand-in meter that keeps each observable instrument's callbacks, by name and kind."""

    def __init__(self) -> None:
        self.callbacks: dict[str, tuple[bool, list[Callable[[CallbackOptions], Iterable[Observation]]]]] = {}

    def create_observable_counter(self, name: str, callbacks: list[Any], **_: Any) -> None:
        self.callbacks[name] = (True, callbacks)

    def create_observable_gauge(self, name: str, callbacks: list[Any], **_: Any) -> None:
        self.callbacks[name] = (False, callbacks)


def _floor(reader: InMemoryMetricReader) -> tuple[MeterProvider, InMemoryMetricReader, int]:
    """A provider with our instruments' names holding the same series, fed by prebuilt observations."""
    recorder = _Recorder()
    Observables(recorder, current_listener())  # type: ignore[arg-type]
    floor_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[floor_reader], shutdown_on_exit=False)
    meter = provider.get_meter("floor")
    observed = 0
    for name, (counter, callbacks) in recorder.callbacks.items():
        pairs = [(o.value, dict(o.attributes or {})) for cb in callbacks for o in cb(CallbackOptions())]
        observed += len(pairs)

        def callback(_options: CallbackOptions, pairs: list[tuple[Any, Any]] = pairs) -> list[Observation]:
            return [Observation(value, attributes) for value, attributes in pairs]

        make = meter.create_observable_counter if counter else meter.create_observable_gauge
        make(name, callbacks=[callback])
    observable = set(recorder.callbacks)
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name in observable:
                    continue
                if sc.instrument(metric.name).kind is sc.InstrumentKind.COUNTER:
                    add = meter.create_counter(metric.name).add
                else:
                    add = meter.create_histogram(metric.name).record
                for point in metric.data.data_points:
                    add(getattr(point, "value", 0), dict(point.attributes))
    return provider, floor_reader, observed


def _points(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    return sum(
        len(m.data.data_points)
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
    )


def _loops(reader: InMemoryMetricReader, which: str, loops: int) -> None:
    """Run ``loops`` collections (ours, the floor's) or passes of our callbacks alone, gc off, silently."""
    run = reader.collect
    if which == "floor":
        _provider, floor_reader, _observed = _floor(reader)
        floor_reader.collect()
        run = floor_reader.collect
    elif which == "callbacks":
        recorder = _Recorder()
        Observables(recorder, current_listener())  # type: ignore[arg-type]
        callbacks = [callback for _, found in recorder.callbacks.values() for callback in found]

        def run() -> None:
            for callback in callbacks:
                list(callback(CallbackOptions()))

    gc.collect()
    gc.disable()
    try:
        for _ in range(loops):
            run()
    finally:
        gc.enable()


def _compare(reader: InMemoryMetricReader, label: str, args: argparse.Namespace) -> None:
    """Time our collection and the floor's, and print one line."""
    ours = collect_ms(reader, args.repeats)
    line = f"{label:8} {args.count} policies: ours {ours:8.1f} ms"
    if args.cprofile:
        profile = cProfile.Profile()
        profile.runcall(reader.collect)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    if not args.no_floor:
        floor_provider, floor_reader, observed = _floor(reader)
        floor_reader.collect()
        floor = collect_ms(floor_reader, args.repeats)
        floor_provider.shutdown()
        line += f", floor {floor:8.1f} ms, ours/floor {ours / floor:.2f}, observations {observed}"
    print(f"{line}, points {_points(reader)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Print, per kind, our collection time, the floor's, their ratio, observations and points."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=10000, help="live policies (default 10000)")
    parser.add_argument("--kind", choices=[*KINDS, "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="collections timed, median (default 3)")
    parser.add_argument("--cprofile", action="store_true", help="profile one of our collections")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor")
    parser.add_argument(
        "--loops",
        nargs=2,
        metavar=("ours|floor|callbacks", "K"),
        help="only collect K times (ours, the floor) or call our callbacks K times; gc off, no output",
    )
    args = parser.parse_args(argv)
    with instrumented_reader() as reader:
        for label in KINDS if args.kind == "both" else [args.kind]:
            manager = orr.ResilienceManager(max_policies=args.count)
            _fill(manager, f"collect-{label}", args.count, KINDS[label])
            gc.collect()
            reader.collect()
            if args.loops:
                _loops(reader, args.loops[0], int(args.loops[1]))
            else:
                _compare(reader, label, args)
            del manager
            gc.collect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
