"""A handler slower than the session and rebalance timeouts causes no rebalance loop.

Two pipelines share a group; each batch takes longer than the embedded
broker's session timeout. Heartbeats run beside the handler (aiokafka's
coordinator task), so the group keeps its generation, every record is handled
once, and the committed offsets reach the end. (A handler that *blocks* the
event loop would starve the heartbeats: CPU work stays off the loop, see
EMBEDDED_BROKER.md.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from rtml.shared import broker_compat, topics
from rtml.shared.contracts import Reward, encode
from rtml.shared.kafka import ensure_topics, start_consumer, start_producer
from rtml.shared.pipeline import Incoming, Outgoing, Pipeline
from rtml.shared.settings import Settings

from tests.chaos.conftest import CHAOS_TIMEOUT_S

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TIMEOUT_S)]

PARTITIONS = 4
RECORDS = 100
BATCH = 25
# longer than the session timeout: a missed heartbeat would evict the member
SLOW_S = broker_compat.EMBEDDED_SESSION_TIMEOUT_MS / 1000 + 1


async def test_a_slow_handler_keeps_the_group_stable(settings: Settings) -> None:
    source = topics.Topic(f"test.slow.{uuid.uuid4().hex[:8]}", "in", PARTITIONS)
    await ensure_topics(settings, [source])
    producer = await start_producer(settings)
    for i in range(RECORDS):
        reward = Reward(id=f"slow-{i}", ts=1.0, task="eta", arm="v1", reward=1.0)
        await producer.send(source.name, encode(reward), key=reward.key)
    await producer.flush()
    handled: Counter[str] = Counter()

    async def slow(batch: Sequence[Incoming]) -> list[Outgoing]:
        await asyncio.sleep(SLOW_S)
        handled.update(item.message.id for item in batch)
        return []

    group = f"slow-{uuid.uuid4().hex[:8]}"
    consumers = [
        await start_consumer(settings, source.name, group_id=group, max_poll_records=BATCH)
        for _ in range(2)
    ]
    pipelines = [Pipeline("slow", c, producer, slow, Reward, max_records=BATCH) for c in consumers]
    stop = asyncio.Event()
    running = [asyncio.create_task(p.run(stop)) for p in pipelines]
    try:
        while not all(c.assignment() for c in consumers) or len(set(generations(consumers))) > 1:
            await asyncio.sleep(0.1)
        generation = generations(consumers)
        async with asyncio.timeout(240):
            while sum(handled.values()) < RECORDS:
                await asyncio.sleep(0.2)
        assert generations(consumers) == generation  # no rebalance
    finally:
        stop.set()
        await asyncio.gather(*running)
    tps = [TopicPartition(source.name, p) for p in range(PARTITIONS)]
    ends = await broker_compat.end_offsets(consumers[0], tps, embedded=True)
    committed = {tp: await consumers[0].committed(tp) for tp in tps}
    for consumer in consumers:
        await consumer.stop()
    await producer.stop()
    assert handled == Counter({f"slow-{i}": 1 for i in range(RECORDS)})
    assert committed == ends


def generations(consumers: Sequence[AIOKafkaConsumer]) -> list[int]:
    return [c._coordinator.generation for c in consumers]
