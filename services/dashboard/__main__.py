"""Entry point: ``python -m rtml.services.dashboard``, the live dashboard."""

from __future__ import annotations

import asyncio

from rtml.services.dashboard.aggregates import Dashboard
from rtml.services.dashboard.app import DashboardApp
from rtml.services.dashboard.feed import TopicFeed
from rtml.services.dashboard.settings import DashboardSettings
from rtml.shared.kafka import ensure_topics
from rtml.shared.logging import configure_logging, get_logger
from rtml.shared.service import HealthEndpoints, run_until_signalled, serve
from rtml.shared.tasks.registry import served_task

SERVICE = "dashboard"


async def main(stop: asyncio.Event) -> None:
    settings = DashboardSettings()
    configure_logging(SERVICE, settings.log_level)
    log = get_logger(SERVICE)
    dashboard = Dashboard(served_task(settings.dashboard_task, "RTML_DASHBOARD_TASK"))
    feed = TopicFeed(settings, dashboard)
    health = HealthEndpoints(SERVICE)
    health.add_ready_check("feed", feed.readiness)
    # the page is up first: it shows an empty dashboard while Kafka connects
    runner = await serve(
        DashboardApp(dashboard, settings.dashboard_push_interval_s, stop).http_app(health),
        settings.dashboard_host,
        settings.dashboard_port,
    )
    try:
        await ensure_topics(settings)
        await feed.start()
        log.info(
            "ready",
            bootstrap=settings.bootstrap,
            url=f"http://{settings.dashboard_host}:{settings.dashboard_port}/",
        )
        await stop.wait()
        log.info("stopping")
    finally:
        # stop is set, so open event streams end and the HTTP server closes promptly
        stop.set()
        await runner.cleanup()
        await feed.stop()
        log.info("stopped")


if __name__ == "__main__":
    run_until_signalled(main)
