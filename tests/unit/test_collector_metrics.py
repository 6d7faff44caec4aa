"""The live error per model version the collector exports, and its retirement."""

from __future__ import annotations

from prometheus_client import REGISTRY
from rtml.services.collector.metrics import LiveError
from rtml.shared.contracts import FeatureVector, TrainingExample

from tests.unit.test_router_handlers import announcement

VECTOR = FeatureVector(feature_set="eta@1", names=["x"], values=[1.0], freshness_s=[None],
                       defaulted=[False])  # fmt: skip


def example(version: str, prediction: float | list[float], label: float, task: str = "eta"):
    return TrainingExample(
        ts=1.0, task=task, features=VECTOR, label=label, model_version=version,
        prediction=prediction, request_ts=1.0, label_ts=2.0,
    )  # fmt: skip


def error_of(version: str, suffix: str, task: str = "eta") -> float | None:
    labels = {"task": task, "version": version, "metric": "mae"}  # eta's model metric
    return REGISTRY.get_sample_value(f"rtml_model_live_error_{suffix}", labels)


async def test_each_versions_absolute_error_until_it_is_retired():
    live = LiveError()
    live.observe(example("live-a", 30.0, 25.0))
    live.observe(example("live-a", 20.0, 22.0))
    live.observe(example("live-b", 10.0, 10.0))
    live.observe(example("live-a", [0.1, 0.9], 1.0, task="recs"))  # a ranking: no error

    assert error_of("live-a", "sum") == 7.0 and error_of("live-a", "count") == 2.0
    assert error_of("live-b", "count") == 1.0
    assert error_of("live-a", "count", task="recs") is None

    await live.on_announcement(announcement("live-a", "retired"))
    live.observe(example("live-a", 30.0, 20.0))  # a late label of the retired version

    assert error_of("live-a", "count") is None and error_of("live-a", "sum") is None
    assert error_of("live-b", "count") == 1.0
