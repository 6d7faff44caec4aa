"""What the monitoring tests know about the rules and the dashboard of
infra/k8s/components/monitoring: where they are, and which metrics they name."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml

from tests.infra import k8s
from tests.tools import missing_tool

MONITORING = k8s.COMPONENTS / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
RULE_TESTS = MONITORING / "prometheus-rules.test.yaml"
DASHBOARD = MONITORING / "rtml-dashboard.json"
# the name the rule tests load the PrometheusRule's spec under
RULES_FILE = "rules.yml"
# rtml's own metric names; recording rules (rtml:...) are made by the rules themselves
METRIC = re.compile(r"\brtml_[a-z0-9_]+\b")
# what Grafana replaces before a query reaches Prometheus
GRAFANA_VARIABLES = {"$__rate_interval": "5m", '"$job"': '".+"'}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing_tool(
            "promtool is not installed (apt-get install -y prometheus: Debian's package has it)"
        )
    return path  # type: ignore[return-value]


def rules_spec() -> dict:
    """The PrometheusRule's spec: a Prometheus rules file."""
    return yaml.safe_load(RULES.read_text())["spec"]


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in rules_spec()["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_expressions() -> list[str]:
    """Each query of each panel, as Prometheus receives it once Grafana filled in its
    variables."""
    expressions = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            expressions.append(expr)
    return expressions


def metrics_named(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC.findall(expr)}


def write_rules(folder: Path) -> Path:
    """The rules file and its unit tests side by side in ``folder``, as promtool wants them."""
    (folder / RULES_FILE).write_text(yaml.safe_dump(rules_spec(), sort_keys=False))
    tests = folder / RULE_TESTS.name
    tests.write_text(RULE_TESTS.read_text())
    return tests
