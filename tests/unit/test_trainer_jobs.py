from __future__ import annotations

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
from rtml.shared.model_store import ModelStore
from rtml.shared.warehouse import Located, Warehouse

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
