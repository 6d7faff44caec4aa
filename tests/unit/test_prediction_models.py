"""The model follower applying announcements to the scorer, against a real model store."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from rtml.services.prediction.coldstart import TrainerProgress
from rtml.services.prediction.handlers import Scorer
from rtml.services.prediction.metrics import PREDICTIONS
from rtml.services.prediction.models import ModelFollower
from rtml.shared.contracts import TrainerStatus
from rtml.shared.model_announcements import announcement_for
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.settings import Settings

from tests.unit.test_prediction_handlers import FEATURE_SET, train_booster


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path)


def register(store: ModelStore, version: str) -> ModelRecord:
    return store.register(
        train_booster(seed=len(version)), task="eta", version=version, feature_set=FEATURE_SET,
        data_range={}, params={}, metrics={},
    )  # fmt: skip


@pytest.fixture
def scorer() -> Scorer:
    return Scorer()


@pytest.fixture
def follower(store: ModelStore, scorer: Scorer) -> ModelFollower:
    return ModelFollower(Settings(), store, scorer)


async def test_registered_loads_promoted_crowns_retired_unloads(
    store: ModelStore, scorer: Scorer, follower: ModelFollower
) -> None:
    v1, v2 = register(store, "v1"), register(store, "v2")

    await follower.apply(announcement_for(v1, "registered"))
    assert set(scorer.snapshot.models) == {"v1"} and scorer.champion("eta") is None
    assert follower.readiness("eta") == "no eta champion loaded"

    await follower.apply(announcement_for(v2, "promoted"))
    assert scorer.champion("eta").version == "v2"  # type: ignore[union-attr]
    assert follower.readiness("eta") is True
    await follower.wait_for_champion("eta")

    for version in ("v1", "v2"):
        PREDICTIONS.labels("eta", version, "false").inc()
    await follower.apply(announcement_for(v1, "retired"))
    await follower.apply(announcement_for(v2, "retired"))
    # the champion keeps serving until another is promoted, and keeps its series
    assert set(scorer.snapshot.models) == {"v2"}
    assert predictions_of("v1") is None and predictions_of("v2")


def predictions_of(version: str) -> float | None:
    labels = {"task": "eta", "version": version, "fell_back": "false"}
    return REGISTRY.get_sample_value("rtml_predictions_total", labels)


async def test_a_version_that_fails_its_checks_is_not_loaded_and_readiness_says_why(
    store: ModelStore, scorer: Scorer, follower: ModelFollower
) -> None:
    tampered = register(store, "tampered")
    artifact = Path(str(store)) / "versions" / "tampered" / "model.ubj"
    artifact.write_bytes(artifact.read_bytes()[:-8] + b"tampered")
    other_store = register(store, "elsewhere")

    await follower.apply(announcement_for(tampered, "promoted"))
    announced_elsewhere = announcement_for(other_store, "registered")
    await follower.apply(announced_elsewhere.model_copy(update={"sha256": "0" * 64}))
    await follower.apply(announcement_for(ModelRecord.model_validate(
        other_store.model_dump() | {"version": "not-in-this-store"}), "registered"))  # fmt: skip

    assert scorer.snapshot.models == {}
    verdict = follower.readiness("eta")
    assert isinstance(verdict, str) and verdict.startswith("no eta champion loaded (load failures:")
    assert "tampered: " in verdict and "modified after registration" in verdict
    assert "elsewhere: " in verdict and "rtml.models announced" in verdict
    assert "no model version 'not-in-this-store'" in verdict


def trainer_status(phase: str, labelled: int = 0, detail: str = "") -> TrainerStatus:
    return TrainerStatus(
        ts=1.0, task="eta", phase=phase, labelled=labelled, needed=300, detail=detail
    )  # type: ignore[arg-type]


async def test_without_a_champion_readiness_repeats_the_trainers_last_word(
    store: ModelStore, scorer: Scorer
) -> None:
    progress = TrainerProgress()
    follower = ModelFollower(Settings(), store, scorer, progress)
    assert follower.readiness("eta") == (
        "no eta champion loaded; no word from the trainer about eta yet (rtml.trainer.status)"
    )
    progress.apply(trainer_status("collecting", 143))
    assert follower.readiness("eta") == (
        "no eta champion loaded; the trainer bootstraps the first eta model from rtml.events "
        "once 300 requests have their label: 143 so far"
    )
    progress.apply(trainer_status("training", 301))
    assert "training the first eta model on 301 labels" in str(follower.readiness("eta"))
    progress.apply(trainer_status("cannot_bootstrap", detail="its label joins on the arm"))
    assert str(follower.readiness("eta")).endswith("; its label joins on the arm")

    await follower.apply(announcement_for(register(store, "v1"), "promoted"))
    assert follower.readiness("eta") is True
