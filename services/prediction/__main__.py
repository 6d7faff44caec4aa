"""Entry point: ``python -m rtml.services.prediction`` (what ``rtml up`` runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from rtml.services.prediction.app import PredictionApp
from rtml.services.prediction.coldstart import TrainerProgress
from rtml.services.prediction.handlers import Scorer
from rtml.services.prediction.models import ModelFollower
from rtml.shared import topics
from rtml.shared.contracts import PredictRouted
from rtml.shared.kafka import ensure_topics, start_consumer, start_producer
from rtml.shared.logging import configure_logging, get_logger
from rtml.shared.model_store import ModelStore
from rtml.shared.pipeline import Pipeline
from rtml.shared.service import HealthEndpoints, run_until_signalled, serve
from rtml.shared.settings import get_settings
from rtml.shared.tasks.registry import served_task, tasks

SERVICE = "prediction"
GROUP_ID = "rtml-prediction"


async def main(stop: asyncio.Event) -> None:
    settings = get_settings()
    configure_logging(SERVICE, settings.log_level)
    log = get_logger(SERVICE)
    await ensure_topics(settings)
    scorer = Scorer()
    progress = TrainerProgress()
    follower = ModelFollower(settings, ModelStore(settings.model_store), scorer, progress)
    hooks = [spec.serving() for spec in tasks().values() if spec.serving is not None]
    app = PredictionApp(scorer, hooks)
    pipeline: Pipeline | None = None

    def consuming() -> bool | str:
        return pipeline.readiness() if pipeline else "waiting for a champion before consuming"

    health = HealthEndpoints(SERVICE)
    task = served_task(settings.prediction_task, "RTML_PREDICTION_TASK")
    health.add_ready_check("champion", lambda: follower.readiness(task))
    health.add_ready_check("pipeline", consuming)
    # the side port is up first: /healthz answers while the models load
    runner = await serve(app.http_app(health), settings.prediction_host, settings.prediction_port)
    serving = [asyncio.create_task(hook.run(settings)) for hook in hooks]
    # what the trainer says about the first model, followed only while there is none
    trainer_progress = asyncio.create_task(progress.follow(settings))
    try:
        await follower.start()
        # joining the group only with a champion in hand: a replica that cannot
        # score must not hold partitions (nor dead-letter what is on them)
        champion = await _first(follower.wait_for_champion(task), stop)
        trainer_progress.cancel()
        if not champion:
            return
        producer = await start_producer(settings)
        consumer = await start_consumer(settings, topics.PREDICT_ROUTED.name, group_id=GROUP_ID)
        pipeline = Pipeline(
            SERVICE,
            consumer,
            producer,
            app.handle_batch,
            expect=PredictRouted,
            max_records=settings.prediction_max_batch,
        )
        log.info("consuming", bootstrap=settings.bootstrap, max_batch=settings.prediction_max_batch)
        try:
            await pipeline.run(stop)
        finally:
            # the loop finished its last batch (produced, acked, committed) before returning
            await consumer.stop()
            await producer.stop()
    finally:
        log.info("stopping")
        await runner.cleanup()
        for work in (*serving, trainer_progress):
            work.cancel()
        await asyncio.gather(*serving, trainer_progress, return_exceptions=True)
        await follower.stop()
        log.info("stopped")


async def _first(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends or ``stop`` is set; True if the work ended first."""
    working = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    done, pending = await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return working in done


if __name__ == "__main__":
    run_until_signalled(main)
