"""At-least-once delivery repeats records: each stateful consumer must end in the
state exactly-once delivery gives. And what readiness makes of crashes and stalls."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from faust.types import TP
from rtml.services.collector.join import JoinState
from rtml.services.features.handlers import admit_events, changelog_records, replay_changelog
from rtml.services.features.state import EntityStates
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.service import Trainer
from rtml.shared.broker_compat_faust import CompatApp
from rtml.shared.contracts import PredictRequest, TrainingExample, decode, encode
from rtml.shared.faust_worker import CommitWatch
from rtml.shared.model_store import ModelStore
from rtml.shared.service import BrokerProbe
from rtml.shared.tasks.registry import tasks
from rtml.shared.warehouse import Warehouse

from rtml.tasks.eta.simulator.world import SimConfig, simulate
from tests.unit.test_collector_join import T0 as JOIN_T0
from tests.unit.test_collector_join import delivered, eta_prediction, feed, state
from tests.unit.test_features_state import assert_vectors_equal, service_vector

HOUR = 3600.0
T_LABEL = 1_700_000_000.0
FEATURES = eta_prediction("o1", JOIN_T0).features


# --- features: by event id, live and in recovery ----------------------------------------


@pytest.fixture(scope="module")
def eta_log() -> tuple[list[bytes], list[PredictRequest]]:
    log = list(simulate(SimConfig(seed=5, n_restaurants=8, n_couriers=20), 1 * HOUR))
    events = [encode(m) for m in log if isinstance(m, tasks().events)]
    return events, [m for m in log if isinstance(m, PredictRequest)]


def test_a_redelivered_batch_of_events_is_absorbed_live_and_in_recovery(eta_log) -> None:
    events, requests = eta_log
    once, twice, recovered = EntityStates(HOUR), EntityStates(HOUR), EntityStates(HOUR)
    admit_events(once, events)
    first = admit_events(twice, events[: len(events) // 2])
    # a crash before the commit: the batch comes again, then the rest
    again = admit_events(twice, events)
    assert again.duplicates == len(events) // 2 and not again.rejected
    # recovery folds the changelog, whose records may repeat events after a crash too
    for accepted in (first.accepted, first.accepted, again.accepted):
        replay_changelog(recovered, encode_changelog(accepted))
    for request in requests:
        want = service_vector(once, request)
        assert_vectors_equal(service_vector(twice, request), want, request.id)
        assert_vectors_equal(service_vector(recovered, request), want, request.id)


def encode_changelog(accepted: list[bytes]) -> bytes:
    (record,) = changelog_records(accepted)
    return record


class Exploding(EntityStates):
    """Entity state with a bug that one event triggers."""

    def apply(self, event):  # type: ignore[no-untyped-def]
        if event.id == "poison":
            raise KeyError("a bug")
        return super().apply(event)


def test_an_event_that_makes_the_state_raise_is_rejected_and_the_batch_flows(eta_log) -> None:
    events, _ = eta_log
    poison = encode(decode(events[0]).model_copy(update={"id": "poison"}))
    admitted = admit_events(Exploding(HOUR), [poison, *events[1:4]])
    assert [(r.index, r.reason) for r in admitted.rejected] == [(0, "handler")]
    assert "KeyError" in admitted.rejected[0].error and len(admitted.accepted) == 3


# --- collector: by join key --------------------------------------------------------------


def test_a_redelivered_prediction_or_label_is_absorbed_by_the_join() -> None:
    prediction, label = eta_prediction("o1", JOIN_T0), delivered("o1", JOIN_T0, 30.0)
    join: JoinState = state()
    emitted = feed(join, [prediction, label, prediction, label, label])
    assert [j.example.id for j in emitted] == ["req-o1"]
    assert join.counts["duplicate_prediction"] == 1 and join.counts["duplicate_label"] == 2


# --- trainer: by example id --------------------------------------------------------------


async def test_a_redelivered_example_reaches_the_drift_monitor_once(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    X = np.random.default_rng(0).random((64, len(FEATURES.names)))
    labelled = xgb.DMatrix(X, X.sum(axis=1), feature_names=list(FEATURES.names))
    booster = xgb.train({"nthread": 1}, labelled, num_boost_round=2)
    record = store.register(
        booster, task="eta", feature_set=FEATURES.feature_set, data_range={}, params={}, metrics={}
    )
    store.set_champion("eta", record.version)

    async def announce(*_: object) -> None:
        raise AssertionError("nothing is trained here")

    settings = TrainerSettings(drift_features=[], drift_finetune=False)
    trainer = Trainer(settings, store, Warehouse(tmp_path / "warehouse"), announce)
    example = TrainingExample(
        id="req-1", ts=T_LABEL, task="eta", features=FEATURES, label=31.0,
        model_version=record.version, prediction=29.0, request_ts=T_LABEL - 1800, label_ts=T_LABEL,
    )  # fmt: skip
    for _ in range(3):
        await trainer.observe(example)
    assert trainer._watch_of(record).monitor._observed == 1


# --- readiness ----------------------------------------------------------------------------


def test_commit_watch_flags_a_partition_whose_commits_stand_still_with_records_waiting() -> None:
    watch = CommitWatch(stall_after_s=0.05)
    tp = TP("rtml.events", 0)
    assert watch.verdict({tp: (10, 20)}) is True
    time.sleep(0.1)
    verdict = watch.verdict({tp: (10, 20)})
    assert isinstance(verdict, str) and "rtml.events[0] at 10 of 20" in verdict
    assert watch.verdict({tp: (15, 20)}) is True  # moving again
    time.sleep(0.1)
    assert watch.verdict({tp: (20, 20)}) is True  # caught up: nothing waits


async def test_an_agent_crash_is_recorded_for_readiness() -> None:
    app = CompatApp("redelivery-test", embedded=True, broker="kafka://127.0.0.1:1")

    class Agent:
        name = "join"

    await app._on_agent_error(Agent(), RuntimeError("broker gone while dead-lettering"))
    crash = app.last_agent_crash
    assert crash is not None and crash.agent == "join" and "broker gone" in crash.error


async def test_broker_probe_fails_readiness_while_the_broker_is_silent() -> None:
    class Client:
        hung = True

        async def fetch_all_metadata(self) -> None:
            if self.hung:
                await asyncio.sleep(10)

    client = Client()
    probe = BrokerProbe(client, every_s=0.02, timeout_s=0.05, stale_after_s=0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(probe.run(stop))
    try:
        await asyncio.sleep(0.4)
        assert "has not answered" in str(probe.readiness())
        client.hung = False
        await asyncio.sleep(0.2)
        assert probe.readiness() is True
    finally:
        stop.set()
        await running
