"""The kit every service mounts: health endpoints, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.logging import get_logger

log = get_logger(__name__)

ReadyCheck = Callable[[], bool | str]


class HealthEndpoints:
    """``/healthz`` (alive, never depends on Kafka), ``/readyz``, ``/metrics``.

    A ready check returns True when satisfied, or False / a string saying why not.
    """

    def __init__(self) -> None:
        self._checks: dict[str, ReadyCheck] = {}

    def add_ready_check(self, name: str, check: ReadyCheck) -> None:
        self._checks[name] = check

    def mount(self, app: web.Application) -> web.Application:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    def not_ready(self) -> dict[str, str]:
        failing = {}
        for name, check in self._checks.items():
            try:
                verdict = check()
            except Exception as exc:  # a broken check means not ready, never a 500
                verdict = f"check raised {type(exc).__name__}: {exc}"
            if verdict is not True:
                failing[name] = verdict or "not ready"
        return failing

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        failing = self.not_ready()
        if failing:
            return web.json_response({"status": "not ready", "failing": failing}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    log.info("http_listening", host=host, port=port)
    return runner


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)``; SIGTERM or SIGINT sets ``stop`` so that it can drain and exit."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
