"""The consume -> process -> produce -> commit loop that aiokafka services share.

Order of work for each fetched batch, which is what makes it at-least-once:
decode and validate every record; hand the valid ones to the handler in one
call (so a handler can micro-batch); send what it returns; wait for the
broker's acks; only then commit the batch's offsets. A crash anywhere before
the commit redelivers the batch, so handlers must absorb repeats by id.

A record that cannot be decoded, breaks its contract, or makes the handler
raise goes to ``rtml.dlq`` with the reason, and the partition keeps flowing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import Counter, Histogram
from rtml.shared.contracts import Message, decode, encode
from rtml.shared.errors import ContractError
from rtml.shared.kafka import DlqWriter, send_all
from rtml.shared.logging import bound_request, get_logger
from rtml.shared.service import BrokerProbe

log = get_logger(__name__)

PROCESSED = Counter("rtml_messages_processed_total", "messages handled", ["service", "topic"])
BATCH_SECONDS = Histogram("rtml_batch_seconds", "time to process one fetched batch", ["service"])

# a loop that has not finished a fetch for this long is stuck (a hung handler or commit)
STALL_AFTER_S = 15.0


@dataclass(frozen=True)
class Outgoing:
    topic: str
    message: Message
    key: bytes | None = None


@dataclass(frozen=True)
class Incoming:
    """A decoded message with where it came from and when it was read."""

    message: Message
    record: ConsumerRecord
    # wall clock (epoch s) when the fetch that brought it returned: the end of its
    # wait in the topic, for the handler's timings
    seen_at: float


BatchHandler = Callable[[Sequence[Incoming]], Awaitable[Sequence[Outgoing]]]


class Pipeline:
    def __init__(
        self,
        service: str,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        handler: BatchHandler,
        expect: type[Message] | tuple[type[Message], ...] = (),
        max_records: int = 500,
    ) -> None:
        self.service = service
        self._consumer = consumer
        self._producer = producer
        self._handler = handler
        self._expect = expect
        self._max_records = max_records
        self._dlq = DlqWriter(producer, service)
        self.last_progress = time.monotonic()
        self.crashed: BaseException | None = None
        self.broker = BrokerProbe(producer.client)

    def readiness(self) -> bool | str:
        """For /readyz: alive loop, broker answering, partitions assigned, fetches finishing."""
        if self.crashed is not None:
            return f"processing loop crashed: {self.crashed!r}"
        broker = self.broker.readiness()
        if broker is not True:
            return broker
        if not self._consumer.assignment():
            return "no partitions assigned"
        if time.monotonic() - self.last_progress > STALL_AFTER_S:
            return f"no batch completed for {STALL_AFTER_S:.0f}s"
        return True

    async def run(self, stop: asyncio.Event) -> None:
        # While one batch's outputs wait for their acks and its offsets are
        # committed, the next batch is fetched, decoded and handled: the loop is
        # bound by round trips to the broker far more than by CPU.
        delivering: asyncio.Task[None] | None = None
        probing = asyncio.create_task(self.broker.run(stop))
        try:
            while not stop.is_set():
                batches = await self._consumer.getmany(
                    timeout_ms=100, max_records=self._max_records
                )
                self.last_progress = time.monotonic()
                if not batches:
                    continue
                seen_at = time.time()
                started = time.perf_counter()
                outgoing = await self._prepare(batches, seen_at)
                if delivering is not None:
                    await delivering
                delivering = asyncio.create_task(self._deliver(batches, outgoing, started))
            if delivering is not None:
                await delivering
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.crashed = exc
            log.exception("pipeline_crashed", service=self.service)
            raise
        finally:
            probing.cancel()

    async def _prepare(
        self, batches: dict[TopicPartition, list[ConsumerRecord]], seen_at: float
    ) -> list[Outgoing]:
        records = [record for partition in batches.values() for record in partition]
        decoded = [await self._decode(record, seen_at) for record in records]
        incoming = [item for item in decoded if item is not None]
        return await self._handle(incoming)

    async def _deliver(
        self,
        batches: dict[TopicPartition, list[ConsumerRecord]],
        outgoing: list[Outgoing],
        started: float,
    ) -> None:
        """Send, wait for every ack, then commit: the order that makes it at-least-once."""
        await send_all(
            self._producer,
            [(out.topic, out.key or out.message.key, encode(out.message)) for out in outgoing],
        )
        try:
            await self._consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items() if rs})
        except CommitFailedError as exc:
            # the partitions moved to another member, which redelivers from the last commit
            log.warning("commit_failed_after_rebalance", error=str(exc))
        for tp, records in batches.items():
            PROCESSED.labels(self.service, tp.topic).inc(len(records))
        BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - started)

    async def _decode(self, record: ConsumerRecord, seen_at: float) -> Incoming | None:
        try:
            return Incoming(decode(record.value, self._expect), record, seen_at)
        except ContractError as exc:
            await self._dead_letter(record, exc, exc.dlq_reason)
            return None

    async def _handle(self, incoming: list[Incoming]) -> list[Outgoing]:
        if not incoming:
            return []
        try:
            return list(await self._handler(incoming))
        except Exception as exc:
            if len(incoming) == 1:
                with bound_request(incoming[0].message.request_id):
                    await self._dead_letter(incoming[0].record, exc, "handler")
                return []
        # find the poison message: one at a time, the rest still go through
        # (handlers absorb repeats by id, so re-handling the batch's head is safe)
        outgoing: list[Outgoing] = []
        for item in incoming:
            with bound_request(item.message.request_id):
                try:
                    outgoing.extend(await self._handler([item]))
                except Exception as exc:
                    await self._dead_letter(item.record, exc, "handler")
        return outgoing

    async def _dead_letter(self, record: ConsumerRecord, error: BaseException, reason: str) -> None:
        await self._dlq.send_record(record, error, reason)
