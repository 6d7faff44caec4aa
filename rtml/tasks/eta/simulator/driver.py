"""Drives a running rtml stack with simulated traffic through the Python client
(``rtml.client``), as an external client would: domain events go to
``POST /v1/events`` in batches, predict requests to ``POST /v1/predict``. A 503 is
retried by the client (same ids, so a write that did land before the timeout is
absorbed downstream as a duplicate)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from rtml.client import AsyncClient
from rtml.shared.contracts import Message, PredictRequest
from rtml.tasks.eta.simulator.world import paced

# wall-clock bound on how long an event waits in a batch before it is sent
FLUSH_AFTER_S = 0.05
MAX_IN_FLIGHT_PREDICTS = 64


@dataclass
class DriveStats:
    events: int = 0
    predict_requests: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


async def batched(messages: AsyncIterator[Message], size: int) -> AsyncIterator[list[Message]]:
    """Batches of up to ``size``, none held longer than FLUSH_AFTER_S of wall time."""
    batch: list[Message] = []
    opened = time.monotonic()
    async for message in messages:
        if not batch:
            opened = time.monotonic()
        batch.append(message)
        if len(batch) >= size or time.monotonic() - opened >= FLUSH_AFTER_S:
            yield batch
            batch = []
    if batch:
        yield batch


async def _as_fast_as_possible(messages: Iterable[Message]) -> AsyncIterator[Message]:
    for message in messages:
        yield message


async def drive(
    messages: Iterable[Message],
    client: AsyncClient,
    speedup: float,
    batch_size: int = 100,
    on_progress: Callable[[Message], None] = lambda _: None,
) -> DriveStats:
    """Send ``messages`` paced at ``speedup`` x event time (0: as fast as possible)."""
    stats = DriveStats()
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT_PREDICTS)
    predicts: set[asyncio.Task[None]] = set()

    async def send_predict(request: PredictRequest) -> None:
        try:
            await client.predict(
                request.task,
                entities=request.entities,
                inputs=request.inputs,
                request_id=request.id,
                ts=request.ts,
            )
            stats.predict_requests += 1
        except Exception:
            stats.failed += 1
        finally:
            in_flight.release()

    source = paced(messages, speedup) if speedup > 0 else _as_fast_as_possible(messages)
    async for batch in batched(source, batch_size):
        events = [m for m in batch if not isinstance(m, PredictRequest)]
        if events:
            await client.publish(events)
            stats.events += len(events)
        for request in (m for m in batch if isinstance(m, PredictRequest)):
            await in_flight.acquire()
            task = asyncio.create_task(send_predict(request))
            predicts.add(task)
            task.add_done_callback(predicts.discard)
        on_progress(batch[-1])
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*predicts)
    return stats
