"""The Python client against a real ingestion process and the embedded broker, and the
Kafka publisher against the broker: what each writes is what the services read."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
from aiokafka import ConsumerRecord
from rtml.shared import topics
from rtml.shared.contracts import Prediction, PredictRequest, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, partition_of, read_all, start_producer
from rtml.shared.settings import Settings

from rtml.client import AsyncClient, Client, KafkaPublisher, Pending, Rejected
from rtml.tasks.eta.events import OrderPlaced
from tests.helpers import read_topic, service_process
from tests.integration.test_ingestion import TOKEN, _prediction_for, ingestion_env

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def broker_and_ingestion() -> Iterator[tuple[Settings, str]]:
    """A broker of this module's own (its predict requests would surprise other modules'
    tests of the topic) and an ingestion process with a token."""
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        asyncio.run(ensure_topics(settings))
        port = free_port()
        with service_process(
            "rtml.services.ingestion",
            ingestion_env(broker.port, port),
            f"http://127.0.0.1:{port}/readyz",
        ):
            yield settings, f"http://127.0.0.1:{port}"


@pytest.fixture
def ingestion(broker_and_ingestion: tuple[Settings, str]) -> str:
    return broker_and_ingestion[1]


@pytest.fixture
def settings(broker_and_ingestion: tuple[Settings, str]) -> Settings:
    return broker_and_ingestion[0]


def placed(order_id: str, **changes: object) -> dict[str, object]:
    body = {
        "schema": "order_placed", "ts": T0, "order_id": order_id, "restaurant_id": f"r-{order_id}",
        "zone_id": "z1", "distance_km": 2.5, "n_items": 2,
    }  # fmt: skip
    return {**body, **changes}


async def records_with_ids(
    settings: Settings, ids: set[str], timeout_s: float = 20.0
) -> dict[str, ConsumerRecord]:
    """The records of ``rtml.events`` whose message has one of ``ids``, by id, once all
    are there or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_all(settings, topics.EVENTS.name)
        found = {m.id: r for r, m in records if m and m.id in ids}
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_both_clients_publish_events_that_land_with_their_ids(
    ingestion: str, settings: Settings
) -> None:
    message = OrderPlaced.model_validate(placed("client-a"))
    async with AsyncClient(ingestion, token=TOKEN) as client:
        async_ids = await client.publish([message, placed("client-b")])
    with Client(ingestion, token=TOKEN) as client:
        sync_ids = client.publish(placed("client-c", id="chosen-id"))
    assert async_ids[0] == message.id and len(async_ids[1]) == 32 and sync_ids == ["chosen-id"]
    on_topic = await records_with_ids(settings, {*async_ids, *sync_ids})
    assert set(on_topic) == {*async_ids, *sync_ids}


async def test_a_bad_event_or_token_is_rejected_naming_why(ingestion: str) -> None:
    with Client(ingestion, token=TOKEN) as client, pytest.raises(Rejected) as refused:
        client.publish([placed("fine"), placed("bad", distance_km=-1)])
    assert refused.value.status == 400
    [problem] = refused.value.problems
    assert (problem.index, problem.field) == (1, "distance_km")
    assert "greater than or equal to 0" in problem.reason
    async with AsyncClient(ingestion, token="wrong") as client:
        with pytest.raises(Rejected) as unauthorized:
            await client.publish(placed("unauthorized"))
    assert unauthorized.value.status == 401 and "bearer" in unauthorized.value.error


async def test_predict_waits_for_the_prediction_then_fetches_it_by_id(
    ingestion: str, settings: Settings
) -> None:
    async with AsyncClient(ingestion, token=TOKEN) as client:
        pending = await client.predict("eta", entities={"restaurant_id": "r1"})
        assert isinstance(pending, Pending)
        assert await client.prediction(pending.request_id) is None

        waiting = asyncio.create_task(
            client.predict("eta", inputs={"distance_km": 3.0}, request_id="wait-1", wait_ms=10_000)
        )
        requests = await read_topic(settings, topics.PREDICT_REQUESTS.name, expected=2)
        assert {r.id for r in requests if isinstance(r, PredictRequest)} >= {"wait-1"}
        producer = await start_producer(settings)
        try:
            prediction = _prediction_for("wait-1")
            await producer.send_and_wait(
                topics.PREDICTIONS.name, encode(prediction), key=prediction.key
            )
        finally:
            await producer.stop()
        answer = await waiting
        assert isinstance(answer, Prediction)
        assert (answer.id, answer.prediction, answer.model_version) == ("wait-1", 31.5, "v1")
        fetched = await client.prediction("wait-1")
    assert fetched == answer


async def test_publish_rides_out_a_broker_outage_with_the_same_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ingestion answers 503 + Retry-After while the broker is down; the client retries
    the same body until it is back, and the event lands once, with its id."""
    broker = EmbeddedBroker(port=free_port()).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = ingestion_env(broker.port, port, RTML_INGEST_ACK_TIMEOUT_S="1")
    settings = Settings(kafka_port=broker.port)
    caplog.set_level(logging.WARNING, logger="rtml.client")
    try:
        await ensure_topics(settings)
        with service_process("rtml.services.ingestion", env, f"{url}/readyz"):
            async with AsyncClient(url, token=TOKEN, retry_for_s=90) as client:
                broker.stop()
                publishing = asyncio.create_task(client.publish(placed("outage")))
                await asyncio.sleep(3)  # a few 503s
                assert not publishing.done()
                broker.start()
                [event_id] = await asyncio.wait_for(publishing, 90)
            on_topic = await records_with_ids(settings, {event_id})
            assert list(on_topic) == [event_id]
        retried = [r.getMessage() for r in caplog.records if r.name == "rtml.client.protocol"]
        assert any("503" in line for line in retried), retried
    finally:
        broker.stop()


async def test_the_kafka_publisher_writes_what_ingestion_writes(
    ingestion: str, settings: Settings
) -> None:
    over_http = OrderPlaced.model_validate(placed("twin-http"))
    over_kafka = over_http.model_copy(update={"id": "twin-kafka"})
    with Client(ingestion, token=TOKEN) as client:
        client.publish(over_http)
    async with KafkaPublisher.connect(settings) as publisher:
        ids = await publisher.publish([over_kafka, placed("from-a-mapping")])
    assert ids[0] == "twin-kafka" and len(ids[1]) == 32
    records = await records_with_ids(settings, {over_http.id, *ids})
    http_record, kafka_record = records[over_http.id], records["twin-kafka"]
    assert kafka_record.key == http_record.key == b"r-twin-http"
    assert (
        kafka_record.partition
        == http_record.partition
        == partition_of(b"r-twin-http", settings.partitions)
    )
    assert kafka_record.value == encode(over_kafka)
    assert kafka_record.headers == http_record.headers == ()
    assert records[ids[1]].key == b"r-from-a-mapping"


async def test_the_kafka_publisher_refuses_a_bad_batch_and_writes_nothing(
    settings: Settings,
) -> None:
    batch = [placed("refused-ok", id="refused-ok"), {"schema": "order_placed", "ts": T0}]
    async with KafkaPublisher.connect(settings) as publisher:
        with pytest.raises(Rejected) as refused:
            await publisher.publish(batch)
        with pytest.raises(Rejected) as nothing:
            await publisher.publish([])
    assert refused.value.status is None
    assert (refused.value.problems[0].index, refused.value.problems[0].field) == (1, "order_id")
    assert "no events" in str(nothing.value)
    # the publisher waits for the broker's acks: had it written, the record would be there
    assert await records_with_ids(settings, {"refused-ok"}, timeout_s=0) == {}
