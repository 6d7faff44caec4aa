"""Publishing domain events straight to ``rtml.events``, for a service with its own
Kafka connection: the events are checked against their contracts as ingestion checks
them, and written exactly as ingestion writes them (``shared.kafka.send_messages``:
msgpack, keyed by the contract's key field, no headers, acks from every replica).

    from rtml.client import KafkaPublisher
    from rtml.tasks.eta.events import CourierOnline

    async with KafkaPublisher.connect() as publisher:  # RTML_KAFKA_* settings
        ids = await publisher.publish(CourierOnline(ts=time.time(), courier_id="c1", zone_id="z1"))

Producers in other languages follow the document ``rtml schemas export DIR`` writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping

from aiokafka import AIOKafkaProducer

from rtml.client.errors import Rejected
from rtml.client.protocol import Event
from rtml.shared import topics
from rtml.shared.contracts import Message
from rtml.shared.ingest_requests import BadRequest, validate_events
from rtml.shared.kafka import ensure_topics, send_messages, start_producer
from rtml.shared.settings import Settings, get_settings


class KafkaPublisher:
    """Writes domain events to ``rtml.events`` with ``producer`` (one made by
    ``connect``, or your own ``AIOKafkaProducer`` with ``acks="all"``)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, settings: Settings | None = None) -> AsyncIterator[KafkaPublisher]:
        """A publisher on the broker of ``settings`` (default: the ``RTML_KAFKA_*``
        environment), with rtml's producer settings; stopped on exit. Creates the
        topics that do not exist yet, as every rtml service does at start, so that
        ``rtml.events`` has its partition count before the first write."""
        settings = settings or get_settings()
        await ensure_topics(settings)
        producer = await start_producer(settings)
        try:
            yield cls(producer)
        finally:
            await producer.stop()

    async def publish(self, events: Event | Iterable[Event]) -> list[str]:
        """Check every event against its contract, then write them and wait for the
        broker's acknowledgement; returns their ids. Rejected (nothing written) names
        each bad event's index, field and reason, or that there were none, as
        ingestion does."""
        batch = [events] if isinstance(events, Message | Mapping) else list(events)
        wire = [e.to_wire() if isinstance(e, Message) else dict(e) for e in batch]
        try:
            messages = validate_events(wire, max_batch=len(wire))
        except BadRequest as exc:
            raise Rejected(None, "invalid events; nothing was written", exc.problems) from exc
        await send_messages(self._producer, topics.EVENTS.name, messages)
        return [m.id for m in messages]
