"""The examples of the docs and of the public docstrings run as a reader copies them.

Covered: the fenced blocks of docs/design.md, docs/operations.md, docs/telemetry.md,
docs/demo.md, docs/runbooks/*.md and examples/*/README.md, and the literal blocks (after ``::``)
of the docstrings of ``otel_resilience/**``. README.md's examples are tests/test_readme.py's; the
``>>>`` examples of ``otel_resilience.testing`` are run as doctests by
tests/test_testing_helpers.py, and any other module's here.

What runs, by one rule: **a Python block whose first line is an import statement** (``import x``
or ``from x import y``) promises its reader that it runs as it stands, so it is run, in a fresh
interpreter from the repository's root: it must exit 0 and write nothing on standard error. Any
other block is a fragment (it calls the reader's own objects, ``charge(order)``, or holds ``...``
placeholders), a diagram, a formula, a usage text or a configuration file, and is not run.

The command lines of the shell blocks (```` ```sh ````, ```` ```bash ````, ```` ```shell ````,
```` ```console ````) and of the docstrings' literal blocks that run ``otel-resilience`` (or
``python -m otel_resilience``) are parsed by the command's own parser, their ``--set`` fields
read as ``export`` reads them: a subcommand, option or field that does not exist fails here
without running the command.
"""

from __future__ import annotations

import argparse
import ast
import doctest
import importlib
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from otel_resilience import __main__ as cli
from otel_resilience.ops import export

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    ROOT / "docs" / "design.md",
    ROOT / "docs" / "operations.md",
    ROOT / "docs" / "telemetry.md",
    ROOT / "docs" / "demo.md",
    *sorted((ROOT / "docs" / "runbooks").glob("*.md")),
    *sorted((ROOT / "examples").glob("*/README.md")),
]
SHELLS = ("sh", "bash", "shell", "console")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
_IMPORT = re.compile(r"(import|from)\s+[\w.]+")
_LITERAL_BLOCK = re.compile(r"::[ \t]*$", re.MULTILINE)
"""A line that ends a paragraph with ``::``: a literal block follows (:func:`_literal_blocks`)."""


def _fenced() -> list[tuple[str, str, str]]:
    """Every fenced block of the documents: ``(where, language, text)``, ``where`` as ``file:line``."""
    blocks = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for found in _FENCE.finditer(text):
            line = text.count("\n", 0, found.start()) + 2
            blocks.append((f"{document.relative_to(ROOT)}:{line}", found.group(1), found.group(2)))
    return blocks


def _literal_blocks(doc: str) -> list[str]:
    """The literal blocks of a docstring: the indented lines after a line that ends with ``::``."""
    lines = doc.splitlines()
    blocks = []
    for index, line in enumerate(lines):
        if _LITERAL_BLOCK.search(line) is None:
            continue
        body = []
        for following in lines[index + 1 :]:
            if following.strip() and not following.startswith((" ", "\t")):
                break
            body.append(following)
        blocks.append(textwrap.dedent("\n".join(body)).strip("\n"))
    return blocks


