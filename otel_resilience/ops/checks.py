"""Checks that tie every shipped query back to the telemetry registry.

A Resilience4j dashboard once queried a series its code no longer emitted. These checks make
that impossible here: every PromQL expression of every dashboard panel, template variable,
recording rule, alerting rule, ``promtool`` test series and runbook is parsed (with
``promql-parser``, a real PromQL parser), and each problem is reported as one line:

* a series that is neither derived from :data:`~otel_resilience.telemetry.semconv.INSTRUMENTS`
  nor recorded (earlier) by one of our recording rules, nor Prometheus' ``ALERTS``;
* a label a series cannot carry (in a matcher, ``by``/``without``, ``on``/``ignoring``,
  ``group_left`` or the source of a ``label_replace``/``label_join``), a label an alert's
  annotations use that its expression does not keep;
* a matcher value outside a closed enumeration of the registry (``resilience_outcome="sucess"``).

The labels each expression yields are inferred from the parse tree (``sum by (a, b)`` yields
``{a, b}``), so a recording rule's labels are checked where it is used.

Each ``check_*`` function returns a list of problems; an empty list means clean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from otel_resilience.ops import naming
from otel_resilience.telemetry import semconv as sc

__all__ = [
    "GRAFANA_SUBSTITUTIONS",
    "RULE_SEVERITIES",
    "Analysis",
    "analyse",
    "check_dashboard",
    "check_expression",
    "check_markdown",
    "check_rules",
    "check_rules_test",
    "dashboard_expressions",
    "known_series",
    "markdown_expressions",
    "recorded_series",
    "rule_expressions",
    "substitute_grafana",
]

RULE_SEVERITIES: Final = ("info", *sc.ALERT_SEVERITIES)
"""The ``severity`` labels an alert rule may carry: ``info`` (a notice, such as a chaos drill),
and the in-process alerts' ``warning`` (chat) and ``critical`` (pager)."""
GRAFANA_SUBSTITUTIONS: Final = MappingProxyType(
    {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "${__range}": "1h"}
)
"""Grafana's interval variables, replaced by durations before an expression is parsed."""

