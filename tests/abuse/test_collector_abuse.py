"""Poison frames on the topics the collector reads (its faust join and its warehouse
writer): each one dead-lettered, joining goes on."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

from rtml.services.collector.routing import label_kinds
from rtml.shared import topics
from rtml.shared.contracts import TrainingExample, encode
from rtml.shared.kafka import read_all
from rtml.shared.settings import Settings

from tests.abuse.consumers import dead_letters_of, produce_frames
from tests.abuse.frames import hostile_frames
from tests.integration.test_collector import (  # noqa: F401 (own_broker is a fixture)
    T0,
    Collector,
    delivered,
    eta_prediction,
    own_broker,
)


def _may_be_a_label(frame: bytes | None) -> bool:
    return any(kind.SCHEMA.encode() in (frame or b"") for kind in label_kinds())


async def examples_of(settings: Settings, request_id: str, timeout_s: float = 60) -> list:
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_all(settings, topics.TRAINING_EXAMPLES.name)
        found = [m for _, m in records if isinstance(m, TrainingExample) and m.id == request_id]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def test_every_poison_frame_is_dead_lettered_and_joining_goes_on(
    own_broker: Settings,  # noqa: F811 (pytest's fixture, imported above)
    tmp_path: Path,
) -> None:
    settings = own_broker
    collector = Collector(settings, tmp_path / "warehouse")
    collector.start()
    try:
        prediction, label = eta_prediction("abuse", T0), delivered("abuse", T0, 25)
        templates = {
            topics.EVENTS.name: label,
            topics.PREDICTIONS.name: prediction,
            topics.TRAINING_EXAMPLES.name: prediction,
        }
        poisoned = {}
        for topic, template in templates.items():
            frames = hostile_frames(template)
            poisoned[topic] = (frames, await produce_frames(settings, topic, frames))
        await produce_frames(settings, topics.PREDICTIONS.name, {"good": encode(prediction)})
        await produce_frames(settings, topics.EVENTS.name, {"good": encode(label)})

        for topic, (frames, positions) in poisoned.items():
            if topic == topics.EVENTS.name:
                # the collector skips events that cannot be labels, unread (routing.py);
                # the features service dead-letters those
                positions = {at: n for at, n in positions.items() if _may_be_a_label(frames[n])}
            letters = await dead_letters_of(settings, "collector", topic, positions)
            assert sorted(letters) == sorted(positions.values()), topic
            for name, letter in letters.items():
                assert letter.error_class and letter.error, (topic, name)
                assert letter.reason in ("decode", "schema"), (topic, name)
                assert letter.original == (frames[name] or b""), (topic, name)
        assert len(await examples_of(settings, prediction.id)) == 1
        assert collector.process is not None and collector.process.poll() is None
        with urllib.request.urlopen(f"{collector.url}/readyz", timeout=10) as response:
            assert response.status == 200
    finally:
        collector.stop()
