"""The features worker against the plain-Python reference, on a real broker.

A simulated eta log of >10k events and a recs session log are replayed with
out-of-order, duplicate and late events into ``python -m rtml.services.features``;
once every event is applied, the logs' predict requests (eta and recs) go in,
and every enriched vector that comes out must equal the reference's (floats to
1e-9). The same must hold
when the worker is stopped mid-replay (SIGTERM, kill -9) and restarted, and
when two workers split the partitions. Each test has its own broker: the
events topic of a run must hold that run's log only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import aiohttp
import pytest
from rtml.services.features.app import changelog_topic
from rtml.services.features.handlers import changelog_records
from rtml.services.features.publish import publish
from rtml.shared import topics
from rtml.shared.contracts import (
    DlqRecord,
    FeatureVector,
    Message,
    PredictEnriched,
    PredictRequest,
    decode,
    encode,
)
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.features.definitions import Outcome
from rtml.shared.features.reference import ReferenceFeatures
from rtml.shared.kafka import ensure_topics, partition_of, start_producer
from rtml.shared.settings import Settings

from rtml.tasks.eta.events import OrderPlaced
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from rtml.tasks.eta.spec import TASK as ETA
from rtml.tasks.recs.spec import TASK as RECS
from tests.helpers import read_topic, service_process, wait_http
from tests.unit.test_features_state import (
    assert_vectors_equal,
    disordered,
    item_embeddings,
    late_copies,
    session_log,
)

HOUR = 3600.0
# the replay answers every request after every event, so the allowed lateness must
# cover the whole log (the state promises answers from watermark - lateness on)
LATENESS_S = 4 * HOUR
SIM = SimConfig(seed=11, n_restaurants=40, n_couriers=400, orders_per_hour=450, id_prefix="it")


class Replay:
    """A simulated eta log and a recs session log, disordered, with what the
    reference makes of them."""

    def __init__(self) -> None:
        eta_log = list(simulate(SIM, 2.5 * HOUR))
        log = eta_log + session_log(seed=9, hours=1)
        kinds = (*ETA.events, *RECS.events)
        self.events = [m for m in disordered(log, seed=5, max_delay_s=HOUR) if isinstance(m, kinds)]
        self.late = late_copies(log, how_late_s=LATENESS_S + HOUR, kinds=kinds)
        self.events += self.late
        self.requests = [m for m in log if isinstance(m, PredictRequest)]
        records = compute_batch_features(eta_log) + item_embeddings()
        self.batch = {r.entity: r for r in records}
        reference = ReferenceFeatures(LATENESS_S, self.batch)
        outcomes = [reference.apply(event) for event in self.events]
        self.accepted = outcomes.count(Outcome.ACCEPTED)
        self.expected = {r.id: reference.vector(r) for r in self.requests}


@pytest.fixture(scope="module")
def replay() -> Replay:
    replay = Replay()
    assert len(replay.events) >= 10_000
    return replay


@pytest.fixture
def own_broker() -> Iterator[Settings]:
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        asyncio.run(ensure_topics(settings))
        yield settings


def worker_env(settings: Settings, port: int) -> dict[str, str]:
    return {
        "RTML_KAFKA_PORT": str(settings.kafka_port),
        "RTML_FEATURES_PORT": str(port),
        "RTML_FEATURES_ALLOWED_LATENESS_S": str(LATENESS_S),
        "RTML_LOG_LEVEL": "WARNING",
    }


@contextmanager
def worker(settings: Settings) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with service_process(
        "rtml.services.features", worker_env(settings, port), f"{url}/readyz"
    ) as process:
        yield process, url


def metric_values(url: str, name: str, label: str | None = None) -> dict[str, float]:
    """``{value of label: sum of the samples with it}`` of one metric on a worker's /metrics
    (``{"": value}`` without a label); empty when the worker does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for labels, value in re.findall(rf"^{name}(?:\{{(.*)\}})? (\S+)$", text, re.MULTILINE):
        key = dict(re.findall(r'(\w+)="([^"]*)"', labels))[label] if label else ""
        values[key] = values.get(key, 0.0) + float(value)
    return values


def applied_offsets(url: str) -> dict[str, float]:
    return metric_values(url, "rtml_features_consumed_offset", "partition")


