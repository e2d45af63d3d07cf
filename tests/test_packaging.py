"""Packaging: the version, the one runtime dependency, and what an import loads."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from importlib.metadata import metadata, requires, version
from pathlib import Path

import pytest

import otel_resilience


def test_version_comes_from_the_distribution() -> None:
    """__version__ is the installed distribution's version."""
    assert otel_resilience.__version__ == version("otel-resilience")


def test_runtime_dependency_is_the_otel_api_only() -> None:
    """Outside extras, the library requires opentelemetry-api (plus a 3.10-only backport)."""
    required = [r for r in requires("otel-resilience") or [] if "extra ==" not in r]
    names = sorted(r.split(";")[0].split(">")[0].split("=")[0].strip() for r in required)
    assert names == ["exceptiongroup", "opentelemetry-api"]
    backport = next(r for r in required if r.startswith("exceptiongroup"))
    assert "python_version < '3.11'" in backport.replace('"', "'")


def test_the_readme_install_section_names_the_extras_and_the_version() -> None:
    """README, "Install": the extras it names are the distribution's (all of them but the
    project's own ``bench`` and ``test``), and the wheel it names carries the installed version."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+)` \(", section)) | set(re.findall(r"\[(\w+)\]'", section))
    listed = re.search(r"and one per\s+integration below: (.+?) and `(\w+)`", section, re.DOTALL)
    assert listed is not None
    named |= set(re.findall(r"`(\w+)`", listed.group(1))) | {listed.group(2)}
    extras = set(metadata("otel-resilience").get_all("Provides-Extra") or [])
    assert named == extras - {"bench", "test"}
    assert f"otel_resilience-{version('otel-resilience')}-py3-none-any.whl" in section


def test_import_loads_no_sdk_and_no_optional_dependency() -> None:
    """`import otel_resilience` loads neither the OTel SDK nor the demo's or ops' dependencies."""
    code = (
        "import sys, otel_resilience\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'rich', 'yaml', 'grafana_foundation_sdk', 'prometheus_client', 'httpx'} "
        "or m.startswith('opentelemetry.sdk') or m.startswith('opentelemetry.exporter')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_documented() -> None:
    """Every name in __all__ exists and every public class or function has a docstring."""
    for name in otel_resilience.__all__:
        obj = getattr(otel_resilience, name)
        if callable(obj) and not isinstance(obj, type(otel_resilience.MISSING)):
            assert obj.__doc__, name


def test_what_is_left_of_a_deadline_is_public_beside_the_deadline() -> None:
    """``time_left`` (the README's socket timeout) is listed wherever ``current_deadline`` is."""
    from otel_resilience import engine  # noqa: PLC0415
    from otel_resilience.engine import deadline  # noqa: PLC0415

    for package in (otel_resilience, engine):
        assert "current_deadline" in package.__all__
        assert "time_left" in package.__all__, package.__name__
        assert package.time_left is deadline.time_left


def test_the_engine_lists_each_standing_admission() -> None:
    """The engine, public for custom strategies, lists ``UnheardStanding`` beside ``Standing``."""
    from otel_resilience import engine  # noqa: PLC0415
    from otel_resilience.engine import admission  # noqa: PLC0415

    for name in admission.__all__:
        if name[0].isupper() and not name.isupper():  # the classes
            assert name in engine.__all__, name
            assert getattr(engine, name) is getattr(admission, name)


_PATTERNS = (
    "alerts",
    "bulkhead",
    "chaos",
    "circuit_breaker",
    "fallback",
    "hedging",
    "rate_limiter",
    "recovery",
    "retry",
    "timeout",
)


@pytest.mark.parametrize("pattern", _PATTERNS)
def test_a_patterns_former_path_is_an_alias_of_its_public_names(pattern: str) -> None:
    home = importlib.import_module(f"otel_resilience.patterns.{pattern}")
    alias = importlib.import_module(f"otel_resilience.{pattern}")
    assert list(alias.__all__) == list(home.__all__)
    assert home.__all__
    for name in home.__all__:
        assert getattr(alias, name) is getattr(home, name), name  # the same object: no second copy
    public = {n for n in vars(alias) if not n.startswith("_")}
    assert public <= set(home.__all__), public - set(home.__all__)


def test_every_pattern_lives_in_the_patterns_package() -> None:
    from otel_resilience import patterns  # noqa: PLC0415

    found = sorted(
        p.name.removesuffix(".py")
        for p in Path(patterns.__file__).parent.iterdir()
        if p.name != "__init__.py" and (p.suffix == ".py" or (p / "__init__.py").exists())
    )
    assert found == sorted(_PATTERNS)
