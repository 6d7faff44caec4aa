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
from faust.types import Message, TopicT
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
                    for topic, messages in bulk.items():
                        await self._deliver_bulk(handlers[topic], messages)
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

    async def _deliver_bulk(self, handler: BulkHandler, messages: list[Message]) -> None:
        handling = handler(messages)
        outcome = await self.wait_first(handling, self.suspend_flow.wait())
        if handling not in outcome.done:
            return  # the flow stopped: nothing acked, the records come again
        # ack without track_message: that only feeds faust's per-record monitor,
        # and the handler has finished with every record anyway
        for message in messages:
            self.ack(message)
        await self._maybe_commit()

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
        super().__init__(id, **options)

    def bulk_topic(self, topic: TopicT, handler: BulkHandler) -> None:
        """Subscribe to ``topic`` and hand its records to ``handler`` a fetch at a time."""
        for name in topic.topics:
            self.bulk_handlers[name] = handler
        self.topics.add(topic)
