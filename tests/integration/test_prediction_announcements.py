"""Model announcements on the real broker: every registration is announced and reads back."""

from __future__ import annotations

import uuid
from pathlib import Path

from rtml.shared import topics
from rtml.shared.contracts import encode
from rtml.shared.kafka import start_producer
from rtml.shared.model_announcements import (
    announce,
    announcement_for,
    read_announcements,
    register_and_announce,
)
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings

from tests.unit.test_prediction_handlers import FEATURE_SET, train_booster

REGISTRATION = dict(task="eta", feature_set=FEATURE_SET, data_range={"rows": 512}, params={})


async def test_a_registration_is_announced_and_reads_back(
    settings: Settings, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    producer = await start_producer(settings)
    try:
        record = await register_and_announce(
            store, producer, train_booster(), metrics={"rmse": 1.25}, **REGISTRATION
        )
    finally:
        await producer.stop()

    mine = [a for a in await read_announcements(settings) if a.model_version == record.version]

    assert len(mine) == 1
    assert (mine[0].action, mine[0].task, mine[0].sha256) == ("registered", "eta", record.sha256)
    assert (mine[0].feature_set, mine[0].metrics) == (FEATURE_SET, {"rmse": 1.25})


async def test_reading_goes_to_the_true_end_of_the_topic(
    settings: Settings, tmp_path: Path
) -> None:
    """Every announcement up to the end of the topic as it was when reading began, in order,
    also when they were sent in few large record batches."""
    store = ModelStore(tmp_path)
    record = store.register(train_booster(), metrics={}, **REGISTRATION)
    reasons = [f"{uuid.uuid4().hex}-{i}" for i in range(300)]
    producer = await start_producer(settings, linger_ms=50)
    try:
        for reason in reasons[:-1]:
            announcement = announcement_for(record, "promoted", reason)
            await producer.send(topics.MODELS.name, encode(announcement), key=announcement.key)
        await announce(producer, record, "promoted", reasons[-1])
    finally:
        await producer.stop()

    read = [
        a.reason for a in await read_announcements(settings) if a.model_version == record.version
    ]

    assert read == reasons
