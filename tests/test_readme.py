"""Every Python example in README.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from otel_resilience.config import loads

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)

# What each example must print (a fragment), in README order.
EXPECTED = [
    "rejected by 'ml_service': circuit breaker 'ml_service' is forced open until reset()",
    "closed -> open failure_rate 2.0\nopen (0.0, 0.0)\n",
    "data after 2 attempts",
    "22 20\n",
    "{'similarity': 0.7, 'quality': 0.9}\n{'similarity': 0.7, 'quality': 0.9}\n",
    "timed out after 0.05 s\ncached answer",
    " 10\n",  # the bulkhead peaked at its max_concurrent
    "['results for a', 'results for b', 'shed, retry after 0.2 s']\nresults for d\n",
    "['ACME 101.5', 'stale quote', 'ACME 101.5']\n",
    "user:42 from call 2 - hedge wins: 1\nuser:42 from eu-west\n",
    "rows 1.0",
    "'successful': 1",
    (  # max_attempts_total: retries and recovery re-runs capped below the breaker's threshold
        "4 otel_resilience retry 'ml_service': gave up after 1 of 3 attempts: the execution made 4 "
        "attempts in total, its cap (max_attempts_total)\nclosed\n"
    ),
    "ok 2\n",  # a strategy of one's own, inside the retry, sees both attempts
    "7 3\nresilience.yaml:4: policies.inventory.circuit_breaker.failure_threshold must be >= 1, got 0\n",
    "ConnectionError\nConnectionError\nCircuitOpenError\ncharged via us-1\n2 1 4\n",  # a breaker per key
    "new answer\n['old answer', 'old answer', 'old answer']\nrefused: BulkheadConfig.max_concurrent must be >= 1, got 0\n2 {'succeeded': 1, 'failed': 1}\n",
    "[('circuit_open', 'payments')]",
    "200 503 1 2\n",
    "paid True True False\n",  # a store that cannot be reached: calls go on, on local state
    (  # the duration histogram kept in process
        "['resilience.execution.latency.bucket', 'resilience.execution.latency.count', "
        "'resilience.execution.latency.sum']\n"
    ),
    # four tests, each in fresh_defaults: the first one's open breaker is not the second's, the
    # third's backoff is waited on its fake clock, which refills its retry budget, and the fourth
    # finds that budget's window fresh on a clock of its own
    "all passed\n",
]

# The examples that log a warning on purpose (the README says so): a retry's on_retry hook, a
# refused reload, a Redis store that cannot be reached. Every other example writes nothing on
# stderr: a newcomer who copies one sees no warning.
WARNS = {2, 16, 19}


def test_readme_has_an_example_per_pattern_and_the_manager() -> None:
    """The README keeps one runnable example per pattern, the manager and alerts."""
    assert len(BLOCKS) == len(EXPECTED)


@pytest.mark.parametrize(("index", "expected"), list(enumerate(EXPECTED)))
def test_readme_example_runs(index: int, expected: str) -> None:
    """The example runs in a fresh interpreter, exits 0 and prints what the README promises."""
    completed = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert expected in completed.stdout, completed.stdout
    assert "Traceback" not in completed.stderr, completed.stderr
    if index not in WARNS:
        assert completed.stderr == "", completed.stderr


def test_readme_configuration_file_example_loads() -> None:
    """The configuration file shown in the README is valid: it loads, with its budget shared."""
    assert len(YAML_BLOCKS) == 1
    policies = loads(YAML_BLOCKS[0], source="README.md")
    assert list(policies) == ["ml_service", "payments"]
    retry = policies["ml_service"].retry_policy
    assert retry is not None
    assert retry.budget is not None
