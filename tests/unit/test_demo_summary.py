from __future__ import annotations

import pytest
from rtml.shared.contracts import (
    FeatureVector,
    ModelAnnouncement,
    Prediction,
    TrainingExample,
    Trigger,
)

from rtml.demo_summary import (
    Phases,
    hop_percentiles,
    lineage_lines,
    mae_by_phase,
    summarize,
    traffic_share,
)

T0 = 1_717_412_400.0
STORM = T0 + 3600
FEATURES = FeatureVector(
    feature_set="eta@1", names=["d"], values=[1.0], freshness_s=[None], defaulted=[False]
)
SHA = "0" * 64


def example(request_ts: float, version: str, predicted: float, actual: float) -> TrainingExample:
    return TrainingExample(
        ts=request_ts + 1800, task="eta", features=FEATURES, label=actual, model_version=version,
        prediction=predicted, request_ts=request_ts, label_ts=request_ts + 1800,
    )  # fmt: skip


def announcement(
    version: str,
    parent: str | None,
    action: str = "registered",
    ts: float = 0.0,
    trigger: Trigger | None = None,
) -> ModelAnnouncement:
    return ModelAnnouncement(
        ts=ts, task="eta", model_version=version, action=action, parent_version=parent,
        sha256=SHA, feature_set="eta@1", reason="holdout mae 4.1 vs parent 5" if parent else "",
        trigger=trigger,
    )  # fmt: skip


def test_mae_is_split_by_storm_and_by_who_answered_after_learning() -> None:
    examples = [
        example(T0 + 10, "v1", 30, 32),  # before: error 2
        example(STORM + 60, "v1", 30, 40),  # storm's first hour: error 10
        example(STORM + 7200, "v1", 30, 42),  # later, old model: error 12
        example(STORM + 7300, "v2", 41, 42),  # later, fine-tuned: error 1
    ]
    mae = mae_by_phase(examples, Phases(STORM, adapted_ts=STORM + 5000), fine_tuned={"v2"})
    assert mae == {
        "before the storm": 2.0,
        "first hour of the storm": 10.0,
        "after continual learning (fine-tuned versions)": 1.0,
        "same period, older versions": 12.0,
    }


def test_without_adaptation_the_later_phases_are_empty() -> None:
    mae = mae_by_phase([example(T0, "v1", 1, 2)], Phases(STORM, adapted_ts=None), fine_tuned=set())
    assert mae["after continual learning (fine-tuned versions)"] is None


def test_traffic_share_counts_requests_since_the_given_time() -> None:
    def prediction(ts: float, version: str) -> Prediction:
        return Prediction(
            ts=ts,
            task="eta",
            request_ts=ts,
            features=FEATURES,
            model_version=version,
            prediction=1.0,
        )

    predictions = [
        prediction(T0, "v1"),
        prediction(STORM, "v1"),
        prediction(STORM, "v2"),
        prediction(STORM, "v2"),
    ]
    assert traffic_share(predictions, since_ts=STORM) == pytest.approx({"v2": 2 / 3, "v1": 1 / 3})


def test_lineage_is_drawn_as_a_tree_with_triggers_reasons_and_the_champion() -> None:
    lines = lineage_lines([
        announcement("v1", None, trigger=Trigger(kind="bootstrap")),
        announcement("v2", "v1", trigger=Trigger(kind="input_drift", feature="zone_couriers_idle")),
        announcement("v2", "v1", "promoted"),
        announcement("v3", "v2", trigger=Trigger(kind="schedule")),
        announcement("v4", "v1"),  # announced before triggers were kept
    ])  # fmt: skip
    assert lines == [
        "v1 — bootstrap",
        "  └─ v2 [champion] — input drift on zone_couriers_idle; holdout mae 4.1 vs parent 5",
        "    └─ v3 — schedule; holdout mae 4.1 vs parent 5",
        "  └─ v4 — holdout mae 4.1 vs parent 5",
    ]


def test_summary_names_the_fine_tuned_versions() -> None:
    summary = summarize(
        10, [], [], [announcement("v1", None), announcement("v2", "v1")], [], Phases(STORM, None)
    )
    assert [a.model_version for a in summary.fine_tuned] == ["v2"] and summary.events == 10


def test_hops_are_summarised_in_the_order_of_the_chain() -> None:
    def prediction(to_features: float, scoring: float) -> Prediction:
        timings = {"scoring": scoring, "to_features": to_features, "total": to_features + scoring}
        return Prediction(
            ts=T0, task="eta", request_ts=T0, features=FEATURES, model_version="v1",
            prediction=1.0, timings_ms=timings,
        )  # fmt: skip

    found = hop_percentiles([prediction(float(i), 1.0) for i in range(1, 101)])
    assert list(found) == ["to_features", "scoring"]  # no total: it is not a hop
    assert found["to_features"]["p50"] == pytest.approx(50.5)
    assert found["to_features"]["p99"] == pytest.approx(99.01)
    assert found["scoring"] == {"p50": 1.0, "p99": 1.0}
