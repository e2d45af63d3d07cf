"""The BaseInstrumentor subclass behind the opentelemetry_instrumentor entry point."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_resilience
from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.config import CONFIG_ENV
from otel_resilience.engine.events import TelemetrySource
from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument
from otel_resilience.telemetry import env as env_module
from otel_resilience.telemetry.instrumentor import OtelResilienceInstrumentor


def test_the_entry_point_names_the_instrumentor() -> None:
    """pyproject declares the entry point opentelemetry-instrument looks up, named otel_resilience."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    block = text.split("[project.entry-points.opentelemetry_instrumentor]\n", 1)[1].split("\n\n", 1)[0]
    assert block == 'otel_resilience = "otel_resilience.telemetry.instrumentor:OtelResilienceInstrumentor"'


def test_instrument_and_uninstrument_switch_our_spans() -> None:
    """instrument(tracer_provider=...) reports executions as spans there; uninstrument stops it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OtelResilienceInstrumentor()
    manager = ResilienceManager()
    try:
        instrumentor.instrument(tracer_provider=provider)
        manager.execute_with_resilience_sync(lambda: 1, ResilienceConfig(name="p"))
        assert exporter.get_finished_spans()
        instrumentor.uninstrument()
        assert current_listener() is None
        count = len(exporter.get_finished_spans())
        manager.execute_with_resilience_sync(lambda: 1, ResilienceConfig(name="p"))
        assert len(exporter.get_finished_spans()) == count
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        install_default()
        provider.shutdown()


def test_every_keyword_of_instrument_is_handed_on_and_a_missing_one_read_from_its_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """spans=False and in_process_histograms=True reach the listener; record_messages, not given,
    comes from OTEL_RESILIENCE_RECORD_MESSAGES (it was forced to False before)."""
    monkeypatch.setenv("OTEL_RESILIENCE_RECORD_MESSAGES", "true")
    instrumentor = OtelResilienceInstrumentor()
    try:
        instrumentor.instrument(spans=False, in_process_histograms=True, skip_dep_check=True)
        listener = current_listener()
        assert listener is not None
        assert listener._in_process is True
        assert listener._record_messages is True
        assert listener._infos.get(TelemetrySource("pipeline", "p", "p")).spans is False
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        install_default()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("disabled", "instrumented"),
    [("", True), ("otel_resilience", False), ("requests, otel_resilience", False)],
)
def test_opentelemetry_instrument_loads_it_unless_disabled(
    tmp_path: Path, disabled: str, instrumented: bool
) -> None:
    """``opentelemetry-instrument`` runs the entry point; OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns it off.

    Disabled, neither the instrumentor nor ``import otel_resilience`` registers a listener.

    The entry point comes from a distribution's metadata, so the child sees this tree as an
    installed distribution whose ``entry_points.txt`` holds pyproject's block.
    """
    root = Path(__file__).resolve().parents[2]
    text = (root / "pyproject.toml").read_text()
    block = text.split("[project.entry-points.opentelemetry_instrumentor]\n", 1)[1].split("\n\n", 1)[0]
    dist = tmp_path / "otel_resilience-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: otel_resilience\nVersion: 0.1.0\n")
    entry_point = block.replace('"', "")
    (dist / "entry_points.txt").write_text(f"[opentelemetry_instrumentor]\n{entry_point}\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(tmp_path), str(root))),
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    probe = (
        "from otel_resilience.telemetry import current_listener\n"
        "from otel_resilience.telemetry.instrumentor import OtelResilienceInstrumentor\n"
        "print(OtelResilienceInstrumentor().is_instrumented_by_opentelemetry, current_listener() is not None)"
    )
    command = [str(Path(sys.executable).with_name("opentelemetry-instrument")), sys.executable, "-c", probe]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=100, check=True)
    assert done.stdout.strip().splitlines()[-1] == f"{instrumented} {instrumented}", done.stderr


@pytest.fixture
def instrumentor() -> Iterator[OtelResilienceInstrumentor]:
    """The instrumentor, with the import-time listener in place; the default listener afterwards."""
    install_default()
    made = OtelResilienceInstrumentor()
    try:
        yield made
    finally:
        if made.is_instrumented_by_opentelemetry:
            made.uninstrument()
        uninstrument()
        install_default()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "opentelemetry.instrumentation.instrumentor"]


def test_uninstrument_turns_off_the_listener_the_import_registered(
    instrumentor: OtelResilienceInstrumentor, caplog: pytest.LogCaptureFixture
) -> None:
    """The instrumentor's uninstrument() turns telemetry off even when the import registered the listener.

    Only a second uninstrument(), with nothing left to turn off, says it is already uninstrumented.
    """
    assert current_listener() is not None
    instrumentor.uninstrument()
    assert current_listener() is None
    assert _warnings(caplog) == []
    instrumentor.uninstrument()
    assert _warnings(caplog) == ["Attempting to uninstrument while already uninstrumented"]


def test_uninstrument_turns_off_a_listener_registered_by_instrument(
    instrumentor: OtelResilienceInstrumentor,
) -> None:
    """instrument() called after the instrumentor's: the instrumentor's uninstrument() still turns it off."""
    instrumentor.instrument()
    instrument(record_messages=True)
    instrumentor.uninstrument()
    assert current_listener() is None
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_instrument_again_after_uninstrument_the_function(
    instrumentor: OtelResilienceInstrumentor, caplog: pytest.LogCaptureFixture
) -> None:
    """After uninstrument() (the function), the instrumentor is no longer instrumented and instruments again."""
    instrumentor.instrument()
    assert instrumentor.is_instrumented_by_opentelemetry
    uninstrument()
    assert not instrumentor.is_instrumented_by_opentelemetry
    instrumentor.instrument()
    assert current_listener() is not None
    assert instrumentor.is_instrumented_by_opentelemetry
    assert _warnings(caplog) == []


def test_instrument_twice_keeps_the_first_listener(
    instrumentor: OtelResilienceInstrumentor, caplog: pytest.LogCaptureFixture
) -> None:
    """A second instrument() while its listener is registered changes nothing, as for every instrumentor."""
    instrumentor.instrument()
    first = current_listener()
    instrumentor.instrument(spans=False)
    assert current_listener() is first
    assert _warnings(caplog) == ["Attempting to instrument while already instrumented"]


def test_instrument_again_after_instrument_the_function_replaced_its_listener(
    instrumentor: OtelResilienceInstrumentor, caplog: pytest.LogCaptureFixture
) -> None:
    """instrument() (the function) registers a listener of its own: the instrumentor is no longer
    instrumented, and its next instrument() registers its listener again, with no warning."""
    instrumentor.instrument()
    instrument(record_messages=True)
    replaced = current_listener()
    assert not instrumentor.is_instrumented_by_opentelemetry
    instrumentor.instrument()
    assert current_listener() is not replaced
    assert current_listener() is not None
    assert instrumentor.is_instrumented_by_opentelemetry
    assert _warnings(caplog) == []


def test_an_unknown_keyword_is_refused_and_nothing_is_registered(
    instrumentor: OtelResilienceInstrumentor,
) -> None:
    """A misspelt tracer_provder=... raises TypeError naming it, rather than reporting through the
    global provider; the listener in place stays, and the instrumentor is not instrumented."""
    before = current_listener()
    provider = TracerProvider(shutdown_on_exit=False)
    with pytest.raises(TypeError, match=r"keyword argument 'tracer_provder' .*'tracer_provider'"):
        instrumentor.instrument(tracer_provder=provider, spans=False, skip_dep_check=True)
    assert current_listener() is before
    assert not instrumentor.is_instrumented_by_opentelemetry
    with pytest.raises(TypeError, match=r"keyword arguments 'colour', 'flavour' "):
        instrumentor.instrument(flavour=1, colour=2)
    provider.shutdown()


def test_an_unknown_keyword_is_refused_when_already_instrumented_too(
    instrumentor: OtelResilienceInstrumentor, caplog: pytest.LogCaptureFixture
) -> None:
    """Instrumented already, a misspelt keyword still raises TypeError naming it (the base class
    would only warn that it is instrumented, the keyword unseen); the listener stays."""
    instrumentor.instrument(skip_dep_check=True)
    registered = current_listener()
    with pytest.raises(TypeError, match=r"keyword argument 'tracer_provder' "):
        instrumentor.instrument(tracer_provder=TracerProvider(shutdown_on_exit=False))
    assert current_listener() is registered
    assert instrumentor.is_instrumented_by_opentelemetry
    assert _warnings(caplog) == []


def test_the_base_class_keywords_are_taken(instrumentor: OtelResilienceInstrumentor) -> None:
    """skip_dep_check (what opentelemetry-instrument passes) and raise_exception_on_conflict are the
    base class's own: taken, and not handed on to instrument()."""
    instrumentor.instrument(skip_dep_check=True, raise_exception_on_conflict=True, record_messages=True)
    listener = current_listener()
    assert listener is not None
    assert listener._record_messages is True
    assert instrumentor.is_instrumented_by_opentelemetry


