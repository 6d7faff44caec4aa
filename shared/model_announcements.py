"""Model announcements: what happened to which version, on the compacted ``rtml.models``.

Each announcement is keyed by its version, so after compaction the topic holds
the last word on every version (registered, then perhaps promoted, then
retired). The embedded broker never compacts, so readers fold the log the same
way themselves: the last announcement per version wins (``last_word``).

The model store stays the source of truth for artifacts and the champion
pointer; an announcement only says "look at this version now".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rtml.shared import broker_compat, topics
from rtml.shared.contracts import ModelAnnouncement, decode, encode
from rtml.shared.errors import ContractError
from rtml.shared.kafka import start_consumer
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings

if TYPE_CHECKING:  # XGBoost and the store weigh ~100 MB: readers of the topic need neither
    import xgboost as xgb
    from rtml.shared.model_store import ModelRecord, ModelStore

log = get_logger(__name__)

Action = Literal["registered", "promoted", "retired"]

# rtml.models has one partition, so the announcements have one total order
MODELS_PARTITION = TopicPartition(topics.MODELS.name, 0)


def announcement_for(
    record: ModelRecord, action: Action, reason: str = "", now: float | None = None
) -> ModelAnnouncement:
    return ModelAnnouncement(
        ts=time.time() if now is None else now,
        task=record.task,
        model_version=record.version,
        action=action,
        parent_version=record.parent_version,
        sha256=record.sha256,
        feature_set=record.feature_set,
        metrics=record.metrics,
        reason=reason,
        trigger=record.trigger,
    )


async def announce(
    producer: AIOKafkaProducer, record: ModelRecord, action: Action, reason: str = ""
) -> ModelAnnouncement:
    """Send the announcement and wait for the broker's ack."""
    announcement = announcement_for(record, action, reason)
    await producer.send_and_wait(topics.MODELS.name, encode(announcement), key=announcement.key)
    log.info("model_announced", version=record.version, action=action, reason=reason)
    return announcement


async def register_and_announce(
    store: ModelStore, producer: AIOKafkaProducer, booster: xgb.Booster, **registration: Any
) -> ModelRecord:
    """Register ``booster`` (keyword arguments as ModelStore.register) and announce it."""

    async def announce_registered(record: ModelRecord) -> None:
        await announce(producer, record, "registered")

    return await store.register_async(booster, on_registered=announce_registered, **registration)


async def open_announcement_reader(settings: Settings) -> AIOKafkaConsumer:
    """A group-less consumer of rtml.models, positioned at its beginning."""
    # Announcements are rare and a quarter second late is fine: a long poll keeps an
    # idle follower from costing the broker CPU (a fetch that finds data returns at once)
    consumer = await start_consumer(settings, group_id=None, fetch_max_wait_ms=500)
    consumer.assign([MODELS_PARTITION])
    await consumer.seek_to_beginning(MODELS_PARTITION)
    return consumer


async def read_to_end(consumer: AIOKafkaConsumer, settings: Settings) -> list[ModelAnnouncement]:
    """The announcements from the consumer's position up to the end of the topic as of now."""
    ends = await broker_compat.end_offsets(consumer, [MODELS_PARTITION], settings.embedded)
    end = ends[MODELS_PARTITION]
    announcements: list[ModelAnnouncement] = []
    while await consumer.position(MODELS_PARTITION) < end:
        batches = await consumer.getmany(MODELS_PARTITION, timeout_ms=100)
        for record in batches.get(MODELS_PARTITION, []):
            announcement = decode_announcement(record.value, record.offset)
            if announcement is not None:
                announcements.append(announcement)
    return announcements


async def read_announcements(settings: Settings) -> list[ModelAnnouncement]:
    """Every announcement on rtml.models, from the beginning to its end, in order."""
    consumer = await open_announcement_reader(settings)
    try:
        return await read_to_end(consumer, settings)
    finally:
        await consumer.stop()


async def follow(
    consumer: AIOKafkaConsumer, apply: Callable[[ModelAnnouncement], Awaitable[None]]
) -> None:
    """Apply every announcement from the consumer's position on, until cancelled."""
    while True:
        batches = await consumer.getmany(MODELS_PARTITION, timeout_ms=1000)
        for record in batches.get(MODELS_PARTITION, []):
            announcement = decode_announcement(record.value, record.offset)
            if announcement is not None:
                await apply(announcement)


def decode_announcement(value: bytes | None, offset: int) -> ModelAnnouncement | None:
    """The announcement, or None (logged) for a record that is not one: a control
    topic has no dead-letter path worth more than a loud log line."""
    try:
        return cast(ModelAnnouncement, decode(value or b"", ModelAnnouncement))
    except ContractError as exc:
        log.error("bad_model_announcement", offset=offset, error=str(exc))
        return None


def last_word(announcements: Iterable[ModelAnnouncement]) -> dict[str, ModelAnnouncement]:
    """The latest announcement of each version, as compaction would leave them, in log order."""
    latest: dict[str, ModelAnnouncement] = {}
    for announcement in announcements:
        latest.pop(announcement.model_version, None)
        latest[announcement.model_version] = announcement
    return latest
