"""The warehouse half of the collector: rtml.training.examples -> Parquet (shared/warehouse.py).

A plain aiokafka consumer (group ``rtml-warehouse``), separate from the faust
app so that writing files never holds up the join. Exactly once without
transactions: the warehouse's files name the source offsets they hold, so on
every assignment each partition is sought to the first offset not on disk
(``Warehouse.resume_offsets``), whatever the committed offset says; a batch is
written (atomically, file by file) before its offsets are committed, and the
commit is only a hint for partitions with nothing on disk yet. A crash leaves
no torn file and no example written twice; repeated examples upstream (the
join is at least once) are dropped by the warehouse's readers by id.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from rtml.services.collector import metrics
from rtml.services.collector.config import CollectorSettings
from rtml.shared import topics
from rtml.shared.contracts import TrainingExample, decode
from rtml.shared.errors import ContractError
from rtml.shared.kafka import DlqWriter, start_consumer
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings
from rtml.shared.warehouse import Located, Warehouse

log = get_logger(__name__)


def source_of(tp: TopicPartition) -> str:
    return f"{tp.topic}-{tp.partition}"


class _ResumeFromDisk(ConsumerRebalanceListener):
    def __init__(self, writer: WarehouseWriter) -> None:
        self._writer = writer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # let a write in progress finish before the partitions move to another writer
        async with self._writer.writing:
            pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._writer.resume(assigned)


class WarehouseWriter:
    def __init__(self, settings: Settings, config: CollectorSettings, dlq: DlqWriter) -> None:
        self.settings = settings
        self.config = config
        self.warehouse = Warehouse(config.warehouse)
        self.dlq = dlq
        self.writing = asyncio.Lock()
        # per partition, the first offset not on disk when it was assigned
        self._resume_from: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = await start_consumer(self.settings, group_id=self.config.warehouse_group)
        self._consumer.subscribe([topics.TRAINING_EXAMPLES.name], listener=_ResumeFromDisk(self))
        self._task = asyncio.create_task(self._run(), name="warehouse-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def readiness(self) -> bool | str:
        if self._task is not None and self._task.done():
            return "the warehouse writer stopped"
        if self._consumer is None or not self._consumer.assignment():
            return (
                f"no partition of {topics.TRAINING_EXAMPLES.name} assigned to the warehouse writer"
            )
        return True

    async def resume(self, assigned: list[TopicPartition]) -> None:
        assert self._consumer is not None
        # under the lock, and remembered: a batch fetched from the committed offset
        # before this seek (reading the files takes a while) must not be written again
        async with self.writing:
            on_disk = await asyncio.to_thread(self.warehouse.resume_offsets)
            for tp in assigned:
                offset = on_disk.get(source_of(tp))
                if offset is not None:  # else: the committed offset, or the beginning
                    self._consumer.seek(tp, offset)
                    self._resume_from[tp] = offset
        log.info("warehouse_resumed", partitions=len(assigned), from_disk=on_disk)

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(
                timeout_ms=500, max_records=self.config.warehouse_max_records
            )
            for tp, records in batches.items():
                async with self.writing:
                    if tp not in self._consumer.assignment():
                        continue  # revoked while this batch waited: the new owner resumes from disk
                    records = [r for r in records if r.offset >= self._resume_from.get(tp, 0)]
                    if not records:
                        continue  # all on disk already
                    await self._write(tp, records)
                await self._commit(tp, records[-1].offset + 1)

    async def _write(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        located: list[Located] = []
        for record in records:
            try:
                example = decode(record.value or b"", TrainingExample)
            except ContractError as exc:
                await self.dlq.send_record(record, exc, exc.dlq_reason)
                continue
            assert isinstance(example, TrainingExample)
            located.append(Located(example, source_of(tp), record.offset))
        if located:
            # pyarrow and fsync block: keep them off the event loop (group heartbeats)
            files = await asyncio.to_thread(self.warehouse.write, located)
            metrics.WAREHOUSE_FILES.inc(len(files))
            for item in located:
                metrics.WAREHOUSE_EXAMPLES.labels(item.example.task).inc()
        metrics.CONSUMED_OFFSET.labels(tp.topic, str(tp.partition)).set(records[-1].offset + 1)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit({tp: offset})
        except (CommitFailedError, KafkaError) as exc:
            # harmless: whoever owns the partition next resumes from the files on disk
            log.warning("warehouse_commit_failed", partition=tp.partition, error=str(exc))
