"""kill -9 the collector 3-5 times at seeded points while predictions and labels flow.

The consistency checker reads ``rtml.predictions`` and ``rtml.events`` back with
a plain aiokafka consumer and joins them with the pure join (``join.py`` over
plain dicts): the warehouse must hold exactly those examples with those labels,
once each, and ``rtml.rewards`` a reward for each of them with that value;
repeats the kills caused on the output topics are counted (the warehouse reader
and the router absorb them by request id). Then the replay from earliest: with
every group of the collector rewound to offset 0, the restarted collector reads
everything again and the warehouse stays byte for byte the same (the join
absorbs every repeat by join key; the writer resumes from the offsets on disk).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from rtml.services.collector.join import JoinConfig, JoinState
from rtml.shared import topics
from rtml.shared.contracts import Message, Prediction, Reward
from rtml.shared.embedded_broker import EmbeddedBroker
from rtml.shared.kafka import read_all, start_consumer
from rtml.shared.settings import Settings
from rtml.shared.warehouse import Warehouse

from rtml.tasks.eta.events import OrderDelivered
from tests.chaos.conftest import CHAOS_TIMEOUT_S, ChaosSetting, PacedStream, kill_points
from tests.helpers import read_topic
from tests.integration.test_collector import (
    APP_ID,
    ATTRIBUTION_S,
    JOIN_TOPIC,
    T0,
    WINDOW_S,
    Collector,
    delivered,
    eta_prediction,
    wait_caught_up,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TIMEOUT_S)]
WRITER_SETTLE_S = 3.0
CATCH_UP_S = 600


def keyed_stream(orders: int, rng: random.Random) -> list[Message]:
    """A prediction and its label per order, shuffled within a sliding range so that
    either side may come first; every event time stays inside one join window."""
    messages: list[Message] = []
    for i in range(orders):
        placed = T0 + 600 * i / orders
        order = f"o{i}"
        messages += [eta_prediction(order, placed), delivered(order, placed, 20 + i % 20)]
    keyed = sorted(enumerate(messages), key=lambda im: im[0] + rng.uniform(0, 50))
    return [message for _, message in keyed]


def topic_of(message: Message) -> str:
    return topics.PREDICTIONS.name if isinstance(message, Prediction) else topics.EVENTS.name


def expected_join(settings: Settings, stream: list[Message]) -> tuple[dict, dict]:
    """(label, reward) per request id: the pure join of what is on the raw topics."""
    predictions = [m for m in stream if isinstance(m, Prediction)]
    on_predictions = asyncio.run(
        read_topic(settings, topics.PREDICTIONS.name, len(predictions), timeout_s=120)
    )
    on_events = asyncio.run(
        read_topic(settings, topics.EVENTS.name, len(stream) - len(predictions), timeout_s=120)
    )
    assert len(on_predictions) + len(on_events) == len(stream)
    state = JoinState(
        JoinConfig(window_s=WINDOW_S, label_windows={"recs": ATTRIBUTION_S}), {}, {}, {}
    )
    joined = [j for p in on_predictions for j in state.on_prediction(p)]
    joined += [j for e in on_events if isinstance(e, OrderDelivered) for j in state.on_label(e)]
    labels = {j.example.id: j.example.label for j in joined}
    rewards = {j.example.id: j.reward.reward for j in joined if j.reward is not None}
    return labels, rewards


def test_kill_9_collector_during_a_keyed_stream(
    own_broker: EmbeddedBroker, chaos: ChaosSetting, rng: random.Random, tmp_path: Path
) -> None:
    settings = Settings(kafka_port=own_broker.port)
    stream = keyed_stream(chaos.join_orders, rng)
    collector = Collector(settings, tmp_path / "warehouse")
    collector.start()
    kills = 0
    try:
        with PacedStream(settings, topic_of, stream, chaos.stream_s) as paced:
            for point in kill_points(rng, chaos.kills):
                while paced.fraction_sent() < point:
                    asyncio.run(asyncio.sleep(0.05))
                collector.stop(signal.SIGKILL)
                kills += 1
                collector.start()
        paced.join()
        caught_up(settings, collector.url)
        before_replay = warehouse_files(tmp_path / "warehouse")
        # replay from earliest: every group of the collector back to offset 0
        collector.stop()
        sources = (topics.PREDICTIONS.name, topics.EVENTS.name, JOIN_TOPIC)
        asyncio.run(rewind(settings, APP_ID, *sources))
        asyncio.run(rewind(settings, "rtml-warehouse", topics.TRAINING_EXAMPLES.name))
        examples_before = len(asyncio.run(read_all(settings, topics.TRAINING_EXAMPLES.name)))
        collector.start()
        caught_up(settings, collector.url, warehouse=False)
        # the writer resumed at the offsets on disk; were it to start again from its
        # rewound commit, it would rewrite within this settle
        time.sleep(WRITER_SETTLE_S)
        examples_after = len(asyncio.run(read_all(settings, topics.TRAINING_EXAMPLES.name)))
        after_replay = warehouse_files(tmp_path / "warehouse")
    finally:
        if collector.process is not None and collector.process.poll() is None:
            collector.stop()

    labels, rewards = expected_join(settings, stream)
    eta = Warehouse(tmp_path / "warehouse").read("eta")
    assert len(labels) == chaos.join_orders and kills == chaos.kills
    assert len(eta.ids) == len(labels)  # once each
    assert dict(zip(eta.ids, eta.y, strict=True)) == pytest.approx(labels)
    assert examples_after == examples_before, "the replay emitted examples again"
    assert after_replay == before_replay, "the replay changed the warehouse"
    examples = asyncio.run(read_topic(settings, topics.TRAINING_EXAMPLES.name, len(labels), 60))
    on_rewards = asyncio.run(read_topic(settings, topics.REWARDS.name, len(rewards), 60))
    assert {r.id: r.reward for r in on_rewards if isinstance(r, Reward)} == rewards
    repeated = Counter(m.id for m in examples)
    print(
        f"\ncollector kill -9 [{chaos.name}]: {len(stream)} predictions and labels, {kills} kills, "
        f"{len(labels)} examples in the warehouse = the pure join of the raw topics, 0 lost; "
        f"{len(examples) - len(repeated)} repeated examples and "
        f"{len(on_rewards) - len(rewards)} repeated rewards on the topics, absorbed by id; "
        f"a replay from earliest left the warehouse's {len(after_replay)} files unchanged"
    )


def caught_up(settings: Settings, url: str, warehouse: bool = True) -> None:
    """The sources re-keyed, the join topic applied, (then the examples written)."""
    for group, names in (
        (APP_ID, (topics.PREDICTIONS.name, topics.EVENTS.name)),
        (APP_ID, (JOIN_TOPIC,)),
        *([("rtml-warehouse", (topics.TRAINING_EXAMPLES.name,))] if warehouse else []),
    ):
        wait_caught_up(settings, url, group, *names, timeout_s=CATCH_UP_S)


def warehouse_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


class AsFaust(RoundRobinPartitionAssignor):
    """Joins an empty faust group: the broker keeps a group's protocol name."""

    name = "faust"


async def rewind(settings: Settings, group: str, *topic_names: str) -> None:
    """Commit offset 0 for ``group`` on every partition of ``topic_names`` (the group's
    members stopped). As a member: Tansu refuses commits from outside the group."""
    strategy = AsFaust if group == APP_ID else RoundRobinPartitionAssignor
    consumer = await start_consumer(
        settings, *topic_names, group_id=group, partition_assignment_strategy=(strategy,)
    )
    try:
        await consumer.topics()
        wanted = {
            TopicPartition(name, p)
            for name in topic_names
            for p in consumer.partitions_for_topic(name) or ()
        }
        async with asyncio.timeout(60):
            while consumer.assignment() != wanted:
                await consumer.getmany(timeout_ms=100)
        await consumer.commit({tp: 0 for tp in wanted})
    finally:
        await consumer.stop()
