"""Both wirings of the predict chain give the same predictions, on real services.

One broker of its own (the router and the prediction service replay
rtml.models: only this store's champion may be an arm, so routing is
deterministic: one arm, propensity 1) with ingestion, features, router,
prediction and the gateway as ``rtml up --wiring request`` registers them.
Marketplace events go in through ingestion first, so that the vectors carry
live streaming features rather than cold-start defaults. Then each request
body goes once through ingestion (event-driven, ``?wait_ms=``) and once
through the gateway (request-driven, HTTP calls): the two predictions must
agree in everything but the request id and the timings' values, and both
must be on rtml.predictions (log and wait).

The helpers that build the model, the events and the requests are shared
with ``benchmarks/wiring.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import xgboost as xgb
from rtml.shared import topics
from rtml.shared.contracts import Message, Prediction, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.model_announcements import announce, register_and_announce
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings
from rtml.shared.timings import (
    FEATURES,
    FRESHNESS_WAIT,
    ROUTING,
    SCORING,
    TO_FEATURES,
    TO_PREDICTION,
    TO_ROUTER,
    TOTAL,
    hops,
)

from rtml.stack import Wiring, services_for
from rtml.supervisor import Supervised, started
from rtml.tasks.eta.events import CourierOnline, OrderPlaced, OrderReady
from rtml.tasks.eta.spec import TASK as ETA
from tests.helpers import read_topic

# event time of the requests; the events lead up to it
REQUEST_TS = 1_700_000_000.0
RESTAURANTS = {"r1": "z1", "r2": "z1", "r3": "z2", "r4": "z2"}
# the services each wiring's predict chain goes through (the rest of the stack is idle here)
CHAIN: dict[Wiring, tuple[str, ...]] = {
    "event": ("ingestion", "features", "router", "prediction"),
    "request": ("features", "router", "prediction", "gateway"),
}
CHAIN_SPECS = tuple(
    spec for spec in services_for("request") if spec.name in {*CHAIN["event"], *CHAIN["request"]}
)
READY_TIMEOUT_S = 120.0
# what a prediction's timings_ms holds besides its total, with one features worker
HOPS = [TO_FEATURES, FRESHNESS_WAIT, FEATURES, TO_ROUTER, ROUTING, TO_PREDICTION, SCORING]


# --- shared with benchmarks/wiring.py ------------------------------------------------


def train_champion(seed: int = 0, rounds: int = 20) -> xgb.Booster:
    """A small regressor on the features service's eta@1 vector."""
    rng = np.random.default_rng(seed)
    x = rng.random((2000, len(ETA.feature_names)), dtype=np.float32) * 10
    minutes = 10 + x @ rng.uniform(0.2, 2.0, len(ETA.feature_names))
    data = xgb.DMatrix(x, minutes, feature_names=list(ETA.feature_names))
    return xgb.train({"max_depth": 4, "nthread": 1}, data, num_boost_round=rounds)


async def register_champion(settings: Settings, store: ModelStore, booster: xgb.Booster) -> str:
    """Register, announce and promote ``booster`` as the eta champion: the only arm."""
    await ensure_topics(settings)
    producer = await start_producer(settings)
    try:
        record = await register_and_announce(
            store,
            producer,
            booster,
            task="eta",
            feature_set=ETA.feature_set,
            data_range={"synthetic_rows": 2000},
            params={},
            metrics={},
        )
        store.set_champion("eta", record.version)
        await announce(producer, record, "promoted")
        return record.version
    finally:
        await producer.stop()


def marketplace_events() -> list[Message]:
    """Couriers online, orders placed and some ready, in the hour before REQUEST_TS."""
    events: list[Message] = []
    for zone in sorted(set(RESTAURANTS.values())):
        events += [
            CourierOnline(ts=REQUEST_TS - 3000 + i, courier_id=f"{zone}-c{i}", zone_id=zone)
            for i in range(3)
        ]
    for n, (restaurant, zone) in enumerate(RESTAURANTS.items()):
        for k in range(n + 1):
            placed = REQUEST_TS - 1800 + 300 * k
            order = f"{restaurant}-o{k}"
            events.append(
                OrderPlaced(
                    ts=placed,
                    order_id=order,
                    restaurant_id=restaurant,
                    zone_id=zone,
                    distance_km=1.5 + k,
                    n_items=1 + k,
                )
            )
            if k % 2 == 0:
                ready = OrderReady(
                    ts=placed + 600 + 60 * n,
                    order_id=order,
                    restaurant_id=restaurant,
                    placed_ts=placed,
                )
                events.append(ready)
    return sorted(events, key=lambda e: e.ts)


