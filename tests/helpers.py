"""Test helpers that talk to the real broker and real service processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rtml.shared.contracts import Message, decode
from rtml.shared.kafka import client_kwargs
from rtml.shared.settings import Settings


async def read_topic(
    settings: Settings, topic: str, expected: int, timeout_s: float = 20.0
) -> list[Message]:
    """Every message of ``topic`` from the beginning, once ``expected`` have arrived
    (or the timeout passed: the caller's assertion then shows what was missing)."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            for records in batches.values():
                messages.extend(decode(r.value) for r in records)
        # a short settle so that an unexpected extra message is seen too
        batches = await consumer.getmany(timeout_ms=300)
        for records in batches.values():
            messages.extend(decode(r.value) for r in records)
        return messages
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return partitions
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} has no partitions")


def rtml(*args: str) -> list[str]:
    """The command line of ``rtml ARGS`` from this interpreter's installation (an ``rtml``
    on PATH may be another one)."""
    return [sys.executable, "-m", "rtml", *args]


def survivors(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """The processes still alive (zombies count as gone) once all are gone or
    ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _alive(process: psutil.Process) -> bool:
    try:  # is_running() also tells a reused PID from the process
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def post_json(url: str, body: object, timeout_s: float = 10.0) -> dict:
    """POST ``body`` as JSON; the 200 answer's body (any other status raises)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        assert response.status == 200, response.status
        return json.load(response)


def send_one_event(ingest_url: str) -> dict:
    """POST one ``courier_online`` event to ingestion; the answer's body."""
    event = {"schema": "courier_online", "ts": 1_700_000_000, "courier_id": "c1",
             "zone_id": "z1"}  # fmt: skip
    return post_json(f"{ingest_url}/v1/events", event)


def wait_http(url: str, timeout_s: float = 30.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == status:
                    return
                last = response.status
        except urllib.error.HTTPError as exc:  # answered, with an error: its body says why
            last = f"{exc.code}: {exc.read()[:1000].decode(errors='replace')}"
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout_s}s (last: {last})")


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` that carry ``labels``, on a service at ``url``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@contextmanager
def service_process(
    module: str, env: dict[str, str], ready_url: str, ready_timeout_s: float = 90.0
) -> Iterator[subprocess.Popen]:
    """Run ``python -m module`` until /readyz answers; SIGTERM it afterwards. The timeout
    leaves room for a loaded machine (a prediction service probes every model in a child
    process before it is ready)."""
    process = subprocess.Popen([sys.executable, "-m", module], env={**os.environ, **env})
    try:
        wait_http(ready_url, timeout_s=ready_timeout_s)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
