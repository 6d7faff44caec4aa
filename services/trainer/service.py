"""The trainer's decisions in one place: when to train, what, and whether to keep it.

Stage 1 (the cold start's first model, ``coldstart.py``), stage 2 (schedule), stage 3
(scheduled fine-tune) and stage 4 (drift-triggered fine-tune) meet here. Training
runs in a worker thread so that the event loop keeps consuming and heartbeating; one
training at a time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb
from prometheus_client import Counter
from rtml.services.trainer.bootstrap import event_log_candidate
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.drift import (
    DriftMonitor,
    DriftSignal,
    Episode,
    feature_baseline,
    residual,
)
from rtml.services.trainer.jobs import (
    Candidate,
    NotEnoughData,
    champion_if_none,
    discard_consumed,
    fine_tune_candidate,
    register,
    scratch_candidate,
)
from rtml.shared.contracts import Message, TrainingExample, Trigger
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.logging import get_logger
from rtml.shared.model_announcements import Action
from rtml.shared.model_metrics import METRICS
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.tasks.registry import task_spec
from rtml.shared.warehouse import Warehouse

log = get_logger(__name__)

TRAININGS = Counter("rtml_trainer_runs_total", "training runs", ["trigger", "outcome"])
# every firing, whether or not it starts a fine-tune (one may be running already, or
# RTML_DRIFT_FINETUNE is off): many in a short time is a drift storm
DRIFTS = Counter("rtml_trainer_drift_signals_total", "drift detector firings", ["source"])
# how drift episodes ended: recovered (the error back to its level before the drift)
# or bound (RTML_DRIFT_EPISODE_FINE_TUNES reached)
EPISODES = Counter("rtml_trainer_drift_episodes_total", "drift episodes ended", ["end"])
SEEN_IDS = 100_000
# how stale the champion the drift monitor follows may be
CHAMPION_REFRESH_S = 1.0

Announce = Callable[[ModelRecord, Action, str], Awaitable[None]]


class Trainer:
    def __init__(
        self, settings: TrainerSettings, store: ModelStore, warehouse: Warehouse, announce: Announce
    ) -> None:
        self.settings = settings
        self.store = store
        self.warehouse = warehouse
        self._announce = announce
        self._watch: ChampionWatch | None = None
        # the drift whose adaptation goes on, across the champions it makes
        self._episode: Episode | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._training = asyncio.Lock()
        self._background: set[asyncio.Task[ModelRecord | None]] = set()
        self._champion: ModelRecord | None = None
        self._champion_read_at = -math.inf

    async def observe(self, example: TrainingExample) -> None:
        """Feed the champion's error on ``example`` to the drift monitor; fine-tune on drift.

        The error is the champion's own on the example's logged features, re-scored
        here, whichever version served it: the monitor watches every labelled
        example, with no dead time after a deploy while the new version's first
        predictions wait for their labels."""
        if self._already_seen(example.id):
            return
        champion = self._recent_champion()
        if champion is None:
            return
        watch = self._watch_of(champion)
        values = dict(zip(example.features.names, example.features.values, strict=True))
        prediction = watch.score(example.features.feature_set, values)
        if prediction is None:
            return
        error = watch.error(prediction, example.label)
        signal = watch.monitor.observe(error, values, example.label_ts)
        if signal is not None:
            DRIFTS.labels(signal.trigger.kind).inc()
        trigger = self._next_fine_tune(signal, error)
        if trigger is not None and not self._fine_tuning():
            task = asyncio.create_task(self.fine_tune(trigger, drift=True))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _fine_tuning(self) -> bool:
        """Whether a training runs, or a drift fine-tune is started and not running yet:
        the examples of a batch are observed without a pause between them, so an episode's
        due follow-up, asked again by each, would otherwise start once per example."""
        return self._training.locked() or bool(self._background)

    def _next_fine_tune(self, signal: DriftSignal | None, error: float) -> Trigger | None:
        """The trigger of a drift fine-tune due now, if any: a firing starts an
        episode; within one, its follow-ups are due by its count of labels (a firing
        then is counted, not acted on: the episode is already adapting)."""
        if not self.settings.drift_finetune:
            return None
        episode = self._episode
        if episode is None:
            if signal is None:
                return None
            self._episode = Episode(
                signal.trigger, signal.reference, signal.at_ts,
                every=self.settings.drift_follow_up_examples,
                margin=self.settings.drift_episode_margin,
                significance=self.settings.drift_episode_significance,
                bound=self.settings.drift_episode_fine_tunes,
            )  # fmt: skip
            log.info("drift_episode_started", trigger=signal.trigger.text,
                     reference=signal.reference.mean, spread=signal.reference.spread)  # fmt: skip
            return signal.trigger
        trigger = episode.observe(error)
        if episode.ended is not None:
            EPISODES.labels(episode.ended).inc()
            log.info("drift_episode_ended", trigger=episode.trigger.text, end=episode.ended,
                     fine_tunes=episode.fine_tunes)  # fmt: skip
            self._episode = None
        return trigger

    def _recent_champion(self) -> ModelRecord | None:
        # every example asks; on object storage each read of the pointer is a round trip
        now = time.monotonic()
        if now - self._champion_read_at >= CHAMPION_REFRESH_S:
            self._champion = self.store.champion(self.settings.task)
            self._champion_read_at = now
        return self._champion

    async def bootstrap(
        self,
        messages: Sequence[Message],
        batch: Sequence[BatchFeatureRecord],
        source: dict[str, Any],
    ) -> ModelRecord | None:
        """Stage 1 on the events of the task's history: the first model."""
        task = self.settings.task
        return await self._train(
            Trigger(kind="bootstrap"), lambda: event_log_candidate(messages, task, source, batch)
        )

    async def scheduled(self) -> None:
        trigger = Trigger(kind="schedule")
        if self.settings.retrain_mode == "scratch":
            await self._train(
                trigger, lambda: scratch_candidate(self.warehouse, self.settings.task)
            )
        else:
            await self.fine_tune(trigger)

    async def fine_tune(self, trigger: Trigger, drift: bool = False) -> ModelRecord | None:
        """A fine-tune of the champion on the examples newer than its own; ``drift``: one
        of the drift episode's, whose follow-ups fine-tune on every example labelled since
        the drift fired (on the labels since their parent alone, 600 a follow-up, the
        episodes did worse on the exploration seeds: BENCHMARKS.md)."""
        champion = self.store.champion(self.settings.task)
        if champion is None:
            log.info("fine_tune_skipped", trigger=trigger.text, reason="no champion yet")
            return None
        episode = self._episode if drift and trigger.follow_up else None
        since = episode.since_ts if episode is not None else None
        record = await self._train(
            trigger,
            lambda: fine_tune_candidate(self.warehouse, self.store, champion.version, since),
        )
        if drift and self._episode is not None:
            self._episode.fine_tuned()
        if record is not None:
            # whoever crowns it (the router, or the announcement's receiver in a replay)
            # may have done so already: read the champion again at the next example, whose
            # monitor starts afresh (the new model's error is the new normal)
            self._champion_read_at = -math.inf
        return record

    async def _train(self, trigger: Trigger, make: Callable[[], Candidate]) -> ModelRecord | None:
        async with self._training:
            try:
                candidate = await asyncio.to_thread(make)
            except NotEnoughData as exc:
                TRAININGS.labels(trigger.kind, "not_enough_data").inc()
                log.info("training_skipped", trigger=trigger.text, reason=str(exc))
                return None
            return await self._keep_or_drop(trigger, candidate)

    async def _keep_or_drop(self, trigger: Trigger, candidate: Candidate) -> ModelRecord | None:
        decision = dict(
            trigger=trigger.text,
            parent=candidate.parent_version,
            range=_brief(candidate),
            **candidate.metrics,
        )
        if not candidate.better_than_parent:
            TRAININGS.labels(trigger.kind, "worse_than_parent").inc()
            log.info("candidate_dropped", **decision)
            return None
        record = await asyncio.to_thread(register, self.store, candidate, trigger=trigger)
        # the trigger travels in the record and the announcement; the reason is the verdict
        await self._announce(record, "registered", candidate.judgement)
        if await asyncio.to_thread(champion_if_none, self.store, record):
            await self._announce(record, "promoted", f"the first {record.task} model")
            decision["champion"] = True
        if self.settings.discard_after_use and candidate.parent_version is not None:
            decision["discarded"] = await asyncio.to_thread(
                discard_consumed, self.warehouse, candidate
            )
        TRAININGS.labels(trigger.kind, "registered").inc()
        log.info("model_registered", version=record.version, **decision)
        return record

    def _watch_of(self, champion: ModelRecord) -> ChampionWatch:
        if self._watch is None or self._watch.version != champion.version:
            table = self.warehouse.read(champion.task)
            drift_features = self.settings.drift_features
            if drift_features is None:
                drift_features = list(task_spec(self.settings.task).model.drift_features)
            watched = [f for f in drift_features if f in table.feature_names]
            baseline = feature_baseline(table.X, table.feature_names, watched) if len(table) else {}
            booster, _ = self.store.load(champion.version)
            model = task_spec(champion.task).model
            signal = self.settings.drift_error_signal
            if signal is None:
                signal = "residual" if model.kind == "regression" else "error"
            error = residual if signal == "residual" else METRICS[model.metric].example_error
            self._watch = ChampionWatch(
                champion.version, champion.feature_set, booster, error,
                DriftMonitor(
                    baseline,
                    error_delta=self.settings.drift_error_delta,
                    feature_threshold=self.settings.drift_feature_threshold,
                    min_examples=self.settings.drift_min_examples,
                ),
            )  # fmt: skip
        return self._watch

    def _already_seen(self, example_id: str) -> bool:
        if example_id in self._seen:
            return True
        self._seen[example_id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        return False


@dataclass
class ChampionWatch:
    """The champion, loaded to re-score labelled examples, and its drift monitor."""

    version: str
    feature_set: str
    booster: xgb.Booster
    # (prediction, label) -> the error of one example the monitor watches: of the
    # task's metric, or the signed residual (RTML_DRIFT_ERROR_SIGNAL)
    error: Callable[[float, float], float]
    monitor: DriftMonitor

    def score(self, feature_set: str, values: dict[str, float]) -> float | None:
        """The champion's prediction on a logged feature vector; None for a vector it
        cannot score (of another feature set, or without one of its features)."""
        names = self.booster.feature_names or []
        if feature_set != self.feature_set or not values.keys() >= set(names):
            return None
        row = np.array([[values[name] for name in names]])
        return float(self.booster.inplace_predict(row)[0])


def _brief(candidate: Candidate) -> dict[str, object]:
    keys = ("since_label_ts", "until_label_ts", "examples")
    return {key: candidate.data_range[key] for key in keys if key in candidate.data_range}
