"""Events/s through ``POST /v1/events`` vs a raw aiokafka producer loop.

Both write the same encoded events to the same embedded broker in one run.
Usage: python benchmarks/ingest.py [--events 200000] [--clients 8] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp
from rtml.shared import topics
from rtml.shared.contracts import encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.settings import Settings

from benchmarks._common import Stopwatch, machine, peak_rss_mib
from rtml.tasks.eta.events import OrderPlaced
from tests.helpers import wait_http


def make_events(count: int) -> list[OrderPlaced]:
    return [
        OrderPlaced(
            id=f"bench-{i}",
            ts=1_700_000_000 + i,
            order_id=f"o{i}",
            restaurant_id=f"r{i % 200}",
            zone_id=f"z{i % 8}",
            distance_km=1.0 + i % 7,
            n_items=1 + i % 4,
        )  # fmt: skip
        for i in range(count)
    ]


async def raw_producer_loop(settings: Settings, events: list[OrderPlaced]) -> float:
    """The ceiling: one aiokafka producer, same acks and batching, no HTTP."""
    producer = await start_producer(settings)
    payloads = [(encode(e), e.key) for e in events]
    try:
        with Stopwatch() as watch:
            acks = [
                await producer.send(topics.EVENTS.name, value, key=key) for value, key in payloads
            ]
            await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return len(events) / watch.seconds


async def through_ingestion(url: str, events: list[OrderPlaced], clients: int, batch: int) -> float:
    bodies = [
        json.dumps([e.to_wire() for e in events[i : i + batch]]).encode()
        for i in range(0, len(events), batch)
    ]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with http.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if response.status != 200:
                    raise RuntimeError(
                        f"ingestion answered {response.status}: {await response.text()}"
                    )

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        with Stopwatch() as watch:
            await asyncio.gather(*(client(http) for _ in range(clients)))
    return len(events) / watch.seconds


async def run(args: argparse.Namespace, broker: EmbeddedBroker) -> None:
    settings = Settings(kafka_port=broker.port)
    await ensure_topics(settings)
    events = make_events(args.events)
    port = free_port()
    env = {
        **os.environ,
        "RTML_KAFKA_PORT": str(broker.port),
        "RTML_INGEST_PORT": str(port),
        "RTML_LOG_LEVEL": "WARNING",
    }
    service = subprocess.Popen([sys.executable, "-m", "rtml.services.ingestion"], env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        await through_ingestion(
            f"http://127.0.0.1:{port}/v1/events",
            events[: args.events // 10],
            args.clients,
            args.batch,
        )  # warm-up
        raw = await raw_producer_loop(settings, events)
        http = await through_ingestion(
            f"http://127.0.0.1:{port}/v1/events", events, args.clients, args.batch
        )
        rss = peak_rss_mib(service.pid)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(15)
    print(f"machine: {machine()}; broker: embedded Tansu on 127.0.0.1")
    print(f"events: {args.events}, clients: {args.clients}, batch: {args.batch}, JSON bodies")
    print(f"raw aiokafka producer loop : {raw:10,.0f} events/s")
    print(f"POST /v1/events            : {http:10,.0f} events/s")
    print(f"ratio (ingestion / raw)    : {http / raw:10.2f}   (target >= 0.5)")
    print(f"ingestion peak RSS         : {rss:10.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with EmbeddedBroker(port=free_port()) as broker:
        asyncio.run(run(args, broker))


if __name__ == "__main__":
    main()
