"""The end of each partition as of a request sent now: one round trip, on any broker.

Why. A reader that must have applied every record acknowledged before some
instant (the features worker's read-your-writes) needs each partition's high
watermark as of a request sent after that instant, and then to apply that far.
Its own consumer's next fetch would do, but a fetch that finds nothing new waits
out the fetch wait on the broker first: Tansu holds it for its 5 ms whatever
arrives (EMBEDDED_BROKER.md), and faust's consumer asks a real Kafka for 1.5 s.

How. A fetch of each partition with the shortest wait a broker honours answers
with each partition's high watermark as of that fetch; the records it may bring
are not read. It asks from the high watermark last seen on a real Kafka. The
embedded broker needs two more things (``broker_compat.watermark_read_offset``):
asked from beyond the end, it answers from the watermark without listing the
partition's batches; and since it holds a fetch that finds no records until its
wait runs out (in sleeps of its timer, 2.5 ms for a 1 ms wait, 7 ms on a busy
broker), the read also asks for the one record of an anchor topic, which makes
it answer at once (0.5 ms). ListOffsets would be the usual request for the end
of a partition, but Tansu answers it wrongly (the first offset of the last
batch + 1, see ``broker_compat.end_offsets``). Concurrent readers share reads:
``after`` gives every caller the first read sent after its instant, one read in
flight at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from rtml.shared import topics
from rtml.shared.broker_compat import watermark_read_offset
from rtml.shared.kafka import client_kwargs, ensure_topics, start_producer
from rtml.shared.settings import Settings

# How long the broker may hold a read that finds nothing new: the shortest wait Tansu
# answers at all (at 0 its answer names no partition).
READ_WAIT_MS = 1
_READ_UNCOMMITTED = 0
# embedded broker only: a fetch that finds a record is answered at once
ANCHOR = topics.Topic("rtml.watermark-anchor", "one record, for reads of partitions' ends", 1)


@dataclass(frozen=True, slots=True)
class Watermarks:
    """The high watermark of each partition as of a read sent at ``asked_at``
    (``time.monotonic``)."""

    asked_at: float
    marks: Mapping[TopicPartition, int]


class WatermarkReader:
    """Reads partitions' high watermarks through a client of its own."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AIOKafkaClient | None = None
        # the embedded broker's anchor partition, asked from offset 0 beside every read
        self._anchor: TopicPartition | None = None
        self._latest: Watermarks | None = None
        self._reading: asyncio.Future[Watermarks] | None = None

    async def start(self) -> None:
        self._client = AIOKafkaClient(**client_kwargs(self._settings))  # on the loop that reads
        await self._client.bootstrap()
        if self._settings.embedded:
            anchor = TopicPartition(ANCHOR.name, 0)
            await ensure_topics(self._settings, [ANCHOR])
            if (await self.read({anchor: 0}))[anchor] == 0:
                producer = await start_producer(self._settings)
                try:  # two workers starting at once write two: either will do
                    await producer.send_and_wait(ANCHOR.name, b"", partition=0)
                finally:
                    await producer.stop()
            self._anchor = anchor

    async def close(self) -> None:
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
        if self._client is not None:
            await self._client.close()

    async def after(
        self, instant: float, last_seen: Callable[[], Mapping[TopicPartition, int]]
    ) -> Watermarks:
        """A read sent after ``instant`` (``time.monotonic``) of every partition
        ``last_seen`` names, each with the high watermark last seen: the newest read,
        shared by every caller whose instant it follows and whose partitions it
        covers."""
        while True:
            latest, wanted = self._latest, last_seen()
            if (
                latest is not None
                and latest.asked_at > instant
                and latest.marks.keys() >= wanted.keys()
            ):
                return latest
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(self._read(wanted))
            await asyncio.shield(self._reading)

    async def _read(self, last_seen: Mapping[TopicPartition, int]) -> Watermarks:
        asked_at = time.monotonic()
        marks = await self.read(last_seen)
        self._latest = Watermarks(asked_at, marks)
        return self._latest

    async def read(self, last_seen: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Each partition's high watermark as of a request sent now. Raises
        ``KafkaError`` when a partition's leader is unknown or errs."""
        assert self._client is not None, "start() first"
        for topic in {tp.topic for tp in last_seen}:
            await self._client.add_topic(topic)
        by_leader: dict[int, list[tuple[TopicPartition, int]]] = defaultdict(list)
        for tp, highwater in last_seen.items():
            leader = self._client.cluster.leader_for_partition(tp)
            if leader is None or leader == -1:
                self._client.force_metadata_update()
                raise kafka_errors.LeaderNotAvailableError(f"no leader for {tp}")
            offset = watermark_read_offset(highwater, self._settings.embedded)
            by_leader[leader].append((tp, offset))
        if self._anchor is not None:  # one node: the embedded broker
            for wanted in by_leader.values():
                wanted.append((self._anchor, 0))
        leaders = list(by_leader)
        responses = await asyncio.gather(
            *(self._client.send(leader, _fetch(by_leader[leader])) for leader in leaders)
        )
        marks = {}
        for response in responses:
            for topic, partitions in response.topics:
                for partition, error_code, highwater, *_ in partitions:
                    tp = TopicPartition(topic, partition)
                    if error_code:
                        raise kafka_errors.for_code(error_code)(str(tp))
                    if tp != self._anchor:
                        marks[tp] = highwater
        if missing := set(last_seen) - set(marks):
            raise kafka_errors.KafkaError(f"no answer for {sorted(missing)}")
        return marks


def _fetch(wanted: list[tuple[TopicPartition, int]]) -> FetchRequest:
    by_topic: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for tp, offset in wanted:
        # a byte: should there be records, one batch is all the broker sends
        by_topic[tp.topic].append((tp.partition, offset, 1))
    return FetchRequest(READ_WAIT_MS, 1, 1, _READ_UNCOMMITTED, list(by_topic.items()))
