"""``rtml models list|show|lineage`` on a real store directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rtml.services.prediction.cli import models
from rtml.shared.model_store import ModelStore

from tests.unit.test_prediction_handlers import FEATURE_SET, train_booster


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """v1 -> v2 -> v3 and v1 -> v2b (eta), plus a recs model; v2 is the eta champion."""
    store = ModelStore(tmp_path_factory.mktemp("models"))
    booster = train_booster()
    fields = dict(feature_set=FEATURE_SET, data_range={"rows": 512}, params={"max_depth": 3})
    for version, parent, rmse in [("v1", None, 3.0), ("v2", "v1", 2.0), ("v3", "v2", 1.5),
                                  ("v2b", "v1", 2.5)]:  # fmt: skip
        store.register(
            booster,
            task="eta",
            version=version,
            parent_version=parent,
            metrics={"rmse": rmse},
            **fields,
        )
    store.register(booster, task="recs", version="r1", metrics={}, **fields)
    store.set_champion("eta", "v2")
    return store


def run(store: ModelStore, *args: str) -> Result:
    return CliRunner().invoke(models, ["--store", str(store), *args])


def test_list_shows_every_version_oldest_first_and_marks_the_champion(store: ModelStore) -> None:
    result = run(store, "list")

    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["VERSION", "TASK", "PARENT", "FEATURES", "CREATED", "METRICS"]
    assert [row.split()[0] for row in rows] == ["v1", "*", "v3", "v2b", "r1"]
    champion = rows[1].split()
    assert champion[:5] == ["*", "v2", "eta", "v1", FEATURE_SET]
    assert champion[-1] == "rmse=2"


def test_list_filters_by_task(store: ModelStore) -> None:
    result = run(store, "list", "--task", "recs")
    assert [row.split()[0] for row in result.output.splitlines()[1:]] == ["r1"]


def test_list_of_an_empty_store_says_so(tmp_path: Path) -> None:
    result = run(ModelStore(tmp_path), "list")
    assert (result.exit_code, result.output.strip()) == (0, f"no model versions in {tmp_path}")


def test_show_prints_the_record_and_whether_it_is_champion(store: ModelStore) -> None:
    shown = json.loads(run(store, "show", "v2").output)
    assert shown == store.record("v2").model_dump(mode="json") | {"champion": True}
    assert json.loads(run(store, "show", "v3").output)["champion"] is False


def test_lineage_draws_the_ancestry_and_the_descendants(store: ModelStore) -> None:
    result = run(store, "lineage", "v2")

    assert result.exit_code == 0, result.output
    # v2b, a sibling of v2, is not part of v2's story
    assert result.output.splitlines() == [
        "v1  eta@1  rmse=3",
        "└── v2  eta@1  rmse=2 [champion] ◀",
        "    └── v3  eta@1  rmse=1.5",
    ]


def test_an_unknown_version_is_a_clear_error(store: ModelStore) -> None:
    for command in ("show", "lineage", "promote"):
        result = run(store, command, "nope")
        assert result.exit_code == 1
        assert "no model version 'nope'" in result.output


def test_promote_refuses_a_version_that_does_not_load(tmp_path: Path) -> None:
    damaged = ModelStore(tmp_path)
    for version in ("good", "bad"):
        damaged.register(train_booster(), task="eta", version=version, feature_set=FEATURE_SET,
                         data_range={}, params={}, metrics={})  # fmt: skip
    damaged.set_champion("eta", "good")
    artifact = tmp_path / "versions" / "bad" / "model.ubj"
    artifact.write_bytes(artifact.read_bytes()[:-8] + b"tampered")

    result = run(damaged, "promote", "bad")

    assert result.exit_code == 1
    assert "it was modified after registration" in result.output
    assert damaged.champion("eta").version == "good"
