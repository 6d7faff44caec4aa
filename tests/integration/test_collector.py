"""The collector (``python -m rtml.services.collector``) on a real broker.

Predictions and labels go in, in both orders, with duplicates, with labels
that come after their window closed, while the collector is stopped mid-stream
(SIGTERM, then kill -9 in the second test) and restarted. Whatever happens,
every prediction whose label came within the window is exactly one example in
the warehouse, with its label, and has a reward; nothing else is. Progress is
awaited through the offsets the collector committed or reports processed
reaching the end of the topics it reads, never through sleeps. Each test has its own
broker: its topics hold that run's records only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from rtml.shared import broker_compat, topics
from rtml.shared.contracts import DlqRecord, FeatureVector, Message, Prediction, Reward, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import client_kwargs, ensure_topics, partition_of, start_producer
from rtml.shared.settings import Settings
from rtml.shared.warehouse import Warehouse

from rtml.tasks.eta.events import OrderDelivered
from rtml.tasks.recs.events import ItemClicked
from tests.helpers import read_topic, wait_http

T0 = 1_717_412_400.0
WINDOW_S = 3600.0
ATTRIBUTION_S = 600.0
APP_ID = "rtml-collector"
JOIN_TOPIC = f"{APP_ID}-join"
FEATURES = FeatureVector(
    feature_set="eta@1", names=["distance_km", "n_items"], values=[2.0, 3.0],
    freshness_s=[None, None], defaulted=[False, False],
)  # fmt: skip


def eta_prediction(order: str, ts: float) -> Prediction:
    return Prediction(
        id=f"req-{order}", ts=ts, task="eta", entities={"order_id": order}, request_ts=ts,
        features=FEATURES, model_version="v1", arm="v1", propensity=0.5, prediction=30.0,
    )  # fmt: skip


def delivered(order: str, placed: float, minutes: float) -> OrderDelivered:
    return OrderDelivered(
        id=f"ev-{order}", ts=placed + minutes * 60, order_id=order, courier_id="c",
        restaurant_id="r", zone_id=f"z{sum(order.encode()) % 7}", placed_ts=placed,
    )  # fmt: skip


def recommendation(session: str, item: int, ts: float) -> Prediction:
    return Prediction(
        id=f"req-{session}", ts=ts, task="recs", entities={"session_id": session}, request_ts=ts,
        features=FEATURES, model_version="v1", arm=str(item), propensity=0.1, prediction=0.2,
    )  # fmt: skip


class Scenario:
    """What is sent in each phase, and the examples that must come out."""

    def __init__(self, partitions: int) -> None:
        orders = [f"o{i}" for i in range(240)]
        late = [f"late{i}" for i in range(30)]
        # labels first for half the orders, predictions first for the other half
        first, second = orders[::2], orders[1::2]
        placed = {o: T0 + i for i, o in enumerate(orders + late)}
        minutes = {o: 20.0 + i % 20 for i, o in enumerate(orders)}
        pred = {o: eta_prediction(o, placed[o]) for o in orders + late}
        label = {o: delivered(o, placed[o], minutes.get(o, 25.0)) for o in orders + late}
        # after every eta label's time: event time is one clock per partition, and
        # the attribution window is shorter than a delivery
        recs_ts = T0 + 2700
        clicked = [recommendation(f"s{i}", i % 5, recs_ts + i) for i in range(10)]
        unclicked = [recommendation(f"u{i}", i % 5, recs_ts + i) for i in range(10)]
        clicks = [
            ItemClicked(ts=r.ts + 60, session_id=r.entities["session_id"], item_id=int(r.arm or 0))
            for r in clicked
        ]
        self.phase_1: list[Message] = [
            *(label[o] for o in first), *(pred[o] for o in second), *(pred[o] for o in late),
            *clicked, *unclicked,
        ]  # fmt: skip
        self.phase_2: list[Message] = [
            *(pred[o] for o in first), *(label[o] for o in second), *clicks,
            # redeliveries of both sides, after their join
            *(pred[o] for o in orders[:40]), *(label[o] for o in orders[-40:]), *clicks[:3],
        ]  # fmt: skip
        # labels three hours on, one into each partition of the join topic: every
        # partition's event time passes the windows of phases 1-2
        self.clock = [delivered(o, T0 + 3 * 3600, 1) for o in _one_key_per_partition(partitions)]
        self.late_labels = [label[o] for o in late]
        self.expected_eta = {pred[o].id: minutes[o] for o in orders}
        self.expected_recs = {r.id: 1.0 for r in clicked} | {r.id: 0.0 for r in unclicked}


def _one_key_per_partition(partitions: int) -> list[str]:
    chosen: dict[int, str] = {}
    for i in range(10_000):
        order = f"clock{i}"
        chosen.setdefault(partition_of(f"eta:{order}".encode(), partitions), order)
        if len(chosen) == partitions:
            return list(chosen.values())
    raise AssertionError("no key found for some partition")


@pytest.fixture
def own_broker() -> Iterator[Settings]:
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        asyncio.run(ensure_topics(settings))
        yield settings


class Collector:
    """``python -m rtml.services.collector`` as a subprocess that can be stopped and started."""

    def __init__(self, settings: Settings, warehouse: Path) -> None:
        self.port = free_port()
        self.env = {
            "RTML_KAFKA_PORT": str(settings.kafka_port),
            "RTML_COLLECTOR_PORT": str(self.port),
            "RTML_COLLECTOR_WINDOW_S": str(WINDOW_S),
            "RTML_COLLECTOR_LABEL_WINDOWS_S": json.dumps({"recs": ATTRIBUTION_S}),
            "RTML_WAREHOUSE": str(warehouse),
            "RTML_LOG_LEVEL": os.environ.get("COLLECTOR_TEST_LOG_LEVEL", "WARNING"),
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rtml.services.collector"], env={**os.environ, **self.env}
        )
        wait_http(f"{self.url}/readyz", timeout_s=60)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(30)
        if sig == signal.SIGTERM:
            assert self.process.returncode == 0


async def produce(settings: Settings, messages: Sequence[Message]) -> None:
    producer = await start_producer(settings, linger_ms=5)
    try:
        acks = []
        for message in messages:
            topic = topics.PREDICTIONS if isinstance(message, Prediction) else topics.EVENTS
            acks.append(await producer.send(topic.name, encode(message), key=message.key))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


# records the collector cannot take: (topic, value, the DLQ reason expected)
GARBAGE = [
    (topics.PREDICTIONS.name, b"\xc1 not msgpack", "decode"),
    (topics.EVENTS.name, encode(delivered("bad", T0, 10))[:-3] + b"order_delivered", "decode"),
    (topics.PREDICTIONS.name, encode(delivered("wrong-kind", T0, 10)), "schema"),
]


async def produce_raw(settings: Settings, records: Sequence[tuple[str, bytes, str]]) -> None:
    producer = await start_producer(settings)
    try:
        for topic, value, _ in records:
            await producer.send_and_wait(topic, value, key=b"garbage")
    finally:
        await producer.stop()


async def _caught_up(
    settings: Settings, group: str, topic_names: Sequence[str], consumed: dict[str, float]
) -> bool:
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [
            TopicPartition(name, p)
            for name in topic_names
            for p in consumer.partitions_for_topic(name) or ()
        ]
        ends = await broker_compat.end_offsets(consumer, tps, embedded=True)
        for tp in tps:
            done = max(
                await consumer.committed(tp) or 0, consumed.get(f"{tp.topic}-{tp.partition}", 0)
            )
            if done < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


def consumed_offsets(url: str) -> dict[str, float]:
    """The collector's ``rtml_collector_consumed_offset`` gauge, by "topic-partition"."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    pattern = r'^rtml_collector_consumed_offset\{partition="(\d+)",topic="([^"]+)"\} (\S+)$'
    return {f"{t}-{p}": float(v) for p, t, v in re.findall(pattern, text, re.MULTILINE)}


