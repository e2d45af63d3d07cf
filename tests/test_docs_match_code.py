"""What the README, the docs (docs/*.md) and the public docstrings say matches the code they describe."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import re
import shlex
from enum import Enum
from importlib.metadata import metadata
from pathlib import Path
from typing import Any

import pytest

import otel_resilience
from otel_resilience.config.fields import SECTIONS
from otel_resilience.integrations import aiohttp, fastapi, http, httpx, requests
from otel_resilience.integrations.fastapi import BULKHEAD_RETRY_AFTER, MAX_RETRY_AFTER
from otel_resilience.manager import STAGES
from otel_resilience.ops.alert_rules import RuleOptions
from otel_resilience.telemetry import semconv

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")

# The README's name of each stage in its nesting diagram.
DIAGRAM_NAMES = {
    "Fallback": "fallback",
    "RateLimiter": "rate_limiter",
    "Timeout(total": "total_timeout",
    "Recovery": "recovery",
    "Retry": "retry",
    "Hedging": "hedging",
    "CircuitBreaker": "circuit_breaker",
    "Bulkhead": "bulkhead",
    "Timeout(attempt": "attempt_timeout",
    "Chaos": "chaos",
}


def test_readme_nesting_diagram_is_the_stage_table() -> None:
    """The README's diagram of the manager's order names every stage of STAGES, in its order."""
    line = next(line for line in README.splitlines() if line.startswith("Fallback ⊃"))
    parts = [part.strip() for part in line.split("⊃")]
    assert parts[-1] == "fn"
    names = [DIAGRAM_NAMES[part.split(" ")[0].split("=")[0].strip()] for part in parts[:-1]]
    assert names == [stage.name for stage in STAGES]


def test_readme_names_every_stage_an_extra_strategy_may_be_placed_at() -> None:
    """The README lists every stage name ExtraStrategy accepts, and the range of the ranks."""
    found = re.search(
        r"a stage by name \(([^)]*)\), or at a\s+`rank=` \(the stages' ranks are (\d+) to (\d+)", README
    )
    assert found is not None
    listed = re.findall(r'"(\w+)"', found.group(1))
    assert listed == [stage.name for stage in STAGES]
    ranks = [stage.rank for stage in STAGES]
    assert (int(found.group(2)), int(found.group(3))) == (min(ranks), max(ranks))


def test_readme_install_section_names_every_extra() -> None:
    """The README's Install section names every extra a user installs (not the test and bench tools)."""
    section = README.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+)`", section))
    extras = set(metadata("otel-resilience").get_all("Provides-Extra") or []) - {"test", "bench"}
    assert extras, "the distribution declares no extra"
    assert sorted(extras - named) == []


def test_readme_states_the_retry_after_of_each_refusal() -> None:
    """The README gives each refusal's Retry-After as add_exception_handlers sends it.

    A breaker's and a rate limiter's come from the error, capped at MAX_RETRY_AFTER (a limiter's
    wait may be far longer); a full bulkhead, which cannot know when a slot frees, always says
    BULKHEAD_RETRY_AFTER seconds, and a breaker forced open says none.
    """
    text = " ".join(README.split())
    found = re.search(r"add_exception_handlers\(app\)` turns (.*?) into 504", text)
    assert found is not None
    stated = found.group(1)
    assert f"{BULKHEAD_RETRY_AFTER} s for a full bulkhead" in stated, stated
    assert "none for a breaker forced open" in stated, stated
    assert f"at most `MAX_RETRY_AFTER` ({MAX_RETRY_AFTER} s" in stated, stated


def test_readme_names_the_resend_count_hook_of_each_httpx_driver() -> None:
    """Where the README wires the httpx instrumentation, it names the hook of each driver.

    The async transport awaits its request hook: the sync hook there fails every send, and the
    instrumentor passes an async client only an ``async_request_hook`` that is a coroutine function.
    """
    hooks = [name for name in http.__all__ if name.endswith("resend_count_hook")]
    assert len(hooks) == 2, hooks
    text = " ".join(README.split())
    found = re.search(
        r"with the OpenTelemetry httpx instrumentation, (.*?)`instrument_client\(client\)`", text
    )
    assert found is not None
    assert sorted(hook for hook in hooks if f"integrations.http.{hook}`" not in found.group(1)) == []


def test_readme_names_every_field_a_configuration_file_refuses() -> None:
    """The README's "What takes code stays in code" names every keyword a configuration file refuses."""
    text = " ".join(README.split())
    found = re.search(r"\*\*What takes code stays in code\*\*: (.*?) The file refuses them", text)
    assert found is not None
    named = set(re.findall(r"`(\w+)`", found.group(1)))
    # A policy's name is its key in the file (the "Keys" item says so), not a field it may write.
    refused = {key for section in SECTIONS for key, _ in section.refused} - {"name"}
    assert sorted(refused - named) == []


def test_readme_lists_every_instrument_a_keyed_policy_may_give_its_key() -> None:
    """The README names every instrument that carries ``resilience.key`` under ``key_attribute_limit``."""
    text = " ".join(README.split())
    found = re.search(
        r"key_attribute_limit=N\)` opts in to a `resilience\.key` metric attribute on (.*?): the first N",
        text,
    )
    assert found is not None
    listed = set(re.findall(r"`(resilience\.[\w.]+)`", found.group(1)))
    keyed = {
        spec.name for spec in semconv.INSTRUMENTS if "resilience.key" in spec.attributes + spec.conditional
    }
    assert sorted(listed) == sorted(keyed)


def test_operations_lists_every_rule_option() -> None:
    """docs/operations.md lists every field `otel-resilience export alerts --set` accepts."""
    row = next(line for line in OPERATIONS.splitlines() if line.startswith("| `--set FIELD=VALUE`"))
    listed = re.findall(r"`(\w+)`", row.split("|")[2].split("RuleOptions`:")[1])
    assert sorted(listed) == sorted(field.name for field in dataclasses.fields(RuleOptions))


