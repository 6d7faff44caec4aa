"""What a fetch costs the embedded broker as a partition's log grows.

Tansu's in-memory storage reads a partition by listing every batch it holds, for
each fetch that finds records (``shared/broker_compat_doorbell.py``,
``KNOWN_RECORDS_FETCH_WAIT_MS``); a fetch that finds nothing new is answered from
the partition's watermark alone. In this one invocation, on a fresh embedded
broker: one partition is filled with single-record batches (a producer that sends
one record at a time, as rtml's services do at low rates) in steps; at each step,
the broker's CPU (psutil, user + system) and the wall time per fetch, averaged
over FETCHES fetches: of the last record, at the end (nothing new), and from
beyond the end (how the features worker reads a partition's end on the embedded
broker, ``shared/watermarks.py``); and the broker's RSS.

Usage: python -m benchmarks.broker_log [--steps 1000,5000,20000] [--fetches 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import psutil
from aiokafka import TopicPartition
from rtml.shared import topics
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import client_kwargs, ensure_topics, start_producer
from rtml.shared.settings import Settings
from rtml.shared.watermarks import WatermarkReader

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
    broker: psutil.Process, reader: WatermarkReader, offset: int, fetches: int
) -> tuple[float, float]:
    """Broker CPU µs and wall ms per fetch of the partition by ``reader``, from
    ``offset`` unless it reads from beyond the end."""
    tp = TopicPartition(TOPIC.name, 0)
    cpu = sum(broker.cpu_times()[:2])
    started = time.perf_counter()
    for _ in range(fetches):
        await reader.read({tp: offset})
    wall = time.perf_counter() - started
    return (sum(broker.cpu_times()[:2]) - cpu) / fetches * 1e6, wall / fetches * 1e3


async def run(steps: list[int], fetches: int) -> None:
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}")
    with EmbeddedBroker(port=free_port()) as embedded:
        assert embedded.process is not None
        broker = psutil.Process(embedded.process.pid)
        settings = Settings(kafka_port=embedded.port, kafka_flavor="embedded")
        await ensure_topics(settings, [TOPIC])
        # a reader that asks from the offset it is given, as on a real Kafka
        at_offset = WatermarkReader(embedded=False, **client_kwargs(settings))
        beyond_the_end = WatermarkReader(embedded=True, **client_kwargs(settings))
        await at_offset.start()
        await beyond_the_end.start()
        print(
            f"{'batches':>8}  {'last record: CPU us':>19}  {'wall ms':>7}  "
            f"{'at the end: CPU us':>18}  {'wall ms':>7}  "
            f"{'beyond it: CPU us':>17}  {'wall ms':>7}  {'broker RSS':>10}"
        )
        written = 0
        try:
            for step in steps:
                await fill(settings, step - written)
                written = step
                last_cpu, last_wall = await per_fetch(broker, at_offset, written - 1, fetches)
                end_cpu, end_wall = await per_fetch(broker, at_offset, written, fetches)
                far_cpu, far_wall = await per_fetch(broker, beyond_the_end, written, fetches)
                rss = broker.memory_info().rss / 2**20
                print(
                    f"{written:>8,}  {last_cpu:>19,.0f}  {last_wall:>7.2f}  "
                    f"{end_cpu:>18,.0f}  {end_wall:>7.2f}  "
                    f"{far_cpu:>17,.0f}  {far_wall:>7.2f}  {rss:>7.0f} MiB",
                    flush=True,
                )
        finally:
            await at_offset.close()
            await beyond_the_end.close()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1000,5000,20000", help="batches in the partition")
    parser.add_argument("--fetches", type=int, default=200, help="fetches measured per step")
    args = parser.parse_args()
    asyncio.run(run([int(s) for s in args.steps.split(",")], args.fetches))


if __name__ == "__main__":
    main()
