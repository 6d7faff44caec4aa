"""Rolling SIGTERM of every service under load: no loss, nothing wrong.

The whole event-driven stack (ingestion, features, router, prediction,
collector, trainer, dashboard) runs as real subprocesses on a broker of its
own. A simulated eta log is driven through the ingestion API as a client
would (``rtml/tasks/eta/simulator/driver.py``: events in acknowledged batches, then
the predict requests of that moment; connection errors and 503s retried) in
one chunk per service; in the middle of each chunk that service gets SIGTERM,
must exit with code 0 within the supervisor's grace (6 s), and is started
again on the same port while the traffic goes on. A last chunk runs with
every service back.

What is asserted, once the stack caught up:
- the client gave up on nothing, and every event and request it sent is on its
  topic;
- every request has a prediction, and every prediction carries the point-in-time
  reference vector (``shared/features/reference.py``): no event acknowledged
  before a request was missed, across the features restart too (with the
  freshness wait uncapped: see the env below);
- the warehouse holds exactly one example per prediction whose order was
  delivered, with that delivery's minutes as the label (the warehouse reader
  keeps one row per request id; a repeat is the same example);
- nothing went to ``rtml.dlq``; every service is ready at the end.

Reduced setting (default run): 40 simulated minutes; full: 4 hours through
the same restarts (``RTML_CHAOS=full``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest
from rtml.shared import topics
from rtml.shared.contracts import Message, PredictRequest
from rtml.shared.embedded_broker import EmbeddedBroker
from rtml.shared.kafka import read_messages
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings
from rtml.shared.warehouse import Warehouse

from rtml.client import AsyncClient
from rtml.tasks.eta.simulator.driver import DriveStats, drive
from rtml.tasks.eta.simulator.world import SimConfig
from tests.chaos.conftest import CHAOS_TIMEOUT_S, ChaosSetting, InThread
from tests.helpers import read_topic, wait_http
from tests.stack import (
    HOUR,
    STOP_GRACE_S,
    EtaLog,
    Stack,
    first_model,
    running_stack,
    services_named,
    stack_env,
)
from tests.unit.test_features_state import assert_vectors_equal

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TIMEOUT_S)]

ROLLED = ("ingestion", "features", "router", "prediction", "collector", "trainer", "dashboard")
SERVICES = services_named(*ROLLED)
SIM = SimConfig(
    seed=31, n_zones=4, n_restaurants=30, n_couriers=200, orders_per_hour=900, id_prefix="rr"
)
READY_TIMEOUT_S = 180.0
CATCH_UP_S = 300.0


def hours(chaos: ChaosSetting) -> float:
    return 4.0 if chaos.name == "full" else 40 / 60


async def drive_chunk(url: str, messages: Sequence[Message], speedup: float) -> DriveStats:
    async with AsyncClient(url) as client:
        return await drive(messages, client, speedup, batch_size=50)


def chunks(messages: list[Message], count: int) -> list[list[Message]]:
    size = -(-len(messages) // count)
    return [messages[i : i + size] for i in range(0, len(messages), size)]


def roll(stack: Stack, log: EtaLog, chunk_s: float) -> tuple[dict[str, tuple[int, float]], int]:
    """Drive the log in chunks, SIGTERM-restarting one service mid-chunk each; returns
    (exit code, seconds to exit) per service and the requests the client gave up on."""
    ingestion = stack.of("ingestion")[0]
    parts = chunks(log.messages, len(ROLLED) + 1)
    exits: dict[str, tuple[int, float]] = {}
    failed = 0
    for k, part in enumerate(parts):
        speedup = (part[-1].ts - part[0].ts) / chunk_s
        driver = InThread(partial(drive_chunk, ingestion.url, part, speedup)).start()
        if k < len(ROLLED):
            time.sleep(chunk_s / 2)
            service = stack.of(ROLLED[k])[0]
            exits[service.name] = service.terminate()
            service.restart()
            wait_http(f"{service.url}/readyz", timeout_s=READY_TIMEOUT_S)
        failed += driver.join(CATCH_UP_S).failed
    return exits, failed


def wait_for_outputs(settings: Settings, log: EtaLog, warehouse: Path) -> list[Message]:
    """The predictions once every request has one and the warehouse every label."""
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        predictions = asyncio.run(
            read_topic(settings, topics.PREDICTIONS.name, len(log.requests), timeout_s=10)
        )
        examples = len(Warehouse(warehouse).read("eta")) if warehouse.exists() else 0
        covered = {p.id for p in predictions} >= log.vectors.keys()
        if (covered and examples >= len(log.labels)) or time.monotonic() > deadline:
            return predictions
        time.sleep(2)


async def last_topic_reached(settings: Settings, ids: set[str]) -> dict[str, str]:
    """For requests that got no prediction: the furthest topic of the chain each is on."""
    reached = dict.fromkeys(ids, "nowhere")
    for topic in (topics.PREDICT_REQUESTS, topics.PREDICT_ENRICHED, topics.PREDICT_ROUTED):
        on_topic = await read_messages(settings, topic.name)
        reached.update({m.id: topic.name for m in on_topic if m.id in ids})
    return reached


def test_every_service_restarted_with_sigterm_under_load_loses_nothing(
    own_broker: EmbeddedBroker, chaos: ChaosSetting, tmp_path: Path
) -> None:
    lateness_s = (hours(chaos) + 1) * HOUR
    log = EtaLog(SIM, hours(chaos), lateness_s)
    settings = Settings(kafka_port=own_broker.port)
    store = ModelStore(tmp_path / "models")
    warehouse = tmp_path / "warehouse"
    asyncio.run(first_model(settings, store, log))
    env = {
        **stack_env(settings, store, warehouse),
        "RTML_FEATURES_ALLOWED_LATENESS_S": str(lateness_s),
        "RTML_COLLECTOR_WINDOW_S": str(lateness_s),
        "RTML_LOG_LEVEL": "WARNING",
        # freshness without a cap: the default 500 ms gives way to latency while a
        # restarted worker applies its backlog, and serves requests the vectors of
        # before it (2 of 2 full runs had one), which this test would count as wrong
        "RTML_FEATURES_FRESHNESS_WAIT_MS": str(int(CATCH_UP_S * 1000)),
    }
    # a chunk's second half flows while its service stops and starts again (1-6 s on
    # 2 cores); the next chunk waits for the service to be ready
    chunk_s = 40.0 if chaos.name == "full" else 6.0
    with running_stack(settings, SERVICES, env, READY_TIMEOUT_S) as stack:
        exits, failed = roll(stack, log, chunk_s)
        predictions = wait_for_outputs(settings, log, warehouse)
        stack.wait_ready(READY_TIMEOUT_S)
        # what the client's acknowledged sends put on the topics, to their ends
        events = asyncio.run(read_messages(settings, topics.EVENTS.name))
        requests = asyncio.run(read_messages(settings, topics.PREDICT_REQUESTS.name))
        dead = asyncio.run(read_topic(settings, topics.DLQ.name, expected=0))
        lost = {r.id for r in log.requests} - {p.id for p in predictions}
        reached = asyncio.run(last_topic_reached(settings, lost)) if lost else {}

    slow = {name: exit for name, exit in exits.items() if exit[0] != 0 or exit[1] > STOP_GRACE_S}
    assert not slow, f"not a clean exit within {STOP_GRACE_S:g}s (code, seconds): {slow}"
    assert failed == 0
    sent = [m for m in log.messages if not isinstance(m, PredictRequest)]
    assert {m.id for m in events} >= {m.id for m in sent}
    assert {m.id for m in requests} >= {r.id for r in log.requests}
    assert dead == []

    assert not lost, f"requests with no prediction, by the last topic they reached: {reached}"
    for prediction in predictions:
        assert_vectors_equal(prediction.features, log.vectors[prediction.id], prediction.id)
    examples = Warehouse(warehouse).read("eta")
    assert dict(zip(examples.ids, examples.y, strict=True)) == pytest.approx(log.labels)
    print(
        f"\nrolling restart ({chaos.name}): {len(sent)} events, {len(log.requests)} requests, "
        f"{len(predictions)} predictions ({len(predictions) - len(log.requests)} repeated), "
        f"{len(examples)} examples; seconds to exit: "
        + ", ".join(f"{name} {seconds:.1f}" for name, (_, seconds) in exits.items())
    )