def test_operations_alert_table_gives_each_alert_its_for_and_severity() -> None:
    """The `for` and severity columns of docs/operations.md's alert table are those of the shipped rules."""
    from otel_resilience.ops import alert_rules  # noqa: PLC0415 - the rules need the ops extra

    rules: dict[str, list[tuple[str, str]]] = {}
    for group in alert_rules.rules_document(1.0)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rules.setdefault(rule["alert"], []).append(
                    (rule.get("for", "0s"), rule["labels"]["severity"])
                )
    table = {
        name: (durations, severities)
        for name, durations, severities in re.findall(
            r"^\| `(Resilience\w+)` \| .*? \| ([^|]*?) \| ([^|]*?) \|$", OPERATIONS, re.MULTILINE
        )
    }
    assert sorted(table) == sorted(rules)
    for name, found in rules.items():
        assert table[name] == (" / ".join(d for d, _ in found), " / ".join(s for _, s in found)), name


def _scripts_run(command: str) -> list[str]:
    """The files of the repository a shell command runs: ``./x args``, ``bash x`` and ``python x.py``."""
    words = shlex.split(command.split(" #", 1)[0].removeprefix("$ "))
    while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value before the command
        words = words[1:]
    run = words[:1] if words and words[0].startswith("./") else []
    return run + [
        word
        for before, word in itertools.pairwise(words)
        if before == "bash" or (word.endswith(".py") and before != "-m")
    ]


def test_every_script_a_shell_example_runs_is_in_the_repository() -> None:
    """A command copied from a shell block of the README or the docs finds the script it runs."""
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    missing = []
    for document in documents:
        text = document.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.DOTALL):
            for command in block.replace("\\\n", " ").splitlines():
                missing += [
                    f"{document.relative_to(ROOT)}: {script}"
                    for script in _scripts_run(command)
                    if not (ROOT / script).is_file()
                ]
    assert missing == []


def _public() -> list[tuple[str, Any]]:
    """Every public name of the package and of its HTTP integrations, with its methods."""
    found: list[tuple[str, Any]] = []
    modules: list[tuple[str, Any]] = [("otel_resilience", otel_resilience)]
    modules += [(module.__name__, module) for module in (http, httpx, requests, aiohttp, fastapi)]
    for module_name, module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            found.append((f"{module_name}.{name}", obj))
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                    if inspect.isfunction(function) and not attr.startswith("_"):
                        found.append((f"{module_name}.{name}.{attr}", function))
    return found


def _documented_args(doc: str | None) -> list[str] | None:
    """The names an ``Args:`` section documents (``None`` when there is none)."""
    section = re.search(r"\n(\s*)Args:\n(.*?)(?:\n\s*\n|\Z)", doc or "", flags=re.DOTALL)
    if section is None:
        return None
    lines = [line for line in section.group(2).split("\n") if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    names = []
    for line in lines:
        entry = re.match(r"\s*\**(\w+)[^:]*:", line)
        if entry is not None and len(line) - len(line.lstrip()) == indent:
            names.append(entry.group(1))
    return names


@pytest.mark.parametrize(("name", "obj"), _public(), ids=[name for name, _ in _public()])
def test_public_docstring_args_are_the_parameters(name: str, obj: Any) -> None:
    """A public name's ``Args:`` section documents exactly the parameters it takes."""
    documented = _documented_args(obj.__doc__)
    if documented is None:
        return
    parameters = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
    assert sorted(documented) == sorted(parameters), name


def _named_in_the_docs() -> set[str]:
    """Every word of a code block or code span of the README and docs/*.md."""
    text = README + "".join(path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md")))
    blocks = re.compile(r"```.*?```", flags=re.DOTALL)
    code = blocks.findall(text) + re.findall(r"`[^`]+`", blocks.sub("", text))  # code blocks and spans
    return set(re.findall(r"\w+", " ".join(code)))


def test_every_name_the_package_exports_is_named_in_the_readme_or_the_docs() -> None:
    """A user finds each public name of ``otel_resilience`` where the library is described."""
    named = _named_in_the_docs()
    assert [name for name in otel_resilience.__all__ if name not in named] == []


# Made by the library, never by a user: a policy handle (``manager.policy``), a store's clients
# (``RedisStore.from_url``), the error a failed response raises (``raise_on_failure``).
_NOT_CALLED_BY_USERS = {
    "otel_resilience.PolicyHandle",
    "otel_resilience.RedisStore",
    "otel_resilience.integrations.http.FailedResponseError",
    "otel_resilience.integrations.aiohttp.MalformedResponseError",
}


def test_every_option_a_public_name_takes_is_named_in_the_readme_or_the_docs() -> None:
    """A user finds each optional argument of the public classes and functions described too.

    Those of the package and of its HTTP integrations (an enumeration's members aside).
    """
    named = _named_in_the_docs()
    missing = []
    for module in (otel_resilience, http, httpx, requests, aiohttp, fastapi):
        for name in module.__all__:
            obj = getattr(module, name)
            qualified = f"{module.__name__}.{name}"
            if qualified in _NOT_CALLED_BY_USERS or not callable(obj):
                continue
            if inspect.isclass(obj) and issubclass(obj, Enum):
                continue
            try:
                parameters = inspect.signature(obj).parameters.values()
            except (TypeError, ValueError):  # no signature to read (a protocol)
                continue
            missing += [
                f"{qualified}({parameter.name}=)"
                for parameter in parameters
                if parameter.default is not parameter.empty and parameter.name not in named
            ]
    assert missing == []
