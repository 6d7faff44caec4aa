"""What rtml needs from a Kafka-compatible broker, one test per property.

Runs on the embedded broker with the workarounds of ``shared/broker_compat.py``
on; point ``RTML_CONFORMANCE_BOOTSTRAP`` at any other broker to qualify it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rtml.shared import broker_compat, broker_flavor, topics
from rtml.shared.kafka import client_kwargs, ensure_topics, start_consumer, start_producer
from rtml.shared.settings import Settings


def scratch_topic(partitions: int = 3) -> topics.Topic:
    return topics.Topic(f"conformance.{uuid.uuid4().hex[:12]}", "scratch", partitions)


async def test_topics_are_created_with_their_partition_counts(settings: Settings) -> None:
    wanted = [scratch_topic(1), scratch_topic(4)]
    assert await ensure_topics(settings, wanted) == [t.name for t in wanted]
    assert await ensure_topics(settings, wanted) == []  # idempotent
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in wanted])
    finally:
        await admin.close()
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    assert counts == {t.name: t.partitions for t in wanted}


async def test_acks_all_produce_is_acknowledged_and_readable(settings: Settings) -> None:
    topic = scratch_topic(1)
    await ensure_topics(settings, [topic])
    producer = await start_producer(settings)
    assert producer._sender._acks == -1  # acks=all
    try:
        metadata = await producer.send_and_wait(topic.name, b"payload", key=b"k")
    finally:
        await producer.stop()
    consumer = await start_consumer(settings, group_id=None)
    try:
        tp = TopicPartition(topic.name, metadata.partition)
        consumer.assign([tp])
        consumer.seek(tp, metadata.offset)
        records = await consumer.getmany(tp, timeout_ms=5000)
    finally:
        await consumer.stop()
    assert [r.value for r in records[tp]] == [b"payload"]


async def test_end_offsets_equal_the_high_watermark(settings: Settings) -> None:
    topic = scratch_topic(2)
    await ensure_topics(settings, [topic])
    producer = await start_producer(settings, linger_ms=5)
    try:
        acks = [await producer.send(topic.name, b"x" * 100, partition=0) for _ in range(1000)]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    consumer = await start_consumer(settings, group_id=None)
    try:
        partitions = [TopicPartition(topic.name, 0), TopicPartition(topic.name, 1)]
        ends = await broker_compat.end_offsets(consumer, partitions, settings.embedded)
    finally:
        await consumer.stop()
    assert ends == {partitions[0]: 1000, partitions[1]: 0}


async def test_a_produced_message_is_fetched_within_tens_of_milliseconds(
    settings: Settings,
) -> None:
    topic = scratch_topic(1)
    await ensure_topics(settings, [topic])
    tp = TopicPartition(topic.name, 0)
    producer = await start_producer(settings, linger_ms=0)
    consumer = await start_consumer(settings, group_id=None)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    delays = []
    try:
        for _ in range(30):
            sent = time.perf_counter()
            await producer.send_and_wait(topic.name, b"ping", partition=0)
            await consumer.getone(tp)
            delays.append(time.perf_counter() - sent)
    finally:
        await producer.stop()
        await consumer.stop()
    # a broker that only answers fetches at the end of the wait shows ~250 ms here
    assert statistics.median(delays) < 0.1, (
        f"median produce->fetch {statistics.median(delays):.3f}s"
    )


async def test_a_consumer_reads_the_end_of_a_long_partition(settings: Settings) -> None:
    # Tansu lists every batch of a partition for a fetch and stops when the fetch wait
    # runs out: past ~10k batches a 5 ms fetch came back empty every time
    topic = scratch_topic(1)
    await ensure_topics(settings, [topic])
    tp = TopicPartition(topic.name, 0)
    producers = [await start_producer(settings) for _ in range(8)]
    try:

        async def send_one_batch_at_a_time(producer, count: int) -> None:
            for _ in range(count):
                await producer.send_and_wait(topic.name, b"filler", partition=0)

        await asyncio.gather(*(send_one_batch_at_a_time(p, 2500) for p in producers))
        last = await producers[0].send_and_wait(topic.name, b"last", partition=0)
    finally:
        for producer in producers:
            await producer.stop()
    consumer = await start_consumer(settings, group_id=None)
    try:
        consumer.assign([tp])
        consumer.seek(tp, last.offset)
        records = await consumer.getmany(tp, timeout_ms=10_000)
    finally:
        await consumer.stop()
    assert [r.value for r in records.get(tp, [])] == [b"last"]


async def test_committed_offsets_survive_a_consumer_restart(settings: Settings) -> None:
    topic = scratch_topic(1)
    await ensure_topics(settings, [topic])
    group = f"conformance-{uuid.uuid4().hex[:8]}"
    producer = await start_producer(settings)
    try:
        for i in range(10):
            await producer.send_and_wait(topic.name, str(i).encode(), partition=0)
    finally:
        await producer.stop()
    tp = TopicPartition(topic.name, 0)
    first = await start_consumer(settings, topic.name, group_id=group)
    try:
        seen = [(await first.getone()).value for _ in range(4)]
        await first.commit({tp: 4})
    finally:
        await first.stop()
    second = await start_consumer(settings, topic.name, group_id=group)
    try:
        resumed = (await asyncio.wait_for(second.getone(), 30)).value
    finally:
        await second.stop()
    assert seen == [b"0", b"1", b"2", b"3"] and resumed == b"4"


GROUP_MEMBER = """
import asyncio, sys
from rtml.shared.kafka import start_consumer
from rtml.shared.settings import Settings

async def main():
    settings = Settings.model_validate_json(sys.argv[1])
    consumer = await start_consumer(settings, sys.argv[2], group_id=sys.argv[3])
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    print("assigned", flush=True)
    while True:
        await consumer.getmany(timeout_ms=100)

asyncio.run(main())
"""


def start_member(settings: Settings, topic: str, group: str) -> subprocess.Popen[str]:
    # the flavor this process found (it created the topic) given, the member asks nothing
    # of the broker and logs nothing: its stdout says only "assigned"
    known = settings.model_copy(update={"kafka_flavor": broker_flavor.known(settings)})
    return subprocess.Popen(
        [sys.executable, "-c", GROUP_MEMBER, known.model_dump_json(), topic, group],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def seconds_until_assigned(member: subprocess.Popen[str]) -> float:
    started = time.monotonic()
    assert member.stdout is not None
    line = member.stdout.readline()
    assert line.strip() == "assigned", f"member exited with {member.poll()}"
    return time.monotonic() - started


async def test_a_group_rejoins_within_seconds_after_kill_9(settings: Settings) -> None:
    topic = scratch_topic(2)
    await ensure_topics(settings, [topic])
    group = f"conformance-{uuid.uuid4().hex[:8]}"
    first = start_member(settings, topic.name, group)
    try:
        await asyncio.to_thread(seconds_until_assigned, first)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = start_member(settings, topic.name, group)
        try:
            takeover_s = await asyncio.to_thread(seconds_until_assigned, second)
        finally:
            second.kill()
            second.wait()
    finally:
        if first.poll() is None:
            first.kill()
    # Kafka's defaults would take the full session timeout (45 s) plus a rebalance
    assert takeover_s < 15, f"takeover took {takeover_s:.1f}s"
