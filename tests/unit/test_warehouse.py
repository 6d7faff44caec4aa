from __future__ import annotations

from pathlib import Path

import numpy as np
from rtml.shared.contracts import FeatureVector, TrainingExample
from rtml.shared.warehouse import Located, Warehouse

HOUR = 3600.0
T0 = 1_717_412_400.0  # on the hour


def example(index: int, label_ts: float, task: str = "eta") -> TrainingExample:
    features = FeatureVector(
        feature_set="eta@1", names=["a", "b"], values=[float(index), index * 2.0],
        freshness_s=[None, 1.0], defaulted=[False, False],
    )  # fmt: skip
    return TrainingExample(
        id=f"req-{index}", ts=label_ts, task=task, features=features, label=index + 0.5,
        model_version="v1", prediction=1.0, request_ts=label_ts - 60, label_ts=label_ts,
    )  # fmt: skip


def located(
    offsets_and_times: list[tuple[int, float]], source: str = "rtml.training.examples-0"
) -> list[Located]:
    return [Located(example(offset, ts), source, offset) for offset, ts in offsets_and_times]


def test_round_trip_partitioned_by_task_and_hour(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    files = warehouse.write(located([(0, T0 + 10), (1, T0 + 20), (2, T0 + HOUR + 5)]))
    assert [f.parent.name for f in files] == ["hour=2024-06-03T11", "hour=2024-06-03T12"]
    assert all(f.parent.parent.name == "task=eta" for f in files)
    table = warehouse.read("eta")
    assert list(table.ids) == ["req-0", "req-1", "req-2"]
    np.testing.assert_array_equal(table.X, [[0, 0], [1, 2], [2, 4]])
    np.testing.assert_array_equal(table.y, [0.5, 1.5, 2.5])
    assert table.feature_names == ["a", "b"]


def test_files_hold_contiguous_offset_ranges_so_a_crash_leaves_a_prefix(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    # hours alternate: each change of hour starts a new file
    files = warehouse.write(located([(10, T0), (11, T0 + HOUR), (12, T0), (13, T0)]))
    assert [f.name.rsplit("-", 2)[1:] for f in files] == [
        ["000000000010", "000000000010.parquet"],
        ["000000000011", "000000000011.parquet"],
        ["000000000012", "000000000013.parquet"],
    ]
    assert warehouse.resume_offsets() == {"rtml.training.examples-0": 14}
    files[-1].unlink()  # as if the crash came before the last rename
    assert warehouse.resume_offsets() == {"rtml.training.examples-0": 12}


def test_rewriting_a_range_is_idempotent_and_ids_are_read_once(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    batch = located([(0, T0), (1, T0 + 1)])
    warehouse.write(batch)
    warehouse.write(batch)  # replay of the same range: same file name, replaced
    warehouse.write(located([(5, T0 + 2)], source="rtml.training.examples-1")
                    + [Located(example(0, T0), "rtml.training.examples-1", 6)])  # fmt: skip
    assert sorted(warehouse.read("eta").ids) == ["req-0", "req-1", "req-5"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_read_filters_by_label_time_and_discard_removes_exactly_a_range(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    warehouse.write(located([(0, T0), (1, T0 + HOUR), (2, T0 + HOUR + 60), (3, T0 + 2 * HOUR)]))
    newer = warehouse.read("eta", since_ts=T0 + HOUR)
    assert list(newer.ids) == ["req-1", "req-2", "req-3"]
    assert warehouse.discard(newer.files, since_ts=T0 + HOUR + 30, until_ts=T0 + 2 * HOUR + 1) == 2
    assert list(warehouse.read("eta").ids) == ["req-0", "req-1"]
    assert warehouse.resume_offsets() == {"rtml.training.examples-0": 4}
    assert len(warehouse.read("recs")) == 0
