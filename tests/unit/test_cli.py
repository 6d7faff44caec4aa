from __future__ import annotations

import json

from click.testing import CliRunner

from rtml.cli import main


def test_experiment_cli_prints_the_json_headline() -> None:
    result = CliRunner().invoke(main, ["experiment", "ab-vs-bandit", "--runs", "3", "--cap", "100000", "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    assert set(table["headline"]) == {
        "method", "correct", "samples_vs_ab", "regret_vs_ab", "samples_vs_lower_bound", "source_rule_correct",
    }  # fmt: skip
    assert table["settings"]["rates"] == [0.01, 0.0105] and len(table["methods"]) == 5


def test_every_subcommand_is_mounted() -> None:
    assert {"broker", "up", "topics", "simulate", "experiment"} <= set(main.commands)