_ENUMERATIONS: Final = MappingProxyType(
    {naming.label(spec.key): frozenset(spec.values) for spec in sc.ATTRIBUTES if spec.values}
)
_WORDS: Final = re.compile(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*")
_LABEL_VALUES: Final = re.compile(
    r"^\s*label_values\((?:(?P<expr>.*),)?\s*(?P<label>[A-Za-z_]\w*)\s*\)\s*$", re.DOTALL
)
_TEMPLATE_LABEL: Final = re.compile(r"\$labels\.([A-Za-z_]\w*)")
_PROMQL_BLOCK: Final = re.compile(r"```promql\n(.*?)```", re.DOTALL)


@dataclass(slots=True)
class Analysis:
    """What one expression references and yields.

    Attributes:
        series: Every series name it selects.
        matchers: For each series, the label names its selectors match on.
        labels: The labels of its result (``None`` when they cannot be inferred).
        problems: Everything wrong with it, one line each.
    """

    series: set[str] = field(default_factory=set)
    matchers: dict[str, set[str]] = field(default_factory=dict)
    labels: frozenset[str] | None = frozenset()
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Result:
    labels: frozenset[str] | None
    scalar: bool = False


def known_series(recorded: Mapping[str, frozenset[str]] | None = None) -> dict[str, frozenset[str]]:
    """Return every series a query may select, with the labels it carries.

    Args:
        recorded: Recording-rule outputs (name -> labels), see :func:`recorded_series`.

    Returns:
        The derived series of the registry, the recorded series, and ``ALERTS`` (whose labels
        are those of our alerts: registry labels, ``job``, ``alertname``, ``alertstate`` and
        ``severity``).
    """
    known = dict(naming.series_labels())
    known[naming.ALERTS_SERIES] = (
        naming.ALERT_SERIES_LABELS | naming.derived_labels() | {naming.SERVICE_LABEL}
    )
    if recorded:
        known.update(recorded)
    return known


def substitute_grafana(expr: str) -> str:
    """Replace Grafana's interval variables with durations, so that the expression parses."""
    for variable, duration in GRAFANA_SUBSTITUTIONS.items():
        expr = expr.replace(variable, duration)
    return expr


def analyse(expr: str, known: Mapping[str, frozenset[str]]) -> Analysis:
    """Parse one PromQL expression and check it against ``known`` series.

    Args:
        expr: The expression (Grafana variables allowed).
        known: Series name -> labels it carries (:func:`known_series`).

    Returns:
        The series it selects, the labels of its result, and its problems.
    """
    import promql_parser  # noqa: PLC0415 - optional dependency (the ops extra)

    analysis = Analysis()
    try:
        tree = promql_parser.parse(substitute_grafana(expr))
    except Exception as error:  # noqa: BLE001 - the parser raises its own types; report them all
        analysis.problems.append(f"does not parse: {error}: {expr!r}")
        analysis.labels = None
        return analysis
    analysis.labels = _Walker(promql_parser, known, analysis).visit(tree).labels
    return analysis


def check_expression(expr: str, known: Mapping[str, frozenset[str]]) -> list[str]:
    """Return the problems of one expression (see :func:`analyse`)."""
    return analyse(expr, known).problems


class _Walker:
    """Infers result labels bottom-up and records problems on the way."""

    def __init__(self, module: Any, known: Mapping[str, frozenset[str]], analysis: Analysis) -> None:
        self._p = module
        self._known = known
        self._analysis = analysis

    def _problem(self, text: str) -> None:
        self._analysis.problems.append(text)

    def visit(self, node: Any) -> _Result:  # noqa: PLR0911 - one return per node type
        p = self._p
        if isinstance(node, p.VectorSelector):
            return self._selector(node)
        if isinstance(node, p.MatrixSelector):
            return self._selector(node.vector_selector)
        if isinstance(node, (p.ParenExpr, p.UnaryExpr, p.SubqueryExpr)):
            return self.visit(node.expr)
        if isinstance(node, (p.NumberLiteral, p.StringLiteral)):
            return _Result(frozenset(), scalar=True)
        if isinstance(node, p.Call):
            return self._call(node)
        if isinstance(node, p.AggregateExpr):
            return self._aggregate(node)
        if isinstance(node, p.BinaryExpr):
            return self._binary(node)
        self._problem(f"unsupported expression node {type(node).__name__}")
        return _Result(None)

    def _selector(self, node: Any) -> _Result:
        name = node.name
        matchers = list(node.matchers.matchers)
        for group in node.matchers.or_matchers:
            matchers.extend(group)
        if name is None:
            self._problem("a selector without a metric name cannot be checked")
            return _Result(None)
        self._analysis.series.add(name)
        self._analysis.matchers.setdefault(name, set()).update(m.name for m in matchers)
        labels = self._known.get(name)
        if labels is None:
            self._problem(f"unknown series {name!r}: not derived from semconv.INSTRUMENTS nor recorded")
            return _Result(None)
        for matcher in matchers:
            if matcher.name == "__name__":
                self._problem(f"{name}: a __name__ matcher defeats the name check")
                continue
            if matcher.name not in labels:
                self._problem(f"{name}: has no label {matcher.name!r} (it has {sorted(labels)})")
            self._check_value(name, matcher)
        return _Result(labels)

    def _check_value(self, name: str, matcher: Any) -> None:
        allowed = _ENUMERATIONS.get(matcher.name)
        value = matcher.value
        if allowed is None or "$" in value:
            return
        op = str(matcher.op)
        if op.endswith(("Re", "NotRe")):
            if not _WORDS.fullmatch(value):
                return
            values = value.split("|")
        else:
            values = [value]
        for item in values:
            if item not in allowed:
                self._problem(f"{name}: {matcher.name}={item!r} is not one of {sorted(allowed)}")

    def _call(self, node: Any) -> _Result:
        results = [self.visit(arg) for arg in node.args if not isinstance(arg, str)]
        function = node.func.name
        vectors = [r for r in results if not r.scalar]
        if function in {"vector", "time", "scalar", "pi"}:
            return _Result(frozenset(), scalar=function != "vector")
        if not vectors:
            return _Result(frozenset())
        labels = vectors[-1].labels if function == "histogram_quantile" else vectors[0].labels
        if labels is None:
            return _Result(None)
        if function == "histogram_quantile":
            if naming.BUCKET_LABEL not in labels:
                self._problem("histogram_quantile over a vector without the 'le' label")
            return _Result(labels - {naming.BUCKET_LABEL})
        if function in {"label_replace", "label_join"} and len(node.args) > 1:
            # label_replace(v, dst, replacement, src, regex); label_join(v, dst, separator, src...)
            sources = node.args[3:4] if function == "label_replace" else node.args[3:]
            for source in sources:
                if str(source.val) and str(source.val) not in labels:
                    self._problem(
                        f"{function} reads {str(source.val)!r}, which its input lacks ({sorted(labels)})"
                    )
            return _Result(labels | {str(node.args[1].val)})
        return _Result(labels)

    def _aggregate(self, node: Any) -> _Result:
        inner = self.visit(node.expr)
        if node.param is not None and not isinstance(node.param, (int, float, str)):
            self.visit(node.param)
        modifier = node.modifier
        grouping = list(modifier.labels) if modifier is not None else []
        if inner.labels is not None:
            for name in grouping:
                if name not in inner.labels:
                    self._problem(
                        f"aggregation groups by {name!r}, which the input lacks ({sorted(inner.labels)})"
                    )
        if str(node.op) in {"topk", "bottomk", "limitk"}:
            return inner
        if modifier is None:
            return _Result(frozenset())
        if str(modifier.type).endswith("By"):
            return _Result(frozenset(grouping))
        return _Result(None if inner.labels is None else inner.labels - set(grouping))

    def _binary(self, node: Any) -> _Result:  # noqa: PLR0911 - one exit per kind of operand pair
        lhs = self.visit(node.lhs)
        rhs = self.visit(node.rhs)
        if lhs.scalar and rhs.scalar:
            return _Result(frozenset(), scalar=True)
        if lhs.scalar:
            return rhs
        if rhs.scalar:
            return lhs
        op = str(node.op)
        modifier = node.modifier
        matching = modifier.matching if modifier is not None else None
        on_labels = (
            list(matching.labels) if matching is not None and str(matching.type).endswith("Include") else []
        )
        for side, result in (("left", lhs), ("right", rhs)):
            if result.labels is None:
                continue
            for name in on_labels:
                if name not in result.labels:
                    self._problem(
                        f"vector matching on {name!r}, which the {side} side lacks ({sorted(result.labels)})"
                    )
        group = list(modifier.group_labels or []) if modifier is not None else []
        card = str(modifier.card) if modifier is not None else ""
        if group:
            source = lhs if card.endswith("OneToMany") else rhs
            if source.labels is not None:
                for name in group:
                    if name not in source.labels:
                        self._problem(f"group_left/right copies {name!r}, which the other side lacks")
        if lhs.labels is None or rhs.labels is None:
            return _Result(None)
        if op == "or":
            return _Result(lhs.labels | rhs.labels)
        if card.endswith("OneToMany"):
            return _Result(rhs.labels | set(group))
        return _Result(lhs.labels | set(group))


def recorded_series(rules: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Return the output labels of every recording rule of a rules document, in file order."""
    recorded: dict[str, frozenset[str]] = {}
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if "record" in rule:
                labels = analyse(str(rule["expr"]), known_series(recorded)).labels
                recorded[str(rule["record"])] = labels if labels is not None else frozenset()
    return recorded


def check_rules(rules: Mapping[str, Any]) -> list[str]:
    """Check a Prometheus rules document (``alerts/rules.yml`` as loaded YAML).

    Every expression is analysed against the derived series and the rules recorded *before*
    it; an alert must carry ``severity`` (one of :data:`RULE_SEVERITIES`), a ``summary``, a
    ``description`` and a ``runbook_url`` ending in ``docs/runbooks/<alertname>.md``, and its
    annotations may use only labels its expression keeps.

    Returns:
        One line per problem, prefixed with the rule's name.
    """
    problems: list[str] = []
    recorded: dict[str, frozenset[str]] = {}
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = str(rule.get("record") or rule.get("alert"))
            analysis = analyse(str(rule.get("expr", "")), known_series(recorded))
            problems += [f"{name}: {problem}" for problem in analysis.problems]
            if "record" in rule:
                recorded[name] = analysis.labels if analysis.labels is not None else frozenset()
                continue
            problems += [f"{name}: {problem}" for problem in _check_alert(name, rule, analysis.labels)]
    return problems


def _check_alert(name: str, rule: Mapping[str, Any], labels: frozenset[str] | None) -> list[str]:
    problems: list[str] = []
    severity = rule.get("labels", {}).get("severity")
    if severity not in RULE_SEVERITIES:
        problems.append(f"severity {severity!r} is not one of {RULE_SEVERITIES}")
    annotations = rule.get("annotations", {})
    problems.extend(
        f"has no {key} annotation"
        for key in ("summary", "description", "runbook_url")
        if not annotations.get(key)
    )
    if not str(annotations.get("runbook_url", "")).endswith(f"docs/runbooks/{name}.md"):
        problems.append(f"runbook_url must end with docs/runbooks/{name}.md")
    if "$value" not in str(annotations.get("description", "")):
        problems.append("the description does not show the value")
    if labels is not None:
        used = {label for text in annotations.values() for label in _TEMPLATE_LABEL.findall(str(text))}
        problems.extend(
            f"annotations use $labels.{label}, which the expression drops" for label in sorted(used - labels)
        )
    return problems


def check_rules_test(tests: Mapping[str, Any]) -> list[str]:
    """Check that every input series of a ``promtool test rules`` file is a derived series."""
    import promql_parser  # noqa: PLC0415 - optional dependency (the ops extra)

    problems: list[str] = []
    known = naming.series_labels()
    for case in tests.get("tests", []):
        for item in case.get("input_series", []):
            selector = promql_parser.parse(str(item["series"]))
            if not isinstance(selector, promql_parser.VectorSelector) or selector.name not in known:
                problems.append(
                    f"{case.get('name')}: input series {item['series']!r} is not derived from semconv"
                )
                continue
            extra = {m.name for m in selector.matchers.matchers} - known[str(selector.name)]
            if extra:
                problems.append(f"{case.get('name')}: {selector.name} has no labels {sorted(extra)}")
    return problems


def rule_expressions(rules: Mapping[str, Any]) -> list[str]:
    """Return the expression of every rule of a rules document, in file order."""
    return [str(rule["expr"]) for group in rules.get("groups", []) for rule in group.get("rules", [])]


def dashboard_expressions(dashboard: Mapping[str, Any]) -> list[str]:
    """Return every PromQL expression of a dashboard: panel targets, annotations, variable queries."""
    found = [
        str(target["expr"])
        for panel in _panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    found += [str(a["expr"]) for a in dashboard.get("annotations", {}).get("list", []) if "expr" in a]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query") if variable.get("type") == "query" else None
        text = query.get("query") if isinstance(query, Mapping) else query
        match = _LABEL_VALUES.match(str(text)) if text else None
        if match is not None and match.group("expr"):
            found.append(match.group("expr"))
    return found


def markdown_expressions(text: str) -> list[str]:
    """Return every fenced ```` ```promql ```` block of a Markdown document."""
    return [block.strip() for block in _PROMQL_BLOCK.findall(text)]


def check_dashboard(dashboard: Mapping[str, Any], recorded: Mapping[str, frozenset[str]]) -> list[str]:
    """Check every panel query and query-variable of one dashboard (loaded JSON).

    Args:
        dashboard: The dashboard model.
        recorded: The recording rules' outputs (:func:`recorded_series` of our rules).

    Returns:
        One line per problem, prefixed with the dashboard's uid and the panel's title.
    """
    problems: list[str] = []
    known = known_series(recorded)
    uid = dashboard.get("uid")
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr is None:
                problems.append(f"{uid}/{panel.get('title')}: a target without a PromQL expr")
                continue
            problems += [f"{uid}/{panel.get('title')}: {p}" for p in check_expression(str(expr), known)]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            problems += [
                f"{uid}/annotation {annotation.get('name')}: {p}"
                for p in check_expression(str(annotation["expr"]), known)
            ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, Mapping) else query
        problems += [f"{uid}/${variable.get('name')}: {p}" for p in _check_label_values(str(text), known)]
    return problems


def _check_label_values(text: str, known: Mapping[str, frozenset[str]]) -> list[str]:
    match = _LABEL_VALUES.match(text)
    if match is None:
        return [f"only label_values(...) variable queries are checked, got {text!r}"]
    label = match.group("label")
    expr = match.group("expr")
    if expr is None:
        all_labels = set().union(*known.values())
        return [] if label in all_labels else [f"label {label!r} is on no known series"]
    analysis = analyse(expr, known)
    problems = list(analysis.problems)
    if analysis.labels is not None and label not in analysis.labels:
        problems.append(f"label_values asks for {label!r}, which {expr!r} lacks")
    return problems


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def check_markdown(text: str, recorded: Mapping[str, frozenset[str]]) -> list[str]:
    """Check every fenced ```` ```promql ```` block of a Markdown document (a runbook)."""
    known = known_series(recorded)
    problems: list[str] = []
    for expr in markdown_expressions(text):
        problems += check_expression(expr, known)
    return problems
