"""Training, fine-tuning and evaluation of XGBoost models. Pure: arrays in, boosters out.

What is fitted and how it is judged is the task's ``Model``: its objective, and
its metric (``shared/model_metrics.py``), computed by XGBoost's own ``eval_metric``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xgboost as xgb
from rtml.shared.tasks.spec import Model

# the objective and the eval_metric come from the task's Model
DEFAULT_PARAMS: dict[str, object] = {
    "max_depth": 6,
    "learning_rate": 0.1,
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
    X: np.ndarray, y: np.ndarray, feature_names: list[str], model: Model,
    rounds: int = FROM_SCRATCH_ROUNDS, params: dict[str, object] | None = None,
) -> TrainingRun:  # fmt: skip
    chosen = params_of(model, params)
    booster = xgb.train(chosen, _matrix(X, y, feature_names), num_boost_round=rounds)
    return TrainingRun(booster, chosen, rounds, _train_metrics(booster, X, y, feature_names, model))


def fine_tune(
    parent: xgb.Booster, X: np.ndarray, y: np.ndarray, feature_names: list[str], model: Model,
    rounds: int = FINE_TUNE_ROUNDS, params: dict[str, object] | None = None,
    weights: np.ndarray | None = None,
) -> TrainingRun:  # fmt: skip
    """Continued training: new trees fitted to the parent's residuals on new data only."""
    chosen = params_of(model, params)
    matrix = _matrix(X, y, feature_names)
    if weights is not None:
        matrix.set_weight(weights)
    booster = xgb.train(chosen, matrix, num_boost_round=rounds, xgb_model=parent)
    return TrainingRun(booster, chosen, rounds, _train_metrics(booster, X, y, feature_names, model))


def params_of(model: Model, params: dict[str, object] | None = None) -> dict[str, object]:
    """The booster's parameters: the defaults, the model's objective and metric, ``params``."""
    return {
        **DEFAULT_PARAMS,
        "objective": model.objective,
        "eval_metric": model.metric,
        **(params or {}),
    }


def recency_weights(label_ts: np.ndarray, half_life_s: float = RECENCY_HALF_LIFE_S) -> np.ndarray:
    """Each example's weight halves for every half-life it is older than the newest:
    after a drift the new regime dominates the fine-tune without a guess of when it began."""
    if len(label_ts) == 0:
        return np.array([])
    return np.power(0.5, (label_ts.max() - label_ts) / half_life_s)


def evaluate(
    booster: xgb.Booster, X: np.ndarray, y: np.ndarray, feature_names: list[str], metric: str
) -> float:
    """``booster``'s ``metric`` on (X, y) by XGBoost's eval_metric of that name; NaN when it
    is undefined there (no example, or an AUC over one class only)."""
    if len(y) == 0:
        return float("nan")
    # set_param adds a metric to those the booster evaluates: the caller's stays as it was
    judge = booster.copy()
    judge.set_param({"eval_metric": metric})
    # "[0]\tdata-mae:1.53\tdata-rmse:2.01": one entry per metric the booster evaluates
    report = judge.eval_set([(_matrix(X, y, feature_names), "data")])
    values = dict(entry.split(":") for entry in report.split("\t")[1:])
    return float(values[f"data-{metric}"])


def split_holdout(n: int, share: float = HOLDOUT_SHARE) -> tuple[slice, slice]:
    """Train on the older examples, hold out the newest (rows are in label-time order)."""
    cut = int(round(n * (1 - share)))
    return slice(0, cut), slice(cut, n)


def _train_metrics(
    booster: xgb.Booster, X: np.ndarray, y: np.ndarray, feature_names: list[str], model: Model
) -> dict[str, float]:
    return {
        f"train_{model.metric}": evaluate(booster, X, y, feature_names, model.metric),
        "n_train": float(len(y)),
    }


def _matrix(X: np.ndarray, y: np.ndarray, feature_names: list[str]) -> xgb.DMatrix:
    return xgb.DMatrix(X, label=y, feature_names=feature_names or None)
