"""The simulator drives a real ingestion service; everything it sent is on the topics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rtml.shared import topics
from rtml.shared.contracts import PredictRequest
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.settings import Settings

from rtml.client import AsyncClient
from rtml.tasks.eta.simulator.driver import drive
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from tests.helpers import read_topic, service_process


@pytest.fixture(scope="module")
def ingestion_url(broker: EmbeddedBroker) -> Iterator[str]:
    port = free_port()
    env = {"RTML_KAFKA_PORT": str(broker.port), "RTML_INGEST_PORT": str(port)}
    with service_process("rtml.services.ingestion", env, f"http://127.0.0.1:{port}/readyz"):
        yield f"http://127.0.0.1:{port}"


async def test_every_simulated_message_reaches_its_topic(
    ingestion_url: str, settings: Settings
) -> None:
    config = SimConfig(seed=11, id_prefix="drive11")
    messages = list(simulate(config, duration_s=1800))
    sent_events = {m.id for m in messages if not isinstance(m, PredictRequest)}
    sent_requests = {m.id for m in messages if isinstance(m, PredictRequest)}
    async with AsyncClient(ingestion_url) as client:
        stats = await drive(messages, client, speedup=0)
    assert (stats.events, stats.predict_requests, stats.failed) == (
        len(sent_events),
        len(sent_requests),
        0,
    )

    events = await read_topic(settings, topics.EVENTS.name, expected=len(sent_events))
    assert sent_events <= {e.id for e in events}
    requests = await read_topic(settings, topics.PREDICT_REQUESTS.name, expected=len(sent_requests))
    assert sent_requests <= {r.id for r in requests}
