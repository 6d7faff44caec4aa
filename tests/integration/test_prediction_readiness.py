"""Readiness follows the champion: not ready without one, ready once ``rtml models
promote`` names one, and ready again after a restart that rebuilt from the topic and
the store. The module has a broker of its own, so rtml.models starts empty."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from rtml.services.prediction.cli import models
from rtml.shared import topics
from rtml.shared.contracts import TrainerStatus, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.model_announcements import read_announcements, register_and_announce
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings, get_settings

from tests.abuse.consumers import produce_frames
from tests.abuse.frames import hostile_frames
from tests.helpers import service_process, wait_http
from tests.unit.test_prediction_handlers import (
    FEATURE_SET,
    routed,
    synthetic_vectors,
    train_booster,
)

REGISTRATION = dict(
    task="eta", feature_set=FEATURE_SET, data_range={"rows": 512}, params={}, metrics={}
)


@pytest.fixture
def private_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedBroker]:
    """A fresh broker, which the CLI under test finds through RTML_KAFKA_PORT."""
    with EmbeddedBroker(port=free_port()) as broker:
        asyncio.run(ensure_topics(Settings(kafka_port=broker.port)))
        monkeypatch.setenv("RTML_KAFKA_PORT", str(broker.port))
        get_settings.cache_clear()
        yield broker
    get_settings.cache_clear()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def score(url: str, version: str | None) -> tuple[int, dict]:
    body = routed(synthetic_vectors(1)[0], "probe", model_version=version).model_dump(mode="json")
    request = urllib.request.Request(
        f"{url}/v1/score", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def register(settings: Settings, store: ModelStore, version: str) -> None:
    async def run() -> None:
        producer = await start_producer(settings)
        try:
            await register_and_announce(
                store, producer, train_booster(seed=len(version)), version=version, **REGISTRATION
            )
        finally:
            await producer.stop()

    asyncio.run(run())


def until_scored_by(url: str, version: str, timeout_s: float = 30.0) -> dict:
    """The first /v1/score answer that ``version`` made itself (it has been loaded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = score(url, version)
        if status == 200 and body["model_version"] == version and not body["fell_back"]:
            return body
        assert time.monotonic() < deadline, f"{version} never answered: {status} {body}"
        time.sleep(0.1)


def until_readyz_says(url: str, words: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while words not in (said := json.dumps(get(f"{url}/readyz")[1])):
        assert time.monotonic() < deadline, f"/readyz never said {words!r}: {said}"
        time.sleep(0.2)


def test_ready_only_with_a_champion_and_again_after_a_restart(
    private_broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = Settings(kafka_port=private_broker.port)
    store = ModelStore(tmp_path_factory.mktemp("models"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "RTML_KAFKA_PORT": str(private_broker.port),
        "RTML_PREDICTION_PORT": str(port),
        "RTML_MODEL_STORE": str(store.root),
    }
    with service_process("rtml.services.prediction", env, f"{url}/healthz") as process:
        status, body = get(f"{url}/readyz")
        assert status == 503
        assert body["failing"] == {
            "champion": "no eta champion loaded; no word from the trainer about eta yet "
            "(rtml.trainer.status)",
            "pipeline": "waiting for a champion before consuming",
        }
        # the trainer's word, after poison on its topic: logged, skipped, still serving
        status_now = TrainerStatus(ts=1.0, task="eta", phase="collecting", labelled=12, needed=300)
        asyncio.run(
            produce_frames(settings, topics.TRAINER_STATUS.name, hostile_frames(status_now))
        )
        asyncio.run(
            produce_frames(settings, topics.TRAINER_STATUS.name, {"eta": encode(status_now)})
        )
        until_readyz_says(url, "once 300 requests have their label: 12 so far")
        assert process.poll() is None

        register(settings, store, "v1")
        until_scored_by(url, "v1")
        # loaded is not enough: a registered version is not the champion
        assert get(f"{url}/readyz")[0] == 503
        assert score(url, None)[0] == 503

        promoted = CliRunner().invoke(models, ["--store", str(store.root), "promote", "v1"])
        assert promoted.exit_code == 0, promoted.output
        wait_http(f"{url}/readyz")
        assert score(url, None)[1]["model_version"] == "v1"

    # while the service is down: v2 is registered; a restart rebuilds everything
    register(settings, store, "v2")
    with service_process("rtml.services.prediction", env, f"{url}/readyz"):
        assert score(url, None)[1]["model_version"] == "v1"
        assert until_scored_by(url, "v2", timeout_s=0)["model_version"] == "v2"

    announced = [(a.model_version, a.action) for a in asyncio.run(read_announcements(settings))]
    assert announced == [("v1", "registered"), ("v1", "promoted"), ("v2", "registered")]
