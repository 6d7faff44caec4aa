"""Reading partitions' ends: the high watermark as of a request sent now, from a fetch at
the end last seen, right where ListOffsets is wrong on the embedded broker."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import TopicPartition
from rtml.shared import topics
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.settings import Settings
from rtml.shared.watermarks import WatermarkReader


@pytest.fixture
async def topic(settings: Settings) -> str:
    name = f"test.watermarks.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topics.Topic(name, "watermarks test", partitions=3)])
    return name


@pytest.fixture
async def reader(settings: Settings):
    reader = WatermarkReader(settings)
    await reader.start()
    yield reader
    await reader.close()


async def test_the_ends_of_partitions_with_batches_with_single_records_and_empty(
    settings: Settings, topic: str, reader: WatermarkReader
) -> None:
    p0, p1, p2 = (TopicPartition(topic, p) for p in range(3))
    producer = await start_producer(settings)
    try:
        batch = producer.create_batch()
        for i in range(25):
            batch.append(key=None, value=f"event {i}".encode(), timestamp=None)
        await (await producer.send_batch(batch, topic, partition=0))
        for _ in range(3):
            await producer.send_and_wait(topic, b"one", partition=1)
    finally:
        await producer.stop()
    # looked for where a consumer last saw the end, behind, exact or never fetched
    assert await reader.read({p0: 10, p1: 3, p2: 0}) == {p0: 25, p1: 3, p2: 0}
    assert await reader.read({p0: 0, p1: 1, p2: 0}) == {p0: 25, p1: 3, p2: 0}


async def test_callers_share_a_read_sent_after_their_instant(
    settings: Settings, topic: str, reader: WatermarkReader
) -> None:
    tp = TopicPartition(topic, 0)
    producer = await start_producer(settings)
    try:
        await producer.send_and_wait(topic, b"first", partition=0)
        instant = time.monotonic()
        reads = await asyncio.gather(*(reader.after(instant, lambda: {tp: 1}) for _ in range(20)))
        assert {read.asked_at for read in reads} == {reads[0].asked_at}
        assert reads[0].asked_at > instant and reads[0].marks == {tp: 1}
        # a record acknowledged after that read: a caller of a later instant sees it
        await producer.send_and_wait(topic, b"second", partition=0)
        later = await reader.after(time.monotonic(), lambda: {tp: 1})
        assert later.asked_at > reads[0].asked_at and later.marks == {tp: 2}
        # an instant the last read follows is answered by it, without a new read
        assert await reader.after(instant, lambda: {tp: 1}) is later
        # ... unless it does not cover a partition the caller names now
        other = TopicPartition(topic, 1)
        wider = await reader.after(instant, lambda: {tp: 2, other: 0})
        assert wider.asked_at > later.asked_at and wider.marks == {tp: 2, other: 0}
    finally:
        await producer.stop()
