"""The warehouse on a local directory and on a real S3 API (moto's server on 127.0.0.1):
partitions, exactly-once files, reads through pyarrow.dataset, resuming after a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from rtml.shared.contracts import FeatureVector, TrainingExample
from rtml.shared.object_storage import arrow_filesystem
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


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "warehouse")
    return request.getfixturevalue("s3").new_prefix("warehouse")


def names(warehouse: Warehouse) -> list[str]:
    """Every object under the warehouse, hidden ones included, relative to its root."""
    filesystem, base = arrow_filesystem(warehouse.location)
    found = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(i.path.removeprefix(base + "/") for i in found if i.type == pafs.FileType.File)


def delete(warehouse: Warehouse, path: str) -> None:
    arrow_filesystem(warehouse.location)[0].delete_file(path)


def test_round_trip_partitioned_by_task_and_hour(root: str) -> None:
    warehouse = Warehouse(root)
    files = warehouse.write(located([(0, T0 + 10), (1, T0 + 20), (2, T0 + HOUR + 5)]))
    assert [f.rsplit("/", 3)[1:3] for f in files] == [
        ["task=eta", "hour=2024-06-03T11"],
        ["task=eta", "hour=2024-06-03T12"],
    ]
    table = warehouse.read("eta")
    assert list(table.ids) == ["req-0", "req-1", "req-2"]
    np.testing.assert_array_equal(table.X, [[0, 0], [1, 2], [2, 4]])
    np.testing.assert_array_equal(table.y, [0.5, 1.5, 2.5])
    assert table.feature_names == ["a", "b"]


def test_files_hold_contiguous_offset_ranges_so_a_crash_leaves_a_prefix(root: str) -> None:
    warehouse = Warehouse(root)
    # hours alternate: each change of hour starts a new file
    files = warehouse.write(located([(10, T0), (11, T0 + HOUR), (12, T0), (13, T0)]))
    assert [f.rsplit("-", 2)[1:] for f in files] == [
        ["000000000010", "000000000010.parquet"],
        ["000000000011", "000000000011.parquet"],
        ["000000000012", "000000000013.parquet"],
    ]
    assert warehouse.resume_offsets() == {"rtml.training.examples-0": 14}
    delete(warehouse, files[-1])  # as if the crash came before the last file appeared
    assert warehouse.resume_offsets() == {"rtml.training.examples-0": 12}


def test_rewriting_a_range_is_idempotent_and_ids_are_read_once(root: str) -> None:
    warehouse = Warehouse(root)
    batch = located([(0, T0), (1, T0 + 1)])
    warehouse.write(batch)
    warehouse.write(batch)  # replay of the same range: same file name, replaced
    warehouse.write(located([(5, T0 + 2)], source="rtml.training.examples-1")
                    + [Located(example(0, T0), "rtml.training.examples-1", 6)])  # fmt: skip
    assert sorted(warehouse.read("eta").ids) == ["req-0", "req-1", "req-5"]
    assert names(warehouse) == [
        "task=eta/hour=2024-06-03T11/rtml.training.examples-0-000000000000-000000000001.parquet",
        "task=eta/hour=2024-06-03T11/rtml.training.examples-1-000000000005-000000000006.parquet",
    ]


def test_read_filters_by_label_time_and_discard_removes_exactly_a_range(root: str) -> None:
    warehouse = Warehouse(root)
    warehouse.write(located([(0, T0), (1, T0 + HOUR), (2, T0 + HOUR + 60), (3, T0 + 2 * HOUR)]))
    newer = warehouse.read("eta", since_ts=T0 + HOUR)
    assert list(newer.ids) == ["req-1", "req-2", "req-3"]
    assert warehouse.discard(newer.files, since_ts=T0 + HOUR + 30, until_ts=T0 + 2 * HOUR + 1) == 2
    assert list(warehouse.read("eta").ids) == ["req-0", "req-1"]
    assert warehouse.resume_offsets() == {"rtml.training.examples-0": 4}
    assert len(warehouse.read("recs")) == 0


def test_reads_take_only_the_partitions_of_the_task_and_the_hours_asked_for(root: str) -> None:
    warehouse = Warehouse(root)
    warehouse.write(located([(0, T0), (1, T0 + HOUR), (2, T0 + 3 * HOUR)]))
    warehouse.write([Located(example(9, T0 + HOUR, task="recs"), "rtml.training.examples-1", 9)])

    middle = warehouse.read("eta", since_ts=T0 + HOUR, until_ts=T0 + 2 * HOUR)

    assert list(middle.ids) == ["req-1"]
    assert [f.rsplit("/", 3)[1:3] for f in middle.files] == [["task=eta", "hour=2024-06-03T12"]]
    assert list(warehouse.read("recs").ids) == ["req-9"]


# writes three runs (one file each) and is killed (SIGKILL) once the second file is written
_CRASHING_WRITER = """
import sys, time
from rtml.shared import warehouse as module
from tests.unit.test_warehouse import HOUR, T0, located

warehouse = module.Warehouse(sys.argv[1])
write_run = warehouse._write_run
written = []

def write_then_hang(run):
    written.append(write_run(run))
    if len(written) == 2:
        print("two files written", flush=True)
        time.sleep(600)
    return written[-1]

warehouse._write_run = write_then_hang
warehouse.write(located([(0, T0), (1, T0), (2, T0 + HOUR), (3, T0 + 2 * HOUR), (4, T0 + 2 * HOUR)]))
"""


def test_a_writer_killed_mid_batch_resumes_exactly_once(root: str) -> None:
    batch = [(0, T0), (1, T0), (2, T0 + HOUR), (3, T0 + 2 * HOUR), (4, T0 + 2 * HOUR)]
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, root], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "two files written\n"
    finally:
        child.kill()
        child.wait()

    # a new writer resumes where the files end, as the collector does on reassignment
    warehouse = Warehouse(root)
    resume = warehouse.resume_offsets()["rtml.training.examples-0"]
    assert resume == 3
    warehouse.write(located([item for item in batch if item[0] >= resume]))

    table = warehouse.read("eta")
    assert list(table.ids) == [f"req-{offset}" for offset, _ in batch]
    offsets = [name.rsplit("/", 1)[1] for name in names(warehouse)]
    assert offsets == [
        f"rtml.training.examples-0-{first:012d}-{last:012d}.parquet"
        for first, last in [(0, 1), (2, 2), (3, 4)]
    ]
