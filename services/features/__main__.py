"""Entry point: ``python -m rtml.services.features`` (what ``rtml up`` runs).

A faust worker (``app.py``) plus, on the side port (RTML_FEATURES_PORT),
``/healthz``, ``/readyz`` (assigned, tables recovered, batch features loaded),
``/metrics`` and the request-driven adapter (``http_adapter.py``).
SIGTERM stops it gracefully: processed offsets are committed, state is in
the changelogs.
"""

from __future__ import annotations

import asyncio

import aiohttp
import faust
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from mode import Service
from rtml.services.features.app import SERVICE, FeaturesWorker, changelog_topic, lookup_topics
from rtml.services.features.batch_cache import BatchFeatureCache
from rtml.services.features.http_adapter import HttpAdapter
from rtml.shared import topics
from rtml.shared.faust_worker import run_worker
from rtml.shared.kafka import (
    DlqWriter,
    client_kwargs,
    ensure_topics,
    start_consumer,
    start_producer,
)
from rtml.shared.logging import configure_logging, get_logger
from rtml.shared.service import BrokerProbe, HealthEndpoints, serve
from rtml.shared.settings import Settings, get_settings

log = get_logger(SERVICE)
BATCH_FETCH_WAIT_MS = 1000


class SideServices(Service):
    """What runs next to the faust app: DLQ producer, batch feature cache, side HTTP port.

    A dependency of the faust worker, so it starts before the app (the DLQ is
    there before the first record) and stops after it.
    """

    def __init__(self, worker: FeaturesWorker) -> None:
        super().__init__()
        self._worker = worker
        self._cleanups: list = []

    async def on_start(self) -> None:
        worker, settings = self._worker, self._worker.settings
        producer = await start_producer(settings)
        self._cleanups.append(producer.stop)
        worker.dlq = DlqWriter(producer, SERVICE)
        # batch features change a few times a day: a long fetch wait keeps this
        # reader from polling the broker every few milliseconds for nothing
        reader = await start_consumer(
            settings, group_id=None, fetch_max_wait_ms=BATCH_FETCH_WAIT_MS
        )
        worker.batch = BatchFeatureCache(reader, settings.embedded)
        await worker.batch.start()
        self._cleanups.append(worker.batch.stop)
        await worker.app.watermarks.start()
        self._cleanups.append(worker.app.watermarks.close)
        http = aiohttp.ClientSession()
        self._cleanups.append(http.close)
        # faust notices a lost or hung broker late, and an idle consumer looks healthy
        probe = BrokerProbe(producer.client)
        self._cleanups.append(probe.start())
        health = HealthEndpoints(SERVICE)
        health.add_ready_check("broker", probe.readiness)
        health.add_ready_check("worker", worker.readiness)
        app = health.mount(HttpAdapter(worker, http).mount(web.Application()))
        runner = await serve(app, settings.features_host, settings.features_port)
        self._cleanups.append(runner.cleanup)
        log.info("side_port_ready", port=settings.features_port, bootstrap=settings.bootstrap)

    async def on_stop(self) -> None:
        for cleanup in reversed(self._cleanups):
            await cleanup()


async def prepare_topics(settings: Settings) -> None:
    """Create the topics; refuse to run if the lookup topics cannot match rtml.events."""
    internal = [*lookup_topics(settings).values(), changelog_topic(settings)]
    await ensure_topics(settings, [*topics.ALL, *internal])
    consumer = AIOKafkaConsumer(**client_kwargs(settings))
    await consumer.start()
    try:
        for topic in (topics.EVENTS, *internal):
            await consumer.topics()
            count = len(consumer.partitions_for_topic(topic.name) or ())
            if count != settings.partitions:
                raise SystemExit(
                    f"{topic.name} has {count} partitions, RTML_PARTITIONS={settings.partitions}: "
                    "state and lookups are placed by partition, so they must match"
                )
    finally:
        await consumer.stop()


def main() -> None:
    settings = get_settings()
    configure_logging(SERVICE, settings.log_level)
    asyncio.run(prepare_topics(settings))

    def build() -> tuple[faust.App, SideServices]:
        worker = FeaturesWorker(settings)
        return worker.app, SideServices(worker)

    run_worker(build, settings.log_level)


if __name__ == "__main__":
    main()
