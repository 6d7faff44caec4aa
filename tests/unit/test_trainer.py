from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from rtml.services.trainer.drift import DriftMonitor, feature_baseline
from rtml.services.trainer.training import evaluate, fine_tune, split_holdout, train_from_scratch
from rtml.shared.contracts import Trigger
from rtml.shared.tasks.spec import Model

NAMES = ["distance_km", "prep_load", "couriers_idle"]
MINUTES = Model("regression", objective="reg:absoluteerror", metric="mae")


def mae(booster: xgb.Booster, X: np.ndarray, y: np.ndarray) -> float:
    return evaluate(booster, X, y, NAMES, "mae")


def deliveries(
    n: int, rng: np.random.Generator, travel_factor: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Delivery minutes from distance, kitchen load and courier scarcity; a storm scales travel."""
    X = np.column_stack(
        [rng.uniform(0.5, 8, n), rng.integers(0, 10, n), rng.integers(0, 20, n)]
    ).astype(float)
    travel = 4.0 * X[:, 0] * travel_factor
    prep = 10 + 1.5 * X[:, 1]
    wait = 8.0 / (1 + X[:, 2])
    return X, travel + prep + wait + rng.normal(0, 2, n)


def test_from_scratch_learns_and_fine_tuning_recovers_after_a_shift() -> None:
    rng = np.random.default_rng(7)
    X_before, y_before = deliveries(4000, rng)
    parent = train_from_scratch(X_before, y_before, NAMES, MINUTES, rounds=150)
    X_test, y_test = deliveries(2000, rng)
    assert mae(parent.booster, X_test, y_test) < 2.5  # noise alone is ~1.6

    X_after, y_after = deliveries(1500, rng, travel_factor=1.5)
    X_post, y_post = deliveries(2000, rng, travel_factor=1.5)
    child = fine_tune(parent.booster, X_after, y_after, NAMES, MINUTES, rounds=60)
    parent_error, child_error = (
        mae(parent.booster, X_post, y_post),
        mae(child.booster, X_post, y_post),
    )
    assert child_error < 0.6 * parent_error
    assert child.booster.num_boosted_rounds() == 150 + 60  # warm start kept the parent's trees


def test_drift_fires_after_the_shift_and_not_before() -> None:
    rng = np.random.default_rng(3)
    X_train, y_train = deliveries(3000, rng)
    model = train_from_scratch(X_train, y_train, NAMES, MINUTES, rounds=100).booster
    monitor = DriftMonitor(feature_baseline(X_train, NAMES, ["distance_km", "couriers_idle"]))
    shift_at = 3000
    X_before, y_before = deliveries(shift_at, rng)
    X_after, y_after = deliveries(2000, rng, travel_factor=1.5)
    X, y = np.vstack([X_before, X_after]), np.concatenate([y_before, y_after])
    errors = np.abs(model.inplace_predict(X) - y)
    fired_at = None
    for i, (error, row) in enumerate(zip(errors, X, strict=True)):
        signal = monitor.observe(float(error), dict(zip(NAMES, row, strict=True)), ts=float(i))
        if signal is not None:
            fired_at = signal.at_ts
            assert signal.trigger == Trigger(kind="error_drift")
            break
    assert fired_at is not None and shift_at <= fired_at < shift_at + 500


def test_holdout_is_the_newest_share() -> None:
    train, holdout = split_holdout(10, share=0.2)
    assert (train, holdout) == (slice(0, 8), slice(8, 10))


def test_a_shift_in_a_monitored_feature_fires_its_detector() -> None:
    rng = np.random.default_rng(5)
    X_train, _ = deliveries(3000, rng)
    monitor = DriftMonitor(feature_baseline(X_train, NAMES, ["couriers_idle"]), min_examples=1)
    X_calm, _ = deliveries(2000, rng)
    assert all(
        monitor.observe(2.0, dict(zip(NAMES, row, strict=True)), 0.0) is None for row in X_calm
    )
    X_scarce, _ = deliveries(500, rng)
    X_scarce[:, 2] = rng.integers(0, 4, len(X_scarce))  # couriers went home
    signals = [monitor.observe(2.0, dict(zip(NAMES, row, strict=True)), 1.0) for row in X_scarce]
    fired = [s for s in signals if s is not None]
    assert fired and fired[0].trigger == Trigger(kind="input_drift", feature="couriers_idle")


def test_recency_weights_halve_per_half_life() -> None:
    from rtml.services.trainer.training import recency_weights

    np.testing.assert_allclose(
        recency_weights(np.array([0.0, 1800.0, 3600.0]), 1800.0), [0.25, 0.5, 1.0]
    )


def test_evaluation_is_xgboosts_metric_of_the_declared_name() -> None:
    """The figures the trainer records are those of a plain computation."""
    rng = np.random.default_rng(11)
    X, y = rng.random((400, 3)), (rng.random(400) < 0.3).astype(float)
    by_chance = Model("binary", objective="binary:logistic", metric="logloss")
    booster = train_from_scratch(X, y, NAMES, by_chance, rounds=10).booster
    p = booster.inplace_predict(X).astype(float)
    positives, negatives = p[y == 1], p[y == 0]
    pairs = (positives[:, None] > negatives[None, :]) + 0.5 * (
        positives[:, None] == negatives[None, :]
    )
    expected = {
        "mae": np.mean(np.abs(p - y)),
        "rmse": np.sqrt(np.mean((p - y) ** 2)),
        "logloss": -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)),
        "auc": pairs.mean(),
    }
    for metric, value in expected.items():
        assert evaluate(booster, X, y, NAMES, metric) == pytest.approx(value, rel=1e-5), metric
    # the booster the caller holds keeps the metrics it had
    assert booster.eval_set([(xgb.DMatrix(X, y, feature_names=NAMES), "d")]).count(":") == 1
