"""Whether the broker needs the embedded broker's workarounds is asked of the broker,
whatever the bootstrap variable says: the real embedded broker, a service given its
address as RTML_KAFKA_BOOTSTRAP (the `rtml broker` + `RTML_KAFKA_BOOTSTRAP=... rtml up`
case), and RTML_KAFKA_FLAVOR forcing the answer."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.errors import UnknownError
from rtml.shared import broker_flavor, topics
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.settings import Settings

from tests.helpers import send_one_event, service_process


async def test_the_embedded_broker_answers_as_the_embedded_kind(broker: EmbeddedBroker) -> None:
    given_as_bootstrap = Settings(kafka_bootstrap=broker.bootstrap)
    assert await broker_flavor.ask(given_as_bootstrap) == "embedded"
    assert await broker_flavor.resolve(given_as_bootstrap) == "embedded"
    assert given_as_bootstrap.embedded


@pytest.mark.parametrize("flavor", ["kafka", "embedded"])
async def test_a_forced_flavor_is_not_asked(flavor: str) -> None:
    """Nothing listens on the port: asking would fail after the connect retries."""
    nobody = Settings(kafka_port=free_port(), kafka_flavor=flavor)
    assert await broker_flavor.resolve(nobody) == flavor
    assert nobody.embedded == (flavor == "embedded")


async def test_forcing_kafka_on_the_embedded_broker_is_the_crash_the_probe_prevents(
    broker: EmbeddedBroker,
) -> None:
    """An idempotent producer (what a Kafka gets) cannot start on Tansu; asked, the same
    address gets a producer that works."""
    with pytest.raises(UnknownError):
        await start_producer(Settings(kafka_bootstrap=broker.bootstrap, kafka_flavor="kafka"))
    settings = Settings(kafka_bootstrap=broker.bootstrap)
    # a topic of its own: the session broker's rtml topics are other tests' to read
    probe = topics.Topic(f"flavor-probe.{uuid.uuid4().hex[:12]}", "scratch", 1)
    await ensure_topics(settings, [probe])
    producer = await start_producer(settings)
    try:
        await producer.send_and_wait(probe.name, b"flavor-probe")
    finally:
        await producer.stop()


def test_ingestion_given_the_embedded_broker_as_bootstrap_serves(broker: EmbeddedBroker) -> None:
    port = free_port()
    env = {"RTML_KAFKA_BOOTSTRAP": broker.bootstrap, "RTML_INGEST_PORT": str(port)}
    with service_process("rtml.services.ingestion", env, f"http://127.0.0.1:{port}/readyz"):
        assert send_one_event(f"http://127.0.0.1:{port}")["accepted"] == 1
