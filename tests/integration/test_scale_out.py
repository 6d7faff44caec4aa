"""Scale-out on one machine: 3 features workers and 2 collectors, one of each killed.

A simulated eta log goes onto a broker of its own (6 partitions per topic) in
time slices: a slice's events, then, once the features group has applied
them, the slice's predict requests (so each request is answered with every
event before it, which is what the reference computes). Three features
workers (one consumer group), a router, a prediction service and two
collectors (one consumer group, one warehouse group) run as real
subprocesses. One features worker is killed with kill -9 in the middle of a
slice of events (once it applied some of the first half; the second half is
sent after), one collector as soon as it emits an example of the requests
then flowing; the survivors take over their partitions and nothing is
restarted.

What is asserted, after the survivors caught up:
- every predict request has at least one message on ``rtml.predict.enriched``
  and every copy carries the reference vector (``shared/features/reference.py``,
  floats to 1e-9); a redelivered request may appear more than once, with the
  same vector: duplicates are allowed on the topic, and below it is shown
  that the join absorbs them;
- every request has a prediction, each carrying the reference vector;
- the warehouse holds exactly one example per prediction whose order was
  delivered in the log, with that delivery's minutes as the label and the
  reference vector as features, and nothing else: read through the
  warehouse's reader, which keeps one row per request id; the raw Parquet
  rows may repeat an id (a join record redelivered after the collector's
  kill -9 emits its example again) but then every copy has the same label and
  features, and no source offset is written twice;
- nothing went to ``rtml.dlq``;
- each of the three workers held partitions of its own before the kill, the
  surviving workers applied events of all six partitions after it, and the
  surviving collector joined records of all six join partitions.

Default: an hour of simulated traffic, 611 requests (40-50 s on a quiet 2-core
machine, 3-4 min at a load average of 20-30). The full setting, more traffic
through the same kills:
    SCALE_OUT_TEST_HOURS=4 python3 -m pytest -q tests/integration/test_scale_out.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rtml.shared import topics
from rtml.shared.contracts import (
    FeatureVector,
    Message,
    PredictEnriched,
    Prediction,
    PredictRequest,
)
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings
from rtml.shared.warehouse import Warehouse

from rtml.tasks.eta.simulator.world import SimConfig
from rtml.tasks.eta.spec import TASK as ETA
from tests.helpers import read_topic
from tests.integration.test_collector import _caught_up, consumed_offsets
from tests.integration.test_features import applied_offsets, metric_values, produce
from tests.stack import HOUR, EtaLog, Service, Stack, first_model, running_stack, stack_env
from tests.unit.test_features_state import assert_vectors_equal

PARTITIONS = 6
HOURS = float(os.environ.get("SCALE_OUT_TEST_HOURS", "1"))
SLICES = 4
# the features state answers from (its newest event - lateness) on, and a
# request may be answered after the events of its whole slice: cover the log
LATENESS_S = (HOURS + 1) * HOUR
SIM = SimConfig(
    seed=23, n_zones=6, n_restaurants=60, n_couriers=240, orders_per_hour=300, id_prefix="so"
)
FEATURES_GROUP = "rtml-features"
COLLECTOR_GROUP = "rtml-collector"
WAREHOUSE_GROUP = "rtml-warehouse"
JOIN_TOPIC = f"{COLLECTOR_GROUP}-join"
TIMEOUT_S = 120.0
# seven services on two cores: on a busy machine a run takes minutes, not the suite's 300 s
pytestmark = pytest.mark.timeout(int(600 * max(1.0, HOURS)))


class Log(EtaLog):
    """The simulated log in time slices, with the reference's vectors and labels."""

    def __init__(self, hours: float) -> None:
        super().__init__(SIM, hours, LATENESS_S)
        messages = self.messages
        # cut by event time: the events of slices <= k are all the events at or
        # before any request of slice k
        start, end = messages[0].ts, messages[-1].ts + 1e-6
        slice_of = [min(SLICES - 1, int((m.ts - start) / (end - start) * SLICES)) for m in messages]
        self.slices: list[tuple[list[Message], list[PredictRequest]]] = [
            ([], []) for _ in range(SLICES)
        ]
        self.slice_of: dict[str, int] = {}
        for message, k in zip(messages, slice_of, strict=True):
            if isinstance(message, ETA.events):
                self.slices[k][0].append(message)
            elif isinstance(message, PredictRequest) and message.task == "eta":
                self.slices[k][1].append(message)
                self.slice_of[message.id] = k


@pytest.fixture(scope="module")
def log() -> Log:
    return Log(HOURS)


# --- the services ------------------------------------------------------------------

SERVICES = [
    ("features", "RTML_FEATURES_PORT"),
    ("features", "RTML_FEATURES_PORT"),
    ("features", "RTML_FEATURES_PORT"),
    ("collector", "RTML_COLLECTOR_PORT"),
    ("collector", "RTML_COLLECTOR_PORT"),
    ("router", "RTML_ROUTER_PORT"),
    ("prediction", "RTML_PREDICTION_PORT"),
]


