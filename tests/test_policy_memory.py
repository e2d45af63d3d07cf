"""What a named policy keeps before it needs it: the parts made only by a rare first use cost nothing until then."""

from __future__ import annotations

import subprocess
import sys

_MEASURE = """
import gc, sys, tracemalloc
from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.engine.registry import NamesakeOwner
from otel_resilience.manager.ledger import Ledger
from otel_resilience.patterns.chaos.rules import SharedDraws
makers = {
    "owner": NamesakeOwner,
    "draws": SharedDraws,
    "ledger": lambda: Ledger("memory", SYSTEM_CLOCK),
}
count = 2_000
for what, make in makers.items():
    make()  # warm-up
    keep = [None] * count
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        keep[i] = make()
    gc.collect()
    print(what, (tracemalloc.get_traced_memory()[0] - start) / count)
    tracemalloc.stop()
"""


def _bytes_each() -> dict[str, float]:
    # In a new interpreter: in this one, what other tests registered moves the figures.
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE], capture_output=True, text=True, check=True, timeout=60
    )
    return {what: float(size) for what, size in (line.split() for line in run.stdout.splitlines())}


def test_a_policy_s_namesake_token_chaos_draws_and_ledger_keep_little_until_first_used() -> None:
    """No lock, set, weak dictionary or totals of their own before a warning, a chaos link or a fold.

    Every named policy holds one of each; most never warn, inject or evict.
    """
    sizes = _bytes_each()
    assert sizes["owner"] <= 100, sizes
    assert sizes["draws"] <= 100, sizes
    assert sizes["ledger"] <= 300, sizes
