"""The first model from events: the labelled history's count, the event-log candidate,
and the trainer registering, crowning and announcing it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from rtml.services.trainer.bootstrap import (
    LabelledHistory,
    NoLabelsInLog,
    event_log_candidate,
    examples_from_log,
)
from rtml.services.trainer.coldstart import ColdStart
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.service import Trainer
from rtml.shared.contracts import PredictRequest, TrainerStatus, Trigger
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.settings import Settings
from rtml.shared.warehouse import Warehouse

from rtml.tasks.eta.events import CourierOnline
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from rtml.tasks.eta.spec import TASK as ETA
from rtml.tasks.recs.spec import TASK as RECS
from tests.unit.test_prediction_handlers import FEATURE_SET, train_booster

HOUR = 3600.0


@pytest.fixture(scope="module")
def two_hours() -> list:
    return list(simulate(SimConfig(seed=3), 2 * HOUR))


def test_the_history_counts_as_it_comes_the_examples_the_log_makes(two_hours) -> None:
    history = LabelledHistory(ETA)
    counts = []
    for message in two_hours:
        history.add(message)
        counts.append(history.labelled)
    assert counts == sorted(counts) and counts[0] == 0
    assert history.labelled == len(examples_from_log(two_hours, ETA)) > 200
    half = len(two_hours) // 2
    assert counts[half - 1] == len(examples_from_log(two_hours[:half], ETA))


def test_windows_that_close_unlabelled_count_when_the_label_says_what_they_are(
    two_hours,
) -> None:
    """A windowed label with when_missing: a request is labelled by its event in the
    window, or by the window closing without one; the count follows the examples."""
    label = dataclasses.replace(ETA.label, window_s=1800.0, when_missing=60.0)
    spec = dataclasses.replace(ETA, label=label)
    history = LabelledHistory(spec)
    for message in two_hours:
        history.add(message)
    examples = examples_from_log(two_hours, spec)
    assert history.labelled == len(examples) > len(examples_from_log(two_hours, ETA)) // 2
    assert 60.0 in set(examples.y.tolist())  # some deliveries took longer than 30 minutes


def test_repeats_count_once_and_what_is_not_the_tasks_is_left_out(two_hours) -> None:
    history = LabelledHistory(ETA)
    for message in two_hours:
        history.add(message)
    before = (history.labelled, len(history.messages))
    request = next(m for m in two_hours if isinstance(m, PredictRequest))
    history.add(request)  # a retried request: same order
    assert history.labelled == before[0]
    history.add(request.model_copy(update={"task": "recs"}))
    assert len(history.messages) == before[1] + 1  # the repeat kept, the other task's not
    assert isinstance(history.messages[-1], PredictRequest)
    assert history.messages[-1].task == "eta"
    history.add(CourierOnline(ts=request.ts, courier_id="c", zone_id="z"))
    assert len(history.messages) == before[1] + 2


def test_a_label_joined_on_the_arm_cannot_come_from_events(two_hours) -> None:
    assert ETA.label.joins_from_events and not RECS.label.joins_from_events
    with pytest.raises(NoLabelsInLog):
        LabelledHistory(RECS)
    with pytest.raises(NoLabelsInLog):
        examples_from_log(two_hours, RECS)


def test_the_candidate_records_its_source_and_examples(two_hours) -> None:
    candidate = event_log_candidate(two_hours, "eta", {"source": "test"}, rounds=5)
    examples = len(examples_from_log(two_hours, ETA))
    assert candidate.data_range == {"source": "test", "examples": examples}
    assert candidate.parent_version is None and candidate.better_than_parent


async def test_the_trainer_registers_crowns_and_announces_the_first_model(
    two_hours, tmp_path: Path
) -> None:
    announced: list[tuple[str, str, str]] = []

    async def announce(record: ModelRecord, action: str, reason: str) -> None:
        announced.append((record.version, action, reason))

    store = ModelStore(tmp_path / "models")
    trainer = Trainer(TrainerSettings(), store, Warehouse(tmp_path / "wh"), announce)
    record = await trainer.bootstrap(two_hours, [], {"source": "topics"})
    assert record is not None and store.champion("eta").version == record.version  # type: ignore[union-attr]
    assert record.data_range["source"] == "topics" and record.parent_version is None
    assert [action for _, action, _ in announced] == ["registered", "promoted"]
    assert record.trigger == Trigger(kind="bootstrap")  # what started it, in its record

    second = await trainer.bootstrap(two_hours, [], {"source": "topics"})
    assert second is not None and store.champion("eta").version == record.version  # type: ignore[union-attr]
    assert [action for _, action, _ in announced[2:]] == ["registered"]  # no second crowning


async def cold_start_statuses(tmp_path: Path, task: str, champion: bool = False) -> list:
    """What the cold start says when it has nothing to read (no Kafka involved)."""
    store = ModelStore(tmp_path / "models")
    if champion:
        record = register_booster(store, task)
        store.set_champion(task, record.version)
    config = TrainerSettings(trainer_task=task)
    said: list[TrainerStatus] = []

    async def announce(*_: object) -> None:
        raise AssertionError("nothing is trained, nothing is announced")

    trainer = Trainer(config, store, Warehouse(tmp_path / "wh"), announce)

    async def publish(status: TrainerStatus) -> None:
        said.append(status)

    await ColdStart(Settings(), config, trainer, publish).run(asyncio.Event())
    return said


def register_booster(store: ModelStore, task: str) -> ModelRecord:
    return store.register(
        train_booster(seed=1), task=task, feature_set=FEATURE_SET, data_range={}, params={},
        metrics={},
    )  # fmt: skip


async def test_a_task_whose_label_joins_on_the_arm_says_it_cannot_start_from_events(
    tmp_path: Path,
) -> None:
    (status,) = await cold_start_statuses(tmp_path, "recs")
    assert status.task == "recs" and status.phase == "cannot_bootstrap"
    assert "joins on the arm" in status.detail and "rtml train --task recs" in status.detail


async def test_a_task_with_a_champion_reads_no_history(tmp_path: Path) -> None:
    (status,) = await cold_start_statuses(tmp_path, "eta", champion=True)
    assert status.phase == "has_champion" and status.detail.startswith("eta")
