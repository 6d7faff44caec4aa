"""Every worker's copy of ``rtml.features.batch``.

Batch features are few (one record per restaurant, zone, item) and any
request may need any of them, so each worker reads the whole compacted topic
without a consumer group, keeps the newest record per key, and keeps
following the topic so that a re-run of the batch job shows up live.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from rtml.shared import broker_compat, topics
from rtml.shared.errors import ContractError
from rtml.shared.features.records import BatchFeatureRecord, decode_batch_record
from rtml.shared.logging import get_logger

log = get_logger(__name__)


class BatchFeatureCache:
    def __init__(self, consumer: AIOKafkaConsumer, embedded: bool) -> None:
        self._consumer = consumer
        self._embedded = embedded
        self.records: dict[str, BatchFeatureRecord] = {}
        self._ends: dict[TopicPartition, int] = {}
        # the next offset to read per partition
        self._next: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.caught_up = False

    async def start(self) -> None:
        await self._consumer.topics()  # loads the metadata partitions_for_topic reads
        partitions = self._consumer.partitions_for_topic(topics.FEATURES_BATCH.name) or set()
        assigned = [TopicPartition(topics.FEATURES_BATCH.name, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_beginning(*assigned)
        self._next = dict(await self._consumer.beginning_offsets(assigned))
        self._ends = await broker_compat.end_offsets(self._consumer, assigned, self._embedded)
        self._check_caught_up()
        self._task = asyncio.create_task(self._run(), name="batch-features")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    self._apply(record.key, record.value, record.offset)
                self._next[tp] = records[-1].offset + 1
            self._check_caught_up()

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if value is None:  # a tombstone: the entity has no batch features any more
            if key is not None:
                self.records.pop(key.decode(errors="replace"), None)
            return
        try:
            record = decode_batch_record(value)
        except ContractError as exc:
            log.warning("bad_batch_feature_record", error=str(exc), offset=offset)
            return
        self.records[record.entity] = record

    def _check_caught_up(self) -> None:
        if not self.caught_up and all(self._next[tp] >= end for tp, end in self._ends.items()):
            self.caught_up = True
            log.info("batch_features_loaded", entities=len(self.records))
