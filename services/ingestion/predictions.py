"""The predictions of ``rtml.predictions`` as ingestion answers them: awaited by a
``?wait_ms=`` request, or looked up afterwards by request id."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer, TopicPartition
from rtml.shared import topics
from rtml.shared.contracts import Prediction, decode
from rtml.shared.errors import ContractError
from rtml.shared.logging import get_logger

log = get_logger(__name__)


class PredictionWaiter:
    """Reads every partition of ``rtml.predictions`` from its end, without a group:
    resolves the futures of the requests this replica is waiting for, and keeps the
    last ``keep`` predictions (as their records' bytes) for lookups by request id."""

    def __init__(self, consumer: AIOKafkaConsumer, keep: int) -> None:
        self._consumer = consumer
        self._pending: dict[str, asyncio.Future[Prediction]] = {}
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._keep = keep
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

    def recent(self, request_id: str) -> Prediction | None:
        """The prediction of ``request_id`` if it is among the last ones kept."""
        value = self._recent.get(request_id)
        if value is None:
            return None
        try:
            return decode(value, Prediction)
        except ContractError as exc:
            log.warning("undecodable_prediction", error=str(exc), request_id=request_id)
            return None

    async def _run(self) -> None:
        async for record in self._consumer:
            if not record.key or record.value is None:
                continue
            request_id = record.key.decode(errors="replace")
            self._remember(request_id, record.value)
            future = self._pending.pop(request_id, None)
            if future is None or future.done():
                continue
            try:
                future.set_result(decode(record.value, Prediction))
            except ContractError as exc:
                log.warning("undecodable_prediction", error=str(exc), offset=record.offset)

    def _remember(self, request_id: str, value: bytes) -> None:
        if not self._keep:
            return
        # a repeat (redelivery upstream) replaces the first: both are of this request
        self._recent.pop(request_id, None)
        self._recent[request_id] = value
        if len(self._recent) > self._keep:
            self._recent.popitem(last=False)
