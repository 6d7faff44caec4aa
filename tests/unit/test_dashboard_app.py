"""The dashboard's HTTP adapter, without Kafka: page, snapshot, event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from rtml.services.dashboard.aggregates import Dashboard
from rtml.services.dashboard.app import DashboardApp, SnapshotCache
from rtml.shared.service import HealthEndpoints

from rtml.tasks.eta.events import OrderPlaced

NOW = 1_800_000_000.0


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, Dashboard, asyncio.Event]]:
    dashboard = Dashboard("eta")
    stop = asyncio.Event()
    app = DashboardApp(dashboard, push_interval_s=0.05, stop=stop).http_app(
        HealthEndpoints("dashboard")
    )
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, dashboard, stop


async def test_the_page_and_its_files_are_served_under_a_strict_policy(client) -> None:
    http, _, _ = client
    page = await http.get("/")
    assert page.status == 200
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    body = await page.text()
    for asset in ("/static/dashboard.js", "/static/dashboard.css", "/static/favicon.svg"):
        assert asset in body
        assert (await http.get(asset)).status == 200


async def test_snapshot_is_the_aggregates_as_json(client) -> None:
    http, dashboard, _ = client
    dashboard.observe(
        OrderPlaced(ts=1.0, order_id="o", restaurant_id="r", zone_id="z", distance_km=1, n_items=1),
        NOW,
    )
    response = await http.get("/api/snapshot")
    assert response.content_type == "application/json"
    assert (await response.json())["totals"] == {"events": 1}


async def test_the_stream_pushes_snapshots_and_ends_when_the_service_stops(client) -> None:
    http, _, stop = client
    response = await http.get("/events/stream")
    assert response.headers["Content-Type"] == "text/event-stream"
    assert (await response.content.readline()).startswith(b"retry: ")
    await response.content.readline()
    assert await response.content.readline() == b"event: snapshot\n"
    data = await response.content.readline()
    assert "totals" in json.loads(data.removeprefix(b"data: "))
    stop.set()
    await asyncio.wait_for(response.content.read(), timeout=5)  # the stream closes
    assert response.content.at_eof()


def test_snapshot_cache_renders_at_most_once_per_max_age() -> None:
    dashboard = Dashboard("eta")
    now = [NOW]
    cache = SnapshotCache(dashboard, max_age_s=1.0, clock=lambda: now[0])
    first = cache.text()
    dashboard.observe(
        OrderPlaced(ts=1.0, order_id="o", restaurant_id="r", zone_id="z", distance_km=1, n_items=1),
        NOW,
    )
    assert cache.text() == first
    now[0] += 1.0
    assert json.loads(cache.text())["totals"] == {"events": 1}
