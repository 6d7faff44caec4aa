"""Entry point: ``python -m rtml.services.trainer`` (what ``rtml up`` runs).

With no champion, bootstraps the first model from the labelled history on the
topics (stage 1, ``coldstart.py``); consumes rtml.training.examples for the drift
monitor (stage 4), retrains on a schedule (stages 2 and 3), registers every kept
version in the model store and announces it on rtml.models with the reason it was
trained.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiohttp import web
from rtml.services.trainer.coldstart import ColdStart
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.service import Trainer
from rtml.shared import topics
from rtml.shared.contracts import TrainerStatus, TrainingExample, encode
from rtml.shared.kafka import ensure_topics, start_consumer, start_producer
from rtml.shared.logging import configure_logging, get_logger
from rtml.shared.model_announcements import Action, announce
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.pipeline import Incoming, Outgoing, Pipeline
from rtml.shared.service import HealthEndpoints, run_until_signalled, serve
from rtml.shared.settings import get_settings
from rtml.shared.warehouse import Warehouse

SERVICE = "trainer"
GROUP_ID = "rtml-trainer"


async def main(stop: asyncio.Event) -> None:
    settings, config = get_settings(), TrainerSettings()
    configure_logging(SERVICE, settings.log_level)
    log = get_logger(SERVICE)
    await ensure_topics(settings)
    producer = await start_producer(settings)

    async def announce_action(record: ModelRecord, action: Action, reason: str) -> None:
        await announce(producer, record, action, reason)

    async def publish_status(status: TrainerStatus) -> None:
        await producer.send_and_wait(topics.TRAINER_STATUS.name, encode(status), key=status.key)

    trainer = Trainer(
        config, ModelStore(config.model_store), Warehouse(config.warehouse), announce_action
    )

    async def observe(batch: Sequence[Incoming]) -> list[Outgoing]:
        for item in batch:
            assert isinstance(item.message, TrainingExample)
            await trainer.observe(item.message)
        return []

    consumer = await start_consumer(settings, topics.TRAINING_EXAMPLES.name, group_id=GROUP_ID)
    pipeline = Pipeline(SERVICE, consumer, producer, observe, expect=TrainingExample)
    health = HealthEndpoints(SERVICE)
    health.add_ready_check("pipeline", pipeline.readiness)
    runner = await serve(health.mount(web.Application()), config.trainer_host, config.trainer_port)
    tasks = [
        asyncio.create_task(pipeline.run(stop)),
        asyncio.create_task(ColdStart(settings, config, trainer, publish_status).run(stop)),
    ]
    if config.retrain_interval > 0:
        tasks.append(asyncio.create_task(_every(config.retrain_interval, trainer.scheduled, stop)))
    log.info(
        "ready",
        task=config.task,
        retrain_interval=config.retrain_interval,
        mode=config.retrain_mode,
        bootstrap_min_labels=config.trainer_bootstrap_min_labels,
    )
    await stop.wait()
    log.info("stopping")
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    await consumer.stop()
    await producer.stop()
    log.info("stopped")


async def _every(interval_s: float, job, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if not stop.is_set():
            await job()


if __name__ == "__main__":
    run_until_signalled(main)
