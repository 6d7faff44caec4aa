"""Rebalance storm: features workers go 1 -> 3 -> 1 -> 2 while a keyed stream flows.

No gaps and per-key order: every request's vector equals the pure reference's
fold of the raw topic (a skipped event, or two events of an entity applied out
of their log order, would change an entity's windows or watermark). Lag back
to 0: the group's committed offsets reach the end of ``rtml.events``.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from rtml.shared import broker_compat, topics
from rtml.shared.embedded_broker import EmbeddedBroker
from rtml.shared.kafka import client_kwargs
from rtml.shared.settings import Settings

from tests.chaos.conftest import CHAOS_TIMEOUT_S, ChaosSetting, PacedStream
from tests.chaos.test_kill_features import (
    Expected,
    KeyedStream,
    enriched_vectors,
    features_worker,
    to_events,
)
from tests.integration.test_features import (
    assert_equal_to_reference,
    marker_events,
    produce,
    wait_until_applied,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TIMEOUT_S)]
# how many workers run from each point of the stream on
STORM = ((0.0, 1), (0.25, 3), (0.5, 1), (0.75, 2))
GROUP = "rtml-features"


async def lag(settings: Settings) -> int:
    """Records of rtml.events beyond the features group's committed offsets."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topics.EVENTS.name) or set()
        tps = [TopicPartition(topics.EVENTS.name, p) for p in partitions]
        ends = await broker_compat.end_offsets(consumer, tps, embedded=True)
        committed = {tp: await consumer.committed(tp) or 0 for tp in tps}
        return sum(ends[tp] - committed[tp] for tp in tps)
    finally:
        await consumer.stop()


def test_rebalance_storm_keeps_order_and_drains(
    own_broker: EmbeddedBroker, chaos: ChaosSetting
) -> None:
    settings = Settings(kafka_port=own_broker.port)
    stream = KeyedStream.simulated(chaos)
    with ExitStack() as everything:
        workers: list[tuple[ExitStack, str]] = []

        def scale_to(count: int) -> None:
            while len(workers) > count:  # SIGTERM: leave the group gracefully
                workers.pop()[0].close()
            while len(workers) < count:
                one = everything.enter_context(ExitStack())
                _, url = one.enter_context(features_worker(settings, stream.lateness_s))
                workers.append((one, url))

        with PacedStream(settings, to_events, stream.events, chaos.stream_s) as paced:
            for point, count in STORM:
                while paced.fraction_sent() < point:
                    time.sleep(0.05)
                scale_to(count)
        ends = {partition: end for (_, partition), end in paced.join().items()}
        urls = [url for _, url in workers]
        markers = asyncio.run(produce(settings, marker_events(settings), topics.EVENTS.name))
        wait_until_applied(urls, {p: max(ends.get(p, 0), e) for p, e in markers.items()}, 120)
        vectors = asyncio.run(enriched_vectors(settings, stream.requests))
        deadline = time.monotonic() + 60
        while (remaining := asyncio.run(lag(settings))) and time.monotonic() < deadline:
            time.sleep(0.5)

    expected = Expected.from_topic(settings, stream, len(stream.events) + len(markers))
    assert_equal_to_reference(vectors, expected.vectors)
    assert remaining == 0
    print(
        f"\nrebalance storm [{chaos.name}]: workers 1 -> 3 -> 1 -> 2 over {len(stream.events)} "
        f"events; {len(vectors)} vectors equal to the reference, lag 0"
    )
