"""The collector's Prometheus metrics (served on its side port's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# what the join did with each record: joined, closed_without_click (the label's when_missing),
# prediction_expired_unlabelled, label_without_prediction, duplicate_prediction,
# duplicate_label, prediction_without_join_key
JOIN = Counter("rtml_collector_join_total", "join outcomes", ["outcome"])
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
