"""The prediction service's Prometheus metrics (``/metrics`` on its side port).

``rtml_predictions_total`` has a series per model version; a version's series go
when it is retired (``models.py``), so the label set stays as small as the
versions being served.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "rtml_predictions_total", "predictions made", ["task", "version", "fell_back"]
)
BATCH_SIZE = Histogram(
    "rtml_prediction_batch_size",
    "requests scored together",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
SCORING_SECONDS = Histogram("rtml_prediction_scoring_seconds", "time to score one batch")

MODEL_LOADS = Counter("rtml_model_loads_total", "model versions loaded", ["outcome"])
# the alert: a version that was announced but could not be served
MODEL_LOAD_FAILURES = Counter(
    "rtml_model_load_failures_total",
    "model versions refused: unsafe, modified, unreadable, or crashing XGBoost in the probe child",
)
MODEL_LOAD_SECONDS = Histogram("rtml_model_load_seconds", "read, verify and parse one version")
MODELS_LOADED = Gauge("rtml_models_loaded", "model versions held in memory")