def wait_caught_up(
    settings: Settings, url: str, group: str, *topic_names: str, timeout_s: float = 60
) -> None:
    """Until ``group`` has processed every record of ``topic_names`` there is now: by
    its committed offsets, or by what the running process reports (faust commits
    every few seconds, and a restarted worker reports only what it processed since)."""
    deadline = time.monotonic() + timeout_s
    while not asyncio.run(_caught_up(settings, group, topic_names, consumed_offsets(url))):
        assert time.monotonic() < deadline, f"{group} did not catch up on {topic_names}"
        time.sleep(0.2)


def wait_joined(settings: Settings, url: str) -> None:
    """The sources re-keyed, then the join topic applied, then the examples written."""
    wait_caught_up(settings, url, APP_ID, topics.PREDICTIONS.name, topics.EVENTS.name)
    wait_caught_up(settings, url, APP_ID, JOIN_TOPIC)
    wait_caught_up(settings, url, "rtml-warehouse", topics.TRAINING_EXAMPLES.name)


def assert_exactly_the_expected(
    settings: Settings, warehouse: Path, scenario: Scenario, kill: bool
) -> None:
    store = Warehouse(warehouse)
    eta, recs = store.read("eta"), store.read("recs")
    assert dict(zip(eta.ids, eta.y, strict=True)) == pytest.approx(scenario.expected_eta)
    assert dict(zip(recs.ids, recs.y, strict=True)) == scenario.expected_recs
    assert eta.feature_names == FEATURES.names and (eta.X == FEATURES.values).all()
    # no source offset was written twice, so no file is a torn or repeated copy
    written = Counter(
        (row["source_offset"], path.name.rsplit("-", 2)[0])
        for path in warehouse.glob("task=*/hour=*/*.parquet")
        for row in pq.read_table(path).select(["source_offset"]).to_pylist()
    )
    assert max(written.values()) == 1

    expected = scenario.expected_eta | scenario.expected_recs
    rewards = asyncio.run(read_topic(settings, topics.REWARDS.name, len(expected)))
    by_id = Counter(r.id for r in rewards)
    assert set(by_id) == set(expected)
    if not kill:  # a kill -9 may repeat a reward (at least once; the router absorbs it by id)
        assert max(by_id.values()) == 1
    recs_rewards = {r.id: r.reward for r in rewards if isinstance(r, Reward) and r.task == "recs"}
    assert recs_rewards == scenario.expected_recs


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_every_labelled_prediction_is_one_example_across_restarts(
    own_broker: Settings, tmp_path: Path, sig: int
) -> None:
    settings, warehouse = own_broker, tmp_path / "warehouse"
    scenario = Scenario(settings.partitions)
    collector = Collector(settings, warehouse)
    collector.start()
    try:
        asyncio.run(produce(settings, scenario.phase_1))
        asyncio.run(produce_raw(settings, GARBAGE))
        wait_joined(settings, collector.url)
        # mid-stream: stop as soon as the second half is on the topics
        asyncio.run(produce(settings, scenario.phase_2))
        collector.stop(sig)
        collector.start()
        wait_joined(settings, collector.url)
        asyncio.run(produce(settings, scenario.clock))
        wait_joined(settings, collector.url)
        asyncio.run(produce(settings, scenario.late_labels))  # their windows have closed
        wait_joined(settings, collector.url)
        assert_exactly_the_expected(settings, warehouse, scenario, kill=sig == signal.SIGKILL)
        dead = asyncio.run(read_topic(settings, topics.DLQ.name, len(GARBAGE)))
        reasons = Counter((d.topic, d.reason) for d in dead if isinstance(d, DlqRecord))
        assert set(reasons) == {(topic, reason) for topic, _, reason in GARBAGE}
        if sig == signal.SIGTERM:  # after a kill -9 an uncommitted record is dead-lettered again
            assert sum(reasons.values()) == len(GARBAGE)
    finally:
        if collector.process is not None and collector.process.poll() is None:
            collector.stop()
