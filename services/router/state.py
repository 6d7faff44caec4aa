"""Router checkpoints on the compacted ``rtml.router.state``, keyed by task.

Each checkpoint is a consistent cut: the posterior of a task together with the
rewards offsets folded into it (taken between two folds, with no await in
between). Any checkpoint is therefore a valid place to restart from, whichever
replica wrote it, and the reader needs only the last one per task. The
embedded broker never compacts, so the reader folds the whole log that way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import cast

from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import Counter
from rtml.services.router.handlers import Router
from rtml.shared import broker_compat, topics
from rtml.shared.contracts import RouterState, decode, encode
from rtml.shared.errors import ContractError
from rtml.shared.kafka import start_consumer
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings

log = get_logger(__name__)

CHECKPOINTS = Counter("rtml_router_checkpoints_total", "router checkpoints written", ["task"])

STATE_PARTITION = TopicPartition(topics.ROUTER_STATE.name, 0)


async def read_checkpoints(settings: Settings) -> dict[str, RouterState]:
    """The last checkpoint of each task, reading rtml.router.state to its true end."""
    consumer = await start_consumer(settings, group_id=None)
    try:
        consumer.assign([STATE_PARTITION])
        await consumer.seek_to_beginning(STATE_PARTITION)
        ends = await broker_compat.end_offsets(consumer, [STATE_PARTITION], settings.embedded)
        latest: dict[str, RouterState] = {}
        while await consumer.position(STATE_PARTITION) < ends[STATE_PARTITION]:
            batches = await consumer.getmany(STATE_PARTITION, timeout_ms=100)
            for record in batches.get(STATE_PARTITION, []):
                try:
                    state = cast(RouterState, decode(record.value or b"", RouterState))
                except ContractError as exc:
                    # an unreadable checkpoint only costs a longer replay of the rewards
                    log.error("bad_router_checkpoint", offset=record.offset, error=str(exc))
                    continue
                latest[state.task] = state
        return latest
    finally:
        await consumer.stop()


async def write_checkpoints(producer: AIOKafkaProducer, router: Router) -> list[RouterState]:
    """Checkpoint every task and wait for the broker's acks."""
    now = time.time()
    # the states are taken together, before the first await, so no fold slips in between
    states: Sequence[RouterState] = [router.state(task, now) for task in router.tasks]
    acks = [
        await producer.send(topics.ROUTER_STATE.name, encode(state), key=state.key)
        for state in states
    ]
    await asyncio.gather(*acks)
    for state in states:
        CHECKPOINTS.labels(state.task).inc()
    log.info(
        "router_checkpointed",
        offsets={state.task: state.reward_offsets for state in states},
    )
    return list(states)
