"""Latency per hop as a Prometheus histogram, binned a batch at a time."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from rtml.services.prediction.metrics import BatchHistogram, observe_latency
from rtml.shared.contracts import FeatureVector, Prediction

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def samples(registry: CollectorRegistry) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_batch_histogram_exposes_what_prometheus_clients_histogram_does():
    values = [*np.random.default_rng(0).exponential(0.05, 500), 0.01, 1.0, 7.0]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("hop_seconds", "hop", "hop", BUCKETS, registry=ours)
    reference = Histogram("hop_seconds", "hop", ["hop"], buckets=BUCKETS, registry=theirs)

    batched.observe_many("a", values[:200])
    batched.observe_many("a", values[200:])
    batched.observe_many("b", [])
    for value in values:
        reference.labels("a").observe(value)

    got, expected = samples(ours), samples(theirs)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key  # the sum: float addition order


def test_each_prediction_counts_under_its_total_and_each_of_its_hops():
    def count(hop: str) -> float:
        value = REGISTRY.get_sample_value("rtml_prediction_latency_seconds_count", {"hop": hop})
        return value or 0.0

    before = {hop: count(hop) for hop in ("total", "routing", "scoring", "made_up")}
    timings = {"total": 12.0, "routing": 1.0, "scoring": 2.0, "made_up": 3.0}
    vector = FeatureVector(feature_set="eta@1", names=["x"], values=[1.0], freshness_s=[None],
                           defaulted=[False])  # fmt: skip
    predictions = [
        Prediction(
            id=f"r{i}",
            ts=1.0,
            task="eta",
            request_ts=1.0,
            features=vector,
            model_version="v1",
            prediction=1.0,
            timings_ms=timings,
        )  # fmt: skip
        for i in range(3)
    ]

    observe_latency(predictions)

    assert count("total") == before["total"] + 3
    assert count("routing") == before["routing"] + 3 and count("scoring") == before["scoring"] + 3
    assert count("made_up") == 0  # not a hop of the chain: no series for it