def scale_out_stack(
    settings: Settings, store: ModelStore, warehouse: Path
) -> AbstractContextManager[Stack]:
    env = {
        **stack_env(settings, store, warehouse),
        "RTML_FEATURES_ALLOWED_LATENESS_S": str(LATENESS_S),
        "RTML_COLLECTOR_WINDOW_S": str(LATENESS_S),
        "RTML_LOG_LEVEL": os.environ.get("SCALE_OUT_TEST_LOG_LEVEL", "WARNING"),
    }
    return running_stack(settings, SERVICES, env, TIMEOUT_S)


# --- progress ----------------------------------------------------------------------


def features_applied(stack: Stack) -> dict[str, float]:
    """What the live features workers report applied, by "rtml.events-<partition>"."""
    applied: dict[str, float] = {}
    for worker in stack.live("features"):
        for partition, offset in applied_offsets(worker.url).items():
            key = f"{topics.EVENTS.name}-{partition}"
            applied[key] = max(applied.get(key, 0.0), offset)
    return applied


def collectors_consumed(stack: Stack) -> dict[str, float]:
    consumed: dict[str, float] = {}
    for collector in stack.live("collector"):
        for key, offset in consumed_offsets(collector.url).items():
            consumed[key] = max(consumed.get(key, 0.0), offset)
    return consumed


def wait_caught_up(stack: Stack, group: str, topic_names: Sequence[str]) -> None:
    """Until ``group`` has processed every record of ``topic_names`` there is now, by
    its committed offsets or by what its live members report (faust commits every
    few seconds; a killed member's uncommitted records are redone by a survivor)."""
    reported = features_applied if group == FEATURES_GROUP else collectors_consumed
    wait_for(
        lambda: asyncio.run(_caught_up(stack.settings, group, topic_names, reported(stack))),
        lambda: total(reported(stack)),
        f"{group} catching up on {topic_names}",
    )


def wait_for(done: Callable[[], bool], progress: Callable[[], float], what: str) -> None:
    """Poll until ``done()``; fail once ``progress()`` stood still for TIMEOUT_S (a busy
    machine slows the services down, which is no failure; a stall stops them)."""
    last, since = progress(), time.monotonic()
    while not done():
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        assert time.monotonic() - since < TIMEOUT_S, f"no progress for {TIMEOUT_S:.0f}s: {what}"
        time.sleep(0.2)


def total(values: dict[str, float]) -> float:
    return sum(values.values())


def send_events_killing(stack: Stack, events: Sequence[Message], victim: Service | None) -> None:
    """Produce a slice of events; with a victim, kill it with kill -9 once it applied
    some of the first half, and only then send the second half."""
    half = len(events) // 2 if victim else len(events)
    before = total(applied_offsets(victim.url)) if victim else 0.0
    asyncio.run(produce(stack.settings, events[:half], topics.EVENTS.name))
    if victim is not None:
        deadline = time.monotonic() + TIMEOUT_S
        while total(applied_offsets(victim.url)) <= before:
            assert time.monotonic() < deadline, "the features victim applied nothing"
            time.sleep(0.02)
        victim.kill()
    asyncio.run(produce(stack.settings, events[half:], topics.EVENTS.name))


def emitted(collector: Service) -> float:
    return total(metric_values(collector.url, "rtml_collector_examples_total", "task"))


def kill_mid_join(collector: Service, emitted_before: float) -> None:
    """kill -9 ``collector`` as soon as it emits an example of the slice now flowing."""
    deadline = time.monotonic() + TIMEOUT_S
    while emitted(collector) <= emitted_before:
        assert time.monotonic() < deadline, "the collector victim emitted nothing"
        time.sleep(0.02)
    collector.kill()


# --- the test ----------------------------------------------------------------------


def test_every_event_and_prediction_survives_kill_9_of_a_worker_and_a_collector(
    log: Log, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port, partitions=PARTITIONS)
        asyncio.run(ensure_topics(settings))
        asyncio.run(first_model(settings, store, log))
        with scale_out_stack(settings, store, tmp_path / "warehouse") as stack:
            held = run_slices(stack, log)
            outputs = collect_outputs(stack, log)
    assert_partitions_taken_over(held, outputs)
    assert_every_event_processed(outputs, log)
    assert_one_example_per_prediction(tmp_path / "warehouse", outputs, log)


def run_slices(stack: Stack, log: Log) -> list[set[str]]:
    """Stream the slices with the two kills; returns the partitions each features
    worker held just before its group lost a member."""
    workers, collectors = stack.of("features"), stack.of("collector")
    held: list[set[str]] = []
    for k, (events, requests) in enumerate(log.slices):
        if k == 1:
            held = [set(applied_offsets(w.url)) for w in workers]
        send_events_killing(stack, events, workers[0] if k == 1 else None)
        wait_caught_up(stack, FEATURES_GROUP, [topics.EVENTS.name])
        before = emitted(collectors[0])
        asyncio.run(produce(stack.settings, requests, topics.PREDICT_REQUESTS.name))
        if k == 2:
            kill_mid_join(collectors[0], before)
    return held


