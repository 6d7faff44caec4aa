"""The dashboard's Kafka adapter: every partition of the topics it shows, from the
beginning, into the aggregates.

No consumer group: each dashboard replica reads everything on its own and commits
nothing, and a fresh one starts with the history still on the broker (all of it on
the embedded broker, which keeps every message in memory until it stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter
from rtml.services.dashboard.aggregates import Dashboard
from rtml.shared import topics
from rtml.shared.contracts import decode
from rtml.shared.errors import ContractError
from rtml.shared.kafka import start_consumer
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings

log = get_logger(__name__)

SHOWN_TOPICS: tuple[topics.Topic, ...] = (
    topics.EVENTS,
    # only for the wall time each request was written: the start of end to end
    topics.PREDICT_REQUESTS,
    topics.PREDICT_ENRICHED,
    topics.PREDICTIONS,
    topics.TRAINING_EXAMPLES,
    topics.MODELS,
    topics.ROUTER_STATE,
    topics.DLQ,
)
MAX_RECORDS_PER_FETCH = 2000

RECORDS = Counter("rtml_dashboard_records_total", "records read", ["topic"])
UNDECODABLE = Counter(
    "rtml_dashboard_undecodable_total", "records that were no valid message", ["topic"]
)


class TopicFeed:
    def __init__(self, settings: Settings, dashboard: Dashboard) -> None:
        self._settings = settings
        self._dashboard = dashboard
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def readiness(self) -> bool | str:
        if self._consumer is None or not self._consumer.assignment():
            return "not yet assigned to the topics"
        if self._task is not None and self._task.done():
            return "the feed stopped"
        return True

    async def start(self) -> None:
        consumer = await start_consumer(self._settings, group_id=None)
        partitions = [
            TopicPartition(topic.name, partition)
            for topic in SHOWN_TOPICS
            for partition in sorted(await _partitions_of(consumer, topic.name))
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer), name="dashboard-feed")
        log.info("feed_assigned", partitions=len(partitions))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS_PER_FETCH)
                for partition, records in batches.items():
                    RECORDS.labels(partition.topic).inc(len(records))
                    for record in records:
                        self._fold(partition.topic, record.value, record.timestamp)
                # a replay of a long history comes in large batches: let HTTP answer between them
                await asyncio.sleep(0)
        except Exception:
            # /readyz turns red; the log says why
            log.exception("feed_failed")
            raise

    def _fold(self, topic: str, value: bytes | None, timestamp_ms: int | None) -> None:
        try:
            message = decode(value or b"")
        except ContractError as exc:
            UNDECODABLE.labels(topic).inc()
            self._dashboard.count_undecodable()
            log.debug("undecodable_record", topic=topic, error=str(exc))
            return
        # the record timestamp is when the producer wrote it; a broker that has none
        # (-1) leaves arrival time as the next best wall-clock time
        wall_ts = (
            timestamp_ms / 1000 if timestamp_ms is not None and timestamp_ms >= 0 else time.time()
        )
        self._dashboard.observe(message, wall_ts)


async def _partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions; metadata can lag a moment behind a topic just created."""
    for _ in range(50):
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return partitions
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions; was it created (rtml topics)?")
