"""Every workaround for the embedded Tansu broker, in one place.

Each is switched on only when rtml runs on the embedded broker
(``Settings.embedded``, which asks the broker: ``broker_flavor.py``); on a real
Kafka the client defaults stand. The
conformance suite in ``tests/broker/`` states the property each one restores.
See EMBEDDED_BROKER.md in the design notes for the measurements behind them.
faust builds its own consumer: ``broker_compat_faust.py`` carries these same
workarounds into faust apps (fetch wait, recovery end offsets, group timings).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rtml.shared import broker_compat_doorbell

# Tansu does not wake a waiting fetch when data arrives, and a consumer on the
# embedded broker fetches when the doorbell rings (broker_compat_doorbell.py),
# that is when data is already there: the wait is only what a fetch that finds
# nothing costs (a ring for records another consumer of the group took, the
# interval fetch of an idle one). It is also how long Tansu may spend listing the
# batches of a partition for a fetch, so a fetch for records known to be there
# waits longer (KNOWN_RECORDS_FETCH_WAIT_MS); 0 never answers at all.
EMBEDDED_FETCH_MAX_WAIT_MS = 5
# Tansu holds every JoinGroup for about half the session timeout (measured: 1.0 s
# at 1.5 s, 2.0 s at 3 s, 3.0 s at 6 s; the rebalance timeout changes nothing):
# short sessions make joins and takeovers take seconds instead of a minute. 2 s
# still has four heartbeats in a session, and a service starts 0.7-0.8 s sooner
# than with 3 s (collector ready in 2.7 s, router in 3.5 s).
EMBEDDED_SESSION_TIMEOUT_MS = 2000
EMBEDDED_HEARTBEAT_INTERVAL_MS = 500
EMBEDDED_REBALANCE_TIMEOUT_MS = 3000


# Tansu lists every batch of a partition for a fetch that finds records (a cost that
# grows with the log: benchmarks/broker_log.py) but answers a fetch from beyond the
# end from the partition's watermark alone. A real Kafka refuses an offset past the
# end and finds the records asked for by index.
_BEYOND_ANY_END = 2**62


def watermark_read_offset(last_seen: int, embedded: bool) -> int:
    """Where a read of a partition's end (``shared/watermarks.py``) asks from, given
    the high watermark last seen."""
    return _BEYOND_ANY_END if embedded else last_seen


def wire_client(client: AIOKafkaConsumer | AIOKafkaProducer, embedded: bool) -> None:
    """What a client needs beyond its settings: on the embedded broker, the
    doorbell (an idle consumer sleeps until a producer rings; see
    ``broker_compat_doorbell.py``)."""
    if embedded:
        broker_compat_doorbell.attach(client)


def producer_overrides(embedded: bool) -> dict[str, Any]:
    if embedded:
        # Tansu rejects InitProducerId v0, which aiokafka sends for idempotence:
        # keep acks=all and let consumers absorb retried duplicates by id.
        return {"enable_idempotence": False}
    return {"enable_idempotence": True}


def consumer_overrides(embedded: bool) -> dict[str, Any]:
    if not embedded:
        return {}
    return {
        "fetch_max_wait_ms": EMBEDDED_FETCH_MAX_WAIT_MS,
        "session_timeout_ms": EMBEDDED_SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": EMBEDDED_HEARTBEAT_INTERVAL_MS,
        "rebalance_timeout_ms": EMBEDDED_REBALANCE_TIMEOUT_MS,
    }


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], embedded: bool
) -> dict[TopicPartition, int]:
    """The high watermark of each partition.

    Tansu answers ListOffsets LATEST with the first offset of the last batch
    + 1, but its Fetch responses carry the right high watermark, so on the
    embedded broker a probe consumer fetches once from each partition.
    """
    partitions = list(partitions)
    if not embedded:
        return await consumer.end_offsets(partitions)
    probe = AIOKafkaConsumer(
        bootstrap_servers=consumer._client._bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=EMBEDDED_FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=1024,
    )
    await probe.start()
    try:
        probe.assign(partitions)
        await probe.seek_to_beginning(*partitions)
        while any(probe.highwater(tp) is None for tp in partitions):
            await probe.getmany(timeout_ms=50)
        return {tp: probe.highwater(tp) for tp in partitions}
    finally:
        await probe.stop()
