"""Training jobs: warehouse in, registered model version out (no Kafka here).

Every version records what is needed to reproduce it: the warehouse range it
was trained on (task, label-time interval, files, example count), the
parameters and rounds (the objective and the ``eval_metric`` of the task's
``Model`` among them), its parent for a fine-tune, and its metrics on a holdout
of the newest examples: ``holdout_<metric>`` (``parent_holdout_<metric>`` for
the parent on the same examples), the metric the task declares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import xgboost as xgb
from rtml.services.trainer.training import (
    TrainingRun,
    evaluate,
    fine_tune,
    recency_weights,
    split_holdout,
    train_from_scratch,
)
from rtml.shared.contracts import Task, Trigger
from rtml.shared.errors import RtmlError
from rtml.shared.model_metrics import METRICS
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.tasks.registry import task_spec
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
    # the task's Model.metric, which judges it
    metric: str

    @property
    def holdout(self) -> tuple[float | None, float | None]:
        """Its and its parent's metric on the holdout; None where there is none (from
        scratch) or it is undefined there (an AUC over one class)."""
        return (
            self.metrics.get(f"holdout_{self.metric}"),
            self.metrics.get(f"parent_holdout_{self.metric}"),
        )

    @property
    def better_than_parent(self) -> bool:
        """Kept unless the holdout shows it worse than its parent on the task's metric."""
        mine, parent = self.holdout
        return mine is None or parent is None or METRICS[self.metric].at_least_as_good(mine, parent)

    @property
    def judgement(self) -> str:
        """The holdout figures, for a log line or an announcement: ``holdout mae 4.1 vs
        parent 4.6``."""
        mine, parent = self.holdout
        text = f"holdout {self.metric} {_figure(mine)}"
        return text if parent is None else f"{text} vs parent {_figure(parent)}"


def scratch_candidate(warehouse: Warehouse, task: Task, rounds: int | None = None) -> Candidate:
    """Stage 1/2: train on every example the warehouse has for the task."""
    table = warehouse.read(task)
    return table_candidate(_enough(table, task), task, data_range(table, task), rounds)


def table_candidate(
    table: ExampleTable, task: Task, source_range: dict[str, Any], rounds: int | None = None
) -> Candidate:
    """A model from scratch on ``table``, judged on a holdout of its newest examples."""
    _enough(table, task)
    model = task_spec(task).model
    train, holdout = split_holdout(len(table))
    run = train_from_scratch(
        table.X[train], table.y[train], table.feature_names, model, **_rounds(rounds)
    )
    metrics = {**run.metrics, **_holdout(table, holdout, model.metric, run.booster)}
    return Candidate(
        run, task, table.feature_set, source_range, _finite(metrics), None, table, model.metric
    )


def fine_tune_candidate(
    warehouse: Warehouse, store: ModelStore, parent_version: str,
    since_ts: float | None = None, rounds: int | None = None,
) -> Candidate:  # fmt: skip
    """Stage 3/4: warm-start from ``parent_version`` on the examples labelled since
    ``since_ts``, by default those newer than its range only."""
    parent, record = store.load(parent_version)
    model = task_spec(record.task).model
    since = record.data_range.get("until_label_ts") if since_ts is None else since_ts
    table = _enough(warehouse.read(record.task, since_ts=since), record.task)
    train, holdout = split_holdout(len(table))
    run = fine_tune(
        parent, table.X[train], table.y[train], table.feature_names, model,
        weights=recency_weights(table.label_ts[train]), **_rounds(rounds),
    )  # fmt: skip
    metrics = {
        **run.metrics,
        **_holdout(table, holdout, model.metric, run.booster),
        **_holdout(table, holdout, model.metric, parent, prefix="parent_"),
    }
    return Candidate(
        run,
        record.task,
        table.feature_set,
        data_range(table, record.task),
        _finite(metrics),
        parent_version,
        table,
        model.metric,
    )


def register(
    store: ModelStore, candidate: Candidate, trigger: Trigger | None = None, **hooks: Any
) -> ModelRecord:
    return store.register(
        candidate.run.booster,
        task=candidate.task,
        feature_set=candidate.feature_set,
        data_range=candidate.data_range,
        params={**candidate.run.params, "rounds": candidate.run.rounds},
        metrics=candidate.metrics,
        parent_version=candidate.parent_version,
        trigger=trigger,
        **hooks,
    )


def champion_if_none(store: ModelStore, record: ModelRecord) -> bool:
    """Make ``record`` its task's champion if the task has none; whether it did. Of two
    trainers' first models only one does: the store claims by compare-and-swap."""
    return store.claim_champion(record.task, record.version)


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
        # hour=<hour>/<name>: where in the task's partition, wherever the warehouse is
        "files": ["/".join(path.rsplit("/", 2)[-2:]) for path in table.files],
    }


def _enough(table: ExampleTable, task: Task) -> ExampleTable:
    if len(table) < MIN_EXAMPLES:
        raise NotEnoughData(f"{len(table)} {task} examples in the warehouse; need {MIN_EXAMPLES}")
    return table


def _rounds(rounds: int | None) -> dict[str, int]:
    return {} if rounds is None else {"rounds": rounds}


def _holdout(
    table: ExampleTable, rows: slice, metric: str, booster: xgb.Booster, prefix: str = ""
) -> dict[str, float]:
    value = evaluate(booster, table.X[rows], table.y[rows], table.feature_names, metric)
    return {f"{prefix}holdout_{metric}": value}


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics a record can hold: one undefined on its data (NaN) is left out."""
    return {name: value for name, value in metrics.items() if math.isfinite(value)}


def _figure(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4g}"
