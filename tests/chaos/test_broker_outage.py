"""A hung broker during ingestion: every event answered 2xx is on the topic
afterwards, every other answer is a 503 with Retry-After, ingestion's memory
stays bounded, and it serves again without a restart once the broker is back."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field

import aiohttp
import psutil
import pytest
from rtml.shared import topics
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.settings import Settings

from tests.chaos.conftest import CHAOS_TIMEOUT_S, ChaosSetting, frozen
from tests.helpers import read_topic, service_process

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TIMEOUT_S)]

BATCH = 20
CLIENTS = 4
# what ingestion may grow by while the broker hangs: its send buffer and pending requests
RSS_GROWTH_LIMIT_MIB = 100


@dataclass
class Outcomes:
    acknowledged: set[str] = field(default_factory=set)
    refused: int = 0
    other: list[str] = field(default_factory=list)


def order(event_id: str) -> dict:
    return {
        "schema": "order_placed", "id": event_id, "ts": 1_700_000_000.0, "order_id": event_id,
        "restaurant_id": f"r-{event_id[-2:]}", "zone_id": "z1", "distance_km": 2.5, "n_items": 2,
    }  # fmt: skip


async def post_until(url: str, stop: threading.Event, outcomes: Outcomes, client: int) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for n in itertools.count():
            if stop.is_set():
                return
            batch = [order(f"c{client}-{n}-{i:02d}") for i in range(BATCH)]
            async with http.post(f"{url}/v1/events", json=batch) as response:
                if response.status == 200:
                    outcomes.acknowledged.update(e["id"] for e in batch)
                elif response.status == 503 and response.headers.get("Retry-After"):
                    outcomes.refused += 1
                    await asyncio.sleep(float(response.headers["Retry-After"]) / 10)
                else:
                    outcomes.other.append(f"{response.status} {await response.text()}")


def load(url: str, stop: threading.Event, outcomes: Outcomes) -> threading.Thread:
    async def clients() -> None:
        await asyncio.gather(*(post_until(url, stop, outcomes, c) for c in range(CLIENTS)))

    thread = threading.Thread(target=asyncio.run, args=(clients(),), daemon=True)
    thread.start()
    return thread


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_hung_broker_during_ingestion(own_broker: EmbeddedBroker, chaos: ChaosSetting) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "RTML_KAFKA_PORT": str(own_broker.port),
        "RTML_INGEST_PORT": str(port),
        "RTML_INGEST_ACK_TIMEOUT_S": "2",
        "RTML_LOG_LEVEL": "ERROR",
    }
    outcomes, stop = Outcomes(), threading.Event()
    with service_process("rtml.services.ingestion", env, f"{url}/readyz") as process:
        memory = psutil.Process(process.pid)
        thread = load(url, stop, outcomes)
        try:
            wait_for(lambda: len(outcomes.acknowledged) >= 500, 60, "no load before the outage")
            baseline_rss, peak_rss = memory.memory_info().rss, 0
            with frozen(own_broker):
                until = time.monotonic() + chaos.outage_s
                while time.monotonic() < until:
                    peak_rss = max(peak_rss, memory.memory_info().rss)
                    time.sleep(0.2)
                acknowledged_in_outage = len(outcomes.acknowledged)
            refused_in_outage = outcomes.refused
            wait_for(
                lambda: len(outcomes.acknowledged) > acknowledged_in_outage + 500,
                90,
                "ingestion did not accept events again after the outage",
            )
        finally:
            stop.set()
            thread.join(60)
        assert process.poll() is None  # it served again without a restart
    on_topic = asyncio.run(
        read_topic(
            Settings(kafka_port=own_broker.port),
            topics.EVENTS.name,
            expected=len(outcomes.acknowledged),
            timeout_s=60,
        )
    )
    missing = outcomes.acknowledged - {m.id for m in on_topic}
    assert not missing, f"{len(missing)} acknowledged events are not on the topic"
    assert outcomes.other == []
    assert refused_in_outage > 0
    assert (peak_rss - baseline_rss) / 2**20 < RSS_GROWTH_LIMIT_MIB
    print(
        f"\noutage {chaos.outage_s:.0f}s: {len(outcomes.acknowledged)} events acknowledged, "
        f"all on the topic; {outcomes.refused} batches refused with 503 + Retry-After; "
        f"RSS {baseline_rss / 2**20:.0f} -> peak {peak_rss / 2**20:.0f} MiB"
    )
