"""Kafka helpers: producer and consumer factories with retried connects,
idempotent topic creation and the dead-letter writer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import murmur2
from prometheus_client import Counter
from rtml.shared import broker_compat, broker_flavor, topics
from rtml.shared.contracts import DlqRecord, Message, decode, encode
from rtml.shared.errors import BrokerUnavailable, ContractError
from rtml.shared.logging import get_logger
from rtml.shared.metrics import CONSUMER_LAG
from rtml.shared.settings import Settings, revealed
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

log = get_logger(__name__)

DEAD_LETTERS = Counter(
    "rtml_dlq_messages_total", "messages sent to rtml.dlq", ["service", "reason"]
)

TOPIC_ALREADY_EXISTS = 36
CONNECT_TIMEOUT_S = 30.0


def client_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=revealed(settings.kafka_sasl_password),
        )
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kwargs["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    return kwargs


async def connect_with_retry(
    connect: Callable[[], Awaitable[object]],
    settings: Settings,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> None:
    """Await ``connect()``, retrying refused connects with bounded exponential backoff."""
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(timeout_s),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            retry=retry_if_exception_type(KafkaConnectionError),
            reraise=True,
        ):
            with attempt:
                await connect()
    except KafkaConnectionError as exc:
        raise BrokerUnavailable(
            f"Kafka at {settings.bootstrap} did not answer within {timeout_s:.0f}s "
            f"(set RTML_KAFKA_BOOTSTRAP, or start the embedded broker with `rtml broker`)"
        ) from exc


async def start_with_retry(client: Any, settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S):
    """Start an aiokafka client, retrying connects with bounded exponential backoff."""
    await connect_with_retry(client.start, settings, timeout_s)
    return client


async def start_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    await broker_flavor.resolve(settings)
    kwargs = {
        **client_kwargs(settings),
        "acks": "all",
        # aiokafka's default 0: a send goes at once, and under load sends batch by
        # themselves while the previous request to the broker is in flight (2 ms
        # here cost every hop of the predict chain 2 ms: benchmarks/wiring.py)
        "linger_ms": 0,
        "max_batch_size": 64 * 1024,
        "request_timeout_ms": 15000,
        **broker_compat.producer_overrides(settings.embedded),
        **overrides,
    }
    producer = AIOKafkaProducer(**kwargs)
    broker_compat.wire_client(producer, settings.embedded)
    return await start_with_retry(producer, settings)


async def start_consumer(
    settings: Settings, *topic_names: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    await broker_flavor.resolve(settings)
    kwargs = {
        **client_kwargs(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        **broker_compat.consumer_overrides(settings.embedded),
        **overrides,
    }
    consumer = AIOKafkaConsumer(*topic_names, **kwargs)
    broker_compat.wire_client(consumer, settings.embedded)
    CONSUMER_LAG.watch(consumer)
    return await start_with_retry(consumer, settings)


async def ensure_topics(
    settings: Settings, wanted: Iterable[topics.Topic] = topics.ALL
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    # the faust services read the flavor once their topics exist, before any client here
    await broker_flavor.resolve(settings)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await start_with_retry(admin, settings)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                t.name,
                topics.partitions_of(t, settings.partitions),
                settings.replication_factor,
                topic_configs=topics.configs_of(t, settings.min_insync_replicas),
            )
            for t in missing
        ]
        response = await admin.create_topics(new)
        for name, code, *_ in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise KafkaError(f"creating topic {name} failed with error code {code}")
        log.info("topics_created", topics=[t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the default (murmur2) partitioner gives ``key``, as producers do:
    the features and collector workers find an entity's or a join key's state by it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def send_messages(
    producer: AIOKafkaProducer, topic: str, messages: Sequence[Message]
) -> None:
    """Send contract messages as rtml's consumers read them (msgpack, keyed by their key
    field, no headers) and wait until the broker acknowledged all of them."""
    acks = [await producer.send(topic, encode(m), key=m.key) for m in messages]
    await asyncio.gather(*acks)


async def send_all(producer: AIOKafkaProducer, records: list[tuple[str, bytes, bytes]]) -> None:
    """Send (topic, key, value) records and wait until the broker acknowledged all.

    One batch per topic partition, partitioned as ``send`` would (the producer's
    partitioner): for a service that has a whole fetched batch of outputs in hand,
    this costs a fraction of one ``send`` and one future per record.
    """
    grouped: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    for topic, key, value in records:
        await producer.partitions_for(topic)  # loads the metadata _partition reads
        partition = producer._partition(topic, None, key, value, key, value)
        grouped.setdefault((topic, partition), []).append((key, value))
    acks = []
    for (topic, partition), pending in grouped.items():
        batch = producer.create_batch()
        for key, value in pending:
            if batch.append(key=key, value=value, timestamp=None) is None:
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*acks)


async def read_all(settings: Settings, topic: str) -> list[tuple[ConsumerRecord, Message | None]]:
    """Every record of ``topic`` from the beginning to its end as of now, with its
    decoded message (None where it does not decode); for reports and checks."""
    consumer = await start_consumer(settings, group_id=None)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(await _partitions_of(consumer, topic))
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await broker_compat.end_offsets(consumer, partitions, settings.embedded)
        records: list[tuple[ConsumerRecord, Message | None]] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend((record, _decoded(record.value)) for record in batch)
        return records
    finally:
        await consumer.stop()


async def read_messages(settings: Settings, topic: str) -> list[Message]:
    """The messages of ``topic`` from the beginning to its end as of now; a record that
    does not decode is left out (the services that consume it dead-lettered it)."""
    return [message for _, message in await read_all(settings, topic) if message]


async def _partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer.topics()  # loads the metadata partitions_for_topic reads
    return consumer.partitions_for_topic(topic) or set()


def _decoded(value: bytes | None) -> Message | None:
    try:
        return decode(value or b"")
    except ContractError:
        return None


class DlqWriter:
    """Sends what a service could not process to ``rtml.dlq``, with the reason."""

    def __init__(self, producer: AIOKafkaProducer, service: str) -> None:
        self._producer = producer
        self._service = service

    async def send_record(self, record: Any, error: BaseException | str, reason: str) -> None:
        """Dead-letter a consumed record: aiokafka's ``ConsumerRecord`` or faust's ``Message``."""
        await self.send(
            record.value or b"",
            error,
            reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )

    async def send(
        self,
        original: bytes,
        error: BaseException | str,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        attempt: int = 1,
    ) -> None:
        record = DlqRecord(
            ts=time.time(),
            service=self._service,
            reason=reason,
            error_class=type(error).__name__ if isinstance(error, BaseException) else "str",
            # as long as the contract allows: a longer one (an error quoting a huge
            # input) would fail validation here and crash the caller's loop
            error=str(error)[: DlqRecord.model_config["str_max_length"]],
            topic=topic,
            partition=partition,
            offset=offset,
            attempt=attempt,
            original=original,
        )
        await self._producer.send_and_wait(topics.DLQ.name, encode(record), key=record.id.encode())
        DEAD_LETTERS.labels(self._service, reason).inc()
        log.warning("sent_to_dlq", reason=reason, error=record.error, topic=topic, offset=offset)
