"""The collector worker: a faust app that joins predictions with their labels.

Flow. ``rtml.predictions`` (keyed by request id) and ``rtml.events`` (keyed by
entity) are consumed by two re-keying agents that send every prediction and
label on, unchanged, keyed by its join key (``routing.py``), to the internal
join topic ``<app id>-join``; other events are skipped without decoding. The join agent
reads that topic record by record and applies each to the ``JoinState``
(``join.py``) of its partition, then sends what it emitted: the training
example to ``rtml.training.examples`` and the reward to ``rtml.rewards``, both
keyed by request id.

State. Each ``JoinState`` covers one partition of the join topic (its
watermark is that partition's event time, so its output depends only on that
partition's records, replays included) and keeps its three mappings in faust
tables (``predictions``, ``labels``, ``done``) that live in memory and are
rebuilt from their changelogs on restart or rebalance. faust recovers the
tables before any stream of the partition resumes, so the first record after
an assignment builds that partition's ``JoinState`` from the recovered tables
(the deadline heap and watermark are derived, not stored).

Unmatched records (``join.py``): a label whose window closes with no
prediction, and a prediction whose window closes unlabelled, are counted
(``rtml_collector_join_total{outcome=...}``) and dropped: they make no
training example -- unless the task's label has a value for that
(``when_missing``: a recommendation without a click is an example with label
and reward 0). A label after its prediction's
window closed counts as ``duplicate_label`` (the key is closed) and is dropped.

Failure handling. At least once: a record is acked only after its outputs
are acknowledged by the broker, and the state change it caused is written to
the changelogs only after that (``store.py``), so a crash can repeat an
example or reward (consumers absorb repeats by request id: the warehouse
reader, the router) but never lose one. faust acks a record whose agent
raises, so every record that cannot be decoded or handled goes to ``rtml.dlq``
with the reason instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.types import Message, StreamT
from rtml.services.collector import metrics
from rtml.services.collector.config import EMBEDDED_FETCH_MAX_WAIT_MS, CollectorSettings
from rtml.services.collector.join import Joined, JoinState
from rtml.services.collector.routing import Rekeyed, decode_joinable, rekey_event, rekey_prediction
from rtml.services.collector.store import FLOATS, MESSAGES, PartitionView
from rtml.shared import topics
from rtml.shared.broker_compat_faust import CompatApp, faust_options
from rtml.shared.contracts import Prediction, encode
from rtml.shared.errors import ContractError
from rtml.shared.faust_worker import recovered_and_assigned
from rtml.shared.kafka import DlqWriter, send_all
from rtml.shared.logging import bound_request, debug_enabled, get_logger
from rtml.shared.settings import Settings

SERVICE = "collector"
TABLES = ("predictions", "labels", "done")
log = get_logger(__name__)


def join_topic(settings: Settings, config: CollectorSettings) -> topics.Topic:
    return topics.Topic(
        f"{config.collector_app_id}-join",
        "predictions and labels keyed by join key (order, or session and item)",
        settings.partitions,
    )


def changelog_topics(settings: Settings, config: CollectorSettings) -> list[topics.Topic]:
    """The changelogs of the join tables, created up front like every topic; a
    closed key is deleted (tombstone), so compaction bounds them."""
    return [
        topics.Topic(
            f"{config.collector_app_id}-{name}-changelog",
            f"the collector's {name} table",
            settings.partitions,
            topics.COMPACT,
        )
        for name in TABLES
    ]


@dataclass
class PartitionJoin:
    """A partition's join state over its table views, built for one consumer generation."""

    generation: int
    state: JoinState
    views: tuple[PartitionView, ...]
    applied: int = 0

    def flush(self) -> None:
        for view in self.views:
            view.flush()


class RekeyProgress:
    """The consumed-offset gauge of the source topics, which must not run ahead of
    the join topic: an offset counts once every re-keyed record up to it is on
    the broker, not merely in faust's send buffer (tests and operators compare
    it with the join topic's end offsets)."""

    def __init__(self) -> None:
        self._in_flight: Counter[tuple[str, int]] = Counter()
        self._waiting: dict[tuple[str, int], int] = {}

    def started(self, message: Message) -> Callable[[Any], None]:
        tp = (message.topic, message.partition)
        self._in_flight[tp] += 1

        def delivered(_: Any) -> None:
            self._in_flight[tp] -= 1
            self._advance(tp, message.offset + 1)

        return delivered

    def skipped(self, message: Message) -> None:
        self._advance((message.topic, message.partition), message.offset + 1)

    def _advance(self, tp: tuple[str, int], offset: int) -> None:
        self._waiting[tp] = max(self._waiting.get(tp, 0), offset)
        if self._in_flight[tp] == 0:
            topic, partition = tp
            metrics.CONSUMED_OFFSET.labels(topic, str(partition)).set(self._waiting[tp])


