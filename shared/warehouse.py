"""The warehouse: training examples as a Parquet dataset partitioned by task and hour.

Layout: ``ROOT/task=eta/hour=2026-11-27T13/<topic>-<partition>-<first>-<last>.parquet``
where first..last is the contiguous range of source offsets the file holds.

Exactly once, without transactions (the pattern of Kafka Connect's file sinks):
each file is written to a temporary name and renamed, so no reader ever sees a
torn file; a batch is cut into contiguous offset runs, written in offset
order, so whatever a crash leaves is a prefix; and the writer resumes each
source partition after the highest offset on disk, not after its committed
consumer offset. Readers also drop repeated example ids, so an example that
arrived twice upstream is still counted once.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rtml.shared.contracts import TrainingExample

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("feature_set", pa.string()),
        ("feature_names", pa.list_(pa.string())),
        ("features", pa.list_(pa.float64())),
        ("label", pa.float64()),
        ("model_version", pa.string()),
        ("arm", pa.string()),
        ("propensity", pa.float64()),
        ("prediction", pa.float64()),
        ("request_ts", pa.float64()),
        ("label_ts", pa.float64()),
        ("source_offset", pa.int64()),
    ]
)
_FILE = re.compile(r"^(?P<source>.+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")


@dataclass(frozen=True)
class Located:
    """A training example and the source partition offset it was read from."""

    example: TrainingExample
    source: str  # "<topic>-<partition>"
    offset: int


@dataclass(frozen=True)
class ExampleTable:
    """Examples as arrays, ready for training: X[i] is the features of ids[i]."""

    ids: np.ndarray
    X: np.ndarray
    y: np.ndarray
    label_ts: np.ndarray
    feature_set: str
    feature_names: list[str]
    files: list[Path]

    def __len__(self) -> int:
        return len(self.ids)


def hour_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H")


class Warehouse:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root or os.environ.get("RTML_WAREHOUSE", ".rtml/warehouse"))

    def write(self, located: Sequence[Located]) -> list[Path]:
        """Append examples of one source partition, in offset order; returns the files."""
        written = []
        for run in _contiguous_runs(sorted(located, key=lambda item: item.offset)):
            written.append(self._write_run(run))
        return written

    def resume_offsets(self) -> dict[str, int]:
        """Per source partition, the first offset not yet in the warehouse."""
        resume: dict[str, int] = {}
        for path in self.root.glob("task=*/hour=*/*.parquet"):
            match = _FILE.match(path.name)
            if match:
                source, last = match["source"], int(match["last"])
                resume[source] = max(resume.get(source, 0), last + 1)
        return resume

    def files(
        self, task: str, since_ts: float | None = None, until_ts: float | None = None
    ) -> list[Path]:
        """The files of a task whose hour overlaps [since_ts, until_ts)."""
        first = hour_of(since_ts) if since_ts is not None else ""
        last = hour_of(until_ts) if until_ts is not None else "~"
        chosen = []
        for hour_dir in sorted((self.root / f"task={task}").glob("hour=*")):
            if first <= hour_dir.name.removeprefix("hour=") <= last:
                chosen.extend(sorted(hour_dir.glob("*.parquet")))
        return chosen

    def read(
        self, task: str, since_ts: float | None = None, until_ts: float | None = None
    ) -> ExampleTable:
        """Examples with since_ts <= label_ts < until_ts, each id once, in label-time order."""
        files = self.files(task, since_ts, until_ts)
        if not files:
            return empty_table()
        table = pa.concat_tables(pq.read_table(path, schema=SCHEMA) for path in files)
        label_ts = table["label_ts"].to_numpy()
        keep = np.ones(len(table), dtype=bool)
        if since_ts is not None:
            keep &= label_ts >= since_ts
        if until_ts is not None:
            keep &= label_ts < until_ts
        table = table.filter(pa.array(keep)).sort_by(
            [("label_ts", "ascending"), ("id", "ascending")]
        )
        _, first_seen = np.unique(table["id"].to_numpy(zero_copy_only=False), return_index=True)
        table = table.take(pa.array(np.sort(first_seen)))
        return _as_example_table(table, files)

    def discard(self, files: Iterable[Path], since_ts: float, until_ts: float) -> int:
        """Remove the examples with since_ts <= label_ts < until_ts from ``files``
        (after a fine-tune consumed them); returns how many were removed. A file
        keeps its name, so the offsets it covers still count as written."""
        removed = 0
        for path in files:
            table = pq.read_table(path, schema=SCHEMA)
            label_ts = table["label_ts"].to_numpy()
            keep = (label_ts < since_ts) | (label_ts >= until_ts)
            removed += int((~keep).sum())
            if keep.all():
                continue
            # an emptied file stays, so the offsets it covers are never written again
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            pq.write_table(table.filter(pa.array(keep)), temporary)
            os.replace(temporary, path)
        return removed

    def _write_run(self, run: list[Located]) -> Path:
        first, last = run[0], run[-1]
        directory = (
            self.root / f"task={first.example.task}" / f"hour={hour_of(first.example.label_ts)}"
        )
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{first.source}-{first.offset:012d}-{last.offset:012d}.parquet"
        temporary = directory / f".{final.name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(_to_arrow(run), temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        return final


def _contiguous_runs(located: list[Located]) -> Iterable[list[Located]]:
    """Cut at every change of (task, hour) so each file holds one unbroken offset range."""
    run: list[Located] = []
    for item in located:
        if run and _partition_of(run[-1]) != _partition_of(item):
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def _partition_of(item: Located) -> tuple[str, str]:
    return item.example.task, hour_of(item.example.label_ts)


def _to_arrow(run: list[Located]) -> pa.Table:
    rows = [
        {
            "id": item.example.id,
            "task": item.example.task,
            "feature_set": item.example.features.feature_set,
            "feature_names": item.example.features.names,
            "features": item.example.features.values,
            "label": item.example.label,
            "model_version": item.example.model_version,
            "arm": item.example.arm,
            "propensity": item.example.propensity,
            "prediction": _scalar(item.example.prediction),
            "request_ts": item.example.request_ts,
            "label_ts": item.example.label_ts,
            "source_offset": item.offset,
        }
        for item in run
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _scalar(prediction: float | list[float]) -> float:
    return prediction if isinstance(prediction, float | int) else float("nan")


def _as_example_table(table: pa.Table, files: list[Path]) -> ExampleTable:
    names = table["feature_names"][0].as_py() if len(table) else []
    feature_set = table["feature_set"][0].as_py() if len(table) else ""
    width = len(names)
    flat = table["features"].combine_chunks().flatten().to_numpy()
    return ExampleTable(
        ids=table["id"].to_numpy(zero_copy_only=False),
        X=flat.reshape(len(table), width) if width else np.empty((len(table), 0)),
        y=table["label"].to_numpy(),
        label_ts=table["label_ts"].to_numpy(),
        feature_set=feature_set,
        feature_names=names,
        files=files,
    )


def empty_table() -> ExampleTable:
    return ExampleTable(
        ids=np.array([], dtype=object),
        X=np.empty((0, 0)),
        y=np.array([]),
        label_ts=np.array([]),
        feature_set="",
        feature_names=[],
        files=[],
    )
