"""A binary task of the tests' own, built only on the task API: is an order's
kitchen slow (ready more than 20 minutes after it was placed)? Declared here as a
user declares theirs, loaded by module path (``loaded()``), to show that the
trainer, the prediction service and the collector follow its ``Model``.

``examples`` makes its training data: the chance of a slow kitchen grows with the
order's size and the size of the restaurant's recent orders; ``rush`` shifts it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from rtml.shared.contracts import FeatureVector, Message, TrainingExample
from rtml.shared.tasks import registry
from rtml.shared.tasks.spec import Entity, Feature, Label, Model, TaskSpec

from rtml.tasks.eta.events import OrderPlaced, OrderReady

SLOW_AFTER_MIN = 20.0


def slow(ready: Message) -> float:
    assert isinstance(ready, OrderReady)
    return float(ready.ts - ready.placed_ts > SLOW_AFTER_MIN * 60)


def items(placed: Message) -> float:
    assert isinstance(placed, OrderPlaced)
    return float(placed.n_items)


def closeness(probability: float | list[float], label: float) -> float:
    """1 for a certain right answer, 0 for a certain wrong one."""
    assert isinstance(probability, float)
    return 1.0 - abs(probability - label)


TASK = TaskSpec(
    name="slow_kitchen",
    events=(OrderPlaced, OrderReady),
    entities=(Entity("restaurant", key="restaurant_id"),),
    request_keys=("order_id",),
    features=(
        Feature("n_items", "input", default=2.0),
        Feature("hour_of_day", "calendar"),
        Feature(
            "restaurant_mean_items_30m",
            "mean",
            entity="restaurant",
            window_s=1800.0,
            default=2.0,
            events=(OrderPlaced,),
            value=items,
        ),
    ),
    label=Label(OrderReady, join=(("order_id", "order_id"),), value=slow, reward=closeness),
    model=Model("binary", objective="binary:logistic", metric="logloss"),
)


@contextlib.contextmanager
def loaded(model: Model | None = None) -> Iterator[TaskSpec]:
    """rtml's tasks and this one, in this process and the service processes it starts;
    declaring ``model`` instead of its own in this process only."""
    spec = TASK if model is None else dataclasses.replace(TASK, model=model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(registry.TASKS_ENV, f"{os.environ[registry.TASKS_ENV]},{__name__}")
        patch.setattr(sys.modules[__name__], registry.SPEC_ATTRIBUTE, spec)
        registry.tasks.cache_clear()
        try:
            yield spec
        finally:
            # the next lookup loads the tasks of the environment restored on exit
            registry.tasks.cache_clear()


def vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.column_stack(
        [rng.integers(1, 12, n), rng.integers(0, 24, n), rng.uniform(1, 12, n)]
    ).astype(float)


def examples(n: int, rng: np.random.Generator, rush: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, 0/1 labels); ``rush`` adds to the log-odds of a slow kitchen where
    recent orders are large (a regime a fine-tune should learn)."""
    X = vectors(n, rng)
    log_odds = -3.0 + 0.25 * X[:, 0] + 0.2 * X[:, 2] + rush * (X[:, 2] > 7)
    slow_kitchen = rng.random(n) < 1.0 / (1.0 + np.exp(-log_odds))
    return X, slow_kitchen.astype(float)


def feature_vector(row: np.ndarray) -> FeatureVector:
    return FeatureVector(
        feature_set=TASK.feature_set,
        names=list(TASK.feature_names),
        values=[float(v) for v in row],
        freshness_s=[None] * len(row),
        defaulted=[False] * len(row),
    )


def training_example(
    request_id: str, row: np.ndarray, label: float, ts: float, **fields: object
) -> TrainingExample:
    defaults: dict[str, object] = dict(model_version="v0", prediction=0.5)
    return TrainingExample(
        id=request_id, ts=ts, task=TASK.name, features=feature_vector(row), label=label,
        request_ts=ts - 1200, label_ts=ts, **(defaults | fields),
    )  # fmt: skip


def base_rate_log_loss(y: np.ndarray) -> float:
    """The log loss of always predicting the share of positives: what a model must beat."""
    rate = float(np.mean(y))
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