@dataclass
class Outputs:
    enriched: list[PredictEnriched]
    predictions: list[Prediction]
    dead_letters: list[Message]
    survivors_hold: set[str]
    join_partitions: set[str]


def collect_outputs(stack: Stack, log: Log) -> Outputs:
    """Once every request has its prediction and every topic was processed to its end."""
    predictions = read_covering(stack.settings, topics.PREDICTIONS.name, log.vectors.keys())
    wait_caught_up(stack, COLLECTOR_GROUP, [topics.PREDICTIONS.name, topics.EVENTS.name])
    wait_caught_up(stack, COLLECTOR_GROUP, [JOIN_TOPIC])
    wait_caught_up(stack, WAREHOUSE_GROUP, [topics.TRAINING_EXAMPLES.name])
    enriched = read_covering(stack.settings, topics.PREDICT_ENRICHED.name, log.vectors.keys())
    dead = asyncio.run(read_topic(stack.settings, topics.DLQ.name, expected=0))
    consumed = collectors_consumed(stack)
    return Outputs(
        enriched=[m for m in enriched if isinstance(m, PredictEnriched)],
        predictions=[m for m in predictions if isinstance(m, Prediction)],
        dead_letters=dead,
        survivors_hold=set(features_applied(stack)),
        join_partitions={key for key in consumed if key.startswith(f"{JOIN_TOPIC}-")},
    )


def read_covering(settings: Settings, topic: str, ids: Iterable[str]) -> list[Message]:
    """The whole topic once it has a message for each of ``ids`` (or once it made no
    progress for TIMEOUT_S: the caller's assertion then shows what is missing)."""
    wanted = set(ids)
    read: list[Message] = []

    def covered() -> float:
        return len(wanted & {m.id for m in read})

    def done() -> bool:
        read[:] = asyncio.run(read_topic(settings, topic, len(wanted), timeout_s=10))
        return covered() == len(wanted)

    with contextlib.suppress(AssertionError):
        wait_for(done, covered, f"every request on {topic}")
    return read


def assert_partitions_taken_over(held: list[set[str]], outputs: Outputs) -> None:
    assert all(held) and sum(map(len, held)) == len(set().union(*held)), held
    assert outputs.survivors_hold == {f"{topics.EVENTS.name}-{p}" for p in range(PARTITIONS)}
    assert outputs.join_partitions == {f"{JOIN_TOPIC}-{p}" for p in range(PARTITIONS)}


def assert_every_event_processed(outputs: Outputs, log: Log) -> None:
    assert outputs.dead_letters == []  # no event, request or prediction was given up on
    copies: dict[str, list[FeatureVector]] = defaultdict(list)
    for message in outputs.enriched:
        copies[message.id].append(message.features)
    missing = Counter(log.slice_of[r] for r in log.vectors.keys() - copies.keys())
    assert not missing, f"requests never enriched, by slice: {missing}"
    assert copies.keys() == log.vectors.keys()
    for request_id, vectors in copies.items():
        for vector in vectors:
            assert_vectors_equal(vector, log.vectors[request_id], request_id)
    predicted = {p.id for p in outputs.predictions}
    assert predicted == log.vectors.keys()
    for prediction in outputs.predictions:
        assert_vectors_equal(prediction.features, log.vectors[prediction.id], prediction.id)


def assert_one_example_per_prediction(warehouse: Path, outputs: Outputs, log: Log) -> None:
    examples = Warehouse(warehouse).read("eta")
    assert dict(zip(examples.ids, examples.y, strict=True)) == pytest.approx(log.labels)
    for request_id, row in zip(examples.ids, examples.X, strict=True):
        assert list(row) == pytest.approx(log.vectors[request_id].values, abs=1e-9)
    rows = [
        (path.name.rsplit("-", 2)[0], row)
        for path in warehouse.glob("task=*/hour=*/*.parquet")
        for row in pq.read_table(path).to_pylist()
    ]
    # no source offset is written twice: no file is a torn or repeated copy
    assert max(Counter((source, row["source_offset"]) for source, row in rows).values()) == 1
    # an id written twice is the same example emitted again, never a different one
    versions = {(row["id"], row["label"], tuple(row["features"])) for _, row in rows}
    assert len(versions) == len({row["id"] for _, row in rows})
    repeated = len(rows) - len(versions)
    print(
        f"\nscale-out: {len(log.requests)} requests, {len(outputs.enriched)} enriched "
        f"({len(outputs.enriched) - len(log.requests)} redelivered), "
        f"{len(outputs.predictions)} predictions, {len(examples)} examples "
        f"({repeated} repeated rows in the warehouse files)"
    )
