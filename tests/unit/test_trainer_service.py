"""The trainer's decisions follow the task's Model: the drift monitor's error, and every
drift firing is counted."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.service import Trainer
from rtml.services.trainer.training import train_from_scratch
from rtml.shared.contracts import FeatureVector, TrainingExample
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.tasks.spec import Model
from rtml.shared.warehouse import Warehouse

from tests import binary_task
from tests.unit.test_prediction_models import register

T_LABEL = 1_700_000_000.0


async def never_announce(*_: object) -> None:
    raise AssertionError("nothing is trained here")


@pytest.mark.parametrize(
    ("metric", "error"),
    # a probability of 0.9 for an order whose kitchen was not slow
    [("logloss", -math.log(0.1)), ("rmse", 0.81), ("auc", 0.9)],
)
async def test_the_drift_monitor_watches_the_error_the_declared_metric_defines(
    tmp_path: Path, metric: str, error: float
) -> None:
    X, y = binary_task.examples(300, np.random.default_rng(1))
    store = ModelStore(tmp_path / "models")
    with binary_task.loaded(Model("binary", objective="binary:logistic", metric=metric)) as spec:
        run = train_from_scratch(X, y, list(spec.feature_names), spec.model, rounds=5)
        record = store.register(
            run.booster, task=spec.name, feature_set=spec.feature_set, data_range={},
            params=run.params, metrics={},
        )  # fmt: skip
        store.set_champion(spec.name, record.version)
        settings = TrainerSettings(trainer_task=spec.name, drift_features=[])
        trainer = Trainer(settings, store, Warehouse(tmp_path / "warehouse"), never_announce)
        example = binary_task.training_example(
            "req-1", X[0], 0.0, T_LABEL, model_version=record.version, prediction=0.9
        )
        await trainer.observe(example)
        monitor = trainer._monitor_of(record)
    assert monitor._error.estimation == pytest.approx(error)


VECTOR = FeatureVector(feature_set="eta@1", names=["x"], values=[1.0], freshness_s=[None],
                       defaulted=[False])  # fmt: skip


def example(i: int, error: float, version: str) -> TrainingExample:
    return TrainingExample(
        id=f"r{i}", ts=float(i), task="eta", features=VECTOR, label=20.0 + error,
        model_version=version, prediction=20.0, request_ts=float(i), label_ts=float(i),
    )  # fmt: skip


async def test_a_drift_firing_counts_even_when_it_starts_no_fine_tune(tmp_path: Path):
    store = ModelStore(tmp_path / "models")
    champion: ModelRecord = register(store, "champion-v1")
    store.set_champion("eta", champion.version)
    announced: list[ModelRecord] = []

    async def announce(record: ModelRecord, _reason: str) -> None:
        announced.append(record)

    settings = TrainerSettings(trainer_task="eta", drift_finetune=False)
    trainer = Trainer(settings, store, Warehouse(tmp_path / "warehouse"), announce)
    before = REGISTRY.get_sample_value("rtml_trainer_drift_signals_total", {"source": "error"})
    errors = np.random.default_rng(0).normal(0, 1, 1000)
    errors[500:] += 30  # the world changed: the champion is half an hour off

    for i, error in enumerate(errors):
        await trainer.observe(example(i, float(error), champion.version))

    after = REGISTRY.get_sample_value("rtml_trainer_drift_signals_total", {"source": "error"})
    assert (after or 0) > (before or 0)
    assert announced == []  # RTML_DRIFT_FINETUNE off: nothing was trained
