"""The broker under test: the embedded one, or ``RTML_CONFORMANCE_BOOTSTRAP``."""

from __future__ import annotations

import os

import pytest
from rtml.shared.embedded_broker import EmbeddedBroker
from rtml.shared.settings import Settings


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    external = os.environ.get("RTML_CONFORMANCE_BOOTSTRAP")
    if external:
        return Settings(kafka_bootstrap=external)
    broker: EmbeddedBroker = request.getfixturevalue("broker")
    return Settings(kafka_port=broker.port)
