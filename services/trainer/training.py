"""Training, fine-tuning and evaluation of XGBoost models. Pure: arrays in, boosters out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xgboost as xgb

DEFAULT_PARAMS: dict[str, object] = {
    "objective": "reg:absoluteerror",
    "max_depth": 6,
    "eta": 0.1,
    "subsample": 0.9,
    "min_child_weight": 2,
    "tree_method": "hist",
    "nthread": 1,
    "seed": 0,
}
FROM_SCRATCH_ROUNDS = 200
FINE_TUNE_ROUNDS = 40
# fine-tunes weight examples by recency with this half-life (event time)
RECENCY_HALF_LIFE_S = 1800.0
# share of the newest examples held out to judge a candidate against its parent
HOLDOUT_SHARE = 0.2


@dataclass(frozen=True)
class TrainingRun:
    booster: xgb.Booster
    params: dict[str, object]
    rounds: int
    metrics: dict[str, float] = field(default_factory=dict)


def train_from_scratch(
    X: np.ndarray, y: np.ndarray, feature_names: list[str], rounds: int = FROM_SCRATCH_ROUNDS,
    params: dict[str, object] | None = None,
) -> TrainingRun:  # fmt: skip
    chosen = {**DEFAULT_PARAMS, **(params or {})}
    booster = xgb.train(chosen, _matrix(X, y, feature_names), num_boost_round=rounds)
    return TrainingRun(
        booster, chosen, rounds, {"train_mae": mae(booster, X, y), "n_train": float(len(y))}
    )


def fine_tune(
    parent: xgb.Booster, X: np.ndarray, y: np.ndarray, feature_names: list[str],
    rounds: int = FINE_TUNE_ROUNDS, params: dict[str, object] | None = None,
    weights: np.ndarray | None = None,
) -> TrainingRun:  # fmt: skip
    """Continued training: new trees fitted to the parent's residuals on new data only."""
    chosen = {**DEFAULT_PARAMS, **(params or {})}
    matrix = _matrix(X, y, feature_names)
    if weights is not None:
        matrix.set_weight(weights)
    booster = xgb.train(chosen, matrix, num_boost_round=rounds, xgb_model=parent)
    return TrainingRun(
        booster, chosen, rounds, {"train_mae": mae(booster, X, y), "n_train": float(len(y))}
    )


def recency_weights(label_ts: np.ndarray, half_life_s: float = RECENCY_HALF_LIFE_S) -> np.ndarray:
    """Each example's weight halves for every half-life it is older than the newest:
    after a drift the new regime dominates the fine-tune without a guess of when it began."""
    if len(label_ts) == 0:
        return np.array([])
    return np.power(0.5, (label_ts.max() - label_ts) / half_life_s)


def mae(booster: xgb.Booster, X: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    return float(np.mean(np.abs(booster.inplace_predict(X) - y)))


def split_holdout(n: int, share: float = HOLDOUT_SHARE) -> tuple[slice, slice]:
    """Train on the older examples, hold out the newest (rows are in label-time order)."""
    cut = int(round(n * (1 - share)))
    return slice(0, cut), slice(cut, n)


def _matrix(X: np.ndarray, y: np.ndarray, feature_names: list[str]) -> xgb.DMatrix:
    return xgb.DMatrix(X, label=y, feature_names=feature_names or None)
