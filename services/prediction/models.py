"""Keeps the scorer's models in step with ``rtml.models`` and the model store.

On start: replay rtml.models to its end, load every version whose last word is
not ``retired``, and take each task's champion from the store's pointer (the
store is the source of truth; announcements say when to look). Then follow the
topic: ``registered`` loads a version, ``promoted`` loads it if needed and makes
it the champion, ``retired`` unloads it.

Loading reads, hash-checks and parses the artifact on a worker thread, so the
event loop keeps serving while a model loads; the scorer only sees the new
model once it is complete, in one reference swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer
from rtml.services.prediction.coldstart import TrainerProgress
from rtml.services.prediction.handlers import LoadedModel, Scorer
from rtml.services.prediction.metrics import (
    MODEL_LOAD_FAILURES,
    MODEL_LOAD_SECONDS,
    MODEL_LOADS,
    MODELS_LOADED,
    PREDICTIONS,
)
from rtml.shared.contracts import ModelAnnouncement, Task
from rtml.shared.errors import IntegrityError, ModelStoreError
from rtml.shared.logging import get_logger
from rtml.shared.metrics import forget_series
from rtml.shared.model_announcements import (
    follow,
    last_word,
    open_announcement_reader,
    read_to_end,
)
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings
from rtml.shared.tasks.registry import tasks

log = get_logger(__name__)


def load_verified(
    store: ModelStore, version: str, expected_sha256: str | None, xgb_threads: int
) -> LoadedModel:
    """Blocking: the store checks the artifact against its record; this checks the
    record against what was announced, so a store that disagrees with the topic is refused.
    The artifact is probed in a child process first: one that crashes XGBoost must not
    take the serving process with it."""
    booster, record = store.load(version, probe_in_child=True)
    if expected_sha256 is not None and record.sha256 != expected_sha256:
        raise IntegrityError(
            f"{version}: the store holds sha256 {record.sha256} but rtml.models announced "
            f"{expected_sha256}"
        )
    booster.set_param({"nthread": xgb_threads})
    return LoadedModel.of(booster, record)


class ModelFollower:
    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        scorer: Scorer,
        trainer: TrainerProgress | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._scorer = scorer
        # what the trainer says about a first model, for readiness without a champion
        self._trainer = trainer
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._champion_set = asyncio.Event()
        # why a version could not be loaded, for /readyz and the logs
        self._failures: dict[str, str] = {}

    async def start(self) -> None:
        """Rebuild from the topic and the store, then follow the topic in the background."""
        self._consumer = await open_announcement_reader(self._settings)
        announcements = await read_to_end(self._consumer, self._settings)
        for announcement in last_word(announcements).values():
            if announcement.action != "retired":
                await self._load(announcement.model_version, announcement.sha256)
        for task in tasks():
            await self._restore_champion(task)
        log.info(
            "models_rebuilt",
            announcements=len(announcements),
            loaded=sorted(self._scorer.snapshot.models),
            champions=dict(self._scorer.snapshot.champions),
        )
        self._task = asyncio.create_task(follow(self._consumer, self.apply), name="model-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def wait_for_champion(self, task: Task) -> None:
        while self._scorer.champion(task) is None:
            self._champion_set.clear()
            await self._champion_set.wait()

    def readiness(self, task: Task) -> bool | str:
        if self._task is not None and self._task.done():
            why = "cancelled" if self._task.cancelled() else repr(self._task.exception())
            return f"stopped following rtml.models: {why}"
        if self._scorer.champion(task) is not None:
            return True
        recent = list(self._failures.items())[-3:]
        failed = "; ".join(f"{version}: {why}" for version, why in recent)
        verdict = f"no {task} champion loaded" + (f" (load failures: {failed})" if failed else "")
        return f"{verdict}; {self._trainer.waiting_for(task)}" if self._trainer else verdict

    async def apply(self, announcement: ModelAnnouncement) -> None:
        version = announcement.model_version
        if announcement.action == "retired":
            if self._scorer.retire(version):
                forget_series(PREDICTIONS, version=version)
                log.info("model_retired", version=version)
            else:
                log.warning("retired_champion_kept", version=version, task=announcement.task)
            MODELS_LOADED.set(len(self._scorer.snapshot.models))
            return
        if await self._load(version, announcement.sha256) and announcement.action == "promoted":
            self._promote(announcement.task, version)

    async def _restore_champion(self, task: Task) -> None:
        try:
            record = await asyncio.to_thread(self._store.champion, task)
        except ModelStoreError as exc:
            self._failures[f"{task} champion pointer"] = str(exc)
            log.error("champion_pointer_unreadable", task=task, error=str(exc))
            return
        if record is not None and await self._load(record.version, record.sha256):
            self._promote(task, record.version)

    def _promote(self, task: Task, version: str) -> None:
        self._scorer.set_champion(task, version)
        self._champion_set.set()
        log.info("champion_set", task=task, version=version)

    async def _load(self, version: str, expected_sha256: str | None) -> bool:
        """Load ``version`` unless it is loaded already; False (logged) if it cannot be."""
        if version in self._scorer.snapshot.models:
            return True
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(
                load_verified,
                self._store,
                version,
                expected_sha256,
                self._settings.prediction_xgb_threads,
            )
        except (ModelStoreError, OSError) as exc:
            self._failures[version] = str(exc)
            MODEL_LOADS.labels("failed").inc()
            MODEL_LOAD_FAILURES.inc()
            log.error(
                "model_load_failed",
                version=version,
                error=str(exc),
                serving=sorted(self._scorer.snapshot.models),
            )
            return False
        self._scorer.add(model)
        self._failures.pop(version, None)
        seconds = time.perf_counter() - started
        MODEL_LOADS.labels("loaded").inc()
        MODEL_LOAD_SECONDS.observe(seconds)
        MODELS_LOADED.set(len(self._scorer.snapshot.models))
        log.info("model_loaded", version=version, task=model.task, seconds=round(seconds, 3))
        return True