def _docstrings() -> list[tuple[str, str]]:
    """Every docstring of ``otel_resilience/**`` that may hold an example: ``(where, text)``.

    Only the files with a literal block (a line that ends with ``::``) or a doctest (``>>>``)
    are parsed: a docstring of any other file holds neither.
    """
    found = []
    for path in sorted((ROOT / "otel_resilience").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if ">>>" not in source and _LITERAL_BLOCK.search(source) is None:
            continue
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    found.append((f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}", doc))
    return found


def _docstring_blocks() -> list[tuple[str, str]]:
    """Every literal block of the docstrings: ``(where, text)``."""
    return [(where, block) for where, doc in _docstrings() for block in _literal_blocks(doc)]


def _runnable(text: str) -> bool:
    """The rule: a block runs when its first line is an import statement."""
    return _IMPORT.match(text.lstrip("\n").split("\n", 1)[0]) is not None


def _python_blocks() -> list[tuple[str, str]]:
    """The runnable Python blocks of the documents and the docstrings."""
    fenced = [(where, text) for where, language, text in _fenced() if language in {"python", "py"}]
    return [(where, text) for where, text in [*fenced, *_docstring_blocks()] if _runnable(text)]


PYTHON_BLOCKS = _python_blocks()


def test_the_docs_keep_runnable_examples() -> None:
    """The rule finds the examples it is meant to run (an extraction that finds none tests nothing)."""
    where = [place.split(":")[0] for place, _ in PYTHON_BLOCKS]
    assert "docs/telemetry.md" in where
    assert "otel_resilience/telemetry/__init__.py" in where


@pytest.mark.parametrize(("where", "code"), PYTHON_BLOCKS, ids=[where for where, _ in PYTHON_BLOCKS])
def test_a_runnable_example_runs_as_written(where: str, code: str) -> None:
    """The block runs in a fresh interpreter from the repository's root, exits 0 and writes no error."""
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, f"{where}\n{completed.stderr}"
    assert completed.stderr == "", f"{where}\n{completed.stderr}"


def test_every_doctest_of_a_docstring_passes() -> None:
    """Each module with ``>>>`` examples but ``testing`` (tests/test_testing_helpers.py's) passes them."""
    modules = sorted(
        where.split(":")[0].removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        for where, doc in _docstrings()
        if ">>>" in doc
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for name in dict.fromkeys(modules):
        if name == "otel_resilience.testing":
            continue
        for test in doctest.DocTestFinder().find(importlib.import_module(name)):
            runner.run(test)
    assert runner.failures == 0


def _command_lines() -> list[tuple[str, str]]:
    """The ``otel-resilience`` command lines of the shell blocks and of the docstrings' literal blocks."""
    blocks = [(where, text) for where, language, text in _fenced() if language in SHELLS]
    blocks += _docstring_blocks()
    found = []
    for where, text in blocks:
        for raw in text.replace("\\\n", " ").splitlines():
            line = raw.strip().removeprefix("$ ")
            if "[" in line or "|" in line:  # a usage line, or a pipe: not a command as it stands
                continue
            for command in ("otel-resilience ", "python -m otel_resilience "):
                if line.startswith(command):
                    found.append((where, shlex.join(shlex.split(line[len(command) :], comments=True))))
    return found


COMMANDS = _command_lines()


def test_the_docs_keep_command_lines() -> None:
    """The docs show the demo's and export's command lines (an extraction that finds none tests nothing)."""
    assert {shlex.split(line)[0] for _, line in COMMANDS} >= {"demo", "export"}


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[f"{w}: {line}" for w, line in COMMANDS])
def test_a_command_line_of_the_docs_is_one_the_command_takes(where: str, line: str) -> None:
    """Its subcommand and options exist, and an ``export``'s ``--set`` fields are rule options."""
    try:
        args = cli.build_parser().parse_args(shlex.split(line))
    except SystemExit:
        pytest.fail(f"{where}: otel-resilience {line} is refused")
    if args.command == "export":
        export.generator_options(args)


def _usage() -> dict[str, set[str]]:
    """The options the usage text of ``otel_resilience.__main__`` gives each command ("" for none)."""
    usage = _literal_blocks(cli.__doc__ or "")[0]
    options: dict[str, set[str]] = {}
    command = ""
    for line in usage.splitlines():
        words = line.split()
        if words[0] == "otel-resilience":
            command = "" if words[1].startswith("-") else words[1]
            options.setdefault(command, set())
        options[command].update(re.findall(r"--[a-z][a-z-]*", line))
    return options


def _parser_options() -> dict[str, set[str]]:
    """The options the command's parser takes, per command ("" for the command's own), but ``--help``."""
    parser = cli.build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {"": parser, **subcommands.choices}
    return {
        name: {
            option
            for action in each._actions
            for option in action.option_strings
            if option.startswith("--") and option != "--help"
        }
        for name, each in parsers.items()
    }


def test_the_usage_text_of_the_command_names_every_option_it_takes() -> None:
    """The module's usage text gives each command exactly the options its parser takes."""
    assert _usage() == _parser_options()


def test_the_cardinality_advice_lifts_the_limit_of_the_histograms_kept_in_process() -> None:
    """docs/telemetry.md's reader limit lets 200 policies' bucket series through without overflow.

    The buckets kept in process are observable counters: the instrument class the advice names
    must be the one whose limit they count against.
    """
    text = (ROOT / "docs" / "telemetry.md").read_text(encoding="utf-8")
    found = re.search(r"PrometheusMetricReader\(cardinality_limits=\{(\w+): ([\d_]+)\}\)", text)
    assert found is not None
    kind, limit = found.group(1), int(found.group(2))
    code = f"""
from opentelemetry.sdk.metrics import MeterProvider, {kind}
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.telemetry import instrument

reader = InMemoryMetricReader(cardinality_limits={{{kind}: {limit}}})
instrument(meter_provider=MeterProvider(metric_readers=[reader]), in_process_histograms=True)
manager = ResilienceManager()
for number in range(200):
    manager.policy(f"p{{number}}", ResilienceConfig()).execute_sync(lambda: None)
metrics = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
buckets = next(m for m in metrics if m.name == "resilience.execution.latency.bucket")
points = buckets.data.data_points
print(len(points), sum(1 for p in points if p.attributes.get("otel.metric.overflow")))
"""
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "3200 0\n"  # 16 bounds (15 and +Inf) for each of 200 policies, none cut
