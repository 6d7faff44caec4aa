from __future__ import annotations

import json

from click.testing import CliRunner

from rtml.cli import main


def test_experiment_cli_prints_the_json_headline() -> None:
    result = CliRunner().invoke(
        main, ["experiment", "ab-vs-bandit", "--runs", "3", "--cap", "100000", "--json"]
    )
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    assert set(table["headline"]) == {
        "method", "correct", "samples_vs_ab", "regret_vs_ab", "samples_vs_lower_bound",
        "source_rule_correct",
    }  # fmt: skip
    assert table["settings"]["rates"] == [0.01, 0.0105] and len(table["methods"]) == 5


def test_every_subcommand_is_mounted() -> None:
    assert {"broker", "up", "topics", "simulate", "experiment", "train", "models"} <= set(
        main.commands
    )


def test_train_from_scratch_then_fine_tune_from_the_warehouse(tmp_path, monkeypatch) -> None:
    from rtml.shared.model_store import ModelStore
    from rtml.shared.warehouse import Warehouse

    from tests.unit.test_trainer_jobs import T0, fill

    monkeypatch.setenv("RTML_WAREHOUSE", str(tmp_path / "wh"))
    monkeypatch.setenv("RTML_MODEL_STORE", str(tmp_path / "models"))
    warehouse = Warehouse(tmp_path / "wh")
    fill(warehouse, T0, 600, seed=1)
    runner = CliRunner()
    first = runner.invoke(main, ["train", "--from-scratch", "--task", "eta", "--no-announce"])
    assert first.exit_code == 0, first.output
    store = ModelStore(tmp_path / "models")
    champion = store.champion("eta")
    assert champion is not None and f"{champion.version} is the eta champion" in first.output

    fill(
        warehouse,
        champion.data_range["until_label_ts"] + 1,
        400,
        seed=2,
        travel_factor=1.5,
        first_offset=600,
    )
    second = runner.invoke(main, ["train", "--fine-tune", "--discard-after-use", "--no-announce"])
    assert second.exit_code == 0, second.output
    child = store.latest("eta")
    assert (
        child.parent_version == champion.version
        and "discarded 400 consumed examples" in second.output
    )


def test_train_names_the_missing_task_when_several_are_loaded(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("RTML_TRAINER_TASK", raising=False)
    monkeypatch.setenv("RTML_MODEL_STORE", str(tmp_path / "models"))
    result = CliRunner().invoke(main, ["train", "--fine-tune", "--no-announce"])
    assert result.exit_code == 2, result.output
    assert "--task is needed: RTML_TRAINER_TASK is not set and 2 tasks are loaded" in result.output