def predict_body(i: int) -> dict[str, Any]:
    """The i-th request of a stream: every restaurant, in turn, at REQUEST_TS."""
    restaurant = sorted(RESTAURANTS)[i % len(RESTAURANTS)]
    return {
        "task": "eta",
        "ts": REQUEST_TS,
        "entities": {"restaurant_id": restaurant, "zone_id": RESTAURANTS[restaurant]},
        "inputs": {"distance_km": 0.5 + (i % 7), "n_items": 1.0 + (i % 4)},
    }


def stack_env(broker_port: int, store: str) -> dict[str, str]:
    """Settings for the services: this broker and store, a free port each."""
    env = {
        **os.environ,
        "RTML_KAFKA_PORT": str(broker_port),
        "RTML_MODEL_STORE": str(store),
        "RTML_LOG_LEVEL": os.environ.get("RTML_LOG_LEVEL", "WARNING"),
        **{spec.port_env: str(free_port()) for spec in services_for("request")},
    }
    env.pop("RTML_KAFKA_BOOTSTRAP", None)
    return env


async def send_events(settings: Settings, events: list[Message]) -> None:
    producer = await start_producer(settings)
    try:
        acks = [await producer.send(topics.EVENTS.name, encode(e), key=e.key) for e in events]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def until_features_applied(features: Supervised, count: int, timeout_s: float = 60) -> None:
    """Until the features worker has applied ``count`` events (a fresh events topic)."""
    deadline = time.monotonic() + timeout_s
    applied = 0.0
    while time.monotonic() < deadline:
        applied = await asyncio.to_thread(_applied_events, features.url)
        if applied >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the features worker applied {applied} of {count} events")


def _applied_events(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in response.read().decode().splitlines()
            if line.startswith("rtml_features_consumed_offset{")
        )


# --- the test -------------------------------------------------------------------------


def comparable(prediction: dict[str, Any]) -> dict[str, Any]:
    """What both wirings must agree on: everything but the request id and timing values."""
    return {k: v for k, v in prediction.items() if k not in ("id", "timings_ms", "received_at")} | {
        "timings": sorted(prediction["timings_ms"])
    }


async def post_json(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


async def test_both_wirings_return_equal_predictions(tmp_path: Path) -> None:
    # the benchmark builds on this module's stack
    from benchmarks.wiring import Plan, run_against

    store = ModelStore(tmp_path / "models")
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        version = await register_champion(settings, store, train_champion())
        env = stack_env(broker.port, str(store))
        async with started(CHAIN_SPECS, env, READY_TIMEOUT_S) as children:
            by_name = {child.spec.name: child for child in children}
            events = marketplace_events()
            await send_events(settings, events)
            await until_features_applied(by_name["features"], len(events))
            event_url = f"{by_name['ingestion'].url}/v1/predict?wait_ms=20000"
            request_url = f"{by_name['gateway'].url}/v1/predict"
            bodies = [predict_body(i) for i in range(12)]
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                answers = {}
                for wiring, url in (("event", event_url), ("request", request_url)):
                    answers[wiring] = [await post_json(http, url, body) for body in bodies]
                bad = await post_json(http, request_url, {**bodies[0], "task": "weather"})
            logged = await read_topic(
                settings, topics.PREDICTIONS.name, expected=2 * len(bodies), timeout_s=30
            )
            # the benchmark's mode for a deployed stack, against this one
            against = await run_against(
                by_name["ingestion"].url, Plan(20.0, 1.0, 0.0, 0.0, 0.0, 0.0, 20000), settings
            )

    for wiring, answered in answers.items():
        assert [status for status, _ in answered] == [200] * len(bodies), (wiring, answered)
    event_side = [body for _, body in answers["event"]]
    request_side = [body for _, body in answers["request"]]
    for event_prediction, request_prediction in zip(event_side, request_side, strict=True):
        assert comparable(request_prediction) == comparable(event_prediction)
        assert event_prediction["model_version"] == version
        assert event_prediction["arm"] == version and event_prediction["propensity"] == 1.0
    # both wirings time the same hops, and the hops add up to the total
    for served in event_side + request_side:
        timings = served["timings_ms"]
        assert list(hops(timings)) == HOPS, timings
        assert sum(hops(timings).values()) == pytest.approx(timings[TOTAL], abs=0.01), timings
    # live features, not only cold-start defaults, went into the vectors
    assert any(not all(p["features"]["defaulted"]) for p in event_side)
    assert len({json.dumps(p["features"]["values"]) for p in event_side}) > 1
    # both wirings log what they served, as served
    on_topic = {p.id: p.model_dump(mode="json") for p in logged if isinstance(p, Prediction)}
    for served in event_side + request_side:
        assert on_topic.get(served["id"]) == served
    status, problem = bad
    assert status == 400 and problem["problems"][0]["field"] == "task"
    assert against.requests == 20 and against.failed == 0
    assert against.phases["steady"]["p50_ms"] > 0
    assert list(against.hops["steady"]) == HOPS