def _launch(tmp_path: Path, options: Mapping[str, str]) -> list[str]:
    """Run ``opentelemetry-instrument --<option>=<value>... python -c probe``: the variables' values.

    The launcher makes an option of each ``OTEL_*`` name of the modules the
    ``opentelemetry_environment_variables`` entry points name (its ``--help`` lists them); the
    child sees this tree as an installed distribution whose ``entry_points.txt`` holds pyproject's
    block. ``options`` maps each variable to its value; the probe prints what the program sees.
    """
    root = Path(__file__).resolve().parents[2]
    text = (root / "pyproject.toml").read_text()
    header = "[project.entry-points.opentelemetry_environment_variables]\n"
    block = text.split(header, 1)[1].split("\n\n", 1)[0]
    dist = tmp_path / "otel_resilience-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: otel_resilience\nVersion: 0.1.0\n")
    entry_point = block.replace('"', "")
    (dist / "entry_points.txt").write_text(f"[opentelemetry_environment_variables]\n{entry_point}\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_RESILIENCE_")},
        "PYTHONPATH": os.pathsep.join((str(tmp_path), str(root))),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    arguments = [f"--{re.sub('OTEL_(PYTHON_)?', '', v).lower()}={value}" for v, value in options.items()]
    probe = f"import os; print(*(os.environ.get(v) for v in {list(options)!r}), sep=chr(10))"
    launcher = str(Path(sys.executable).with_name("opentelemetry-instrument"))
    command = [launcher, *arguments, sys.executable, "-c", probe]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-len(options) :]


