"""Cold start: the first model of the trainer's task, from the labelled history on the topics.

With no champion, the trainer reads ``rtml.events`` and ``rtml.predict.requests``
from their beginning and keeps following them, counting the task's requests whose
label has come (``LabelledHistory``). Once ``RTML_TRAINER_BOOTSTRAP_MIN_LABELS`` of
them exist it trains stage 1 on that history, through the code of
``rtml train --from-scratch --event-log`` (``event_log_candidate``), with the batch
features ``rtml.features.batch`` holds now (those the live vectors get), registers the
version, makes it the champion and announces both. It then stops reading.

Its progress goes to ``rtml.trainer.status``, one record per task, which is how a
prediction service waiting for a champion says on ``/readyz`` what it waits for. A
task whose label joins on the arm (the router's choice, which no event carries: recs)
cannot start this way; the status says so and names the way it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Gauge
from rtml.services.trainer.bootstrap import LabelledHistory
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.service import Trainer
from rtml.shared import topics
from rtml.shared.contracts import TrainerStatus, decode
from rtml.shared.errors import ContractError
from rtml.shared.features.records import BatchFeatureRecord, decode_batch_record
from rtml.shared.kafka import read_all, start_consumer
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings
from rtml.shared.tasks.registry import task_spec

log = get_logger(__name__)

LABELLED = Gauge(
    "rtml_trainer_bootstrap_labelled", "requests whose label has come, toward the first model"
)
# the history's topics: the task's events (features, labels) and its requests
HISTORY = (topics.EVENTS, topics.PREDICT_REQUESTS)
# a status at most this often while counting (a final one always goes out)
STATUS_EVERY_S = 1.0
RETRY_S = 5.0

PublishStatus = Callable[[TrainerStatus], Awaitable[None]]


class ColdStart:
    def __init__(
        self, settings: Settings, config: TrainerSettings, trainer: Trainer, publish: PublishStatus
    ) -> None:
        self._settings = settings
        self._task = config.task
        self._needed = config.trainer_bootstrap_min_labels
        self._trainer = trainer
        self._publish = publish

    async def run(self, stop: asyncio.Event) -> None:
        """Bootstrap the first model if the task has none and can have one from its events;
        a lost broker starts the reading over (the history is re-read from the beginning)."""
        while not stop.is_set():
            try:
                await self._run_once(stop)
                return
            except KafkaError as exc:
                log.error("bootstrap_interrupted", error=str(exc), retry_in_s=RETRY_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_S)

    async def _run_once(self, stop: asyncio.Event) -> None:
        if await self._has_champion():
            return
        spec = task_spec(self._task)
        if not spec.label.joins_from_events:
            why = (
                f"{self._task}'s label joins on the arm the router chose, which no event "
                "carries: its first model cannot come from rtml.events; train one with "
                f"`rtml train --task {self._task}` on the warehouse, or promote one"
            )
            log.info("bootstrap_impossible", task=self._task, reason=why)
            await self._status("cannot_bootstrap", detail=why)
            return
        history = LabelledHistory(spec)
        consumer = await _history_reader(self._settings)
        try:
            await self._collect_and_train(history, consumer, stop)
        finally:
            await consumer.stop()

    async def _collect_and_train(
        self, history: LabelledHistory, consumer: AIOKafkaConsumer, stop: asyncio.Event
    ) -> None:
        positions: dict[str, int] = {}
        attempt_at, published = self._needed, 0.0
        await self._status("collecting")
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=1000)
            for tp, records in fetched.items():
                for record in records:
                    try:
                        history.add(decode(record.value))
                    except ContractError:
                        continue  # the services that consume it dead-letter it
                positions[f"{tp.topic}/{tp.partition}"] = records[-1].offset + 1
            LABELLED.set(history.labelled)
            if history.labelled < attempt_at:
                if fetched and time.monotonic() - published >= STATUS_EVERY_S:
                    await self._status("collecting", history.labelled)
                    published = time.monotonic()
                continue
            if await self._has_champion():  # one came another way meanwhile
                return
            await self._status("training", history.labelled)
            source = {"source": "topics", "labelled": history.labelled, "offsets": positions}
            batch = await _batch_features(self._settings)
            try:
                record = await self._trainer.bootstrap(history.messages, batch, source)
                outcome = "the last attempt kept no model"
            except Exception as exc:  # a bug or bad data must not end the cold start
                log.exception("bootstrap_failed", labelled=history.labelled)
                record, outcome = None, f"the last attempt failed: {exc}"
            if record is not None:
                await self._status("has_champion", history.labelled, record.version)
                return
            # try again once a tenth more requests have their label
            attempt_at = history.labelled + max(1, self._needed // 10)
            await self._status("collecting", history.labelled, outcome)

    async def _has_champion(self) -> bool:
        champion = await asyncio.to_thread(self._trainer.store.champion, self._task)
        if champion is None:
            return False
        await self._status("has_champion", detail=champion.version)
        return True

    async def _status(self, phase: str, labelled: int = 0, detail: str = "") -> None:
        await self._publish(
            TrainerStatus(
                ts=time.time(),
                task=self._task,
                phase=phase,  # type: ignore[arg-type]
                labelled=labelled,
                needed=self._needed,
                detail=detail,
            )
        )


async def _history_reader(settings: Settings) -> AIOKafkaConsumer:
    """A group-less consumer of the history's topics, at their beginning."""
    # a long poll: an idle reader costs the broker little, and a second of delay is nothing
    consumer = await start_consumer(settings, group_id=None, fetch_max_wait_ms=500)
    await consumer.topics()  # loads the metadata partitions_for_topic reads
    partitions = [
        TopicPartition(topic.name, p)
        for topic in HISTORY
        for p in sorted(consumer.partitions_for_topic(topic.name) or ())
    ]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return consumer


async def _batch_features(settings: Settings) -> list[BatchFeatureRecord]:
    """The newest record per entity on rtml.features.batch: what the features service serves."""
    newest: dict[str, BatchFeatureRecord] = {}
    for record, _ in await read_all(settings, topics.FEATURES_BATCH.name):
        try:
            batch = decode_batch_record(record.value or b"")
        except ContractError:
            continue
        newest[batch.entity] = batch
    return list(newest.values())
