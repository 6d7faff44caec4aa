"""``rtml batch features``: batch feature records published to ``rtml.features.batch``.

The records are computed by ``shared/features/batch.py``. Publishing is
idempotent: the topic is compacted and keyed by entity, the job first reads
what the topic holds and sends only the records whose values changed, so a
re-run over the same log sends nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rtml.services.features.batch_cache import BatchFeatureCache
from rtml.shared import topics
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.kafka import ensure_topics, send_messages, start_consumer, start_producer
from rtml.shared.settings import Settings


@dataclass(frozen=True)
class Published:
    sent: int
    unchanged: int


async def publish(settings: Settings, records: list[BatchFeatureRecord]) -> Published:
    """Send the records whose values differ from what the topic holds now."""
    await ensure_topics(settings, [topics.FEATURES_BATCH])
    current = BatchFeatureCache(await start_consumer(settings, group_id=None), settings.embedded)
    await current.start()
    try:
        while not current.caught_up:
            await asyncio.sleep(0.05)
        changed = [r for r in records if not _same(current.records.get(r.entity), r)]
    finally:
        await current.stop()
    producer = await start_producer(settings)
    try:
        await send_messages(producer, topics.FEATURES_BATCH.name, changed)
    finally:
        await producer.stop()
    return Published(sent=len(changed), unchanged=len(records) - len(changed))


def _same(held: BatchFeatureRecord | None, new: BatchFeatureRecord) -> bool:
    return held is not None and (held.names, held.values, held.ts) == (
        new.names,
        new.values,
        new.ts,
    )
