"""Folds ``rtml.rewards`` into the router, then checkpoints and promotes.

Every replica reads every rewards partition itself (assigned, no consumer
group), from the offsets its checkpoint says were folded minus the duplicate
window (see ``ledger.py``). Routing scales out by the consumer group on
rtml.predict.enriched, but each replica needs the whole posterior to route
with it, and folding by log position makes each reward count once per replica
however many replicas there are.

Side effects that must happen once for the whole deployment -- checkpoints and
promotions -- are done by the replica that holds partition 0 of
rtml.predict.enriched (``leads``). During a rebalance two replicas may both
think they lead for a moment: each of their checkpoints is a consistent cut,
so any of them is a valid place to restart from, and a promotion is proposed
only while the champion differs, so it is announced again at worst.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Counter
from rtml.services.router.handlers import RewardOutcome, Router
from rtml.services.router.ledger import LogPosition
from rtml.services.router.models import Promoter
from rtml.services.router.state import write_checkpoints
from rtml.shared import broker_compat, topics
from rtml.shared.contracts import Reward, decode
from rtml.shared.errors import ContractError
from rtml.shared.kafka import DlqWriter
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings

log = get_logger(__name__)

REWARDS = Counter(
    "rtml_router_rewards_total",
    "rewards read, by what became of them: counted, duplicate (absorbed), checkpointed "
    "(re-read after a restart), unknown_arm, invalid",
    ["task", "outcome"],
)

SERVICE = "router"
PARTITIONS_WAIT_S = 10.0


class RewardFollower:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        promoter: Promoter,
        leads: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._router = router
        self._consumer = consumer
        self._producer = producer
        self._promoter = promoter
        self._leads = leads
        self._dlq = DlqWriter(producer, SERVICE)
        self._since_checkpoint = 0
        self.caught_up = False

    async def catch_up(self) -> None:
        """Fold every reward from the checkpoints' offsets to the end of the topic as of now."""
        partitions = await topic_partitions(self._consumer, topics.REWARDS.name)
        self._consumer.assign(partitions)
        for partition in partitions:
            self._consumer.seek(partition, self._router.resume_offset(partition.partition))
        ends = await broker_compat.end_offsets(self._consumer, partitions, self._settings.embedded)
        while any([await self._consumer.position(p) < ends[p] for p in partitions]):
            await self._fold(await self._consumer.getmany(timeout_ms=100))
        self.caught_up = True
        log.info("rewards_caught_up", ends={p.partition: ends[p] for p in partitions})

    async def run(self, stop: asyncio.Event) -> None:
        pause_s = self._settings.router_fold_interval_ms / 1000
        while not stop.is_set():
            batches = await self._consumer.getmany(timeout_ms=100)
            if not batches:
                continue
            await self._fold(batches)
            if self._leads():
                await self._lead()
            # a fold makes Thompson policies re-estimate P(best) at the next decision:
            # pausing lets rewards accumulate into fewer, larger folds
            await asyncio.sleep(pause_s)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def checkpoint(self) -> None:
        await write_checkpoints(self._producer, self._router)
        self._since_checkpoint = 0

    async def _lead(self) -> None:
        for proposal in self._router.promotions_due():
            await self._promoter.promote(proposal)
        if self._since_checkpoint >= self._settings.router_checkpoint_every:
            await self.checkpoint()

    async def _fold(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for records in batches.values():
            await self._fold_records(records)

    async def _fold_records(self, records: Iterable[ConsumerRecord]) -> None:
        for record in records:
            try:
                reward = cast(Reward, decode(record.value or b"", Reward))
            except ContractError as exc:
                await self._reject(record, exc, exc.dlq_reason, task="unknown")
                continue
            try:
                outcome = self._router.on_reward(
                    reward, LogPosition(record.partition, record.offset)
                )
            except Exception as exc:
                # PolicyError is the expected kind; anything else is a bug that one reward
                # triggers, and it must not stop every later reward from being folded
                await self._reject(record, exc, "handler", task=reward.task)
                continue
            REWARDS.labels(reward.task, outcome.value).inc()
            if outcome is not RewardOutcome.CHECKPOINTED:
                self._since_checkpoint += 1

    async def _reject(
        self, record: ConsumerRecord, error: Exception, reason: str, task: str
    ) -> None:
        REWARDS.labels(task, "invalid").inc()
        self._since_checkpoint += 1
        # one dead letter for the deployment, not one per replica
        if self._leads():
            await self._dlq.send_record(record, error, reason)


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``, once the consumer's metadata knows them."""
    deadline = asyncio.get_running_loop().time() + PARTITIONS_WAIT_S
    while not (numbers := consumer.partitions_for_topic(topic)):
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"topic {topic} has no partitions; was it created?")
        await consumer.topics()
        await asyncio.sleep(0.1)
    return [TopicPartition(topic, number) for number in sorted(numbers)]
