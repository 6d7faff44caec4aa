"""Entry point: ``python -m rtml.services.gateway``, the request-driven wiring.

What ``rtml up --wiring request`` runs next to the other services: per
request, features -> router -> prediction over HTTP (``app.py``). Its side
port (RTML_GATEWAY_PORT) has ``POST /v1/predict``, ``/healthz``, ``/readyz``
(every upstream's /readyz is green) and ``/metrics``. SIGTERM stops taking
requests, then gives the prediction log a moment to reach the broker.
"""

from __future__ import annotations

import asyncio

import aiohttp
from rtml.services.gateway.app import (
    Gateway,
    HttpUpstreams,
    PredictionLog,
    UpstreamProbe,
    upstream_urls,
)
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.logging import configure_logging, get_logger
from rtml.shared.service import HealthEndpoints, run_until_signalled, serve
from rtml.shared.settings import get_settings

SERVICE = "gateway"
# concurrent connections to all upstreams together (aiohttp's default is 100)
MAX_CONNECTIONS = 256
LOG_DRAIN_S = 5.0


async def main(stop: asyncio.Event) -> None:
    settings = get_settings()
    configure_logging(SERVICE, settings.log_level)
    log = get_logger(SERVICE)
    await ensure_topics(settings)
    producer = await start_producer(settings)
    urls = upstream_urls(settings)
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
        timeout=aiohttp.ClientTimeout(total=settings.gateway_upstream_timeout_s),
    )
    predictions = PredictionLog(producer)
    probe = UpstreamProbe(http, urls)
    health = HealthEndpoints(SERVICE)
    health.add_ready_check("upstreams", probe.readiness)
    gateway = Gateway(HttpUpstreams(http, urls), predictions)
    runner = await serve(gateway.app(health), settings.gateway_host, settings.gateway_port)
    probing = asyncio.create_task(probe.run(stop), name="upstream-probe")
    log.info("ready", port=settings.gateway_port, upstreams=urls)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await runner.cleanup()
        await probing
        await predictions.drain(LOG_DRAIN_S)
        await http.close()
        await producer.stop()
        log.info("stopped")


if __name__ == "__main__":
    run_until_signalled(main)
