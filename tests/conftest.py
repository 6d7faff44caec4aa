from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics
from rtml.shared.settings import Settings

# The tests run with rtml's own tasks whatever is installed: an editable install made
# before the rtml.tasks entry points were declared has none. Service subprocesses
# inherit it.
os.environ.setdefault("RTML_TASKS", "rtml.tasks.eta.spec,rtml.tasks.recs.spec")
# the services that serve one task serve eta in the tests, as rtml up's do (rtml/stack.py)
for variable in ("RTML_TRAINER_TASK", "RTML_PREDICTION_TASK", "RTML_DASHBOARD_TASK"):
    os.environ.setdefault(variable, "eta")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded broker for the session, with every rtml topic created."""
    with EmbeddedBroker(port=free_port()) as running:
        asyncio.run(ensure_topics(Settings(kafka_port=running.port)))
        yield running


@pytest.fixture
def settings(broker: EmbeddedBroker) -> Settings:
    return Settings(kafka_port=broker.port)
