"""Entry point: ``python -m rtml.services.ingestion`` (what ``rtml up`` runs)."""

from __future__ import annotations

import asyncio

from rtml.services.ingestion.app import Ingestion
from rtml.services.ingestion.config import IngestionSettings
from rtml.services.ingestion.predictions import PredictionWaiter
from rtml.shared.kafka import ensure_topics, start_consumer, start_producer
from rtml.shared.logging import configure_logging, get_logger
from rtml.shared.service import BrokerProbe, HealthEndpoints, run_until_signalled, serve
from rtml.shared.settings import get_settings

SERVICE = "ingestion"


async def main(stop: asyncio.Event) -> None:
    settings = get_settings()
    configure_logging(SERVICE, settings.log_level)
    log = get_logger(SERVICE)
    await ensure_topics(settings)
    producer = await start_producer(settings)
    limits = IngestionSettings()
    waiter = PredictionWaiter(
        await start_consumer(settings, group_id=None, auto_offset_reset="latest"),
        keep=limits.ingest_recent_predictions,
    )
    await waiter.start()
    ingestion = Ingestion(settings, producer, waiter, limits)
    health = HealthEndpoints(SERVICE)
    # a probe, not the last send's outcome: a replica taken out of the load balancer
    # gets no sends, so a failed one would keep it unready for good
    probe = BrokerProbe(producer.client)
    stop_probing = probe.start()
    health.add_ready_check("broker", probe.readiness)
    runner = await serve(ingestion.app(health), settings.ingest_host, settings.ingest_port)
    log.info("ready", bootstrap=settings.bootstrap, port=settings.ingest_port)
    await stop.wait()
    log.info("stopping")
    # stop taking requests first, then flush what was accepted, then let go of Kafka
    await runner.cleanup()
    await stop_probing()
    await producer.stop()
    await waiter.stop()
    log.info("stopped")


if __name__ == "__main__":
    run_until_signalled(main)
