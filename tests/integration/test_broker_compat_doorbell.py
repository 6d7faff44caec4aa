"""The embedded broker's doorbell: an idle consumer sends no fetches, yet every
record reaches it: at once when rtml's producer rang, within the interval when
nobody did, at once after a seek."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from rtml.shared import broker_compat, broker_compat_doorbell, topics
from rtml.shared.kafka import client_kwargs, ensure_topics, start_consumer, start_producer
from rtml.shared.settings import Settings

# long enough that a record seen before it ends was brought by a ring, not by the interval
NEVER_S = 3600.0


@pytest.fixture
async def topic(settings: Settings) -> str:
    name = f"test.doorbell.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topics.Topic(name, "doorbell test", partitions=2)])
    return name


class FetchCounter:
    """Counts the fetch requests a consumer sends."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.count = 0
        send = consumer._client.send

        async def counted(node_id, request, *args, **kwargs):
            if isinstance(request, FetchRequest):
                self.count += 1
            return await send(node_id, request, *args, **kwargs)

        consumer._client.send = counted


async def idle_consumer(settings: Settings, topic: str) -> AIOKafkaConsumer:
    consumer = await start_consumer(settings, group_id=None)
    partitions = [TopicPartition(topic, p) for p in range(2)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    assert await consumer.getmany(timeout_ms=300) == {}
    return consumer


async def received(consumer: AIOKafkaConsumer, count: int) -> list[bytes]:
    values: list[bytes] = []
    async with asyncio.timeout(30):
        while len(values) < count:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                values.extend(record.value for record in batch)
    return values


async def test_an_idle_consumer_sends_no_fetches_and_a_ring_wakes_it(
    settings: Settings, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_compat_doorbell, "IDLE_FETCH_INTERVAL_S", NEVER_S)
    consumer = await idle_consumer(settings, topic)
    producer = await start_producer(settings)
    try:
        fetches = FetchCounter(consumer)
        await asyncio.sleep(1.0)
        assert fetches.count == 0
        for n in range(5):
            await (await producer.send(topic, f"v{n}".encode(), partition=n % 2))
        assert sorted(await received(consumer, 5)) == [f"v{n}".encode() for n in range(5)]
    finally:
        await producer.stop()
        await consumer.stop()


async def test_a_record_nobody_rang_for_arrives_within_the_interval(
    settings: Settings, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_compat_doorbell, "IDLE_FETCH_INTERVAL_S", 0.3)
    consumer = await idle_consumer(settings, topic)
    # a producer outside rtml: no doorbell
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        fetches = FetchCounter(consumer)
        await asyncio.sleep(1.0)
        assert 1 <= fetches.count <= 10
        await (await producer.send(topic, b"unrung", partition=0))
        assert await received(consumer, 1) == [b"unrung"]
    finally:
        await producer.stop()
        await consumer.stop()


async def test_a_seek_fetches_without_a_ring(
    settings: Settings, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_compat_doorbell, "IDLE_FETCH_INTERVAL_S", NEVER_S)
    producer = await start_producer(settings)
    try:
        await (await producer.send(topic, b"old", partition=1))
    finally:
        await producer.stop()
    consumer = await start_consumer(settings, group_id=None)
    try:
        tp = TopicPartition(topic, 1)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        assert await consumer.getmany(timeout_ms=300) == {}
        consumer.seek(tp, 0)
        assert await received(consumer, 1) == [b"old"]
    finally:
        await consumer.stop()


async def test_an_idle_consumer_waits_on_one_future_however_often_it_plans(
    settings: Settings, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every interval fetch and every getmany wakes the fetcher, which plans again: each
    # plan used to add a future that only a ring removed, so an idle topic's piled up
    monkeypatch.setattr(broker_compat_doorbell, "IDLE_FETCH_INTERVAL_S", 0.02)
    consumer = await idle_consumer(settings, topic)
    doorbell = broker_compat_doorbell.doorbell_for(settings.bootstrap)
    try:
        fetches = FetchCounter(consumer)
        for _ in range(20):
            await consumer.getmany(timeout_ms=50)
        assert fetches.count >= 10  # it planned, fetched and slept again that often
        mine = [key for key in doorbell._waiters if key[0] & {f"{topic}:0", f"{topic}:1"}]
        assert len(mine) == 1
    finally:
        await consumer.stop()


def test_a_socket_nobody_reads_is_removed_by_the_next_ring(settings: Settings) -> None:
    doorbell = broker_compat_doorbell.doorbell_for(settings.bootstrap)
    dead = doorbell.directory / "dead-process.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(dead))
    listener.close()  # the file stays, nobody reads it: a process killed with -9

    async def ring() -> None:
        doorbell.ring("some.topic", 0)
        await asyncio.sleep(0)  # the ring goes out at the end of the loop turn

    asyncio.run(ring())
    assert not dead.exists()


async def test_no_doorbell_on_a_real_kafka(settings: Settings) -> None:
    consumer = AIOKafkaConsumer(**client_kwargs(settings))
    producer = AIOKafkaProducer(**client_kwargs(settings))
    broker_compat.wire_client(consumer, embedded=False)
    broker_compat.wire_client(producer, embedded=False)
    assert not hasattr(consumer._client, "_rtml_doorbell")
    assert not hasattr(producer.client, "_rtml_doorbell")


def test_a_long_ring_is_split_between_lines() -> None:
    lines = [broker_compat_doorbell.channel(f"topic.{n:05d}", n % 7) for n in range(2000)]
    payloads = broker_compat_doorbell._datagrams(lines)
    assert len(payloads) > 1
    assert all(len(payload) <= broker_compat_doorbell._MAX_DATAGRAM for payload in payloads)
    assert [line for p in payloads for line in p.decode().split("\n")] == lines