def test_opentelemetry_instrument_takes_each_switch_as_an_option(tmp_path: Path) -> None:
    """``opentelemetry-instrument --resilience_spans_disabled true`` sets the switch, as ``--sdk_disabled`` does."""
    options = {s.variable: "true" for s in env_module.SWITCHES}
    assert _launch(tmp_path, options) == list(options.values())


def _variables_read() -> set[str]:
    """Every ``OTEL_*`` name the package spells as a string of its own: the variables it reads."""
    package = Path(otel_resilience.__file__).resolve().parent
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and re.fullmatch(r"OTEL_[A-Z0-9_]+", text):
                names.add(text)
    return names


def test_opentelemetry_instrument_takes_each_variable_the_package_reads_as_an_option(
    tmp_path: Path,
) -> None:
    """``opentelemetry-instrument --resilience_config x.yaml`` sets ``OTEL_RESILIENCE_CONFIG``, as a switch's option does.

    Every ``OTEL_*`` variable the package reads is one, the configuration file's included (it
    exited 2, "unrecognized arguments": only the telemetry switches were named), and
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``, which opentelemetry-instrumentation declares.
    """
    variables = _variables_read()
    switches = {s.variable for s in env_module.SWITCHES}
    assert {CONFIG_ENV, env_module.DISABLED_INSTRUMENTATIONS, *switches} <= variables
    options = {v: f"{v.lower()}.value" for v in sorted(variables)}
    assert _launch(tmp_path, options) == list(options.values())
