"""The faust half of ``shared/broker_compat.py``: faust apps on the embedded broker.

faust builds its own aiokafka consumer, so the workarounds of
``broker_compat`` reach it through a transport subclass rather than through
consumer keyword arguments:

- **fetch wait**: faust hard-codes ``fetch_max_wait_ms=1500``. Tansu does not
  answer a waiting fetch when data arrives, so that is ~0.75 s per hop; the
  consumer here takes ``fetch_max_wait_ms`` from the app (5 ms on the embedded
  broker, faust's 1500 ms on Kafka, which answers a fetch as soon as data comes).
- **recovery end offsets**: table recovery reads each changelog up to its end
  offset. Tansu's ListOffsets LATEST answers too low, recovery stops early and
  updates are lost after a restart; on the embedded broker the end offsets come
  from a Fetch response's high watermark (``broker_compat.end_offsets``).
- **group timings**: Tansu holds every JoinGroup for about half the session
  timeout, so the embedded broker gets broker_compat's short session,
  heartbeat and rebalance timeouts (faust's defaults: ~30 s to start, ~2 min to
  rejoin).

Five fixes to faust's own consumer and flow control, on any broker (they
turned up as lost records when a worker took over the partitions of one
killed with kill -9, and as commits stopped for good after a restart):

- **no record dropped between fetch and delivery**: faust's ``getmany`` drops
  the rest of a fetched batch when its flow stops while it hands the batch out,
  and the records of a partition paused meanwhile (table recovery pauses
  partitions), although the consumer's position has moved past them; unless a
  rebalance follows, nothing reads them again. Here the partition seeks back to
  the first record not handed out. A new generation starts from the committed
  offsets, with faust's read offsets cleared: records of the last generation
  handed out after the revocation set them ahead, and faust skipped the records
  below them as already seen.
- **gaps are fetched again**: faust takes a jump in a partition's offsets for
  records that are not there (compaction, transaction markers) and marks them
  done, so the next commit passes them. rtml's faust apps read plain,
  uncompacted, non-transactional topics: a jump means records were dropped on
  the client, so the consumer seeks back and reads them again; the records
  after the gap come twice, absorbed by id like any redelivery. The same gap
  seen twice is taken as real.
- **no commit past an unacked record**: faust commits the first run of acked
  offsets unless it starts more than one past the committed offset (and skips
  that check when the committed offset is 0), so an unacked record right at the
  committed offset was passed over. Here a run must start at the committed
  offset, and, before the first commit, at the first record fetched again.
- **a seek reads from its offset**: after a seek to X (the committed offset
  at every assignment, or a fetch again) faust takes X as read. A first record
  X+1 then shows no gap, and X+2 a gap from X+1: a record X that never came
  went unnoticed, and the commit rule above waited for it for ever (a restarted
  collector, whose first records after its assignment had been dropped, stayed
  unready with its commits stopped). Here the read offset after a seek is X-1,
  and a gap seen twice counts as done from its first offset, even the committed one.
- **resuming a running flow drops nothing**: faust's flow control empties every
  stream queue (the agents' and the tables' changelog queue) on each
  ``resume()``, and table recovery calls it several times in one rebalance, the
  last time after the stream partitions were resumed. Records handed to an
  agent in between were cleared before it took them: the position had moved
  past them and nothing acked them, so they were neither processed nor read
  again, and the partition's commits stopped there. Here only a resume after a
  suspend (a rebalance, which starts again from the committed offsets) clears
  the queues.

And one delay taken out: faust's table manager idles a second before it
registers the tables, for tables declared while the app starts. rtml's apps
declare every table before (faust refuses one added later), so that second only
postponed the group join of every start and restart (with 3 s sessions, the
collector was ready in 4.5 s with it and in 3.5 s without).

Everything else is faust's own. ``CompatApp`` is a ``faust.App`` that uses this
transport; ``faust_options(settings)`` gives the broker settings of an app.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, cast

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.tables import TableManager
from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent
from rtml.shared import broker_compat, broker_compat_doorbell
from rtml.shared.faust_worker import WatchedApp
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings, revealed

log = get_logger(__name__)

# what faust's aiokafka driver hard-codes
FAUST_FETCH_MAX_WAIT_MS = 1500


class CompatConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its fetcher
        app = cast(CompatApp, self.app)
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        broker_compat.wire_client(consumer, app.embedded)
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        app = cast(CompatApp, self.app)
        if not app.embedded or self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        # aiokafka only takes its own TopicPartition type, not faust's TP
        ends = await broker_compat.end_offsets(
            self._ensure_consumer(),
            [TopicPartition(tp.topic, tp.partition) for tp in partitions],
            embedded=True,
        )
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in partitions}


class CompatConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refetch: dict[TP, int] = {}
        self._refetched: set[tuple[TP, int]] = set()
        # the first record fetched again, per partition: no first commit passes it
        self._floors: dict[TP, int] = {}
        self._generation = -1

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return CompatConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._read_offset[partition] = _read_before(offset)

    async def perform_seek(self) -> None:
        # faust's, except for the read offsets (see _read_before)
        positions = await self.seek_to_committed()
        committed = {ensure_TP(tp): offset for tp, offset in positions.items()}
        self._read_offset.update({tp: _read_before(offset) for tp, offset in committed.items()})
        self._committed_offset.update(
            {tp: offset or None for tp, offset in committed.items() if offset is not None}
        )

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        if (tp, offset_from) in self._refetched:
            log.warning("offset_gap_kept", tp=str(tp), first=offset_from, last=offset_to)
            # not faust's _add_gap: it leaves out a gap's offsets up to the committed one,
            # which the commit rule of _new_offset would then wait for for ever
            gaps = self._gap[tp]
            gaps.addi(offset_from, offset_to + 1)
            gaps.merge_overlaps()
            return
        self._refetched.add((tp, offset_from))
        log.warning("offset_gap_refetched", tp=str(tp), first=offset_from, last=offset_to)
        # the record in hand still goes on (faust's loop delivers it next); the seek
        # waits for the next fetch, so that it is not undone by faust's read offset
        self._refetch[tp] = min(offset_from, self._refetch.get(tp, offset_from))
        self._floors[tp] = min(offset_from, self._floors.get(tp, offset_from))

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        # faust's Consumer.getmany (0.15.3), except that records it fetched and
        # then did not hand out are fetched again instead of dropped
        refetch, self._refetch = self._refetch, {}
        await self._seek_back(refetch)
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if generation_id != self._generation:
            # read offsets set by records of the last generation still being handed
            # out after the revocation would make the new one skip records as seen
            self._generation = generation_id
            self._read_offset.clear()
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            with contextlib.suppress(Exception):  # faust logs and goes on too
                await self.perform_seek()
            return
        undelivered: dict[TP, int] = {}
        for tp, record in self.scheduler.iterate(records):
            if self.app.consumer_generation_id != generation_id:
                return  # a rebalance: the new assignment starts from the committed offsets
            paused = not (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            )
            if not self.flow_active or paused or tp in undelivered:
                undelivered.setdefault(tp, record.offset)
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, self._to_message(tp, record)
        await self._seek_back(undelivered)

    async def _seek_back(self, offsets: Mapping[TP, int]) -> None:
        assigned = self.assignment()
        for tp, offset in offsets.items():
            if tp in assigned:  # a revoked partition starts from its committed offset anyway
                self._floors[tp] = min(offset, self._floors.get(tp, offset))
                await self.seek(tp, offset)

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        # a gap (records that are not there) counts as done, like an acked record
        gaps = self._gap[tp].overlap(0, max(acked) + 1)
        first_done = min([min(acked), *(gap.begin for gap in gaps)])
        committed = self._committed_offset[tp]
        if committed is not None and first_done > committed:
            return None  # the record at the committed offset is not done yet
        floor = self._floors.get(tp)
        if committed is None and floor is not None and first_done > floor:
            return None  # before the first commit: a record fetched again is not done yet
        return cast(int | None, super()._new_offset(tp))


def _read_before(offset: int | None) -> int | None:
    """The read offset after a seek to ``offset``: the one before it. faust sets the
    offset itself, as if its record had been read: a first record one further on
    then shows no gap, and one further still a gap that starts after it, so the
    record at the seek offset goes unnoticed if it does not come (-1 before 0)."""
    return None if offset is None or offset < 0 else offset - 1


class FlowControl(FlowControlEvent):
    """faust's flow control into the stream queues, except that resuming a running flow
    clears nothing (see the module doc)."""

    def resume(self) -> None:
        if self.is_active():
            return  # the queues hold records of this generation, delivered while it ran
        super().resume()


class CompatProducer(faust_aiokafka.Producer):
    def _new_producer(self, transactional_id: str | None = None) -> AIOKafkaProducer:
        producer = super()._new_producer(transactional_id)
        broker_compat.wire_client(producer, cast(CompatApp, self.app).embedded)
        return producer


class PromptTableManager(TableManager):
    """faust's table manager without the idle second before it registers the tables
    (see the module doc)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class CompatTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[faust_aiokafka.Consumer]] = CompatConsumer
    Producer: ClassVar[type[faust_aiokafka.Producer]] = CompatProducer


