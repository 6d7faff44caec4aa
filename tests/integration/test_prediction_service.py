"""The prediction service as a subprocess against a real embedded broker.

The module has a broker of its own so that the service replays only the
announcements of this module's model store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import pytest
import xgboost as xgb
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rtml.shared import topics
from rtml.shared.contracts import DlqRecord, Prediction, PredictRouted, Reward, decode, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import client_kwargs, ensure_topics, start_producer
from rtml.shared.model_announcements import announce, register_and_announce
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings

from tests import binary_task
from tests.helpers import read_topic, service_process
from tests.unit.test_prediction_handlers import (
    ETA_FEATURES,
    FEATURE_SET,
    expected_scores,
    routed,
    synthetic_vectors,
    train_booster,
)

MAX_BATCH = 64
REGISTRATION = dict(
    task="eta", feature_set=FEATURE_SET, data_range={"rows": 512}, params={}, metrics={"rmse": 1.0}
)


@dataclass
class Stack:
    settings: Settings
    store: ModelStore
    url: str
    boosters: dict[str, xgb.Booster] = field(default_factory=dict)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A broker, a store whose eta champion v1 and binary-task champion b1 are announced,
    and the service reading both."""
    store = ModelStore(tmp_path_factory.mktemp("models"))
    with EmbeddedBroker(port=free_port()) as broker, binary_task.loaded() as binary:
        settings = Settings(kafka_port=broker.port)
        v1 = train_booster(seed=1)
        asyncio.run(register_champion(settings, store, v1, "v1"))
        b1 = train_binary_booster()
        asyncio.run(
            register_champion(
                settings, store, b1, "b1", task=binary.name, feature_set=binary.feature_set
            )
        )
        port = free_port()
        env = {
            "RTML_KAFKA_PORT": str(broker.port),
            "RTML_PREDICTION_PORT": str(port),
            "RTML_MODEL_STORE": str(store.root),
            "RTML_PREDICTION_MAX_BATCH": str(MAX_BATCH),
        }
        url = f"http://127.0.0.1:{port}"
        with service_process("rtml.services.prediction", env, f"{url}/readyz"):
            yield Stack(settings, store, url, {"v1": v1, "b1": b1})


def train_binary_booster() -> xgb.Booster:
    X, y = binary_task.examples(1000, np.random.default_rng(1))
    names = list(binary_task.TASK.feature_names)
    params = {"objective": binary_task.TASK.model.objective, "max_depth": 3, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(X, y, feature_names=names), num_boost_round=20)


