"""Readiness tells the truth: a hung broker flips /readyz within seconds, /healthz
stays 200 (no restart storm), and the same process is ready again once the broker is."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from rtml.shared.embedded_broker import EmbeddedBroker, free_port

from tests.chaos.conftest import CHAOS_TIMEOUT_S, frozen
from tests.helpers import service_process, wait_http

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TIMEOUT_S)]


def status_of(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_status(url: str, want: int, timeout_s: float) -> dict:
    """The body once ``url`` answers ``want``; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = status_of(url)
        if status == want:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {want} within {timeout_s}s (last: {body})")


# module, its port setting, the readiness check that names the broker; ingestion with no
# traffic at all: a check fed by sends would neither notice the outage nor its end
SERVICES = {
    "trainer": ("rtml.services.trainer", "RTML_TRAINER_PORT", "pipeline"),
    "ingestion": ("rtml.services.ingestion", "RTML_INGEST_PORT", "broker"),
}


@pytest.mark.parametrize("service", SERVICES)
def test_a_hung_broker_fails_readiness_not_liveness(
    own_broker: EmbeddedBroker, tmp_path: Path, service: str
) -> None:
    module, port_setting, check = SERVICES[service]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "RTML_KAFKA_PORT": str(own_broker.port),
        port_setting: str(port),
        "RTML_MODEL_STORE": str(tmp_path / "models"),
        "RTML_WAREHOUSE": str(tmp_path / "warehouse"),
        "RTML_LOG_LEVEL": "WARNING",
    }
    with service_process(module, env, f"{url}/readyz") as process:
        with frozen(own_broker):
            # the probe's stale limit is 5 s; the bound leaves room for a loaded machine
            body = wait_status(f"{url}/readyz", 503, timeout_s=30)
            assert "broker" in body["failing"][check]
            assert status_of(f"{url}/healthz")[0] == 200
        wait_http(f"{url}/readyz", timeout_s=60)
        assert process.poll() is None  # ready again without a restart
