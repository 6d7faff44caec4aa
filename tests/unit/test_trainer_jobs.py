from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rtml.services.trainer.jobs import (
    NotEnoughData,
    discard_consumed,
    fine_tune_candidate,
    register,
    scratch_candidate,
)
from rtml.shared.contracts import FeatureVector, TrainingExample
from rtml.shared.model_lineage import render_lineage_tree
from rtml.shared.model_store import ModelStore
from rtml.shared.tasks.spec import TaskSpec
from rtml.shared.warehouse import Located, Warehouse

from tests import binary_task
from tests.unit.test_trainer import NAMES, deliveries

T0 = 1_717_412_400.0


def fill(
    warehouse: Warehouse,
    start_ts: float,
    n: int,
    seed: int,
    travel_factor: float = 1.0,
    first_offset: int = 0,
) -> None:
    X, y = deliveries(n, np.random.default_rng(seed), travel_factor)
    located = []
    for i, (row, label) in enumerate(zip(X, y, strict=True)):
        ts = start_ts + i * 10.0
        features = FeatureVector(
            feature_set="eta@1",
            names=NAMES,
            values=list(row),
            freshness_s=[None] * 3,
            defaulted=[False] * 3,
        )
        example = TrainingExample(
            id=f"req-{seed}-{i}", ts=ts, task="eta", features=features, label=float(label),
            model_version="v0", prediction=0.0, request_ts=ts - 1800, label_ts=ts,
        )  # fmt: skip
        located.append(Located(example, "rtml.training.examples-0", first_offset + i))
    warehouse.write(located)


def test_fine_tune_records_lineage_and_range_and_discards_exactly_what_it_used(
    tmp_path: Path,
) -> None:
    warehouse, store = Warehouse(tmp_path / "wh"), ModelStore(tmp_path / "models")
    fill(warehouse, T0, 1500, seed=1)
    parent = register(store, scratch_candidate(warehouse, "eta", rounds=60))
    assert parent.parent_version is None and parent.data_range["examples"] == 1500

    after = parent.data_range["until_label_ts"]
    fill(warehouse, after + 5, 800, seed=2, travel_factor=1.5, first_offset=1500)
    candidate = fine_tune_candidate(warehouse, store, parent.version, rounds=30)
    assert candidate.better_than_parent
    child = register(store, candidate)
    assert child.parent_version == parent.version
    assert child.data_range["since_label_ts"] >= after and child.data_range["examples"] == 800
    assert [r.version for r in store.lineage(child.version)] == [child.version, parent.version]

    fill(warehouse, child.data_range["until_label_ts"] + 3600, 300, seed=3, first_offset=2300)
    assert discard_consumed(warehouse, candidate) == 800
    left = warehouse.read("eta")
    assert sorted(left.ids) == sorted(
        [f"req-1-{i}" for i in range(1500)] + [f"req-3-{i}" for i in range(300)]
    )


