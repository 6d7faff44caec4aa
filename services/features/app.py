"""The features worker: a faust app that keeps entity state and enriches requests.

State. Domain events on ``rtml.events`` are keyed by entity (restaurant events
by restaurant_id, courier and delivery events by zone_id, session events
by session_id), so all the events of an entity are in one partition, and a
worker holds the state of the entities of the partitions it is assigned: per
partition an ``EntityStates`` (``state.py``). The events topic is consumed in
bulk (``bulk.py``): a fetched batch is decoded and applied per partition in
one call, and the accepted events of that call become **one changelog record**
of the ``entities`` table. The table is event-sourced: its changelog is the
log of accepted events, its value is what folding them gives
(``EntityTable``). That keeps a changelog write per batch rather than per
event, and each record small, where a table of per-entity values would rewrite
an entity's whole history on every event.

Recovery. A restarted or newly assigned worker rebuilds a partition's state by
folding its changelog (faust's table recovery) before any stream of that
partition resumes; the fold is the same admission code, so it gives the same
state, duplicates included (an event folded twice is recognised by id). On the
embedded broker faust's recovery reads each changelog to the high watermark of
a fetch response (``shared/broker_compat_faust.py``), not to Tansu's wrong
ListOffsets answer, which would stop recovery early and lose updates.

The cross-key join. A request is keyed by its id, but its features live with
its entities' partitions (a request of a task with two entities: both of their partitions),
usually on different workers. Enrichment follows a **lookup plan**
(``handlers.py``): the request's entities in a fixed order. Each step runs
where its entity lives: if this worker holds the entity's partition it looks
it up in place, otherwise it forwards the request, with the features found so
far, to an internal lookup topic keyed by that entity
(``<app id>-lookup-restaurant``, ``-lookup-zone``, ``-lookup-session``). Those topics have the
partition count of ``rtml.events`` and the same default partitioner, so
faust's assignor gives partition p of both to the same worker: the owner of
the state. The last step adds request and batch features and emits
``rtml.predict.enriched``. With one worker every step is local (one hop in
all); with N workers a request makes at most two extra hops (its
``lookup_forward`` timing). The alternatives
were worse here: replicating all state to every worker (global tables) would
make every worker apply every event, so adding workers would not add event
throughput; re-keying every request through every entity even when local adds
two hops of latency for nothing.

Batch features are small and read whole by every worker (``batch_cache.py``).

Requests and lookup records are held until the events appended before them
are applied (``freshness.py``), then handled a release at a time
(``bulk.py``), like the events a fetch at a time: no faust agent is involved.

Failure handling. A batch's records are acked together once its handler
returns, so the handlers catch per record and send what fails to
``rtml.dlq`` with the reason (decode, schema, handler); events older than the
allowed lateness go there with reason ``late``. Processing is at least once
(faust's exactly_once is not used): offsets are committed after the producer
is flushed, and state absorbs redelivered events by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from faust.tables.table import Table
from faust.types import TP, EventT, Message
from rtml.services.features import metrics
from rtml.services.features.batch_cache import BatchFeatureCache
from rtml.services.features.bulk import BulkApp, HeldHandler, HeldRecord
from rtml.services.features.handlers import (
    Lookup,
    account,
    admit_events,
    advance,
    changelog_records,
    enriched,
    entity_features,
    feature_vector,
    held,
    plan,
    replay_changelog,
)
from rtml.services.features.state import EntityStates
from rtml.shared import topics
from rtml.shared.broker_compat_faust import faust_options
from rtml.shared.contracts import PredictRequest, decode, encode
from rtml.shared.errors import ContractError
from rtml.shared.faust_worker import recovered_and_assigned, tables_recovered
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.kafka import DlqWriter, partition_of
from rtml.shared.logging import bind_request, get_logger, unbind_request
from rtml.shared.settings import Settings
from rtml.shared.tasks.registry import tasks
from rtml.shared.timings import FEATURES, LOOKUP_FORWARD
from rtml.shared.watermarks import WatermarkReader

SERVICE = "features"
log = get_logger(__name__)

ENTITIES_TABLE = "entities"
RECOVERY_BATCH_RECORDS = 8


def lookup_topics(settings: Settings) -> dict[str, topics.Topic]:
    """The internal topics a request travels on to the owner of an entity, one per
    entity of the loaded tasks."""
    return {
        entity: topics.Topic(
            f"{settings.features_app_id}-lookup-{entity}",
            f"requests on their way to the owner of their {entity}, keyed by {entity} id",
            settings.partitions,
        )
        for entity in tasks().entities
    }


def changelog_topic(settings: Settings) -> topics.Topic:
    """The changelog of the ``entities`` table, created up front like every topic."""
    return topics.Topic(
        f"{settings.features_app_id}-{ENTITIES_TABLE}-changelog",
        "accepted events, a batch per record: what the entity state is rebuilt from",
        settings.partitions,
        # keys are unique, so compaction keeps everything and time bounds it, as
        # Kafka Streams does for its window stores
        {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(int(settings.features_changelog_retention_s * 1000)),
        },
    )


class EntityTable(Table):
    """An event-sourced faust table: its changelog is the log of accepted events.

    Each changelog record is a batch of raw events; folding the records of a
    partition in order gives that partition's ``EntityStates``. The table's
    key-value interface is unused.
    """

    def __init__(self, app: BulkApp, settings: Settings) -> None:
        changelog = app.topic(
            changelog_topic(settings).name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            acks=False,
        )
        super().__init__(
            app,
            name=ENTITIES_TABLE,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            changelog_topic=changelog,
            # recovery folds this many records (each up to ~2k events) per call on the
            # event loop: small enough that the side port keeps answering meanwhile
            recovery_buffer_size=RECOVERY_BATCH_RECORDS,
        )
        self.allowed_lateness_s = settings.features_allowed_lateness_s
        self.by_partition: dict[int, EntityStates] = {}
        # last changelog offset folded in by recovery, per partition
        self._recovered_to: dict[int, int] = {}

    def states(self, partition: int) -> EntityStates:
        states = self.by_partition.get(partition)
        if states is None:
            states = self.by_partition[partition] = EntityStates(self.allowed_lateness_s)
        return states

    def all_states(self) -> list[EntityStates]:
        return list(self.by_partition.values())

    def record(self, partition: int, accepted: Sequence[bytes], key: str) -> None:
        """Append accepted events to the partition's changelog (no await: see bulk.py)."""
        for index, record in enumerate(changelog_records(accepted)):
            self.send_changelog(
                partition,
                f"{key}:{index}".encode(),
                record,
                key_serializer="raw",
                value_serializer="raw",
            )

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        for event in batch:
            partition = event.message.partition
            recovered = replay_changelog(self.states(partition), event.message.value)
            metrics.RECOVERED.inc(recovered)
            self._recovered_to[partition] = event.message.offset

    def persisted_offset(self, tp: TP) -> int | None:
        # a partition kept across a rebalance resumes recovery where it stopped:
        # records written since (our own) fold in again as duplicates
        return self._recovered_to.get(tp.partition)

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        self._forget(tp.partition for tp in revoked if tp.topic == self.changelog_topic_name)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        kept = {tp.partition for tp in active_tps}
        self._forget(p for p in list(self.by_partition) if p not in kept)
        await super().on_recovery_completed(active_tps, standby_tps)

    def _forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.by_partition.pop(partition, None)
            self._recovered_to.pop(partition, None)
            with contextlib.suppress(KeyError):  # it had no events yet
                metrics.CONSUMED_OFFSET.remove(str(partition))


