"""Training jobs: warehouse in, registered model version out (no Kafka here).

Every version records what is needed to reproduce it: the warehouse range it
was trained on (task, label-time interval, files, example count), the
parameters and rounds, its parent for a fine-tune, and its metrics on a
holdout of the newest examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rtml.services.trainer.training import (
    TrainingRun,
    fine_tune,
    mae,
    recency_weights,
    split_holdout,
    train_from_scratch,
)
from rtml.shared.contracts import Task
from rtml.shared.errors import RtmlError
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.warehouse import ExampleTable, Warehouse

MIN_EXAMPLES = 200


class NotEnoughData(RtmlError):
    pass


@dataclass(frozen=True)
class Candidate:
    """A trained model not yet registered, with everything registration needs."""

    run: TrainingRun
    task: Task
    feature_set: str
    data_range: dict[str, Any]
    metrics: dict[str, float]
    parent_version: str | None
    table: ExampleTable

    @property
    def better_than_parent(self) -> bool:
        parent = self.metrics.get("parent_holdout_mae")
        return parent is None or self.metrics["holdout_mae"] <= parent


def scratch_candidate(warehouse: Warehouse, task: Task, rounds: int | None = None) -> Candidate:
    """Stage 1/2: train on every example the warehouse has for the task."""
    table = warehouse.read(task)
    return table_candidate(_enough(table, task), task, data_range(table, task), rounds)


def table_candidate(
    table: ExampleTable, task: Task, source_range: dict[str, Any], rounds: int | None = None
) -> Candidate:
    """A model from scratch on ``table``, judged on a holdout of its newest examples."""
    _enough(table, task)
    train, holdout = split_holdout(len(table))
    run = train_from_scratch(table.X[train], table.y[train], table.feature_names, **_rounds(rounds))
    metrics = {**run.metrics, "holdout_mae": mae(run.booster, table.X[holdout], table.y[holdout])}
    return Candidate(run, task, table.feature_set, source_range, metrics, None, table)


def fine_tune_candidate(
    warehouse: Warehouse, store: ModelStore, parent_version: str, rounds: int | None = None
) -> Candidate:
    """Stage 3/4: warm-start from ``parent_version`` on examples newer than its range only."""
    parent, record = store.load(parent_version)
    since = record.data_range.get("until_label_ts")
    table = _enough(warehouse.read(record.task, since_ts=since), record.task)
    train, holdout = split_holdout(len(table))
    run = fine_tune(
        parent, table.X[train], table.y[train], table.feature_names,
        weights=recency_weights(table.label_ts[train]), **_rounds(rounds),
    )  # fmt: skip
    metrics = {
        **run.metrics,
        "holdout_mae": mae(run.booster, table.X[holdout], table.y[holdout]),
        "parent_holdout_mae": mae(parent, table.X[holdout], table.y[holdout]),
    }
    return Candidate(
        run,
        record.task,
        table.feature_set,
        data_range(table, record.task),
        metrics,
        parent_version,
        table,
    )


def register(store: ModelStore, candidate: Candidate, **hooks: Any) -> ModelRecord:
    return store.register(
        candidate.run.booster,
        task=candidate.task,
        feature_set=candidate.feature_set,
        data_range=candidate.data_range,
        params={**candidate.run.params, "rounds": candidate.run.rounds},
        metrics=candidate.metrics,
        parent_version=candidate.parent_version,
        **hooks,
    )


def discard_consumed(warehouse: Warehouse, candidate: Candidate) -> int:
    """Delete exactly the examples a registered fine-tune consumed."""
    since, until = candidate.data_range["since_label_ts"], candidate.data_range["until_label_ts"]
    return warehouse.discard(candidate.table.files, since, until)


def data_range(table: ExampleTable, task: Task) -> dict[str, Any]:
    return {
        "source": "warehouse",
        "task": task,
        "since_label_ts": float(table.label_ts.min()),
        # exclusive: the next fine-tune starts here
        "until_label_ts": float(table.label_ts.max()) + 1e-6,
        "examples": len(table),
        "files": [f"{p.parent.name}/{p.name}" for p in table.files],
    }


def _enough(table: ExampleTable, task: Task) -> ExampleTable:
    if len(table) < MIN_EXAMPLES:
        raise NotEnoughData(f"{len(table)} {task} examples in the warehouse; need {MIN_EXAMPLES}")
    return table


def _rounds(rounds: int | None) -> dict[str, int]:
    return {} if rounds is None else {"rounds": rounds}
