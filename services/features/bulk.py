"""Bulk topics: a faust consumer that hands a topic's records to a handler a fetch at a time.

Why. faust moves every record through its conductor, a channel queue, a
stream and an event object, with two asyncio tasks per record to watch for a
flow stop; measured on the embedded broker that caps an agent at 5-7k
records/s even when it only decodes (``stream.take_events`` included), against
100k+/s for a plain aiokafka loop that decodes the same records
(``benchmarks/features.py``). The features service's handlers work on batches
anyway, and need none of that per-record machinery.

What. ``BulkConsumer`` is faust's aiokafka consumer with two changes to its
drain loop. Records of a topic registered with ``BulkApp.bulk_topic`` are
collected while a fetched batch is drained and then given to that topic's
handler in one call. Records of a topic registered with ``BulkApp.held_topic``
are held until the bulk topics are applied past them (``freshness.py``): a
request never overtakes the events appended before it. The barrier then
releases them in the order they came, and they go to their topic's handler a
release at a time, each with how long it was held, which tells that wait from
the work. Table changelogs (recovery) take faust's usual path at once. After a
handler returns, each of its records is acked through faust's own
bookkeeping, so commits (only of handled records, after the producer is
flushed), rebalances, recovery and shutdown behave as for any agent: at least
once. A flow stop (rebalance) cancels a running handler like it cancels a
blocked agent; its records are not acked and come again, so a handler must
make each state change and the record of it (a changelog send) in one step
with no await between, and absorb repeats by id. Held records of an earlier
generation are dropped: the rebalance reset the positions to the committed
offsets, and they come again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from aiokafka.errors import KafkaError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message, TopicT
from mode import Service
from rtml.services.features import metrics
from rtml.services.features.freshness import UNFETCHED, FreshnessBarrier, PartitionFetch
from rtml.shared.broker_compat_faust import CompatApp, CompatConsumer, CompatTransport
from rtml.shared.logging import get_logger
from rtml.shared.watermarks import WatermarkReader

log = get_logger(__name__)

BulkHandler = Callable[[list[Message]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """A record the freshness barrier released: when the consumer handed it out of its
    fetch (wall clock, epoch s), and how long the barrier then held it."""

    message: Message
    seen_at: float
    held_s: float


HeldHandler = Callable[[list[HeldRecord]], Awaitable[None]]

# released records per handler call at most: between calls other tasks run (the side
# port's lookups), as faust lets them every 100 records of a large batch
_YIELD_EVERY = 100
# how long a poll waits for records (faust's is a second): short, so that a lookup
# over HTTP that arrives mid-poll learns soon that the bulk topics are applied (at
# 10 ms the polls cost the idle worker 5% of a core more: measured); a few
# milliseconds while records are held or a lookup waits, so that each new fetch
# response is looked at
_POLL_S = 0.05
_POLL_WHILE_HOLDING_S = 0.002


class BulkConsumer(CompatConsumer):
    async def _drain_messages(self, fetcher: Service) -> None:  # pragma: no cover - faust's loop
        # faust's Consumer._drain_messages (0.15.3), with bulk topics set aside and the
        # records of other topics held until the bulk topics are applied past them
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = cast(Any, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        app = cast(BulkApp, self.app)
        handlers = app.bulk_handlers
        held = app.held_handlers
        barrier = app.barrier
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=self._poll_timeout(barrier))
                await self.sleep(0)
                bulk: dict[str, list[Message]] = {}
                if not self.should_stop:
                    async for tp, message in records:
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue  # delivered before a seek back: faust drops these too
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if message.topic in handlers:
                            bulk.setdefault(message.topic, []).append(message)
                        elif message.topic in held:
                            barrier.hold(message, time.monotonic(), app.consumer_generation_id)
                        else:
                            # table recovery reads state, not the events: nothing to wait for
                            await self.wait_first(self.callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    # the read that proves held records goes out while the events apply
                    app.prove_held()
                    delivered = [
                        await self._deliver(handlers[topic](messages), messages)
                        for topic, messages in bulk.items()
                    ]
                    # a batch cut by a flow stop (rebalance) comes again: release nothing
                    if all(delivered) and self.flow_active:
                        generation = app.consumer_generation_id
                        barrier.observe(self.bulk_fetches(), generation)
                        app.freshness_moved()
                        await self._release(barrier)
                        app.prove_held()
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    def _poll_timeout(self, barrier: FreshnessBarrier[Message]) -> float:
        # records held, or a lookup waiting (HTTP): look again at every fetch response
        waiting = len(barrier) or cast(BulkApp, self.app).lookups_waiting
        return _POLL_WHILE_HOLDING_S if waiting else _POLL_S

    async def _deliver(self, handling: Awaitable[None], messages: list[Message]) -> bool:
        """Await a handler of ``messages``, then ack them; False when a flow stop cut it."""
        outcome = await self.wait_first(handling, self.suspend_flow.wait())
        if handling not in outcome.done:
            return False  # the flow stopped: nothing acked, the records come again
        # ack without track_message: that only feeds faust's per-record monitor,
        # and the handler has finished with every record anyway
        for message in messages:
            self.ack(message)
        await self._maybe_commit()
        return True

    async def _release(self, barrier: FreshnessBarrier[Message]) -> None:
        """Hand the records the barrier lets go to their topics' handlers, in the order
        they came, ``_YIELD_EVERY`` at most per call so that other tasks run between."""
        released_at = time.time()
        by_topic: dict[str, list[HeldRecord]] = {}
        for released in barrier.release(time.monotonic()):
            metrics.HELD.labels("fresh" if released.proven else "waited_out").observe(
                released.held_s
            )
            record = HeldRecord(released.record, released_at - released.held_s, released.held_s)
            by_topic.setdefault(record.message.topic, []).append(record)
        handlers = cast(BulkApp, self.app).held_handlers
        for topic, records in by_topic.items():
            for start in range(0, len(records), _YIELD_EVERY):
                chunk = records[start : start + _YIELD_EVERY]
                handling = handlers[topic](chunk)
                if not await self._deliver(handling, [record.message for record in chunk]):
                    return  # the flow stopped: the rest comes again too

    def bulk_fetches(self) -> dict[TP, PartitionFetch]:
        """The fetch state of every bulk partition assigned now.

        One not fetched yet (no position: a new assignment waits for its committed
        offset) or paused (recovery) proves nothing: it holds records until it is
        fetched again, or until their wait runs out. Left out, it would let a request
        through before events appended ahead of it were even read.
        """
        handlers = cast(BulkApp, self.app).bulk_handlers
        assignment = self._assignment()
        fetches = {}
        for tp in assignment.tps if assignment is not None else ():
            if tp.topic not in handlers:
                continue
            state = assignment.state_value(tp)
            fetching = state.has_valid_position and not state.paused
            fetches[TP(tp.topic, tp.partition)] = (
                PartitionFetch(state.highwater, state.position) if fetching else UNFETCHED
            )
        return fetches

    def _assignment(self) -> Any:
        # aiokafka's per-partition fetch state (TopicPartition and TP are equal tuples);
        # faust runs that consumer on a thread of its own, whose fetcher replaces
        # these values whole
        consumer = cast(Any, self)._thread._ensure_consumer()
        return consumer._subscription.subscription.assignment

    async def _maybe_commit(self) -> None:
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()


class BulkTransport(CompatTransport):
    Consumer: ClassVar[type[faust_aiokafka.Consumer]] = BulkConsumer


class BulkApp(CompatApp):
    """A faust app some of whose topics are consumed in bulk (see the module doc)."""

    Transport: ClassVar[type[faust_aiokafka.Transport]] = BulkTransport

    def __init__(
        self,
        id: str,
        *,
        freshness_wait_s: float,
        watermarks: WatermarkReader,
        **options: Any,
    ) -> None:
        self.bulk_handlers: dict[str, BulkHandler] = {}
        self.held_handlers: dict[str, HeldHandler] = {}
        self.barrier: FreshnessBarrier[Message] = FreshnessBarrier(freshness_wait_s)
        self._freshness_moved = asyncio.Event()
        # lookups in applied_as_of now: the consumer then observes every fetch response
        self.lookups_waiting = 0
        self.watermarks = watermarks
        self._proving: asyncio.Future[None] | None = None
        super().__init__(id, **options)

    def bulk_topic(self, topic: TopicT, handler: BulkHandler) -> None:
        """Subscribe to ``topic`` and hand its records to ``handler`` a fetch at a time."""
        self._subscribe(topic, self.bulk_handlers, handler)

    def held_topic(self, topic: TopicT, handler: HeldHandler) -> None:
        """Subscribe to ``topic``; hold its records until the bulk topics are applied
        past them, then hand them to ``handler`` a release at a time."""
        self._subscribe(topic, self.held_handlers, handler)

    def _subscribe(self, topic: TopicT, handlers: dict[str, Any], handler: Any) -> None:
        for name in topic.topics:
            handlers[name] = handler
        self.topics.add(topic)

    def freshness_moved(self) -> None:
        self._freshness_moved.set()
        self._freshness_moved = asyncio.Event()

    async def applied_as_of(self, instant: float) -> bool:
        """Wait until the bulk topics are applied up to their ends as of a read sent
        after ``instant`` (``time.monotonic``): for lookups that did not come through
        the consumer (HTTP). False when the barrier's wait ran out first, or the read
        failed."""
        consumer = cast(BulkConsumer, self.consumer)
        if not consumer.bulk_fetches():
            return True  # no bulk partition here: nothing to wait for
        self.lookups_waiting += 1
        try:
            async with asyncio.timeout(self.barrier.wait_s):
                while True:
                    # the same read each turn, unless a rebalance voided it or a partition
                    # it could not cover has been fetched since
                    await self._prove(instant)
                    if self.barrier.fresh_as_of > instant:
                        return True
                    await self._freshness_moved.wait()
        except TimeoutError:
            return False
        except KafkaError as exc:
            log.warning("watermark_read_failed", error=str(exc))
            return False
        finally:
            self.lookups_waiting -= 1

    def prove_held(self) -> None:
        """Have the records the barrier holds proven by a read of the bulk topics' ends,
        unless one is on its way."""
        instant = self.barrier.unproven_since()
        if instant is None or (self._proving is not None and not self._proving.done()):
            return
        self._proving = asyncio.ensure_future(self._prove_held(instant))

    async def _prove_held(self, instant: float) -> None:
        try:
            await self._prove(instant)
        except KafkaError as exc:  # the held records wait out their time
            log.warning("watermark_read_failed", error=str(exc))

    async def _prove(self, instant: float) -> None:
        """Have the barrier know the bulk partitions' ends as of a read after ``instant``."""
        generation = self.consumer_generation_id
        read = await self.watermarks.after(instant, self._highwaters)
        fresh_as_of = self.barrier.fresh_as_of
        self.barrier.proved(read, generation)
        if self.barrier.behind(read):
            # records appended since the consumer's last fetch: a ring brings them,
            # unless their producer has no doorbell
            self.fetch_soon()
        if self.barrier.fresh_as_of != fresh_as_of:
            # only then: the lookups it wakes prove again, and would wake each other
            self.freshness_moved()

    def _highwaters(self) -> dict[TP, int]:
        fetches = cast(BulkConsumer, self.consumer).bulk_fetches()
        return {tp: f.highwater for tp, f in fetches.items() if f.highwater is not None}
