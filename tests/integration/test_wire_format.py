"""A producer outside rtml, following only what ``rtml schemas export`` wrote, feeds the
real features worker: plain aiokafka (no rtml producer, no doorbell), msgpack maps
built by hand from ``contracts.json`` and checked against the exported JSON Schemas,
keys from the index's key fields, gzip, a tracing header. The worker must enrich every
request exactly as the point-in-time reference computes it from the same events, and
dead-letter none of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from rtml.shared import topics
from rtml.shared.contracts import DlqRecord, Message, PredictEnriched, PredictRequest
from rtml.shared.features.definitions import Outcome
from rtml.shared.features.reference import ReferenceFeatures
from rtml.shared.kafka import partition_of
from rtml.shared.settings import Settings

from rtml.cli import main
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from rtml.tasks.eta.spec import TASK as ETA
from tests.helpers import read_topic
from tests.integration.test_features import (
    LATENESS_S,
    assert_equal_to_reference,
    own_broker,
    wait_until_applied,
)
from tests.integration.test_features import worker as features_worker

__all__ = ["own_broker"]  # the fixture, imported for this module's tests

SIM = SimConfig(seed=41, n_restaurants=8, n_couriers=60, orders_per_hour=600, id_prefix="wire")
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class ForeignProducer:
    """Builds records from the exported documents alone."""

    def __init__(self, exported: Path) -> None:
        index = json.loads((exported / "contracts.json").read_text())["contracts"]
        self.contracts = {c["schema"]: c for c in index}
        self.validators = {
            c["schema"]: Draft202012Validator(json.loads((exported / c["json_schema"]).read_text()))
            for c in index
        }

    def record(self, schema: str, fields: dict[str, Any]) -> tuple[str, bytes, bytes]:
        """(topic, key, value) of a message of ``schema`` with ``fields`` (id, ts and the
        contract's own fields); the map is checked against the exported JSON Schema."""
        contract = self.contracts[schema]
        body = {"schema": schema, "version": contract["version"], **fields}
        self.validators[schema].validate(body)
        key = str(body[contract["key_field"]]).encode()
        return contract["topic"], key, msgpack.packb(body)


def source_fields(message: Message) -> tuple[str, dict[str, Any]]:
    """What the foreign system knows of a simulated fact: its kind and plain fields."""
    return message.SCHEMA, message.model_dump(mode="json", exclude_none=True)


async def produce(settings: Settings, records: Sequence[tuple[str, bytes, bytes]]) -> dict:
    """Send with plain aiokafka; returns the end offset per partition of the events."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", compression_type="gzip"
    )
    await producer.start()
    try:
        acks = [
            await producer.send(topic, value, key=key, headers=[("traceparent", TRACEPARENT)])
            for topic, key, value in records
        ]
        ends: dict[int, int] = {}
        for (topic, key, _), metadata in zip(records, await asyncio.gather(*acks), strict=True):
            # the document's partitioner, which aiokafka's default is
            assert metadata.partition == partition_of(key, settings.partitions)
            if topic == topics.EVENTS.name:
                ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
        return ends
    finally:
        await producer.stop()


def test_a_foreign_producer_following_the_export_feeds_the_features_worker(
    own_broker: Settings, tmp_path: Path
) -> None:
    exported = CliRunner().invoke(main, ["schemas", "export", str(tmp_path)])
    assert exported.exit_code == 0, exported.output
    foreign = ForeignProducer(tmp_path)

    log = [m for m in simulate(SIM, 0.5 * 3600) if isinstance(m, (PredictRequest, *ETA.events))]
    events = [m for m in log if not isinstance(m, PredictRequest)]
    requests = [m for m in log if isinstance(m, PredictRequest) and m.task == "eta"]
    reference = ReferenceFeatures(LATENESS_S, {})
    assert all(reference.apply(e) == Outcome.ACCEPTED for e in events)
    expected = {r.id: reference.vector(r) for r in requests}
    assert len(requests) >= 50

    event_records = [foreign.record(*source_fields(e)) for e in events]
    request_records = [foreign.record(*source_fields(r)) for r in requests]
    assert {topic for topic, _, _ in event_records} == {topics.EVENTS.name}
    assert {topic for topic, _, _ in request_records} == {topics.PREDICT_REQUESTS.name}
    with features_worker(own_broker) as (_, url):
        ends = asyncio.run(produce(own_broker, event_records))
        wait_until_applied([url], ends)
        asyncio.run(produce(own_broker, request_records))
        enriched = asyncio.run(
            read_topic(own_broker, topics.PREDICT_ENRICHED.name, expected=len(requests))
        )
    vectors = {m.id: m.features for m in enriched if isinstance(m, PredictEnriched)}
    assert_equal_to_reference(vectors, expected)
    dead = asyncio.run(read_topic(own_broker, topics.DLQ.name, expected=10**9, timeout_s=2))
    assert [d.reason for d in dead if isinstance(d, DlqRecord)] == []