class CompatApp(WatchedApp):
    """A faust app whose consumer knows the broker it runs on."""

    Transport: ClassVar[type[faust_aiokafka.Transport]] = CompatTransport

    def __init__(
        self, id: str, *, embedded: bool, fetch_max_wait_ms: int | None = None, **options: Any
    ) -> None:
        self.embedded = embedded
        self.fetch_max_wait_ms = fetch_max_wait_ms or (
            broker_compat.EMBEDDED_FETCH_MAX_WAIT_MS if embedded else FAUST_FETCH_MAX_WAIT_MS
        )
        super().__init__(id, **{"TableManager": PromptTableManager, **options})

    def fetch_soon(self) -> None:
        """Fetch now even if idle (an idle consumer on the embedded broker fetches
        only when rung): for a reader that knows of records not fetched yet."""
        broker_compat_doorbell.fetch_soon(cast(Any, self.consumer)._thread._ensure_consumer())

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return FlowControl(loop=self.loop)

    def _new_transport(self) -> faust_aiokafka.Transport:
        return self.Transport(self.conf.broker_consumer, self)


def faust_options(settings: Settings) -> dict[str, Any]:
    """The broker settings of a faust app: address, credentials, group timings."""
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.bootstrap}",
        "broker_credentials": _credentials(settings),
        # the topics faust creates itself (its assignor's) are replicated like rtml's
        "topic_replication_factor": settings.replication_factor,
    }
    if settings.embedded:
        options.update(
            broker_session_timeout=broker_compat.EMBEDDED_SESSION_TIMEOUT_MS / 1000,
            broker_heartbeat_interval=broker_compat.EMBEDDED_HEARTBEAT_INTERVAL_MS / 1000,
            broker_rebalance_timeout=broker_compat.EMBEDDED_REBALANCE_TIMEOUT_MS / 1000,
        )
    return options


def _credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    context: ssl.SSLContext | None = None
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=revealed(settings.kafka_sasl_password),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
