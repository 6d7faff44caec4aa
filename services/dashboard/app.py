"""The dashboard's HTTP adapter: the page, its static files, ``/api/snapshot`` (JSON)
and ``/events/stream`` (the same snapshot pushed by Server-Sent Events)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import Gauge
from rtml.services.dashboard.aggregates import Dashboard
from rtml.shared.service import HealthEndpoints

STATIC = Path(__file__).parent / "static"
# EventSource reconnects after this long when the stream breaks (a dashboard restart)
RECONNECT_MS = 2000
# Everything the page loads comes from here; SVG presentation attributes are not styles.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

STREAMS_OPEN = Gauge("rtml_dashboard_streams_open", "pages receiving live updates")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SnapshotCache:
    """The snapshot as JSON text, rendered at most once per ``max_age_s`` for all pages."""

    def __init__(
        self, dashboard: Dashboard, max_age_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._dashboard = dashboard
        self._max_age_s = max_age_s
        self._clock = clock
        self._text = ""
        self._rendered_at = -float("inf")

    def text(self) -> str:
        now = self._clock()
        if now - self._rendered_at >= self._max_age_s:
            # allow_nan=False: the aggregates promise plain JSON; a NaN here is their bug
            self._text = json.dumps(
                self._dashboard.snapshot(now), allow_nan=False, separators=(",", ":")
            )
            self._rendered_at = now
        return self._text


class DashboardApp:
    def __init__(self, dashboard: Dashboard, push_interval_s: float, stop: asyncio.Event) -> None:
        # half the push interval: every push carries a snapshot at most that old
        self._snapshots = SnapshotCache(dashboard, push_interval_s / 2)
        self._push_interval_s = push_interval_s
        self._stop = stop

    def http_app(self, health: HealthEndpoints) -> web.Application:
        app = web.Application(middlewares=[_security_headers])
        app.router.add_get("/", self.page)
        app.router.add_get("/api/snapshot", self.snapshot)
        app.router.add_get("/events/stream", self.stream)
        app.router.add_static("/static/", STATIC, append_version=False)
        return health.mount(app)

    async def page(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def snapshot(self, _: web.Request) -> web.Response:
        return web.Response(text=self._snapshots.text(), content_type="application/json")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                # a reverse proxy must pass each event on at once
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        STREAMS_OPEN.inc()
        try:
            await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
            # ends when the service stops, so shutdown never waits on an open page
            while not self._stop.is_set():
                await response.write(
                    f"event: snapshot\ndata: {self._snapshots.text()}\n\n".encode()
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._push_interval_s)
        except ConnectionResetError:
            pass  # the page was closed
        finally:
            STREAMS_OPEN.dec()
        return response


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    return response
