"""Bulk topics: a faust consumer that hands a topic's records to a handler a fetch at a time.

Why. faust moves every record through its conductor, a channel queue, a
stream and an event object, with two asyncio tasks per record to watch for a
flow stop; measured on the embedded broker that caps an agent at 5-7k
records/s even when it only decodes (``stream.take_events`` included), against
100k+/s for a plain aiokafka loop that decodes the same records
(``benchmarks/features.py``). The events topic of the features service carries
most of the traffic and needs none of that per-record machinery: its handler
works on batches anyway.

What. ``BulkConsumer`` is faust's aiokafka consumer with one change to its
drain loop: records of a topic registered with ``BulkApp.bulk_topic`` are
collected while a fetched batch is drained and then given to that topic's
handler in one call; records of every other topic take faust's usual path.
After the handler returns, each record is acked through faust's own
bookkeeping, so commits (only of handled records, after the producer is
flushed), rebalances, recovery and shutdown behave as for any agent: at least
once. A flow stop (rebalance) cancels a running handler like it cancels a
blocked agent; its records are not acked and come again, so a handler must
make each state change and the record of it (a changelog send) in one step
with no await between, and absorb repeats by id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message, TopicT
from mode import Service

from shared.broker_compat_faust import CompatApp, CompatConsumer, CompatTransport

BulkHandler = Callable[[list[Message]], Awaitable[None]]

# let other tasks run this often while draining a large batch, as faust does
_YIELD_EVERY = 100


class BulkConsumer(CompatConsumer):
    async def _drain_messages(self, fetcher: Service) -> None:  # pragma: no cover - faust's loop
        # faust's Consumer._drain_messages (0.15.3), with bulk topics set aside
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = cast(Any, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        handlers = cast(BulkApp, self.app).bulk_handlers
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
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
                            set_read_offset(tp, offset)
                            continue
                        num_since_yield += 1
                        if num_since_yield > _YIELD_EVERY:
                            await asyncio.sleep(0)
                            num_since_yield = 0
                        await self._maybe_commit()
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    delivered = [
                        await self._deliver_bulk(handlers[topic], messages)
                        for topic, messages in bulk.items()
                    ]
                    if all(delivered):
                        self._report_drained(handlers)
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

    async def _deliver_bulk(self, handler: BulkHandler, messages: list[Message]) -> bool:
        handling = handler(messages)
        outcome = await self.wait_first(handling, self.suspend_flow.wait())
        if handling not in outcome.done:
            return False  # the flow stopped: nothing acked, the records come again
        # ack without track_message: that only feeds faust's per-record monitor,
        # and the handler has finished with every record anyway
        for message in messages:
            self.ack(message)
        await self._maybe_commit()
        return True

    def _report_drained(self, handlers: dict[str, BulkHandler]) -> None:
        # every record fetched so far has been handled, so the fetch position of a
        # bulk partition (the next offset to fetch) is the offset its handler reached
        assignment = self._thread._ensure_consumer()._subscription.subscription.assignment
        if assignment is None:
            return
        drained = {}
        for tp in assignment.tps:
            state = assignment.state_value(tp)
            if tp.topic in handlers and state.has_valid_position:
                drained[TP(tp.topic, tp.partition)] = state.position
        cast(BulkApp, self.app).drained(drained)

    async def _maybe_commit(self) -> None:
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()


class BulkTransport(CompatTransport):
    Consumer: ClassVar[type[faust_aiokafka.Consumer]] = BulkConsumer


class BulkApp(CompatApp):
    """A faust app some of whose topics are consumed in bulk (see the module doc)."""

    Transport: ClassVar[type[faust_aiokafka.Transport]] = BulkTransport

    def __init__(self, id: str, **options: Any) -> None:
        self.bulk_handlers: dict[str, BulkHandler] = {}
        self._drained: dict[TP, int] = {}
        self._drained_moved = asyncio.Event()
        super().__init__(id, **options)

    def bulk_topic(self, topic: TopicT, handler: BulkHandler) -> None:
        """Subscribe to ``topic`` and hand its records to ``handler`` a fetch at a time."""
        for name in topic.topics:
            self.bulk_handlers[name] = handler
        self.topics.add(topic)

    def drained(self, positions: dict[TP, int]) -> None:
        """The offsets up to which the bulk handlers have handled their partitions."""
        self._drained.update(positions)
        self._drained_moved.set()
        self._drained_moved = asyncio.Event()

    def fetched_at(self, tp: TP) -> int | None:
        """When (ms, wall clock) the consumer last had a fetch response for ``tp``."""
        state = self._fetch_state(tp)
        return None if state is None else state.timestamp

    async def caught_up(self, tp: TP, read_at: int | None, timeout_s: float) -> bool:
        """Wait until the bulk handler of ``tp`` has handled it up to its end offset as of
        ``read_at`` (``fetched_at`` of the record being worked on); False if ``timeout_s``
        ran out.

        Read-your-writes without a broker round trip. The end offset is the high
        watermark of a fetch response for ``tp`` at least as recent as the one that
        brought the caller's record: the consumer has one fetch in flight per broker,
        so that response was built after the caller's record was in the log, and so
        after every record appended before it. (aiokafka leaves a partition whose
        records it still buffers out of a fetch; then this waits for a newer one.)
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        end = self._end_offset(tp, read_at)
        while end is None or self._drained.get(tp, -1) < end:
            moved = self._drained_moved
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(moved.wait(), remaining)
            except TimeoutError:
                return False
            if end is None:
                end = self._end_offset(tp, read_at)
        return True

    def _end_offset(self, tp: TP, read_at: int | None) -> int | None:
        state = self._fetch_state(tp)
        if state is None or state.highwater is None or state.timestamp is None:
            return None
        if read_at is not None and state.timestamp < read_at:
            return None  # from a fetch older than the caller's record: may miss some
        return state.highwater

    def _fetch_state(self, tp: TP) -> Any:
        consumer = cast(BulkConsumer, self.consumer)._thread._ensure_consumer()
        assignment = consumer._subscription.subscription.assignment
        if assignment is None or tp not in assignment.tps:  # revoked meanwhile
            return None
        return assignment.state_value(tp)