async def register_champion(
    settings: Settings, store: ModelStore, booster: xgb.Booster, version: str, **registration: str
) -> None:
    await ensure_topics(settings)
    producer = await start_producer(settings)
    try:
        record = await register_and_announce(
            store, producer, booster, version=version, **(REGISTRATION | registration)
        )
        store.set_champion(record.task, version)
        await announce(producer, record, "promoted")
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def producing(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = await start_producer(settings)
    try:
        yield producer
    finally:
        await producer.stop()


async def send_routed(settings: Settings, requests: Sequence[PredictRouted | bytes]) -> None:
    async with producing(settings) as producer:
        for request in requests:
            if isinstance(request, bytes):
                await producer.send_and_wait(topics.PREDICT_ROUTED.name, request)
            else:
                await producer.send_and_wait(
                    topics.PREDICT_ROUTED.name, encode(request), key=request.key
                )


async def predictions_for(settings: Settings, ids: set[str]) -> dict[str, list[Prediction]]:
    found: dict[str, list[Prediction]] = defaultdict(list)
    for message in await read_topic(settings, topics.PREDICTIONS.name, expected=10**9, timeout_s=0):
        if message.id in ids and isinstance(message, Prediction):
            found[message.id].append(message)
    return found


async def wait_for_predictions(
    settings: Settings, ids: set[str], timeout_s: float = 30.0
) -> dict[str, list[Prediction]]:
    """Predictions of ``ids`` once each has one (or the timeout: the caller's assert shows
    what is missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await predictions_for(settings, ids)
        if set(found) >= ids or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def wait_for_dead_letters(
    settings: Settings, originals: list[bytes], timeout_s: float = 30.0
) -> dict[str, DlqRecord]:
    """The prediction service's dead letters of ``originals`` by reason, once all are there."""
    deadline = time.monotonic() + timeout_s
    while True:
        dead = await read_topic(settings, topics.DLQ.name, expected=10**9, timeout_s=0)
        mine = {
            d.reason: d
            for d in dead
            if isinstance(d, DlqRecord) and d.service == "prediction" and d.original in originals
        }
        if len(mine) >= len(originals) or time.monotonic() > deadline:
            return mine
        await asyncio.sleep(0.2)


async def score_over_http(url: str, request: PredictRouted) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        body = request.model_dump(mode="json")
        async with http.post(f"{url}/v1/score", json=body) as response:
            return response.status, await response.json()


def run_id() -> str:
    return uuid.uuid4().hex[:8]


async def test_scores_equal_booster_predict_over_the_topic_and_over_http(stack: Stack) -> None:
    prefix = run_id()
    vectors = synthetic_vectors(300, seed=11)
    requests = [
        routed(v, f"{prefix}-{i}", model_version="v1" if i % 2 else None, arm="v1", propensity=0.5)
        for i, v in enumerate(vectors)
    ]

    await send_routed(stack.settings, requests)
    found = await wait_for_predictions(stack.settings, {r.id for r in requests})

    assert sorted(found) == sorted(r.id for r in requests)
    predictions = [found[r.id][0] for r in requests]
    scores = np.array([p.prediction for p in predictions], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected_scores(stack.boosters["v1"], vectors))
    for request, prediction in zip(requests, predictions, strict=True):
        assert (prediction.model_version, prediction.fell_back) == ("v1", False)
        assert prediction.features == request.features
        assert (prediction.arm, prediction.propensity) == ("v1", 0.5)
        assert {"scoring", "total"} <= set(prediction.timings_ms)

    status, body = await score_over_http(stack.url, requests[0])
    assert status == 200
    over_http = Prediction.model_validate(body)
    assert over_http.prediction == predictions[0].prediction
    assert over_http.model_dump(exclude={"timings_ms"}) == predictions[0].model_dump(
        exclude={"timings_ms"}
    )


async def test_a_binary_model_predicts_the_probability_over_the_topic_and_over_http(
    stack: Stack,
) -> None:
    prefix = run_id()
    vectors = binary_task.vectors(100, np.random.default_rng(12))
    spec = binary_task.TASK
    requests = [
        routed(v, f"{prefix}-b{i}", task=spec.name, feature_set=spec.feature_set,
               names=spec.feature_names, entities={"restaurant_id": "r1", "order_id": f"o{i}"})
        for i, v in enumerate(vectors)
    ]  # fmt: skip

    await send_routed(stack.settings, requests)
    found = await wait_for_predictions(stack.settings, {r.id for r in requests})
    status, over_http = await score_over_http(stack.url, requests[0])

    assert sorted(found) == sorted(r.id for r in requests)
    probabilities = np.array([found[r.id][0].prediction for r in requests], dtype=np.float32)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    # the booster's own predict: the probability of the positive class
    matrix = xgb.DMatrix(vectors, feature_names=list(spec.feature_names))
    np.testing.assert_array_equal(probabilities, stack.boosters["b1"].predict(matrix))
    assert {found[r.id][0].model_version for r in requests} == {"b1"}
    assert status == 200 and over_http["prediction"] == found[requests[0].id][0].prediction


async def test_an_unknown_version_falls_back_to_the_champion_and_says_so(stack: Stack) -> None:
    vector = synthetic_vectors(1, seed=12)[0]
    request = routed(vector, f"{run_id()}-unknown", model_version="v-never-registered")

    await send_routed(stack.settings, [request])
    [prediction] = (await wait_for_predictions(stack.settings, {request.id}))[request.id]
    status, over_http = await score_over_http(stack.url, request)

    assert (prediction.model_version, prediction.fell_back) == ("v1", True)
    assert (
        np.float32(prediction.prediction) == expected_scores(stack.boosters["v1"], vector[None])[0]
    )
    assert (status, over_http["model_version"], over_http["fell_back"]) == (200, "v1", True)


async def test_http_scoring_names_the_field_of_a_bad_request(stack: Stack) -> None:
    body = routed(synthetic_vectors(1)[0], "no-features").model_dump(mode="json")
    del body["features"]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.url}/v1/score", json=body) as response:
            status, answer = response.status, await response.json()
    assert status == 400
    assert answer["problems"] == [{"index": 0, "field": "features", "reason": "Field required"}]


