"""``rtml evaluate cb-bakeoff --quick --json``: the reduced bake-off CI runs."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from rtml.cli import main

PEERS = {"vw": "vowpalwabbit", "mabwiser": "mabwiser"}


def test_quick_bakeoff_reports_every_method_against_the_skyline():
    pytest.importorskip("sklearn", reason="the bake-off datasets ship with scikit-learn")

    outcome = CliRunner().invoke(main, ["evaluate", "cb-bakeoff", "--quick", "--json"])

    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout)
    assert report["setting"] == {
        "datasets": ["digits"], "seeds": 3, "quick": True, "rounds_per_pass": 500,
        "methods": ["ours", "vw", "mabwiser"],
    }  # fmt: skip
    rows = {row["method"]: row for row in report["rows"]}
    families = {row["family"] for row in rows.values()}
    for family, package in PEERS.items():
        if importlib.util.find_spec(package) is None:
            assert any(package in line for line in report["skipped"])
        else:
            assert family in families
    skyline = rows["skyline (full information)"]
    assert skyline["ratio_to_skyline"] == 1.0
    assert rows["uniform random"]["reward"] == pytest.approx(0.1, abs=0.05)
    ours = [row for row in rows.values() if row["family"] == "ours"]
    assert {row["method"] for row in ours} == {
        "ours epsilon-greedy", "ours LinUCB", "ours linear TS",
    }  # fmt: skip
    for row in rows.values():
        assert row["reward_low"] <= row["reward"] <= row["reward_high"]
        assert row["decisions_per_s"] > 0
    # the learners learn: every one of ours beats random by far on 500 rounds of digits
    assert min(row["reward"] for row in ours) > 3 * rows["uniform random"]["reward"]
    assert report["targets"]["digits"]["our_best"] in {row["method"] for row in ours}
    assert report["peak_rss_mib"] > 0


def test_bakeoff_names_the_valid_datasets_on_a_typo():
    outcome = CliRunner().invoke(main, ["evaluate", "cb-bakeoff", "--datasets", "digit"])

    assert outcome.exit_code == 2
    assert "digits, wine, breast_cancer" in outcome.output
