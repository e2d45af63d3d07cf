"""docs/telemetry.md is generated from the registry and must not be stale."""

from __future__ import annotations

from pathlib import Path

from otel_resilience.telemetry import docs, semconv

DOC = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"


def test_committed_doc_equals_generator_output():
    """The committed reference is exactly what the generator produces (run the generator if not)."""
    assert DOC.read_text(encoding="utf-8") == docs.render()


def test_doc_lists_every_name_and_exported_series():
    """Every instrument, exported series, span event, log event and attribute appears in the doc."""
    text = docs.render()
    for spec in semconv.INSTRUMENTS:
        assert f"`{spec.name}`" in text
        for series in semconv.prometheus_series(spec):
            assert f"`{series}`" in text
    for event in semconv.SPAN_EVENTS:
        assert f"`{event.name}`" in text
    for attribute in semconv.ATTRIBUTES:
        assert f"`{attribute.key}`" in text
        for value in attribute.values:
            assert f"`{value}`" in text


def test_check_mode_reports_a_stale_file(tmp_path):
    """--check exits 1 for a stale file and 0 once the file is regenerated."""
    target = tmp_path / "telemetry.md"
    target.write_text("stale\n", encoding="utf-8")
    assert docs.main(["--check", str(target)]) == 1
    assert docs.main([str(target)]) == 0
    assert docs.main(["--check", str(target)]) == 0
