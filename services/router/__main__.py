"""Entry point: ``python -m rtml.services.router``, the bandit router.

Start-up rebuilds the state before the first decision:
1. read rtml.router.state to its end, the last checkpoint per task (policy
   snapshot, champion, decisions, rewards offsets folded), and restore it;
2. replay rtml.models to its end (arms follow the versions) and take each
   task's champion from the model store;
3. fold rtml.rewards from the checkpoints' offsets to the end, so the state is
   checkpoint + the rewards after it, each exactly once (``ledger.py``);
4. only then join the consumer group on rtml.predict.enriched and route.

Replicas: routing scales out by that group's partitions. Every replica folds
every reward (``rewards.py``), so each routes with the whole posterior and
none counts a reward twice; the replica holding partition 0 of
rtml.predict.enriched writes the checkpoints (every RTML_ROUTER_CHECKPOINT_EVERY
rewards and on SIGTERM) and carries out promotions.
"""

from __future__ import annotations

import asyncio

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from rtml.services.router.app import RouterApp
from rtml.services.router.handlers import Router, RouterConfig
from rtml.services.router.metrics import PosteriorCollector
from rtml.services.router.models import AnnouncementFollower, Promoter
from rtml.services.router.rewards import RewardFollower
from rtml.services.router.state import read_checkpoints
from rtml.shared import topics
from rtml.shared.bandits.policies import PolicyError
from rtml.shared.contracts import PredictEnriched
from rtml.shared.kafka import ensure_topics, start_consumer, start_producer
from rtml.shared.logging import configure_logging, get_logger
from rtml.shared.model_store import ModelStore
from rtml.shared.pipeline import Pipeline
from rtml.shared.service import HealthEndpoints, run_until_signalled, serve
from rtml.shared.settings import get_settings

SERVICE = "router"
GROUP_ID = "rtml-router"
# its holder is the one replica that checkpoints and promotes
LEADER_PARTITION = TopicPartition(topics.PREDICT_ENRICHED.name, 0)


async def main(stop: asyncio.Event) -> None:
    settings = get_settings()
    configure_logging(SERVICE, settings.log_level)
    log = get_logger(SERVICE)
    await ensure_topics(settings)
    router = Router(RouterConfig.from_settings(settings))
    app = RouterApp(router, np.random.default_rng(settings.router_seed))
    REGISTRY.register(PosteriorCollector(router))
    store = ModelStore(settings.model_store)
    producer = await start_producer(settings)
    routing_consumer: AIOKafkaConsumer | None = None
    pipeline: Pipeline | None = None

    def leads() -> bool:
        return routing_consumer is not None and LEADER_PARTITION in routing_consumer.assignment()

    models = AnnouncementFollower(settings, router, store)
    rewards = RewardFollower(
        settings,
        router,
        await start_consumer(settings, group_id=None),
        producer,
        Promoter(router, store, producer),
        leads,
    )
    health = HealthEndpoints(SERVICE)
    health.add_ready_check("state", lambda: rewards.caught_up or "rebuilding the posteriors")
    health.add_ready_check("arms", models.readiness)
    health.add_ready_check(
        "pipeline", lambda: pipeline.readiness() if pipeline else "not routing yet"
    )
    # the side port is up first: /healthz answers while the state is rebuilt
    runner = await serve(app.http_app(health), settings.router_host, settings.router_port)
    try:
        checkpoints = await read_checkpoints(settings)
        for state in checkpoints.values():
            try:
                router.restore(state)
            except PolicyError as exc:
                # the task starts empty and folds every reward on the topic instead
                log.error("checkpoint_not_restored", task=state.task, error=str(exc))
        await models.start()
        await rewards.catch_up()
        log.info("state_rebuilt", checkpoints=sorted(checkpoints))
        routing_consumer = await start_consumer(
            settings, topics.PREDICT_ENRICHED.name, group_id=GROUP_ID
        )
        pipeline = Pipeline(SERVICE, routing_consumer, producer, app.handle_batch, PredictEnriched)
        log.info("ready", bootstrap=settings.bootstrap, port=settings.router_port)
        async with asyncio.TaskGroup() as loops:
            loops.create_task(pipeline.run(stop), name="routing")
            loops.create_task(models.run(stop), name="models")
            loops.create_task(rewards.run(stop), name="rewards")
        # every loop finished its last batch; still in the group, so leadership is known
        if leads():
            await rewards.checkpoint()
    finally:
        log.info("stopping")
        await runner.cleanup()
        if routing_consumer is not None:
            await routing_consumer.stop()
        await rewards.stop()
        await models.stop()
        await producer.stop()
        log.info("stopped")


if __name__ == "__main__":
    run_until_signalled(main)