def test_too_little_data_is_refused(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    fill(warehouse, T0, 50, seed=1)
    with pytest.raises(NotEnoughData, match="50 eta examples"):
        scratch_candidate(warehouse, "eta")


# --- a binary task: its Model drives the fit and the keep/drop ------------------------


@pytest.fixture
def slow_kitchen() -> Iterator[TaskSpec]:
    with binary_task.loaded() as spec:
        yield spec


def fill_binary(
    warehouse: Warehouse, start_ts: float, n: int, seed: int, rush: float = 0.0,
    first_offset: int = 0,
) -> None:  # fmt: skip
    X, y = binary_task.examples(n, np.random.default_rng(seed), rush)
    located = [
        Located(
            binary_task.training_example(f"req-{seed}-{i}", row, label, start_ts + i * 10.0),
            "rtml.training.examples-0",
            first_offset + i,
        )
        for i, (row, label) in enumerate(zip(X, y, strict=True))
    ]
    warehouse.write(located)


def test_a_binary_task_is_fitted_with_its_objective_and_judged_by_its_metric(
    tmp_path: Path, slow_kitchen: TaskSpec
) -> None:
    warehouse, store = Warehouse(tmp_path / "wh"), ModelStore(tmp_path / "models")
    fill_binary(warehouse, T0, 3000, seed=1)
    scratch = scratch_candidate(warehouse, slow_kitchen.name, rounds=40)
    params = scratch.run.params
    assert (params["objective"], params["eval_metric"]) == ("binary:logistic", "logloss")
    assert set(scratch.metrics) == {"train_logloss", "holdout_logloss", "n_train"}
    holdout = warehouse.read(slow_kitchen.name).y[2400:]
    # it learned something: better than predicting the base rate
    assert scratch.metrics["holdout_logloss"] < 0.95 * binary_task.base_rate_log_loss(holdout)
    unseen = binary_task.vectors(500, np.random.default_rng(9))
    probabilities = scratch.run.booster.inplace_predict(unseen)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    parent = register(store, scratch)

    # a rush makes busy kitchens slow: the fine-tune learns it and is kept by its log loss
    fill_binary(warehouse, parent.data_range["until_label_ts"] + 5, 2000, seed=2, rush=2.5,
                first_offset=3000)  # fmt: skip
    tuned = fine_tune_candidate(warehouse, store, parent.version, rounds=30)
    assert tuned.metrics["holdout_logloss"] < tuned.metrics["parent_holdout_logloss"]
    assert tuned.better_than_parent
    assert tuned.judgement.startswith("holdout logloss 0.")
    child = register(store, tuned)
    assert child.params["eval_metric"] == "logloss"
    assert "parent_holdout_logloss=" in render_lineage_tree(store, child.version)


@pytest.mark.parametrize(
    ("metric", "kept"),
    # the same holdout: the fine-tune's log loss is lower, and so is its AUC
    [("logloss", True), ("auc", False)],
)
def test_the_declared_metric_and_its_direction_keep_or_drop_a_fine_tune(
    tmp_path: Path, slow_kitchen: TaskSpec, metric: str, kept: bool
) -> None:
    warehouse, store = Warehouse(tmp_path / "wh"), ModelStore(tmp_path / "models")
    fill_binary(warehouse, T0, 1000, seed=1)
    parent = register(store, scratch_candidate(warehouse, slow_kitchen.name, rounds=20))
    fill_binary(warehouse, parent.data_range["until_label_ts"] + 5, 1000, seed=2,
                first_offset=1000)  # fmt: skip
    candidate = fine_tune_candidate(warehouse, store, parent.version, rounds=5)
    figures = {
        "holdout_logloss": 0.40, "parent_holdout_logloss": 0.45,
        "holdout_auc": 0.70, "parent_holdout_auc": 0.72,
    }  # fmt: skip
    judged = dataclasses.replace(candidate, metric=metric, metrics=figures)
    assert judged.better_than_parent is kept


# XGBoost warns of the one-class holdout: what this test makes
@pytest.mark.filterwarnings("ignore:.*contains only positive or negative samples")
def test_a_metric_undefined_on_the_holdout_is_left_out_and_decides_nothing(
    tmp_path: Path,
) -> None:
    warehouse, store = Warehouse(tmp_path / "wh"), ModelStore(tmp_path / "models")
    by_auc = dataclasses.replace(binary_task.TASK.model, metric="auc")
    with binary_task.loaded(by_auc) as spec:
        fill_binary(warehouse, T0, 1000, seed=1)
        parent = register(store, scratch_candidate(warehouse, spec.name, rounds=20))
        since = parent.data_range["until_label_ts"] + 5
        fill_binary(warehouse, since, 800, seed=2, first_offset=1000)
        # the newest 200, the fine-tune's holdout, are all negative: an AUC over one
        # class is undefined
        X, _ = binary_task.examples(200, np.random.default_rng(3))
        warehouse.write([
            Located(binary_task.training_example(f"neg-{i}", row, 0.0, since + 8000 + i),
                    "rtml.training.examples-0", 1800 + i)
            for i, row in enumerate(X)
        ])  # fmt: skip
        candidate = fine_tune_candidate(warehouse, store, parent.version, rounds=5)
        assert set(candidate.metrics) == {"train_auc", "n_train"}
        assert candidate.better_than_parent and candidate.judgement == "holdout auc undefined"
        assert register(store, candidate).metrics == candidate.metrics
