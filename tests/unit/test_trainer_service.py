"""The trainer's decisions on the live error: every drift firing is counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.service import Trainer
from rtml.shared.contracts import FeatureVector, TrainingExample
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.warehouse import Warehouse

from tests.unit.test_prediction_models import register

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
