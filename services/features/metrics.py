"""Prometheus metrics of the features service (``/metrics`` on its side port).

Freshness is a histogram per feature; the fallback rate of a feature is
``rate(rtml_features_defaulted_total[5m]) / rate(rtml_features_vectors_total[5m])``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from rtml.shared.contracts import FeatureVector

EVENTS = Counter(
    "rtml_features_events_total",
    "events read from rtml.events, by what became of them",
    ["outcome"],  # accepted, duplicate, late, decode, schema
)
RECOVERED = Counter(
    "rtml_features_events_recovered_total",
    "accepted events folded back into state from the changelog (restart, rebalance)",
)
CONSUMED_OFFSET = Gauge(
    "rtml_features_consumed_offset",
    "next offset of rtml.events this worker will apply, per partition it holds",
    ["partition"],
)
VECTORS = Counter(
    "rtml_features_vectors_total", "feature vectors served", ["feature_set", "adapter"]
)
DEFAULTED = Counter(
    "rtml_features_defaulted_total",
    "features that fell back to their default (cold start, empty window)",
    ["feature_set", "feature"],
)
FRESHNESS = Histogram(
    "rtml_features_freshness_seconds",
    "event-time age of the newest event behind a served feature",
    ["feature_set", "feature"],
    buckets=(1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
)
HELD = Histogram(
    "rtml_features_held_seconds",
    "how long a request or lookup waited for the events appended before it to be applied; "
    "waited_out: served after RTML_FEATURES_FRESHNESS_WAIT_MS without that proof",
    ["outcome"],  # fresh, waited_out
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LOOKUPS = Counter(
    "rtml_features_lookups_total",
    "entity lookups, by whether they ran on this worker or went to the owner",
    ["kind", "where"],  # local, kafka (via a lookup topic), http (via the owner's side port)
)


def observe(vector: FeatureVector, adapter: str) -> None:
    VECTORS.labels(vector.feature_set, adapter).inc()
    for name, freshness, defaulted in zip(
        vector.names, vector.freshness_s, vector.defaulted, strict=True
    ):
        if defaulted:
            DEFAULTED.labels(vector.feature_set, name).inc()
        if freshness is not None:
            FRESHNESS.labels(vector.feature_set, name).observe(freshness)