class CollectorWorker:
    """The faust app and its wiring; ``SideServices`` (``__main__.py``) runs next to it
    and provides the producer and the DLQ writer before the first record."""

    def __init__(self, settings: Settings, config: CollectorSettings) -> None:
        self.settings = settings
        self.config = config
        self.app = CompatApp(
            config.collector_app_id,
            embedded=settings.embedded,
            fetch_max_wait_ms=config.collector_fetch_max_wait_ms
            or (EMBEDDED_FETCH_MAX_WAIT_MS if settings.embedded else None),
            **faust_options(settings),
            web_enabled=False,
            topic_partitions=settings.partitions,
            table_standby_replicas=0,
            store="memory://",
        )
        self.tables = {
            name: self.app.Table(
                name, key_type=bytes, value_type=bytes, partitions=settings.partitions
            )
            for name in TABLES
        }
        self.producer: AIOKafkaProducer | None = None
        self.dlq: DlqWriter | None = None
        self.live_error = metrics.LiveError()
        # a line per record only at DEBUG: asked once, it costs nothing per record
        self._trace = debug_enabled()
        self.join_topic_name = join_topic(settings, config).name
        self._joins: dict[int, PartitionJoin] = {}
        self._progress = RekeyProgress()
        self._started = False

        raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.join_topic = self.app.topic(self.join_topic_name, **raw)
        self.app.agent(self.app.topic(topics.PREDICTIONS.name, **raw), name="rekey-predictions")(
            self._rekey_agent(rekey_prediction, "predictions")
        )
        self.app.agent(self.app.topic(topics.EVENTS.name, **raw), name="rekey-events")(
            self._rekey_agent(rekey_event, "events")
        )
        self.app.agent(self.join_topic, name="join")(self._join_agent)
        self.app.task(self._mark_started)

    # --- readiness ---------------------------------------------------------------------

    async def _mark_started(self) -> None:
        self._started = True

    def readiness(self) -> bool | str:
        if not self._started:
            return "the faust app has not started"
        return recovered_and_assigned(self.app, self.join_topic_name)

    # --- re-keying ---------------------------------------------------------------------

    def _rekey_agent(
        self, rekey: Callable[[bytes], Rekeyed | None], source: str
    ) -> Callable[[StreamT], Awaitable[None]]:
        """An agent that sends a source's joinable records to the join topic, unchanged."""

        async def agent(stream: StreamT) -> None:
            async for event in stream.events():
                message = event.message
                try:
                    rekeyed = rekey(message.value or b"")
                except ContractError as exc:
                    await self._dead_letter(message, exc, exc.dlq_reason)
                except Exception as exc:  # faust would ack and drop it: keep it in the DLQ
                    log.exception("rekey_failed", source=source, offset=message.offset)
                    await self._dead_letter(message, exc, "handler")
                else:
                    if rekeyed is not None:
                        # buffered: faust flushes its producer before it commits the offset
                        await self.join_topic.send(
                            key=rekeyed.key,
                            value=rekeyed.value,
                            callback=self._progress.started(message),
                        )
                        metrics.REKEYED.labels(source).inc()
                        if self._trace and rekeyed.request_id is not None:
                            with bound_request(rekeyed.request_id):
                                log.debug("prediction_awaits_label", join_key=rekeyed.key.decode())
                        continue
                    if source == "predictions":
                        metrics.JOIN.labels("prediction_without_join_key").inc()
                self._progress.skipped(message)

        return agent

    # --- the join ----------------------------------------------------------------------

    async def _join_agent(self, stream: StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                await self._apply(message.partition, message.value or b"")
            except ContractError as exc:
                await self._dead_letter(message, exc, exc.dlq_reason)
            except Exception as exc:  # faust would ack and drop it: keep it in the DLQ
                # the partition's state may hold half of this record: rebuild it from the tables
                self._joins.pop(message.partition, None)
                log.exception("join_failed", partition=message.partition, offset=message.offset)
                await self._dead_letter(message, exc, "handler")
            _mark_consumed([message])

    async def _apply(self, partition: int, value: bytes) -> None:
        incoming = decode_joinable(value)
        join = self._partition_join(partition)
        state = join.state
        if isinstance(incoming, Prediction):
            joined = state.on_prediction(incoming)
        else:
            joined = state.on_label(incoming)
        join.applied += 1
        if join.applied % self.config.collector_forget_every == 0:
            state.forget_done()
        if joined:
            assert self.producer is not None, "the producer starts before the app"
            await send_all(self.producer, _outputs(joined))
            for item in joined:
                metrics.EMITTED.labels(item.example.task).inc()
                self.live_error.observe(item.example)
                if self._trace:
                    with bound_request(item.example.id):
                        log.debug(
                            "example_emitted",
                            label=item.example.label,
                            reward=item.reward.reward if item.reward else None,
                        )
        join.flush()  # only now, after the acks: see store.py
        for outcome, count in state.counts.items():
            metrics.JOIN.labels(outcome).inc(count)
        state.counts.clear()

    def _partition_join(self, partition: int) -> PartitionJoin:
        """The partition's join state, rebuilt from the recovered tables after a rebalance."""
        generation = self.app.consumer_generation_id
        join = self._joins.get(partition)
        if join is None or join.generation != generation:
            views = tuple(
                PartitionView(
                    self.tables[name],
                    partition,
                    self.settings.partitions,
                    FLOATS if name == "done" else MESSAGES,
                )
                for name in TABLES
            )
            state = JoinState(self.config.join_config(), *views)  # type: ignore[arg-type]
            join = self._joins[partition] = PartitionJoin(generation, state, views)
            log.info(
                "join_state_built",
                partition=partition,
                pending_predictions=len(views[0]),
                pending_labels=len(views[1]),
                watermark=state.watermark,
            )
        return join

    async def _dead_letter(self, message: Message, error: BaseException | str, reason: str) -> None:
        assert self.dlq is not None, "the DLQ writer starts before the app"
        await self.dlq.send_record(message, error, reason)


def _outputs(joined: Sequence[Joined]) -> list[tuple[str, bytes, bytes]]:
    records = []
    for item in joined:
        records.append((topics.TRAINING_EXAMPLES.name, item.example.key, encode(item.example)))
        if item.reward is not None:
            records.append((topics.REWARDS.name, item.reward.key, encode(item.reward)))
    return records


def _mark_consumed(messages: Sequence[Message]) -> None:
    for message in messages:
        metrics.CONSUMED_OFFSET.labels(message.topic, str(message.partition)).set(
            message.offset + 1
        )
