"""The built distribution works on its own: sdist and wheel build, and the wheel runs export and the demo in a fresh venv.

This is the check of the README's install section. It needs the package index (CI has it): the
build backend and the ``demo`` extra's dependencies are downloaded into fresh virtual environments
(about 30-60 s; pip's cache makes reruns faster). Nothing from the test environment is reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {
    "dashboards": REPO / "dashboards",
    "alerts": REPO / "alerts",
    "collector": REPO / "collector-config",
    "runbooks": REPO / "docs" / "runbooks",
}


def _run(command: list[str | Path], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built with `python -m build` (the wheel is built from the sdist)."""
    work = tmp_path_factory.mktemp("build")
    python = _fresh_venv(work / "venv")
    _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "build"], work)
    out = work / "dist"
    _run([python, "-m", "build", "--outdir", out, REPO], work)
    return out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and its demo extra installed; returns its bin folder."""
    work = tmp_path_factory.mktemp("install")
    python = _fresh_venv(work / "venv")
    (wheel,) = dist.glob("*.whl")
    _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[demo]"], work)
    return python.parent


def test_the_sdist_and_the_wheel_are_built(dist: Path) -> None:
    """python -m build makes one sdist and one wheel of the package."""
    assert len(list(dist.glob("otel_resilience-*.tar.gz"))) == 1
    assert len(list(dist.glob("otel_resilience-*-py3-none-any.whl"))) == 1


@pytest.mark.parametrize("kind", sorted(SHIPPED))
def test_the_installed_wheel_exports_the_repository_files(kind: str, installed: Path, tmp_path: Path) -> None:
    """`otel-resilience export KIND DIR` from the installed wheel (no ops extra) writes the repository's files."""
    assert (
        _run(
            [installed / "python", "-c", "import importlib.util as u; print(u.find_spec('yaml'))"], tmp_path
        ).stdout.strip()
        == "None"
    )
    out = tmp_path / kind
    _run([installed / "otel-resilience", "export", kind, out], tmp_path)
    exported = {path.name: path.read_bytes() for path in out.iterdir()}
    expected = {
        path.name: path.read_bytes()
        for path in SHIPPED[kind].iterdir()
        if path.suffix in {".json", ".yml", ".yaml", ".md"}
        and (path.name != "README.md" or kind == "collector")  # the Collector's notes are shipped too
    }
    assert exported == expected


def test_the_installed_wheel_runs_a_five_second_demo(installed: Path, tmp_path: Path) -> None:
    """`otel-resilience demo --duration 5` from the installed wheel exits 0, loses no call and writes its summary."""
    summary = tmp_path / "summary.json"
    _run(
        [
            installed / "otel-resilience",
            "demo",
            "--duration",
            "5",
            "--time-scale",
            "0.01",
            "--plain",
            "--no-metrics-server",
            "--summary-json",
            summary,
        ],
        tmp_path,
        timeout=60,
    )
    result = json.loads(summary.read_text())
    assert result["lost_calls"] == 0
    assert result["requests"]["issued"] > 0


def test_the_wheel_is_not_the_source_tree(installed: Path, tmp_path: Path) -> None:
    """The fresh venv imports otel_resilience from its own site-packages, not from the repository."""
    where = _run(
        [installed / "python", "-c", "import otel_resilience; print(otel_resilience.__file__)"], tmp_path
    )
    assert str(REPO) not in where.stdout
    assert "site-packages" in where.stdout
    assert sys.prefix not in where.stdout


def test_the_installed_wheel_prints_the_config_schema_and_names_the_config_extra(
    installed: Path, tmp_path: Path
) -> None:
    """`otel-resilience schema` prints the schema.json the wheel ships; `check` of a YAML file without
    the config extra exits 1 and names it."""
    printed = _run([installed / "otel-resilience", "schema"], tmp_path)
    assert printed.stdout == (REPO / "otel_resilience" / "config" / "schema.json").read_text(encoding="utf-8")
    checked = subprocess.run(
        [str(installed / "otel-resilience"), "check", str(REPO / "resilience.yaml")],
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 1, checked.stderr
    assert "pip install 'otel-resilience[config]'" in checked.stderr
