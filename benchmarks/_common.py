"""Shared plumbing for the benchmarks: a broker, service processes, peak memory."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from rtml.shared.kafka import client_kwargs
from rtml.shared.settings import Settings


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size of a live process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def machine() -> str:
    return (
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


async def append_rate(settings: Settings, topic: str, count: int) -> float:
    """Messages/s between the first and the last append to ``topic``, leaving out the
    first batch (its time is not measured from anything)."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        stamps: list[int] = []
        while len(stamps) < count:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                stamps.extend(r.timestamp for r in records)
    finally:
        await consumer.stop()
    first, last = min(stamps), max(stamps)
    return sum(1 for s in stamps if s > first) / ((last - first) / 1000)
