"""OTEL_PYTHON_DISABLED_INSTRUMENTATIONS read exactly as ``opentelemetry-instrument`` reads it.

``*`` in the list disables every instrumentation: ``opentelemetry-instrument`` then skips our
entry point, so ``import otel_resilience`` must not register its listener either.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otel_resilience.telemetry import env

VALUES = [
    "",
    "otel_resilience",
    " otel_resilience ",
    "\totel_resilience\n",
    "requests , otel_resilience,httpx",
    "otel_resilience_extra,requests",
    "OTEL_RESILIENCE",
    "otel-resilience",
    "*",
    " * ",
    "requests,*",
    "requests , *",
    "*,requests",
    "**",
    "requests*",
    "*requests",
    "otel_*",
    "requests;*",
    ",",
    "requests",
]


@pytest.mark.parametrize(
    ("value", "disabled"),
    [
        ("*", True),
        (" * ", True),
        ("requests,*", True),
        ("requests , *", True),
        ("*,requests", True),
        ("**", False),
        ("otel_*", False),
        ("requests*", False),
    ],
)
def test_a_wildcard_in_the_list_disables_us(value: str, disabled: bool) -> None:
    """``*`` as one of the names disables every instrumentation, ours too; ``*`` inside a name does not."""
    assert env.instrumentation_disabled({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": value}) is disabled


@pytest.mark.parametrize("value", VALUES)
def test_we_read_the_list_as_opentelemetry_instrument_does(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Differential: opentelemetry-instrumentation's own loader, given one entry point named
    ``otel_resilience``, skips it exactly when ``instrumentation_disabled`` says so."""
    load = pytest.importorskip("opentelemetry.instrumentation.auto_instrumentation._load")
    metadata = pytest.importorskip("opentelemetry.util._importlib_metadata")
    ours = metadata.EntryPoint(
        name=env.ENTRY_POINT,
        value="otel_resilience.telemetry.instrumentor:OtelResilienceInstrumentor",
        group="opentelemetry_instrumentor",
    )

    def entry_points(*, group: str) -> list[Any]:
        return [ours] if group == "opentelemetry_instrumentor" else []

    loaded: list[str] = []

    class Distro:
        def load_instrumentor(self, entry_point: Any, **_: Any) -> None:
            loaded.append(entry_point.name)

    monkeypatch.setattr(load, "entry_points", entry_points)
    monkeypatch.setattr(load._EntryPointDistFinder, "dist_for", lambda self, entry_point: None)
    monkeypatch.setattr(load, "get_dist_dependency_conflicts", lambda dist: None)
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", value)
    load._load_instrumentors(Distro())
    skipped = loaded == []
    assert env.instrumentation_disabled() is skipped
    assert env.instrumentation_disabled({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": value}) is skipped


@pytest.mark.timeout(120)
def test_opentelemetry_instrument_with_a_wildcard_leaves_us_off(tmp_path: Path) -> None:
    """Under ``opentelemetry-instrument`` with ``requests, *``, neither the instrumentor nor
    ``import otel_resilience`` registers a listener (the import-time listener used to report)."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "pyproject.toml").read_text()
    block = text.split("[project.entry-points.opentelemetry_instrumentor]\n", 1)[1].split("\n\n", 1)[0]
    dist = tmp_path / "otel_resilience-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: otel_resilience\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[opentelemetry_instrumentor]\n{block.replace(chr(34), '')}\n")
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(tmp_path), str(root))),
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests, *",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    probe = (
        "import otel_resilience\n"
        "from otel_resilience.telemetry import current_listener\n"
        "from otel_resilience.telemetry.instrumentor import OtelResilienceInstrumentor\n"
        "print(OtelResilienceInstrumentor().is_instrumented_by_opentelemetry, current_listener() is not None)"
    )
    command = [str(Path(sys.executable).with_name("opentelemetry-instrument")), sys.executable, "-c", probe]
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=100, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False False", done.stderr
