"""The warehouse: training examples as a Parquet dataset partitioned by task and hour.

Layout: ``ROOT/task=eta/hour=2026-11-27T13/<topic>-<partition>-<first>-<last>.parquet``
where first..last is the contiguous range of source offsets the file holds. ROOT is
a directory or an object storage URL (``s3://``, ``gs://``, ``abfs://``:
``shared/object_storage.py``); one code path serves both through ``pyarrow.fs``, and
reads go through ``pyarrow.dataset``, which prunes by the task and hour partitions
and pushes the label-time filter down to the Parquet row groups.

Exactly once, without transactions (the pattern of Kafka Connect's file sinks):
each file appears whole or not at all (on a local disk it is written to a hidden
temporary name, fsynced and renamed; an object store makes a written object
visible whole, and readers skip names that start with a dot); a batch is cut into
contiguous offset runs, written in offset order, so whatever a crash leaves is a
prefix; and the writer resumes each source partition after the highest offset in
the warehouse, not after its committed consumer offset. A replayed range has the
same name and the same rows, so writing it again changes nothing. Readers also drop
repeated example ids, so an example that arrived twice upstream is still counted once.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from rtml.shared.contracts import TrainingExample
from rtml.shared.object_storage import arrow_filesystem, parse_location

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
_PARTITIONING = ds.partitioning(
    pa.schema([("task", pa.string()), ("hour", pa.string())]), flavor="hive"
)
# the files' columns and the hour from their folder (task is both)
_DATASET_SCHEMA = SCHEMA.append(pa.field("hour", pa.string()))
WAREHOUSE_ENV = "RTML_WAREHOUSE"
DEFAULT_ROOT = ".rtml/warehouse"


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
    # the files read, as the warehouse's filesystem names them
    files: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def hour_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H")


class Warehouse:
    """The dataset under ``root``: a directory or an object storage URL (default:
    $RTML_WAREHOUSE or ./.rtml/warehouse)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.location = parse_location(root or os.environ.get(WAREHOUSE_ENV) or DEFAULT_ROOT)
        self._fs, self._base = arrow_filesystem(self.location)

    def __str__(self) -> str:
        return str(self.location)

    def write(self, located: Sequence[Located]) -> list[str]:
        """Append examples of one source partition, in offset order; returns the files."""
        written = []
        for run in _contiguous_runs(sorted(located, key=lambda item: item.offset)):
            written.append(self._write_run(run))
        return written

    def resume_offsets(self) -> dict[str, int]:
        """Per source partition, the first offset not yet in the warehouse."""
        resume: dict[str, int] = {}
        selector = pafs.FileSelector(self._base, recursive=True, allow_not_found=True)
        for info in self._fs.get_file_info(selector):
            match = _FILE.match(info.base_name)
            if match and info.type == pafs.FileType.File:
                source, last = match["source"], int(match["last"])
                resume[source] = max(resume.get(source, 0), last + 1)
        return resume

    def read(
        self, task: str, since_ts: float | None = None, until_ts: float | None = None
    ) -> ExampleTable:
        """Examples with since_ts <= label_ts < until_ts, each id once, in label-time order."""
        dataset = self._dataset(task)
        partitions = _partitions(task, since_ts, until_ts)
        files = sorted(fragment.path for fragment in dataset.get_fragments(filter=partitions))
        if not files:
            return empty_table()
        rows = partitions
        if since_ts is not None:
            rows &= ds.field("label_ts") >= since_ts
        if until_ts is not None:
            rows &= ds.field("label_ts") < until_ts
        table = dataset.to_table(filter=rows, columns=SCHEMA.names).sort_by(
            [("label_ts", "ascending"), ("id", "ascending")]
        )
        _, first_seen = np.unique(table["id"].to_numpy(zero_copy_only=False), return_index=True)
        table = table.take(pa.array(np.sort(first_seen)))
        return _as_example_table(table, files)

    def discard(self, files: Iterable[str], since_ts: float, until_ts: float) -> int:
        """Remove the examples with since_ts <= label_ts < until_ts from ``files``
        (after a fine-tune consumed them); returns how many were removed. A file
        keeps its name, so the offsets it covers still count as written."""
        removed = 0
        for path in files:
            table = pq.read_table(path, schema=SCHEMA, filesystem=self._fs)
            label_ts = table["label_ts"].to_numpy()
            keep = (label_ts < since_ts) | (label_ts >= until_ts)
            removed += int((~keep).sum())
            if keep.all():
                continue
            # an emptied file stays, so the offsets it covers are never written again
            self._put_whole(path, table.filter(pa.array(keep)))
        return removed

    def _dataset(self, task: str) -> ds.Dataset:
        # listing only the task's folder prunes the other tasks before any file is seen
        selector = pafs.FileSelector(
            f"{self._base}/task={task}", recursive=True, allow_not_found=True
        )
        factory = ds.FileSystemDatasetFactory(
            self._fs, selector, ds.ParquetFileFormat(),
            ds.FileSystemFactoryOptions(partitioning=_PARTITIONING, partition_base_dir=self._base),
        )  # fmt: skip
        # the schema is known: no file is opened to infer it
        return factory.finish(_DATASET_SCHEMA)

    def _write_run(self, run: list[Located]) -> str:
        first, last = run[0], run[-1]
        directory = f"{self._base}/task={first.example.task}/hour={hour_of(first.example.label_ts)}"
        path = f"{directory}/{first.source}-{first.offset:012d}-{last.offset:012d}.parquet"
        self._put_whole(path, _to_arrow(run))
        return path

    def _put_whole(self, path: str, table: pa.Table) -> None:
        """Write ``table`` to ``path`` so that a reader sees the old file or the new one."""
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer)
        data = buffer.getvalue()
        if isinstance(self._fs, pafs.LocalFileSystem):
            _replace_local_file(path, data)
            return
        # an object appears whole when its upload completes, at close: a writer that dies
        # before leaves no object (only parts, which a bucket lifecycle rule for
        # incomplete multipart uploads removes; docs/DEPLOY.md)
        with self._fs.open_output_stream(path) as out:
            out.write(data)


def _replace_local_file(path: str, data: pa.Buffer) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    # hidden: the dataset's discovery and resume_offsets skip names with a leading dot
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _partitions(task: str, since_ts: float | None, until_ts: float | None) -> ds.Expression:
    """The partitions a read needs: the task's, and the hours that overlap the range."""
    wanted = ds.field("task") == task
    if since_ts is not None:
        wanted &= ds.field("hour") >= hour_of(since_ts)
    if until_ts is not None:
        wanted &= ds.field("hour") <= hour_of(until_ts)
    return wanted


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


def _as_example_table(table: pa.Table, files: list[str]) -> ExampleTable:
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
