"""The collector's Prometheus metrics (served on its side port's /metrics).

The collector is where a prediction meets its label, so it owns the live error of
each model version: ``rtml_model_live_error`` (sum and count of the error of every
example it emits, as its task's metric defines the error of one example: the
drift monitor's; the mean over a window is the live MAE for ``mae``). A version's
series go when it is retired, and an example of a retired version that comes later
(a late label) is not counted: ``LiveError`` follows ``rtml.models``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Summary
from rtml.shared.contracts import ModelAnnouncement, TrainingExample
from rtml.shared.metrics import forget_series
from rtml.shared.model_metrics import METRICS
from rtml.shared.tasks.registry import task_spec

# what the join did with each record: joined, closed_without_click (the label's when_missing),
# prediction_expired_unlabelled, label_without_prediction, duplicate_prediction,
# duplicate_label, prediction_without_join_key
JOIN = Counter("rtml_collector_join_total", "join outcomes", ["outcome"])
# at 0 from the start: "no label joined yet" is a series an alert can read
JOIN.labels("joined")
EMITTED = Counter(
    "rtml_collector_examples_total", "training examples and rewards emitted", ["task"]
)
REKEYED = Counter(
    "rtml_collector_rekeyed_total", "records re-keyed onto the join topic", ["source"]
)
# per topic and partition, the next offset this worker has finished with: what
# tests (and operators) compare with the end offsets to know it caught up
CONSUMED_OFFSET = Gauge(
    "rtml_collector_consumed_offset", "next offset not yet processed", ["topic", "partition"]
)
WAREHOUSE_EXAMPLES = Counter(
    "rtml_warehouse_examples_written_total", "training examples written to the warehouse", ["task"]
)
WAREHOUSE_FILES = Counter("rtml_warehouse_files_written_total", "Parquet files written")
LIVE_ERROR = Summary(
    "rtml_model_live_error",
    "error of each prediction once its label arrived, per model version, as the task's metric "
    "defines it (mae, auc: absolute error; rmse: squared error; logloss: log loss)",
    ["task", "version", "metric"],
)


class LiveError:
    """The live error per version, without the versions retired so far."""

    def __init__(self) -> None:
        self._retired: set[str] = set()

    async def on_announcement(self, announcement: ModelAnnouncement) -> None:
        if announcement.action == "retired":
            self._retired.add(announcement.model_version)
            forget_series(LIVE_ERROR, version=announcement.model_version)

    def observe(self, example: TrainingExample) -> None:
        # a ranking (a list of scores) has no error against a click
        if isinstance(example.prediction, float) and example.model_version not in self._retired:
            metric = METRICS[task_spec(example.task).model.metric]
            error = metric.example_error(example.prediction, example.label)
            LIVE_ERROR.labels(example.task, example.model_version, metric.name).observe(error)
