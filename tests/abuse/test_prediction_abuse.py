"""Hostile input to a running prediction service: poison frames on the topics it
reads, and a tampered model announced to it."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator

import aiohttp
import pytest
from rtml.shared import topics
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.model_announcements import announce
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings

from tests.abuse.consumers import dead_letters_of, produce_frames
from tests.abuse.frames import hostile_frames
from tests.helpers import service_process
from tests.integration.test_prediction_service import (
    REGISTRATION,
    Stack,
    producing,
    register_champion,
    score_over_http,
    send_routed,
    wait_for_predictions,
)
from tests.unit.test_model_artifacts import out_of_range_node
from tests.unit.test_model_store import forge_artifact
from tests.unit.test_prediction_handlers import routed, synthetic_vectors, train_booster


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, subprocess.Popen]]:
    store = ModelStore(tmp_path_factory.mktemp("models"))
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        asyncio.run(register_champion(settings, store, train_booster(seed=1), "v1"))
        port = free_port()
        env = {
            "RTML_KAFKA_PORT": str(broker.port),
            "RTML_PREDICTION_PORT": str(port),
            "RTML_MODEL_STORE": str(store),
        }
        url = f"http://127.0.0.1:{port}"
        with service_process("rtml.services.prediction", env, f"{url}/readyz", 180) as process:
            yield Stack(settings, store, url), process


async def load_failures(url: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
    found = re.search(r"^rtml_model_load_failures_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_every_poison_frame_is_dead_lettered_and_serving_goes_on(
    serving: tuple[Stack, subprocess.Popen],
) -> None:
    stack, process = serving
    vectors = synthetic_vectors(2, seed=5)
    frames = hostile_frames(routed(vectors[0], "template"))
    positions = await produce_frames(stack.settings, topics.PREDICT_ROUTED.name, frames)
    # rtml.models is a control topic: a bad announcement is logged, not dead-lettered
    await produce_frames(stack.settings, topics.MODELS.name, frames)
    after = routed(vectors[1], "after-the-poison")
    await send_routed(stack.settings, [after])

    letters = await dead_letters_of(
        stack.settings, "prediction", topics.PREDICT_ROUTED.name, positions
    )
    assert sorted(letters) == sorted(frames)
    for name, letter in letters.items():
        assert letter.error_class and letter.error, name
        assert letter.reason in ("decode", "schema"), name
        assert letter.original == (frames[name] or b""), name
    assert after.id in await wait_for_predictions(stack.settings, {after.id})
    assert process.poll() is None
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.url}/readyz") as response:
            assert response.status == 200, await response.text()


async def test_a_tampered_version_is_refused_and_the_old_one_keeps_serving(
    serving: tuple[Stack, subprocess.Popen],
) -> None:
    """The artifact is re-signed (its record carries the tampered bytes' sha256), so
    only the probe in a child process stands between it and a segmentation fault
    in the serving process."""
    stack, process = serving
    sound = train_booster(seed=2)
    record = stack.store.register(sound, version="v2-tampered", **REGISTRATION)
    forge_artifact(stack.store, record.version, out_of_range_node(sound))
    async with producing(stack.settings) as producer:
        for action in ("registered", "promoted"):
            await announce(producer, stack.store.record(record.version), action)

    # each announcement makes the service try the version, and refuse it
    deadline = time.monotonic() + 120
    while await load_failures(stack.url) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, "the tampered model took the service down"
        await asyncio.sleep(0.5)
    assert await load_failures(stack.url) == 2

    assert process.poll() is None
    request = routed(synthetic_vectors(1, seed=3)[0], "after-tampering")
    status, answer = await score_over_http(stack.url, request)
    assert (status, answer["model_version"]) == (200, "v1")
    asked_for_it = routed(synthetic_vectors(1, seed=4)[0], "asks-v2", model_version="v2-tampered")
    status, answer = await score_over_http(stack.url, asked_for_it)
    assert (status, answer["model_version"], answer["fell_back"]) == (200, "v1", True)
