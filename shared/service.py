"""The kit every service mounts: health endpoints, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, Info, generate_latest
from rtml.shared.build import git_commit, package_version
from rtml.shared.logging import get_logger
from rtml.shared.metrics import http_metrics

log = get_logger(__name__)

ReadyCheck = Callable[[], bool | str]

BUILD = Info("rtml_build", "the service and the rtml build it runs")
READY = Gauge("rtml_ready", "1 when /readyz answers 200, 0 when it answers 503")


class HealthEndpoints:
    """``/healthz`` (alive, never depends on Kafka), ``/readyz``, ``/metrics``.

    A ready check returns True when satisfied, or False / a string saying why not.
    ``/metrics`` carries what every service exports: ``rtml_build_info``,
    ``rtml_ready`` (the ready checks, run at scrape time) and the HTTP metrics of
    every route of the app it is mounted on (``shared/metrics.py``).
    """

    def __init__(self, service: str) -> None:
        self._checks: dict[str, ReadyCheck] = {}
        BUILD.info({"service": service, "version": package_version(), "commit": git_commit() or ""})
        READY.set_function(lambda: 0.0 if self.not_ready() else 1.0)

    def add_ready_check(self, name: str, check: ReadyCheck) -> None:
        self._checks[name] = check

    def mount(self, app: web.Application) -> web.Application:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        # outermost, so that it sees the status the client gets
        app.middlewares.insert(0, http_metrics)
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


class BrokerProbe:
    """Whether the broker answered a metadata request lately.

    aiokafka notices a hung broker only when a request times out (40 s), and a
    consumer that fetches nothing looks the same as an idle one; a small request
    every ``every_s`` makes a lost or hung broker show on ``/readyz`` within
    ``stale_after_s``, and a recovered one as soon as it answers again.
    """

    def __init__(
        self, client: Any, every_s: float = 1.0, timeout_s: float = 2.0, stale_after_s: float = 5.0
    ) -> None:
        self._client = client  # an AIOKafkaClient, e.g. a producer's ``client``
        self._every_s = every_s
        self._timeout_s = timeout_s
        self._stale_after_s = stale_after_s
        self.last_answer = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._client.fetch_all_metadata(), self._timeout_s)
                self.last_answer = time.monotonic()
            except Exception as exc:  # any failure is the answer: the broker did not reply
                log.debug("broker_probe_failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), self._every_s)
            except TimeoutError:
                pass

    def start(self) -> Callable[[], Awaitable[None]]:
        """Probe in the background until the returned coroutine function is awaited."""
        stop = asyncio.Event()
        probing = asyncio.create_task(self.run(stop), name="broker-probe")

        async def stop_probing() -> None:
            stop.set()
            await probing

        return stop_probing

    def readiness(self) -> bool | str:
        silent_for = time.monotonic() - self.last_answer
        if silent_for > self._stale_after_s:
            return f"the broker has not answered for {silent_for:.0f}s"
        return True


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
