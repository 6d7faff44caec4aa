"""Entry point: ``python -m rtml.services.collector`` (what ``rtml up`` runs).

A faust worker (``app.py``: the join) and, next to it in the same process,
the warehouse writer (``warehouse_writer.py``) and, on the side port
(RTML_COLLECTOR_PORT, 8084), ``/healthz``, ``/readyz`` (join partitions
assigned and tables recovered, warehouse writer assigned) and ``/metrics``.
SIGTERM stops it gracefully: processed offsets are committed, the join state
is in the changelogs, every warehouse file is whole.
"""

from __future__ import annotations

import asyncio
import contextlib

import faust
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from mode import Service
from rtml.services.collector.app import SERVICE, CollectorWorker, changelog_topics, join_topic
from rtml.services.collector.config import CollectorSettings
from rtml.services.collector.warehouse_writer import WarehouseWriter
from rtml.shared import topics
from rtml.shared.faust_worker import run_worker
from rtml.shared.kafka import DlqWriter, client_kwargs, ensure_topics, start_producer
from rtml.shared.logging import configure_logging, get_logger
from rtml.shared.model_announcements import follow, open_announcement_reader
from rtml.shared.service import BrokerProbe, HealthEndpoints, serve
from rtml.shared.settings import Settings, get_settings

log = get_logger(SERVICE)


class SideServices(Service):
    """What runs next to the faust app: producer and DLQ, warehouse writer, side HTTP port.

    A dependency of the faust worker, so it starts before the app (the producer
    is there before the first record) and stops after it.
    """

    def __init__(self, worker: CollectorWorker) -> None:
        super().__init__()
        self._worker = worker
        self._cleanups: list = []

    async def on_start(self) -> None:
        worker, settings, config = self._worker, self._worker.settings, self._worker.config
        producer = await start_producer(settings)
        self._cleanups.append(producer.stop)
        worker.producer = producer
        worker.dlq = DlqWriter(producer, SERVICE)
        writer = WarehouseWriter(settings, config, worker.dlq)
        await writer.start()
        self._cleanups.append(writer.stop)
        # retired versions leave the live-error metrics
        announcements = await open_announcement_reader(settings)
        self._cleanups.append(announcements.stop)
        following = asyncio.create_task(follow(announcements, worker.live_error.on_announcement))
        self._cleanups.append(lambda: _cancelled(following))
        # faust notices a lost or hung broker late, and an idle consumer looks healthy
        probe = BrokerProbe(producer.client)
        self._cleanups.append(probe.start())
        health = HealthEndpoints(SERVICE)
        health.add_ready_check("broker", probe.readiness)
        health.add_ready_check("join", worker.readiness)
        health.add_ready_check("warehouse", writer.readiness)
        runner = await serve(
            health.mount(web.Application()), config.collector_host, config.collector_port
        )
        self._cleanups.append(runner.cleanup)
        log.info("side_port_ready", port=config.collector_port, bootstrap=settings.bootstrap)

    async def on_stop(self) -> None:
        for cleanup in reversed(self._cleanups):
            await cleanup()


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def prepare_topics(settings: Settings, config: CollectorSettings) -> None:
    """Create the topics; refuse to run if the join topic and the tables disagree."""
    internal = [join_topic(settings, config), *changelog_topics(settings, config)]
    await ensure_topics(settings, [*topics.ALL, *internal])
    consumer = AIOKafkaConsumer(**client_kwargs(settings))
    await consumer.start()
    try:
        await consumer.topics()
        for topic in internal:
            count = len(consumer.partitions_for_topic(topic.name) or ())
            if count != settings.partitions:
                raise SystemExit(
                    f"{topic.name} has {count} partitions, RTML_PARTITIONS={settings.partitions}: "
                    "the join state is placed by partition, so they must match"
                )
    finally:
        await consumer.stop()


def main() -> None:
    settings, config = get_settings(), CollectorSettings()
    configure_logging(SERVICE, settings.log_level)
    asyncio.run(prepare_topics(settings, config))

    def build() -> tuple[faust.App, SideServices]:
        worker = CollectorWorker(settings, config)
        return worker.app, SideServices(worker)

    run_worker(build, settings.log_level)


if __name__ == "__main__":
    main()
