"""What a fetch costs the embedded broker as a partition's log grows.

Tansu's in-memory storage reads a partition by listing every batch it holds, for
each fetch that finds records (``shared/broker_compat_doorbell.py``,
``KNOWN_RECORDS_FETCH_WAIT_MS``); a fetch that finds nothing new is answered from
the partition's watermark alone. In this one invocation, on a fresh embedded
broker: one partition is filled with single-record batches (a producer that sends
one record at a time, as rtml's services do at low rates) in steps; at each step,
the broker's CPU (psutil, user + system) and the wall time per fetch, averaged
over FETCHES fetches: of the last record, at the end (nothing new), and a read of
the partition's end as the features worker makes it on the embedded broker
(``shared/watermarks.py``: from beyond the end, with the anchor's record); and
the broker's RSS.

Usage: python -m benchmarks.broker_log [--steps 1000,5000,20000] [--fetches 200]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable

import psutil
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from rtml.shared import topics
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import client_kwargs, ensure_topics, start_producer
from rtml.shared.settings import Settings
from rtml.shared.watermarks import READ_WAIT_MS, WatermarkReader

from benchmarks._common import machine

TOPIC = topics.Topic("bench.broker-log", "one long partition", partitions=1)
# producers sending at once: each sends its records one batch at a time
PRODUCERS = 8


async def fill(settings: Settings, count: int) -> None:
    producers = [await start_producer(settings) for _ in range(PRODUCERS)]
    try:

        async def one_at_a_time(producer, n: int) -> None:
            for _ in range(n):
                await producer.send_and_wait(TOPIC.name, b"x" * 100, partition=0)

        share, rest = divmod(count, PRODUCERS)
        await asyncio.gather(
            *(one_at_a_time(p, share + (i < rest)) for i, p in enumerate(producers))
        )
    finally:
        for producer in producers:
            await producer.stop()


async def per_fetch(
    broker: psutil.Process, fetch: Callable[[], Awaitable[object]], fetches: int
) -> tuple[float, float]:
    """Broker CPU µs and wall ms per ``fetch()``."""
    cpu = sum(broker.cpu_times()[:2])
    started = time.perf_counter()
    for _ in range(fetches):
        await fetch()
    wall = time.perf_counter() - started
    return (sum(broker.cpu_times()[:2]) - cpu) / fetches * 1e6, wall / fetches * 1e3


async def run(steps: list[int], fetches: int) -> None:
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}")
    with EmbeddedBroker(port=free_port()) as embedded:
        assert embedded.process is not None
        broker = psutil.Process(embedded.process.pid)
        settings = Settings(kafka_port=embedded.port, kafka_flavor="embedded")
        await ensure_topics(settings, [TOPIC])
        client = AIOKafkaClient(**client_kwargs(settings))
        await client.bootstrap()
        await client.add_topic(TOPIC.name)
        tp = TopicPartition(TOPIC.name, 0)
        leader = client.cluster.leader_for_partition(tp)

        def fetch_from(offset: int) -> Callable[[], Awaitable[object]]:
            # one byte: one batch at most; the 1 ms wait of a read
            request = FetchRequest(READ_WAIT_MS, 1, 1, 0, [(TOPIC.name, [(0, offset, 1)])])
            return lambda: client.send(leader, request)

        reader = WatermarkReader(settings)
        await reader.start()
        print(
            f"{'batches':>8}  {'last record: CPU us':>19}  {'wall ms':>7}  "
            f"{'at the end: CPU us':>18}  {'wall ms':>7}  "
            f"{'read: CPU us':>12}  {'wall ms':>7}  {'broker RSS':>10}"
        )
        written = 0
        try:
            for step in steps:
                await fill(settings, step - written)
                written = step
                last_cpu, last_wall = await per_fetch(broker, fetch_from(written - 1), fetches)
                end_cpu, end_wall = await per_fetch(broker, fetch_from(written), fetches)
                far_cpu, far_wall = await per_fetch(
                    broker, functools.partial(reader.read, {tp: written}), fetches
                )
                rss = broker.memory_info().rss / 2**20
                print(
                    f"{written:>8,}  {last_cpu:>19,.0f}  {last_wall:>7.2f}  "
                    f"{end_cpu:>18,.0f}  {end_wall:>7.2f}  "
                    f"{far_cpu:>12,.0f}  {far_wall:>7.2f}  {rss:>7.0f} MiB",
                    flush=True,
                )
        finally:
            await reader.close()
            await client.close()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1000,5000,20000", help="batches in the partition")
    parser.add_argument("--fetches", type=int, default=200, help="fetches measured per step")
    args = parser.parse_args()
    asyncio.run(run([int(s) for s in args.steps.split(",")], args.fetches))


if __name__ == "__main__":
    main()
