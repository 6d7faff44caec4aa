"""Offline checks of the monitoring as code (infra/k8s/components/monitoring): the alert
and recording rules pass `promtool check rules` and their unit tests (`promtool test
rules`), every dashboard query parses, and the dashboard is wired to its variables.
That every metric they name exists on the running services: tests/integration/
test_operability.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.infra import monitoring


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_pass_promtool_check_and_their_unit_tests(tmp_path):
    promtool = monitoring.promtool()
    tests = monitoring.write_rules(tmp_path)

    checked = run(promtool, "check", "rules", monitoring.RULES_FILE, cwd=tmp_path)
    tested = run(promtool, "test", "rules", tests.name, cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_that_fires_it():
    spec = monitoring.rules_spec()
    alerts = {
        rule["alert"] for group in spec["groups"] for rule in group["rules"] if "alert" in rule
    }
    cases = yaml.safe_load(monitoring.RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in cases
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts and alerts == fired, f"alerts no test fires: {sorted(alerts - fired)}"
    assert {
        "RtmlServiceNotReady", "RtmlConsumerLagGrowing", "RtmlDeadLetters",
        "RtmlPredictionLatencyHigh", "RtmlNoLabelJoins", "RtmlDriftStorm",
    } <= alerts  # fmt: skip


def test_every_dashboard_query_is_valid_promql(tmp_path):
    promtool = monitoring.promtool()
    # promtool parses PromQL offline only inside a rules file: one recording rule a query
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, expr in enumerate(monitoring.dashboard_expressions())
    ]
    (tmp_path / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )

    checked = run(promtool, "check", "rules", "queries.yml", cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_covers_what_an_operator_watches_and_uses_its_variables():
    board = monitoring.dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    panels = [p for p in board["panels"] if p["type"] != "row"]
    named = monitoring.metrics_named(monitoring.dashboard_expressions())

    assert board["uid"] == "rtml-overview"
    assert variables["datasource"]["type"] == "datasource"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert all(
        p["targets"] and all('job=~"$job"' in t["expr"] for t in p["targets"]) for p in panels
    )
    # throughput, latency per hop, lag, DLQ rate, error and traffic per version, readiness
    assert {
        "rtml_ingest_events_accepted_total", "rtml_predictions_total",
        "rtml_prediction_latency_seconds_bucket", "rtml_consumer_lag", "rtml_dlq_messages_total",
        "rtml_model_live_error_sum", "rtml_router_arm_p_best", "rtml_ready",
    } <= named  # fmt: skip
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
