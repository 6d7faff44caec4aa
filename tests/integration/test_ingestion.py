"""Ingestion against the real embedded broker, run as a subprocess."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
from rtml.shared import topics
from rtml.shared.contracts import FeatureVector, Message, Prediction, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import start_producer
from rtml.shared.settings import Settings

from rtml.tasks.eta.events import OrderPlaced
from tests.helpers import read_topic, service_process

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY_LIMIT = 64 * 1024


def ingestion_env(kafka_port: int, http_port: int, **extra: str) -> dict[str, str]:
    return {
        "RTML_KAFKA_PORT": str(kafka_port),
        "RTML_INGEST_PORT": str(http_port),
        "RTML_INGEST_TOKEN": TOKEN,
        "RTML_INGEST_MAX_BODY_BYTES": str(BODY_LIMIT),
        **extra,
    }


@pytest.fixture(scope="module")
def ingestion(broker: EmbeddedBroker) -> Iterator[str]:
    port = free_port()
    with service_process(
        "rtml.services.ingestion",
        ingestion_env(broker.port, port),
        f"http://127.0.0.1:{port}/readyz",
    ):
        yield f"http://127.0.0.1:{port}"


def order(order_id: str, **changes: object) -> dict:
    body = {
        "schema": "order_placed", "ts": 1_700_000_000.0, "order_id": order_id,
        "restaurant_id": f"r-{order_id}", "zone_id": "z1", "distance_km": 2.5, "n_items": 2,
    }  # fmt: skip
    return {**body, **changes}


async def post(url: str, body: object, headers: dict | None = None, **kwargs) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url, json=body, headers=AUTH if headers is None else headers, **kwargs
        ) as response:
            return response.status, await response.json(content_type=None)


async def events_with_order_ids(
    settings: Settings, order_ids: set[str], expected: int
) -> list[Message]:
    messages = await read_topic(settings, topics.EVENTS.name, expected=expected, timeout_s=10)
    return [m for m in messages if getattr(m, "order_id", None) in order_ids]


async def test_accepted_events_are_on_the_topic_as_sent(ingestion: str, settings: Settings) -> None:
    sent = [order(f"accepted-{i}", id=f"event-{i}") for i in range(5)]
    status, body = await post(f"{ingestion}/v1/events", sent)
    assert (status, body["accepted"]) == (200, 5)
    on_topic = await events_with_order_ids(settings, {e["order_id"] for e in sent}, expected=5)
    assert sorted(on_topic, key=lambda m: m.id) == [OrderPlaced.model_validate(e) for e in sent]


async def test_msgpack_body_is_accepted(ingestion: str, settings: Settings) -> None:
    event = OrderPlaced.model_validate(order("packed"))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{ingestion}/v1/events",
            data=encode(event),
            headers={**AUTH, "Content-Type": "application/msgpack"},
        ) as response:
            assert response.status == 200
    assert await events_with_order_ids(settings, {"packed"}, expected=1) == [event]


async def test_batch_with_a_bad_event_writes_nothing_and_names_it(
    ingestion: str, settings: Settings
) -> None:
    batch = [order("batch-ok-1"), order("batch-bad", n_items=0), order("batch-ok-2")]
    status, body = await post(f"{ingestion}/v1/events", batch)
    assert status == 400
    assert body["problems"] == [
        {"index": 1, "field": "n_items", "reason": "Input should be greater than or equal to 1"}
    ]
    await asyncio.sleep(0.5)
    assert (
        await events_with_order_ids(
            settings, {"batch-ok-1", "batch-ok-2", "batch-bad"}, expected=10**9
        )
        == []
    )


async def test_missing_or_wrong_token_is_401(ingestion: str) -> None:
    assert (await post(f"{ingestion}/v1/events", order("t"), headers={}))[0] == 401
    assert (
        await post(f"{ingestion}/v1/events", order("t"), headers={"Authorization": "Bearer nope"})
    )[0] == 401
    # health endpoints stay open for probes
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{ingestion}/healthz") as response:
            assert response.status == 200


async def test_oversize_body_is_413(ingestion: str) -> None:
    batch = [order(f"big-{i}-" + "x" * 500) for i in range(200)]
    status, body = await post(f"{ingestion}/v1/events", batch)
    assert status == 413 and "exceeded" in body["error"]

    async def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(100):
            yield b"x" * 1024

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{ingestion}/v1/events", data=chunks(), headers=AUTH) as response:
            assert response.status == 413


async def test_predict_returns_202_with_the_request_id_or_the_prediction(
    ingestion: str, settings: Settings
) -> None:
    request = {
        "task": "eta",
        "entities": {"restaurant_id": "r1", "zone_id": "z1"},
        "inputs": {"distance_km": 3.0},
    }
    status, body = await post(f"{ingestion}/v1/predict", request)
    assert status == 202 and len(body["request_id"]) == 32

    answer = asyncio.create_task(post(f"{ingestion}/v1/predict?wait_ms=5000", request))
    requests = await read_topic(settings, topics.PREDICT_REQUESTS.name, expected=2)
    [predict] = [r for r in requests if r.id != body["request_id"]]
    assert predict.received_at is not None and abs(predict.received_at - time.time()) < 60
    producer = await start_producer(settings)
    try:
        prediction = _prediction_for(predict.id)
        await producer.send_and_wait(
            topics.PREDICTIONS.name, encode(prediction), key=predict.id.encode()
        )
    finally:
        await producer.stop()
    status, body = await answer
    assert status == 200
    assert body["id"] == predict.id and body["prediction"] == 31.5 and body["model_version"] == "v1"


async def test_a_prediction_is_fetched_by_its_request_id(
    ingestion: str, settings: Settings
) -> None:
    status, body = await post(f"{ingestion}/v1/predict", {"task": "eta"})
    assert status == 202
    url = f"{ingestion}/v1/predictions/{body['request_id']}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=AUTH) as response:
            assert response.status == 404 and "not scored yet" in (await response.json())["error"]
        async with http.get(url) as response:
            assert response.status == 401
        producer = await start_producer(settings)
        try:
            prediction = _prediction_for(body["request_id"])
            await producer.send_and_wait(
                topics.PREDICTIONS.name, encode(prediction), key=prediction.id.encode()
            )
        finally:
            await producer.stop()
        deadline = time.monotonic() + 30
        while True:
            async with http.get(url, headers=AUTH) as response:
                status, fetched = response.status, await response.json()
            if status == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert status == 200
    assert fetched["id"] == body["request_id"] and fetched["prediction"] == 31.5


async def test_predict_validation_names_the_field(ingestion: str) -> None:
    status, body = await post(f"{ingestion}/v1/predict", {"task": "weather"})
    assert status == 400 and body["problems"][0]["field"] == "task"
    assert "known tasks: eta, recs" in body["problems"][0]["reason"]
    status, body = await post(f"{ingestion}/v1/predict?wait_ms=-3", {"task": "eta"})
    assert status == 400 and body["problems"][0]["field"] == "wait_ms"


def _prediction_for(request_id: str) -> Prediction:
    features = FeatureVector(
        feature_set="eta@1",
        names=["distance_km"],
        values=[3.0],
        freshness_s=[None],
        defaulted=[False],
    )
    return Prediction(
        id=request_id, ts=time.time(), task="eta", request_ts=time.time(),
        features=features, model_version="v1", prediction=31.5,
    )  # fmt: skip


async def test_broker_outage_gives_503_then_recovers() -> None:
    """Never a 2xx for an event the broker has not acknowledged; back to 200 once it is up."""
    broker = EmbeddedBroker(port=free_port()).start()
    port = free_port()
    env = ingestion_env(broker.port, port, RTML_INGEST_ACK_TIMEOUT_S="2")
    url = f"http://127.0.0.1:{port}"
    try:
        from rtml.shared.kafka import ensure_topics

        settings = Settings(kafka_port=broker.port)
        await ensure_topics(settings)
        with service_process("rtml.services.ingestion", env, f"{url}/readyz"):
            assert (await post(f"{url}/v1/events", order("before-outage")))[0] == 200
            broker.stop()
            status, body = await post(f"{url}/v1/events", order("during-outage"))
            assert status == 503 and "retry" in body["error"]
            broker.start()
            status = 0
            deadline = time.monotonic() + 60
            while status != 200 and time.monotonic() < deadline:
                status, _ = await post(f"{url}/v1/events", order("after-outage"))
                await asyncio.sleep(0.5)
            assert status == 200
            after = await events_with_order_ids(settings, {"after-outage"}, expected=1)
            assert len(after) >= 1
    finally:
        broker.stop()
