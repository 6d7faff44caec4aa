"""Read-your-writes: a request sees the events appended before it, on a real broker.

The simulator's driver sends a batch of events, awaits the broker's
acknowledgement, then sends the predict requests of that moment: a request's
own ``order_placed`` is in the events log before the request is. Events and
requests are separate topics, so without the freshness barrier of the features
worker (``services/features/freshness.py``) some requests were enriched before
it was applied (``rtml skew`` found 3.4% of the demo's vectors one order short).
Here the whole log is driven that way, back to back, and every enriched vector
must equal the point-in-time reference.

Run with ``RTML_FEATURES_FRESHNESS_WAIT_MS=0`` in the worker's env (no wait) and
it fails.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import pytest
from rtml.shared import topics
from rtml.shared.contracts import (
    FeatureVector,
    Message,
    PredictEnriched,
    PredictRequest,
    encode,
)
from rtml.shared.features.definitions import Outcome
from rtml.shared.features.reference import ReferenceFeatures
from rtml.shared.kafka import start_producer
from rtml.shared.settings import Settings

from rtml.tasks.eta.simulator.world import SimConfig, simulate
from rtml.tasks.eta.spec import TASK as ETA
from tests.helpers import read_topic
from tests.integration.test_features import (
    LATENESS_S,
    assert_equal_to_reference,
    metric_values,
    own_broker,
)
from tests.integration.test_features import worker as features_worker

__all__ = ["own_broker"]  # the fixture, imported for this module's tests

SIM = SimConfig(seed=23, n_restaurants=8, n_couriers=60, orders_per_hour=900, id_prefix="fr")
# a request under test waits for the events before it at most this long; generous,
# because the machine running the tests may be loaded (the default is 500 ms)
FRESHNESS_WAIT_MS = 10_000


async def drive(
    settings: Settings,
    log: Sequence[Message],
    speedup: float | None = None,
    ask: Callable[[PredictRequest], Awaitable[None]] | None = None,
) -> dict[str, float]:
    """Send the log as the simulator's driver does: every event up to a request's
    time is acknowledged before the request is sent (the reference counts events
    at the request's own time, some of which the log has after the request).
    Back to back, or ``speedup`` times event time. A request goes to Kafka, or to
    ``ask`` (awaited before the log goes on). Returns each request's send time
    (``time.time()``)."""
    log = sorted(log, key=lambda m: (m.ts, isinstance(m, PredictRequest)))
    producer = await start_producer(settings, linger_ms=1)
    sent_at: dict[str, float] = {}
    began, first_ts = time.perf_counter(), log[0].ts if log else 0.0
    try:
        events, requests = [], []
        for message in log:
            due = (message.ts - first_ts) / speedup if speedup else 0.0
            if (ahead := due - (time.perf_counter() - began)) > 0:
                await asyncio.sleep(ahead)
            if isinstance(message, PredictRequest):
                await asyncio.gather(*events)
                events = []
                sent_at[message.id] = time.time()
                if ask is not None:
                    await ask(message)
                    continue
                topic = topics.PREDICT_REQUESTS.name
                requests.append(await producer.send(topic, encode(message), key=message.key))
            elif isinstance(message, ETA.events):
                events.append(
                    await producer.send(topics.EVENTS.name, encode(message), key=message.key)
                )
        await asyncio.gather(*events, *requests)
    finally:
        await producer.stop()
    return sent_at


def log_and_reference(
    seconds: float,
) -> tuple[list[Message], list[PredictRequest], dict[str, FeatureVector]]:
    """A simulated log of eta events and requests, its requests, and each request's
    vector by the point-in-time reference (every event of the log accepted)."""
    log = [m for m in simulate(SIM, seconds) if isinstance(m, (PredictRequest, *ETA.events))]
    requests = [m for m in log if isinstance(m, PredictRequest) and m.task == "eta"]
    reference = ReferenceFeatures(LATENESS_S, {})
    outcomes = [reference.apply(m) for m in log if not isinstance(m, PredictRequest)]
    assert outcomes.count(Outcome.ACCEPTED) == len(outcomes)
    return log, requests, {r.id: reference.vector(r) for r in requests}


def generous_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # the worker inherits the environment; an explicit setting (e.g. 0) is kept
    wait_ms = os.environ.get("RTML_FEATURES_FRESHNESS_WAIT_MS", str(FRESHNESS_WAIT_MS))
    monkeypatch.setenv("RTML_FEATURES_FRESHNESS_WAIT_MS", wait_ms)


def test_a_request_sees_the_events_sent_before_it(
    own_broker: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, requests, expected = log_and_reference(0.5 * 3600)
    assert len(requests) >= 200
    generous_wait(monkeypatch)
    with features_worker(own_broker) as (_, url):
        asyncio.run(drive(own_broker, log))
        enriched = asyncio.run(
            read_topic(
                own_broker, topics.PREDICT_ENRICHED.name, expected=len(requests), timeout_s=120
            )
        )
        held = metric_values(url, "rtml_features_held_seconds_count", "outcome")
    vectors = {m.id: m.features for m in enriched if isinstance(m, PredictEnriched)}
    assert_equal_to_reference(vectors, expected)
    assert held.get("fresh", 0) >= len(requests), held
    assert held.get("waited_out", 0) == 0, held


def test_a_lookup_over_http_sees_the_events_sent_before_it(
    own_broker: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same log, each request asked over ``POST /v1/enrich`` once the events before
    it are acknowledged: the worker proves them applied by a fetch asked for after
    the lookup arrived (``BulkApp.applied_as_of``)."""
    log, requests, expected = log_and_reference(0.25 * 3600)
    assert len(requests) >= 100
    generous_wait(monkeypatch)
    vectors = {}

    async def drive_over_http(url: str) -> None:
        async with aiohttp.ClientSession() as http:

            async def ask(request: PredictRequest) -> None:
                body = request.model_dump(mode="json")
                async with http.post(f"{url}/v1/enrich", json=body) as response:
                    assert response.status == 200, await response.text()
                    answer = PredictEnriched.model_validate(await response.json())
                    vectors[request.id] = answer.features

            await drive(own_broker, log, ask=ask)

    with features_worker(own_broker) as (_, url):
        asyncio.run(drive_over_http(url))
        held = metric_values(url, "rtml_features_held_seconds_count", "outcome")
    assert_equal_to_reference(vectors, expected)
    assert held.get("fresh", 0) >= len(requests), held
    assert held.get("waited_out", 0) == 0, held