class FeaturesWorker:
    """The faust app and its wiring; ``SideServices`` (``__main__.py``) runs next to it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = BulkApp(
            settings.features_app_id,
            embedded=settings.embedded,
            fetch_max_wait_ms=settings.features_fetch_max_wait_ms,
            freshness_wait_s=settings.features_freshness_wait_ms / 1000,
            watermarks=WatermarkReader(settings),
            **faust_options(settings),
            # the side port serves HTTP (shared health kit); faust's assignor still
            # tells every worker where the others' side ports are (table routing)
            web_enabled=False,
            canonical_url=f"http://{settings.features_host}:{settings.features_port}",
            topic_partitions=settings.partitions,
            table_standby_replicas=0,
            store="memory://",
        )
        self.entities = EntityTable(self.app, settings)
        self.app.tables.add(self.entities)
        self.batch: BatchFeatureCache | None = None
        self.dlq: DlqWriter | None = None
        self._started = False
        self._held: tuple[int, frozenset[int]] = (-1, frozenset())

        raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.app.bulk_topic(self.app.topic(topics.EVENTS.name, **raw), self.on_events)
        self.enriched_topic = self.app.topic(topics.PREDICT_ENRICHED.name, **raw)
        self.lookup_topics = {
            kind: self.app.topic(topic.name, **raw)
            for kind, topic in lookup_topics(settings).items()
        }
        requests = self.app.topic(topics.PREDICT_REQUESTS.name, **raw)
        self.app.held_topic(requests, self._each(self._on_request))
        for topic in self.lookup_topics.values():
            self.app.held_topic(topic, self._each(self._on_lookup))
        self.app.task(self._mark_started)

    # --- readiness ---------------------------------------------------------------------

    async def _mark_started(self) -> None:
        self._started = True

    def readiness(self) -> bool | str:
        if (serving := self.serving()) is not True:
            return serving
        return recovered_and_assigned(self.app, topics.EVENTS.name)

    def serving(self) -> bool | str:
        """Whether a lookup may be answered now: the part of readiness cheap enough to
        ask on every request (the rest walks the assignment and the commits)."""
        if not self._started:
            return "the faust app has not started"
        if (recovered := tables_recovered(self.app)) is not True:
            return recovered
        if self.batch is None or not self.batch.caught_up:
            return "batch features not loaded yet"
        return True

    # --- events ------------------------------------------------------------------------

    async def on_events(self, messages: list[Message]) -> None:
        """Apply a fetched batch of events, per partition; late and bad ones go to the DLQ."""
        by_partition: dict[int, list[Message]] = {}
        for message in messages:
            by_partition.setdefault(message.partition, []).append(message)
        dead: list[tuple[Message, str, str]] = []
        # every state change and its changelog record happen before the first await
        for partition, batch in by_partition.items():
            admitted = admit_events(
                self.entities.states(partition), [m.value or b"" for m in batch]
            )
            if admitted.accepted:
                key = f"{partition}:{batch[0].offset}"
                self.entities.record(partition, admitted.accepted, key)
            metrics.EVENTS.labels("accepted").inc(len(admitted.accepted))
            metrics.EVENTS.labels("duplicate").inc(admitted.duplicates)
            for rejected in admitted.rejected:
                metrics.EVENTS.labels(rejected.reason).inc()
                dead.append((batch[rejected.index], rejected.reason, rejected.error))
            metrics.CONSUMED_OFFSET.labels(str(partition)).set(batch[-1].offset + 1)
        # concurrently: a burst of late events must not take a round trip each
        await asyncio.gather(*(self._dead_letter(m, error, reason) for m, reason, error in dead))

    # --- requests ----------------------------------------------------------------------

    def _each(self, handle: Callable[[HeldRecord], Awaitable[None]]) -> HeldHandler:
        """A handler of released records that handles each in turn and sends what it
        cannot handle to the DLQ."""

        async def handle_each(records: list[HeldRecord]) -> None:
            for record in records:
                try:
                    await handle(record)
                except ContractError as exc:
                    await self._dead_letter(record.message, exc, exc.dlq_reason)
                except Exception as exc:  # acked with its batch: keep it in the DLQ
                    log.exception("request_failed", offset=record.message.offset)
                    await self._dead_letter(record.message, exc, "handler")
                finally:
                    # the handler bound the id of the request it decoded (the lines above too)
                    unbind_request()

        return handle_each

    async def _on_request(self, record: HeldRecord) -> None:
        request = decode(record.message.value or b"", PredictRequest)
        assert isinstance(request, PredictRequest)
        bind_request(request.id)
        await self._continue(held(plan(request, record.seen_at), record.held_s))

    async def _on_lookup(self, record: HeldRecord) -> None:
        # the lookup topics are partitioned like rtml.events: the entity lives here
        lookup = Lookup.from_bytes(record.message.value or b"")
        bind_request(lookup.request.id)
        if lookup.next_entity is None:
            raise ContractError("pending", "a lookup record with nothing left to look up")
        lookup = held(account(lookup, LOOKUP_FORWARD, record.seen_at), record.held_s)
        await self._continue(self._look_up_here(lookup, "kafka"))

    async def _continue(self, lookup: Lookup) -> None:
        """Run the lookups this worker holds; forward to the owner of the next one, or finish."""
        while (entity := lookup.next_entity) is not None:
            kind, entity_id = entity
            if not self.holds(entity_id):
                topic = self.lookup_topics[kind]
                forwarded = account(lookup, FEATURES, time.time())
                await topic.send(key=entity_id.encode(), value=forwarded.to_bytes())
                log.debug("lookup_forwarded", entity=kind, to=topic.get_topic_name())
                return
            lookup = self._look_up_here(lookup, "local")
        vector = feature_vector(lookup, self.batch_records())
        message = enriched(lookup, vector, time.time())
        await self.enriched_topic.send(key=message.key, value=encode(message))
        metrics.observe(vector, "kafka")
        log.debug(
            "request_enriched", feature_set=vector.feature_set, defaulted=sum(vector.defaulted)
        )

    def _look_up_here(self, lookup: Lookup, where: str) -> Lookup:
        kind, entity_id = lookup.next_entity  # type: ignore[misc]
        metrics.LOOKUPS.labels(kind, where).inc()
        found = entity_features(
            self.entities.all_states(), kind, entity_id, lookup.request.ts, self.batch_records()
        )
        return advance(lookup, found)

    async def applied_until_now(self) -> float:
        """Wait until the events appended before now are applied (lookups over HTTP);
        how long that took, in seconds."""
        started = time.monotonic()
        fresh = await self.app.applied_as_of(started)
        held_s = time.monotonic() - started
        metrics.HELD.labels("fresh" if fresh else "waited_out").observe(held_s)
        return held_s

    def holds(self, entity_id: str) -> bool:
        """Whether this worker holds the partition of ``entity_id``'s events."""
        return partition_of(entity_id.encode(), self.settings.partitions) in self._held_partitions()

    def _held_partitions(self) -> frozenset[int]:
        # the consumer builds a new set on every assignment() call: ask once per generation
        generation = self.app.consumer_generation_id
        if self._held[0] != generation:
            assignment = self.app.consumer.assignment()
            held = frozenset(tp.partition for tp in assignment if tp.topic == topics.EVENTS.name)
            self._held = (generation, held)
        return self._held[1]

    def batch_records(self) -> Mapping[str, BatchFeatureRecord]:
        return self.batch.records if self.batch is not None else {}

    async def _dead_letter(self, message: Message, error: BaseException | str, reason: str) -> None:
        assert self.dlq is not None, "the DLQ writer starts before the app"
        await self.dlq.send_record(message, error, reason)
