"""Waits for the prediction of a request on ``rtml.predictions`` (for ``?wait_ms=``)."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared import topics
from shared.contracts import Prediction, decode
from shared.errors import ContractError
from shared.logging import get_logger

log = get_logger(__name__)


class PredictionWaiter:
    """Reads every partition of ``rtml.predictions`` from its end, without a group,
    and resolves the futures of the requests this replica is waiting for."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._pending: dict[str, asyncio.Future[Prediction]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.topics()  # loads the metadata partitions_for_topic reads
        partitions = self._consumer.partitions_for_topic(topics.PREDICTIONS.name) or set()
        assigned = [TopicPartition(topics.PREDICTIONS.name, p) for p in partitions]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        self._task = asyncio.create_task(self._run(), name="prediction-waiter")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def expect(self, request_id: str) -> asyncio.Future[Prediction]:
        """Register interest before the request is produced, so no answer is missed."""
        future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    async def _run(self) -> None:
        async for record in self._consumer:
            future = (
                self._pending.pop(record.key.decode(errors="replace"), None) if record.key else None
            )
            if future is None or future.done():
                continue
            try:
                future.set_result(decode(record.value, Prediction))
            except ContractError as exc:
                log.warning("undecodable_prediction", error=str(exc), offset=record.offset)