async def produce(settings: Settings, messages: Sequence[Message], topic: str) -> dict[int, int]:
    """Send in order; returns the end offset each partition reached."""
    producer = await start_producer(settings, linger_ms=5)
    try:
        acks = [await producer.send(topic, encode(m), key=m.key) for m in messages]
        ends: dict[int, int] = {}
        for metadata in await asyncio.gather(*acks):
            ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
        return ends
    finally:
        await producer.stop()


def wait_until_applied(urls: Sequence[str], ends: dict[int, int], timeout_s: float = 60) -> None:
    """Until the workers together have applied every event up to ``ends``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        applied: dict[int, float] = {}
        for url in urls:
            for partition, offset in applied_offsets(url).items():
                applied[int(partition)] = max(applied.get(int(partition), 0), offset)
        if all(applied.get(p, 0) >= end for p, end in ends.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"events not applied within {timeout_s}s: {applied} < {ends}")


async def enrich_all(settings: Settings, replay: Replay) -> dict[str, FeatureVector]:
    await produce(settings, replay.requests, topics.PREDICT_REQUESTS.name)
    enriched = await read_topic(
        settings, topics.PREDICT_ENRICHED.name, expected=len(replay.requests), timeout_s=60
    )
    vectors: dict[str, FeatureVector] = {}
    for message in enriched:
        assert isinstance(message, PredictEnriched)
        vectors[message.id] = message.features  # a redelivered request gives the same vector
    return vectors


def assert_equal_to_reference(
    vectors: dict[str, FeatureVector], expected: dict[str, FeatureVector]
) -> None:
    assert vectors.keys() == expected.keys()
    for request_id, want in expected.items():
        assert_vectors_equal(vectors[request_id], want, request_id)


async def late_dead_letters(settings: Settings) -> set[str]:
    """The ids of the events the features service sent to the DLQ as late."""
    dead = await read_topic(settings, topics.DLQ.name, expected=10**9, timeout_s=2)
    return {
        decode(d.original).id
        for d in dead
        if isinstance(d, DlqRecord) and d.service == "features" and d.reason == "late"
    }


def publish_batch(settings: Settings, replay: Replay) -> None:
    asyncio.run(publish(settings, list(replay.batch.values())))


def test_enriched_vectors_equal_the_reference(own_broker: Settings, replay: Replay) -> None:
    publish_batch(own_broker, replay)
    with worker(own_broker) as (_, url):
        ends = asyncio.run(produce(own_broker, replay.events, topics.EVENTS.name))
        wait_until_applied([url], ends)
        vectors = asyncio.run(enrich_all(own_broker, replay))
        counts = metric_values(url, "rtml_features_events_total", "outcome")
    assert_equal_to_reference(vectors, replay.expected)
    assert counts["duplicate"] > 100 and counts["late"] == len(replay.late)
    assert asyncio.run(late_dead_letters(own_broker)) == {e.id for e in replay.late}


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_state_survives_a_stop_mid_replay(
    own_broker: Settings, replay: Replay, stop_signal: signal.Signals
) -> None:
    publish_batch(own_broker, replay)
    half = len(replay.events) // 2
    with ExitStack() as stack:
        process, url = stack.enter_context(worker(own_broker))

        async def replay_while_stopping() -> dict[int, int]:
            sending = asyncio.create_task(produce(own_broker, replay.events, topics.EVENTS.name))
            while sum(applied_offsets(url).values()) < half:
                await asyncio.sleep(0.05)
            process.send_signal(stop_signal)
            return await sending

        ends = asyncio.run(replay_while_stopping())
        process.wait(30)
        _, url = stack.enter_context(worker(own_broker))
        # a partition the stopped worker had finished has nothing new to apply and
        # would show no progress: one more event on each (of entities no request names)
        markers = asyncio.run(produce(own_broker, marker_events(own_broker), topics.EVENTS.name))
        wait_until_applied([url], {p: max(ends.get(p, 0), end) for p, end in markers.items()})
        vectors = asyncio.run(enrich_all(own_broker, replay))
        recovered = metric_values(url, "rtml_features_events_recovered_total")[""]
        accepted = metric_values(url, "rtml_features_events_total", "outcome")["accepted"]
    assert_equal_to_reference(vectors, replay.expected)
    # the state came back from the changelog, and no event was counted twice
    assert recovered > 0 and recovered + accepted == replay.accepted + len(markers)


def marker_events(settings: Settings) -> list[OrderPlaced]:
    """An order_placed on every partition, for restaurants no request names."""
    by_partition: dict[int, OrderPlaced] = {}
    names = (f"marker-{i}" for i in itertools.count())
    while len(by_partition) < settings.partitions:
        restaurant = next(names)
        by_partition.setdefault(
            partition_of(restaurant.encode(), settings.partitions),
            OrderPlaced(
                ts=1e9,
                order_id=restaurant,
                restaurant_id=restaurant,
                zone_id="m",
                distance_km=1,
                n_items=1,
            ),
        )
    return list(by_partition.values())


def test_two_workers_split_the_partitions_and_agree(own_broker: Settings, replay: Replay) -> None:
    publish_batch(own_broker, replay)
    with worker(own_broker) as (_, first), worker(own_broker) as (_, second):
        for url in (first, second):  # the second one's join rebalanced the first
            wait_http(f"{url}/readyz")
        ends = asyncio.run(produce(own_broker, replay.events, topics.EVENTS.name))
        wait_until_applied([first, second], ends)
        held = [set(applied_offsets(url)) for url in (first, second)]
        vectors = asyncio.run(enrich_all(own_broker, replay))
        over_http = asyncio.run(enrich_over_http(first, sample_of_each_task(replay.requests)))
        hops = [
            metric_values(url, "rtml_features_lookups_total", "where") for url in (first, second)
        ]
    assert held[0] and held[1] and not held[0] & held[1]
    assert_equal_to_reference(vectors, replay.expected)
    assert_equal_to_reference(over_http, {k: replay.expected[k] for k in over_http})
    # requests whose entities the other worker holds went there, over Kafka and HTTP
    assert hops[0].get("kafka", 0) + hops[1].get("kafka", 0) > 0 and hops[0].get("http", 0) > 0


def sample_of_each_task(requests: Sequence[PredictRequest]) -> list[PredictRequest]:
    return [r for r in requests if r.task == "eta"][:200] + [
        r for r in requests if r.task == "recs"
    ][:100]


async def enrich_over_http(
    url: str, requests: Sequence[PredictRequest]
) -> dict[str, FeatureVector]:
    vectors = {}
    async with aiohttp.ClientSession() as http:
        for request in requests:
            async with http.post(
                f"{url}/v1/enrich", json=request.model_dump(mode="json")
            ) as response:
                assert response.status == 200, await response.text()
                vectors[request.id] = PredictEnriched.model_validate(await response.json()).features
    return vectors


def test_recovery_reads_the_changelog_to_its_true_end(own_broker: Settings) -> None:
    """Tansu answers ListOffsets LATEST with the offset after the first record of the
    last batch: a recovery trusting it would fold in 1 of these 40 records."""
    placed = [
        OrderPlaced(
            ts=1e9 + i,
            order_id=f"o{i}",
            restaurant_id=f"rt-{i}",
            zone_id="z",
            distance_km=1,
            n_items=1,
        )
        for i in range(40)
    ]
    asyncio.run(append_one_changelog_batch(own_broker, placed))
    with worker(own_broker) as (_, url):
        counts = [orders_10m(url, event.restaurant_id, event.ts) for event in placed]
    assert counts == [1.0] * len(placed)


async def append_one_changelog_batch(settings: Settings, events: Sequence[Message]) -> None:
    changelog = changelog_topic(settings)
    await ensure_topics(settings, [changelog])
    producer = await start_producer(settings)
    try:
        batch = producer.create_batch()
        for index, event in enumerate(events):
            (record,) = changelog_records([encode(event)])
            assert batch.append(key=f"test:{index}".encode(), value=record, timestamp=None)
        await (await producer.send_batch(batch, changelog.name, partition=0))
    finally:
        await producer.stop()


def orders_10m(url: str, restaurant_id: str, t: float) -> float:
    with urllib.request.urlopen(
        f"{url}/v1/features/restaurant/{restaurant_id}?t={t!r}"
    ) as response:
        features = json.loads(response.read())["features"]
    return features["restaurant_orders_10m"][0]
