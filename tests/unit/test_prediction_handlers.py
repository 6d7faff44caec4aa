"""The prediction scorer: which model answers, equal scores, fallbacks, hot-swap snapshots.

The synthetic model helpers here are shared with the integration tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from rtml.services.prediction.handlers import FeatureMismatch, LoadedModel, NoModel, Scorer
from rtml.shared.contracts import FeatureVector, PredictRouted

FEATURE_SET = "eta@1"
# what the eta feature set looks like: request inputs, streaming and batch features
ETA_FEATURES = (
    "distance_km",
    "n_items",
    "restaurant_orders_open",
    "restaurant_prep_mean_min",
    "zone_couriers_available",
    "zone_orders_open",
)
REQUEST_TS = 1_700_000_000.0


def synthetic_vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.array([8.0, 6.0, 12.0, 25.0, 10.0, 15.0], dtype=np.float32)
    return rng.random((n, len(ETA_FEATURES)), dtype=np.float32) * scale


def train_booster(seed: int = 0, rounds: int = 8) -> xgb.Booster:
    """A small eta-like regressor; another seed gives a model with other predictions."""
    vectors = synthetic_vectors(512, seed)
    weights = np.random.default_rng(seed + 100).uniform(0.5, 3.0, len(ETA_FEATURES))
    minutes = 10.0 + vectors @ weights
    data = xgb.DMatrix(vectors, minutes, feature_names=list(ETA_FEATURES))
    return xgb.train({"max_depth": 3, "nthread": 1}, data, num_boost_round=rounds)


def expected_scores(booster: xgb.Booster, vectors: np.ndarray) -> np.ndarray:
    return booster.predict(xgb.DMatrix(vectors, feature_names=list(ETA_FEATURES)))


def routed(values: Sequence[float], request_id: str, **fields: Any) -> PredictRouted:
    features = FeatureVector(
        feature_set=fields.pop("feature_set", FEATURE_SET),
        names=list(fields.pop("names", ETA_FEATURES)),
        values=[float(v) for v in values],
        freshness_s=[None] * len(values),
        defaulted=[False] * len(values),
    )
    defaults: dict[str, Any] = dict(
        ts=REQUEST_TS, task="eta", request_ts=REQUEST_TS, entities={"restaurant_id": "r1"}
    )
    return PredictRouted(id=request_id, features=features, **(defaults | fields))


def loaded(version: str, booster: xgb.Booster, task: str = "eta") -> LoadedModel:
    return LoadedModel(
        version=version,
        task=task,  # type: ignore[arg-type]
        feature_set=FEATURE_SET,
        booster=booster,
        feature_names=tuple(booster.feature_names or ()),
        n_features=booster.num_features(),
    )


@pytest.fixture(scope="module")
def boosters() -> dict[str, xgb.Booster]:
    return {"v1": train_booster(seed=1), "v2": train_booster(seed=2)}


@pytest.fixture
def scorer(boosters: dict[str, xgb.Booster]) -> Scorer:
    scorer = Scorer()
    for version, booster in boosters.items():
        scorer.add(loaded(version, booster))
    scorer.set_champion("eta", "v1")
    return scorer


def test_scores_equal_booster_predict_on_the_same_vectors(
    scorer: Scorer, boosters: dict[str, xgb.Booster]
) -> None:
    vectors = synthetic_vectors(60, seed=5)
    named = ["v1", "v2", None] * 20
    requests = [routed(v, f"r{i}", model_version=named[i]) for i, v in enumerate(vectors)]

    predictions = scorer.score_batch(requests, seen_at=REQUEST_TS, now=REQUEST_TS)

    assert [p.id for p in predictions] == [r.id for r in requests]
    for version, rows in (("v1", [i for i, n in enumerate(named) if n != "v2"]),
                          ("v2", [i for i, n in enumerate(named) if n == "v2"])):  # fmt: skip
        assert {predictions[i].model_version for i in rows} == {version}
        scores = np.array([predictions[i].prediction for i in rows], dtype=np.float32)
        np.testing.assert_array_equal(scores, expected_scores(boosters[version], vectors[rows]))


def test_a_batch_costs_one_inplace_predict_per_version(
    scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    for version, model in scorer.snapshot.models.items():
        original = model.booster.inplace_predict

        def counting(matrix: np.ndarray, _v: str = version, _f: Any = original, **kw: Any) -> Any:
            calls.append((_v, len(matrix)))
            return _f(matrix, **kw)

        monkeypatch.setattr(model.booster, "inplace_predict", counting)
    vectors = synthetic_vectors(10)
    named = ["v2", "v1", "v2", None, "v2", "v1", None, "v2", "v1", "v2"]

    scorer.score_batch(
        [routed(v, f"r{i}", model_version=named[i]) for i, v in enumerate(vectors)], 0, 0
    )

    assert sorted(calls) == [("v1", 5), ("v2", 5)]


def test_no_version_means_the_champion_and_is_no_fallback(scorer: Scorer) -> None:
    [prediction] = scorer.score_batch(
        [routed(synthetic_vectors(1)[0], "r", model_version=None)], 0, 0
    )
    assert (prediction.model_version, prediction.fell_back) == ("v1", False)


def test_an_unknown_version_falls_back_to_the_champion_and_says_so(
    scorer: Scorer, boosters: dict[str, xgb.Booster]
) -> None:
    vector = synthetic_vectors(1)[0]
    [prediction] = scorer.score_batch([routed(vector, "r", model_version="v9", arm="v9")], 0, 0)

    assert (prediction.model_version, prediction.fell_back) == ("v1", True)
    # the router's decision stays logged as it was made
    assert prediction.arm == "v9"
    assert np.float32(prediction.prediction) == expected_scores(boosters["v1"], vector[None])[0]


def test_a_version_of_another_task_is_not_used(
    scorer: Scorer, boosters: dict[str, xgb.Booster]
) -> None:
    scorer.add(loaded("recs-v1", boosters["v2"], task="recs"))
    [prediction] = scorer.score_batch(
        [routed(synthetic_vectors(1)[0], "r", model_version="recs-v1")], 0, 0
    )
    assert (prediction.model_version, prediction.fell_back) == ("v1", True)


def test_without_a_champion_nothing_is_scored(boosters: dict[str, xgb.Booster]) -> None:
    scorer = Scorer()
    scorer.add(loaded("v2", boosters["v2"]))
    vector = synthetic_vectors(1)[0]

    assert (
        scorer.score_batch([routed(vector, "named", model_version="v2")], 0, 0)[0].model_version
        == "v2"
    )
    with pytest.raises(NoModel, match="'v9' is not loaded and no eta champion"):
        scorer.score_batch([routed(vector, "r", model_version="v9")], 0, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"names": list(reversed(ETA_FEATURES))}, "expects .* in that order"),
        ({"feature_set": "eta@2"}, "carries eta@2 features but v1 was trained on eta@1"),
    ],
)
def test_features_the_model_was_not_trained_on_are_refused(
    scorer: Scorer, change: dict[str, Any], message: str
) -> None:
    good, bad = synthetic_vectors(2)
    with pytest.raises(FeatureMismatch, match=message):
        scorer.score_batch([routed(good, "good"), routed(bad, "bad", **change)], 0, 0)


def test_a_prediction_carries_the_request_and_the_timings(scorer: Scorer) -> None:
    vector = synthetic_vectors(1)[0]
    request = routed(
        vector,
        "req-1",
        ts=REQUEST_TS + 0.01,
        received_at=REQUEST_TS,
        model_version="v2",
        arm="v2",
        propensity=0.25,
        policy="thompson",
        timings_ms={"to_features": 2.0, "features": 4.0, "to_router": 3.0, "routing": 1.0},
    )

    # read 30 ms after ingestion took the request, scored 2 ms later
    [prediction] = scorer.score_batch([request], seen_at=REQUEST_TS + 0.030, now=REQUEST_TS + 0.032)

    assert prediction.id == "req-1"
    assert prediction.ts == request.ts
    assert (prediction.task, prediction.entities) == ("eta", {"restaurant_id": "r1"})
    assert prediction.request_ts == REQUEST_TS
    assert prediction.features == request.features
    assert (prediction.arm, prediction.propensity) == ("v2", 0.25)
    timings = prediction.timings_ms
    assert list(timings) == [*request.timings_ms, "to_prediction", "scoring", "total"]
    assert timings["features"] == 4.0
    # the upstream hops end 10 ms after received_at: 20 ms in rtml.predict.routed
    assert timings["to_prediction"] == pytest.approx(20.0)
    assert timings["scoring"] >= 2.0  # 2 ms, then the model's work
    hops = [v for k, v in timings.items() if k != "total"]
    assert timings["total"] == pytest.approx(sum(hops), abs=0.002)


def test_a_negative_wait_is_clock_skew_and_counts_as_none(scorer: Scorer) -> None:
    request = routed(
        synthetic_vectors(1)[0], "r", received_at=REQUEST_TS, timings_ms={"features": 50.0}
    )
    [prediction] = scorer.score_batch([request], seen_at=REQUEST_TS + 0.010, now=REQUEST_TS + 0.010)
    assert prediction.timings_ms["to_prediction"] == 0.0


def test_a_request_without_a_received_at_is_timed_from_its_request_ts(scorer: Scorer) -> None:
    request = routed(synthetic_vectors(1)[0], "r", timings_ms={"features": 1.0})
    [prediction] = scorer.score_batch([request], seen_at=REQUEST_TS + 0.005, now=REQUEST_TS + 0.005)
    assert "to_prediction" not in prediction.timings_ms
    assert prediction.timings_ms["total"] >= 5.0


def test_a_batch_in_flight_keeps_the_models_it_started_with(
    scorer: Scorer, boosters: dict[str, xgb.Booster], monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = scorer.snapshot.models["v1"].booster
    original = v1.inplace_predict
    v3 = train_booster(seed=3)

    def swap_mid_batch(matrix: np.ndarray, **kw: Any) -> Any:
        # a new champion lands while this batch is being scored
        scorer.add(loaded("v3", v3))
        scorer.set_champion("eta", "v3")
        return original(matrix, **kw)

    monkeypatch.setattr(v1, "inplace_predict", swap_mid_batch)
    vectors = synthetic_vectors(4)
    batch = [
        routed(v, f"r{i}", model_version=("v2" if i % 2 else None)) for i, v in enumerate(vectors)
    ]

    during = scorer.score_batch(batch, 0, 0)
    after = scorer.score_batch(batch, 0, 0)

    assert [p.model_version for p in during] == ["v1", "v2", "v1", "v2"]
    assert [p.model_version for p in after] == ["v3", "v2", "v3", "v2"]
    np.testing.assert_array_equal(
        np.array([p.prediction for p in after[::2]], dtype=np.float32),
        expected_scores(v3, vectors[::2]),
    )


def test_retiring_unloads_a_version_but_never_the_champion(scorer: Scorer) -> None:
    assert scorer.retire("v1") is False
    assert scorer.retire("v2") is True
    assert set(scorer.snapshot.models) == {"v1"}
    [prediction] = scorer.score_batch(
        [routed(synthetic_vectors(1)[0], "r", model_version="v2")], 0, 0
    )
    assert (prediction.model_version, prediction.fell_back) == ("v1", True)


def test_only_a_loaded_model_of_the_task_can_be_champion(scorer: Scorer) -> None:
    with pytest.raises(NoModel, match="v9 is not a loaded eta model"):
        scorer.set_champion("eta", "v9")
    with pytest.raises(NoModel, match="v2 is not a loaded recs model"):
        scorer.set_champion("recs", "v2")
