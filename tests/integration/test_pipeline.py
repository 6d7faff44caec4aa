"""The shared consume-process-produce loop against the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from aiokafka import TopicPartition
from rtml.shared import topics
from rtml.shared.contracts import DlqRecord, Reward, encode
from rtml.shared.kafka import ensure_topics, start_consumer, start_producer
from rtml.shared.pipeline import Incoming, Outgoing, Pipeline
from rtml.shared.settings import Settings

from tests.helpers import read_topic


async def test_good_records_flow_and_bad_ones_reach_the_dlq(settings: Settings) -> None:
    source = topics.Topic(f"test.pipeline.in.{uuid.uuid4().hex[:8]}", "in", 1)
    sink = topics.Topic(f"test.pipeline.out.{uuid.uuid4().hex[:8]}", "out", 1)
    await ensure_topics(settings, [source, sink])
    run_id = uuid.uuid4().hex
    rewards = [
        Reward(id=f"{run_id}-{i}", ts=1.0, task="eta", arm="v1", reward=float(i)) for i in range(6)
    ]

    async def double_rewards(batch: Sequence[Incoming]) -> list[Outgoing]:
        out = []
        for item in batch:
            reward = item.message
            assert isinstance(reward, Reward)
            if reward.reward == 3.0:
                raise RuntimeError("poison reward")
            out.append(Outgoing(sink.name, reward.model_copy(update={"reward": reward.reward * 2})))
        return out

    producer = await start_producer(settings)
    for index, reward in enumerate(rewards):
        await producer.send_and_wait(source.name, encode(reward))
        if index == 1:
            await producer.send_and_wait(source.name, b"\xc1 not msgpack")
    consumer = await start_consumer(settings, source.name, group_id=f"g-{run_id}")
    pipeline = Pipeline("test", consumer, producer, double_rewards, expect=Reward)
    stop = asyncio.Event()
    running = asyncio.create_task(pipeline.run(stop))
    try:
        doubled = await read_topic(settings, sink.name, expected=5)
        assert sorted(m.reward for m in doubled) == [0.0, 2.0, 4.0, 8.0, 10.0]
        dead = await read_topic(settings, topics.DLQ.name, expected=10**6, timeout_s=3)
        mine = [d for d in dead if isinstance(d, DlqRecord) and d.topic == source.name]
        assert sorted((d.reason, d.offset) for d in mine) == [("decode", 2), ("handler", 4)]
        assert mine[0].service == "test" and mine[0].original
        assert pipeline.readiness() is True
    finally:
        stop.set()
        await running
    committed = await consumer.committed(TopicPartition(source.name, 0))
    await consumer.stop()
    await producer.stop()
    assert committed == 7
