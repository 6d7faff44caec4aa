"""The metrics a task's model is judged by (``Model.metric``): which model kinds
each one fits, in which direction it is better, and its error per example.

A metric's value on a holdout is computed by XGBoost's own implementation of the
``eval_metric`` of the same name (``services/trainer/training.py``), so the
trainer's figure is the one XGBoost users know. The error per example is what
the trainer's drift monitor watches on the live labelled stream, one example at
a time, for a shift in its mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from rtml.shared.tasks.spec import ModelKind

# a probability is kept this far from 0 and 1 in a log loss, as XGBoost's logloss does
PROBABILITY_EPSILON = 1e-16


def absolute_error(prediction: float, label: float) -> float:
    return abs(prediction - label)


def squared_error(prediction: float, label: float) -> float:
    return (prediction - label) ** 2


def log_loss(probability: float, label: float) -> float:
    """The log loss of one predicted probability of the positive class."""
    p = min(max(probability, PROBABILITY_EPSILON), 1.0 - PROBABILITY_EPSILON)
    return -(label * math.log(p) + (1.0 - label) * math.log(1.0 - p))


@dataclass(frozen=True)
class Metric:
    # XGBoost's eval_metric of this name computes it
    name: str
    # the model kinds whose predictions it judges
    kinds: tuple[ModelKind, ...]
    higher_is_better: bool
    # (prediction, label) -> the error of one example, for the drift monitor
    example_error: Callable[[float, float], float]

    def at_least_as_good(self, value: float, than: float) -> bool:
        """Whether ``value`` is no worse than ``than`` (a candidate's against its parent's)."""
        return value >= than if self.higher_is_better else value <= than


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("mae", ("regression",), higher_is_better=False, example_error=absolute_error),
        # on probabilities: the root of the Brier score, a proper scoring rule
        # (the mean absolute error is not: it rewards probabilities pushed to 0 or 1)
        Metric(
            "rmse", ("regression", "binary"), higher_is_better=False, example_error=squared_error
        ),
        Metric("logloss", ("binary",), higher_is_better=False, example_error=log_loss),
        # AUC ranks a set of examples and has no error per example: the drift monitor
        # watches the absolute error of the probability
        Metric("auc", ("binary",), higher_is_better=True, example_error=absolute_error),
    )
}


def metrics_for(kind: str) -> tuple[str, ...]:
    """The names of the metrics that judge a model of ``kind``."""
    return tuple(name for name, metric in METRICS.items() if kind in metric.kinds)
