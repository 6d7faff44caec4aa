"""The trainer's drift monitor: the champion's error on every labelled example, re-scored
from the example's logged features; river's detectors on the task's drift features; what
fired recorded with the version it triggered, and every firing counted."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.jobs import register, scratch_candidate
from rtml.services.trainer.service import Trainer
from rtml.services.trainer.training import train_from_scratch
from rtml.shared.contracts import TrainingExample, Trigger
from rtml.shared.model_announcements import Action
from rtml.shared.model_metrics import METRICS
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.tasks.spec import Model
from rtml.shared.warehouse import Located, Warehouse

from tests import binary_task

T_LABEL = 1_700_000_000.0
SOURCE = "rtml.training.examples-0"


async def never_announce(*_: object) -> None:
    raise AssertionError("nothing is trained here")


@pytest.mark.parametrize(
    ("model", "signal", "watched"),
    [
        (Model("binary", objective="binary:logistic", metric="logloss"), None, "error"),
        (Model("binary", objective="binary:logistic", metric="rmse"), None, "error"),
        (Model("binary", objective="binary:logistic", metric="auc"), None, "error"),
        (Model("binary", objective="binary:logistic", metric="logloss"), "residual", "residual"),
        (Model("regression", objective="reg:squarederror", metric="mae"), None, "residual"),
        (Model("regression", objective="reg:squarederror", metric="mae"), "error", "error"),
    ],
)
async def test_the_monitor_watches_the_champions_own_error_whoever_served_the_example(
    tmp_path: Path, model: Model, signal: str | None, watched: str
) -> None:
    X, y = binary_task.examples(300, np.random.default_rng(1))
    store = ModelStore(tmp_path / "models")
    with binary_task.loaded(model) as spec:
        run = train_from_scratch(X, y, list(spec.feature_names), spec.model, rounds=5)
        record = store.register(
            run.booster, task=spec.name, feature_set=spec.feature_set, data_range={},
            params=run.params, metrics={},
        )  # fmt: skip
        store.set_champion(spec.name, record.version)
        settings = TrainerSettings(
            trainer_task=spec.name, drift_features=[], drift_error_signal=signal
        )
        trainer = Trainer(settings, store, Warehouse(tmp_path / "warehouse"), never_announce)
        # served by an older version, whose prediction (0.9) is not the champion's
        example = binary_task.training_example(
            "req-1", X[0], 0.0, T_LABEL, model_version="an-older-version", prediction=0.9
        )
        await trainer.observe(example)
        monitor = trainer._watch_of(record).monitor
    champions = float(run.booster.inplace_predict(X[:1])[0])
    assert not math.isclose(champions, 0.9)
    # the label is 0: the residual is minus the champion's prediction
    error = METRICS[model.metric].example_error(champions, 0) if watched == "error" else -champions
    assert monitor._error.estimation == pytest.approx(error)


async def test_a_vector_of_another_feature_set_is_not_scored(tmp_path: Path) -> None:
    X, y = binary_task.examples(300, np.random.default_rng(1))
    store = ModelStore(tmp_path / "models")
    with binary_task.loaded() as spec:
        run = train_from_scratch(X, y, list(spec.feature_names), spec.model, rounds=5)
        record = store.register(
            run.booster, task=spec.name, feature_set="slow_kitchen@0", data_range={},
            params=run.params, metrics={},
        )  # fmt: skip
        store.set_champion(spec.name, record.version)
        settings = TrainerSettings(trainer_task=spec.name, drift_features=[])
        trainer = Trainer(settings, store, Warehouse(tmp_path / "warehouse"), never_announce)
        await trainer.observe(binary_task.training_example("req-1", X[0], 0.0, T_LABEL))
        assert trainer._watch_of(record).monitor._observed == 0


class Announcements:
    def __init__(self) -> None:
        self.registered: list[ModelRecord] = []

    async def __call__(self, record: ModelRecord, action: Action, reason: str) -> None:
        if action == "registered":
            self.registered.append(record)


def examples(
    rows: np.ndarray, labels: np.ndarray, since: float, model_version: str
) -> list[TrainingExample]:
    return [
        binary_task.training_example(
            f"req-{since}-{i}", row, float(label), since + i, model_version=model_version
        )
        for i, (row, label) in enumerate(zip(rows, labels, strict=True))
    ]


def store_in(warehouse: Warehouse, batch: list[TrainingExample], first_offset: int) -> None:
    warehouse.write([Located(e, SOURCE, first_offset + i) for i, e in enumerate(batch)])


def trainer_with_a_champion(
    root: Path, task: str, rng: np.random.Generator, **settings: Any
) -> tuple[Trainer, Announcements, ModelRecord]:
    """A trainer of ``task`` whose champion was trained from scratch on 600 examples
    that the warehouse holds, and what it announces."""
    store, warehouse = ModelStore(root / "models"), Warehouse(root / "warehouse")
    X, y = binary_task.examples(600, rng)
    store_in(warehouse, examples(X, y, T_LABEL, "v0"), 0)
    champion = register(store, scratch_candidate(warehouse, task, rounds=20))
    store.set_champion(task, champion.version)
    announced = Announcements()
    trainer = Trainer(TrainerSettings(trainer_task=task, **settings), store, warehouse, announced)
    return trainer, announced, champion


async def observe_until(trainer: Trainer, later: list[TrainingExample], versions: int) -> None:
    """Feed ``later`` to the trainer, each triggered training to its end, until it has
    registered ``versions`` versions or the examples run out."""
    for example in later:
        await trainer.observe(example)
        await asyncio.gather(*trainer._background)
        if len(trainer.store.list(trainer.settings.task)) > versions:  # the champion too
            return


@pytest.mark.parametrize(
    ("shift", "trigger"),
    [
        # the restaurants' recent orders grow far past anything trained on
        ("inputs", Trigger(kind="input_drift", feature="restaurant_mean_items_30m")),
        # the same inputs, but the slow kitchens and the others swap
        ("labels", Trigger(kind="error_drift")),
    ],
)
async def test_a_drift_fine_tunes_the_champion_and_the_version_records_what_fired(
    tmp_path: Path, shift: str, trigger: Trigger
) -> None:
    rng = np.random.default_rng(2)
    with binary_task.loaded() as spec:
        trainer, announced, champion = trainer_with_a_champion(
            tmp_path, spec.name, rng, drift_features=["restaurant_mean_items_30m"]
        )
        # the detectors look for a change in the live stream: calm first, then the shift
        X_new, y_new = binary_task.examples(900, rng)
        if shift == "inputs":
            X_new[300:, 2] += 20.0
        else:
            y_new[300:] = 1.0 - y_new[300:]
        later = examples(X_new, y_new, T_LABEL + 10_000, champion.version)
        store_in(trainer.warehouse, later, 600)
        await observe_until(trainer, later, versions=1)
        assert [r.parent_version for r in announced.registered] == [champion.version]
        version = announced.registered[0].version
        assert announced.registered[0].trigger == trigger
        assert trainer.store.record(version).trigger == trigger  # in the version's lineage, on disk


@pytest.mark.parametrize(
    ("margin", "significance", "fine_tunes", "end"),
    [
        # any error off its level before the swap passes the test: the bound ends it
        (0.0, 0.999, 3, "bound"),
        # any error is within 100 spreads of it: the first check ends it
        (100.0, 0.01, 1, "recovered"),
    ],
)
async def test_a_drift_episode_fine_tunes_until_the_error_is_back_or_its_bound(
    tmp_path: Path, margin: float, significance: float, fine_tunes: int, end: str
) -> None:
    rng = np.random.default_rng(2)
    with binary_task.loaded() as spec:
        trainer, announced, champion = trainer_with_a_champion(
            tmp_path, spec.name, rng, drift_features=[], drift_follow_up_examples=150,
            drift_episode_margin=margin, drift_episode_significance=significance,
            drift_episode_fine_tunes=3,
        )  # fmt: skip
        X_new, y_new = binary_task.examples(1400, rng)
        y_new[300:] = 1.0 - y_new[300:]  # a lasting swap: each fine-tune still has much to learn
        later = examples(X_new, y_new, T_LABEL + 10_000, champion.version)
        store_in(trainer.warehouse, later, 600)
        ended = REGISTRY.get_sample_value("rtml_trainer_drift_episodes_total", {"end": end}) or 0
        references = []
        for example in later:
            await trainer.observe(example)
            await asyncio.gather(*trainer._background)
            if trainer._episode is not None:
                references.append(trainer._episode.reference)
    triggers = [record.trigger for record in announced.registered]
    drift = Trigger(kind="error_drift")
    assert triggers == [drift.model_copy(update={"follow_up": n}) for n in range(fine_tunes)]
    assert [t.text for t in triggers if t is not None][1:] == [
        f"error drift, follow-up {n}" for n in range(1, fine_tunes)
    ]
    # one episode, whose level before the drift stayed the same across its champions
    assert len(set(references)) == 1
    # its follow-ups learn from every example since the firing, the first fine-tune's too
    first, *follow_ups = (record.data_range for record in announced.registered)
    for data in follow_ups:
        assert first["since_label_ts"] < data["since_label_ts"] < first["until_label_ts"]
    assert len({data["since_label_ts"] for data in follow_ups}) <= 1
    assert REGISTRY.get_sample_value("rtml_trainer_drift_episodes_total", {"end": end}) == ended + 1


async def test_a_batch_of_examples_starts_one_fine_tune_at_a_time(tmp_path: Path) -> None:
    # the service observes a fetched batch's examples one after another with no pause,
    # so a follow-up that is due stays due for the rest of the batch
    rng = np.random.default_rng(2)
    with binary_task.loaded() as spec:
        trainer, announced, champion = trainer_with_a_champion(
            tmp_path, spec.name, rng, drift_features=[], drift_follow_up_examples=150,
            drift_episode_margin=0.0, drift_episode_significance=0.999,
            drift_episode_fine_tunes=3,
        )  # fmt: skip
        X_new, y_new = binary_task.examples(1400, rng)
        y_new[300:] = 1.0 - y_new[300:]
        later = examples(X_new, y_new, T_LABEL + 10_000, champion.version)
        store_in(trainer.warehouse, later, 600)
        most_started = 0
        for start in range(0, len(later), 100):
            for example in later[start : start + 100]:
                await trainer.observe(example)
                most_started = max(most_started, len(trainer._background))
            await asyncio.gather(*trainer._background)
    assert most_started == 1
    follow_ups = [record.trigger.follow_up for record in announced.registered if record.trigger]
    assert follow_ups == [0, 1, 2]


async def test_a_drift_firing_counts_even_when_it_starts_no_fine_tune(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with binary_task.loaded() as spec:
        trainer, announced, champion = trainer_with_a_champion(
            tmp_path, spec.name, rng, drift_features=[], drift_finetune=False
        )
        X_new, y_new = binary_task.examples(900, rng)
        y_new[300:] = 1.0 - y_new[300:]  # the world changed: the champion is wrong now
        before = REGISTRY.get_sample_value(
            "rtml_trainer_drift_signals_total", {"source": "error_drift"}
        )
        for example in examples(X_new, y_new, T_LABEL + 10_000, champion.version):
            await trainer.observe(example)
    after = REGISTRY.get_sample_value("rtml_trainer_drift_signals_total", {"source": "error_drift"})
    assert (after or 0) > (before or 0)
    assert announced.registered == []  # RTML_DRIFT_FINETUNE off: nothing was trained