async def test_poison_goes_to_the_dlq_and_the_stream_keeps_flowing(stack: Stack) -> None:
    prefix = run_id()
    vectors = synthetic_vectors(3, seed=13)
    first, last = routed(vectors[0], f"{prefix}-first"), routed(vectors[1], f"{prefix}-last")
    junk = f"{prefix} is not msgpack".encode()
    wrong_features = routed(vectors[2], f"{prefix}-wrong", names=list(reversed(ETA_FEATURES)))
    wrong_kind = encode(Reward(id=f"{prefix}-reward", ts=1.0, task="eta", arm="v1", reward=1.0))

    await send_routed(stack.settings, [first, junk, wrong_features, wrong_kind, last])
    found = await wait_for_predictions(stack.settings, {first.id, last.id})
    mine = await wait_for_dead_letters(stack.settings, [junk, encode(wrong_features), wrong_kind])

    assert set(found) == {first.id, last.id}
    assert wrong_features.id not in await predictions_for(stack.settings, {wrong_features.id})
    assert set(mine) == {"decode", "handler", "schema"}
    assert "expects" in mine["handler"].error and mine["handler"].error_class == "FeatureMismatch"
    assert mine["decode"].original == junk
    assert all(d.topic == topics.PREDICT_ROUTED.name for d in mine.values())


class PredictionWatcher:
    """Follows rtml.predictions and keeps, per partition, the predictions of some ids in order."""

    def __init__(self, settings: Settings, ids: Callable[[], set[str]]) -> None:
        self._settings = settings
        self._ids = ids
        self.by_partition: dict[int, list[Prediction]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None

    @property
    def all(self) -> list[Prediction]:
        return [p for predictions in self.by_partition.values() for p in predictions]

    async def __aenter__(self) -> PredictionWatcher:
        consumer = AIOKafkaConsumer(
            **client_kwargs(self._settings), enable_auto_commit=False, fetch_max_wait_ms=5
        )
        await consumer.start()
        partitions = consumer.partitions_for_topic(topics.PREDICTIONS.name) or set()
        assigned = [TopicPartition(topics.PREDICTIONS.name, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        self._task = asyncio.create_task(self._run(consumer))
        return self

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                for tp, records in (await consumer.getmany(timeout_ms=100)).items():
                    ids = self._ids()
                    for record in records:
                        message = decode(record.value)
                        if message.id in ids and isinstance(message, Prediction):
                            self.by_partition[tp.partition].append(message)
        finally:
            await consumer.stop()

    async def until(self, condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_hot_swap_under_a_steady_stream_loses_nothing_and_names_the_version(
    stack: Stack,
) -> None:
    """Requests name v2 from the start: the champion answers them (fell_back) until v2
    is registered mid-stream, then v2 does; no request is lost on the way."""
    prefix = run_id()
    vectors = synthetic_vectors(4000, seed=14)
    sent: dict[str, int] = {}
    v2 = train_booster(seed=2)
    stop_streaming = asyncio.Event()

    async def stream(producer: AIOKafkaProducer) -> None:
        # ~200 requests/s, each acked before the next batch: a steady stream
        for index, vector in enumerate(vectors):
            if stop_streaming.is_set():
                break
            request = routed(vector, f"{prefix}-{index}", model_version="v2", arm="v2")
            sent[request.id] = index
            await producer.send(topics.PREDICT_ROUTED.name, encode(request), key=request.key)
            if index % 10 == 9:
                await producer.flush()
                await asyncio.sleep(0.05)
        await producer.flush()

    async with PredictionWatcher(stack.settings, lambda: set(sent)) as watcher:
        async with producing(stack.settings) as producer:
            streaming = asyncio.create_task(stream(producer))
            await watcher.until(lambda: len(watcher.all) >= 200, "predictions before the swap")
            async with producing(stack.settings) as registrar:
                await register_and_announce(
                    stack.store, registrar, v2, version="v2", **REGISTRATION
                )
            await watcher.until(
                lambda: sum(p.model_version == "v2" for p in watcher.all) >= 200,
                "predictions after the swap",
            )
            stop_streaming.set()
            await streaming
        await watcher.until(lambda: len(watcher.all) >= len(sent), "every request's prediction")

    predictions = watcher.all
    assert sorted(p.id for p in predictions) == sorted(sent)
    for version, fell_back, booster in (("v1", True, stack.boosters["v1"]), ("v2", False, v2)):
        made = [p for p in predictions if p.model_version == version]
        assert made and all(p.fell_back is fell_back for p in made)
        rows = [sent[p.id] for p in made]
        scores = np.array([p.prediction for p in made], dtype=np.float32)
        np.testing.assert_array_equal(scores, expected_scores(booster, vectors[rows]))
    # each partition switches once, from v1 to v2, and never back
    for partition, in_order in watcher.by_partition.items():
        versions = [p.model_version for p in in_order]
        switch = versions.index("v2") if "v2" in versions else len(versions)
        assert set(versions[:switch]) <= {"v1"} and set(versions[switch:]) <= {"v2"}, partition
