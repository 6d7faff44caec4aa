"""The metrics every service shares: HTTP by route template, forgetting series, lag."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from rtml.shared.metrics import ConsumerLag, Lag, forget_series
from rtml.shared.service import HealthEndpoints


def series(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async def item(request: web.Request) -> web.Response:
        if request.match_info["item_id"] == "missing":
            raise web.HTTPNotFound()
        return web.json_response({"id": request.match_info["item_id"]})

    app = web.Application()
    app.router.add_get("/v1/items/{item_id}", item)
    async with TestClient(TestServer(HealthEndpoints("test").mount(app))) as test_client:
        yield test_client


async def test_requests_are_counted_by_route_template_not_by_path(client: TestClient):
    route = "/v1/items/{item_id}"
    before = series("rtml_http_requests_total", route=route, method="GET", status="200") or 0
    # ids no hex digest (the git commit in rtml_build_info) can contain
    for item_id in ("item-q1", "item-q2", "item-q3"):
        assert (await client.get(f"/v1/items/{item_id}")).status == 200
    assert (await client.get("/v1/items/missing")).status == 404

    after = series("rtml_http_requests_total", route=route, method="GET", status="200")
    assert after == before + 3
    assert series("rtml_http_requests_total", route=route, method="GET", status="404")
    assert series("rtml_http_request_seconds_count", route=route, method="GET")
    exposition = generate_latest().decode()
    assert "item-q" not in exposition


async def test_unknown_paths_and_methods_share_one_series_each(client: TestClient):
    def unmatched(method: str, status: str) -> float:
        return series("rtml_http_requests_total", route="unmatched", method=method, status=status)

    for path in ("/wp-admin/x.php", "/.env", "/v1/items", "/a/b/c/d"):
        assert (await client.get(path)).status == 404
    assert (await client.request("PROPFIND", "/v1/items/a1")).status == 405

    assert unmatched("GET", "404") >= 4
    assert unmatched("other", "405") >= 1
    assert "wp-admin" not in generate_latest().decode()


def test_health_endpoints_export_build_info_and_readiness():
    health = HealthEndpoints("test")
    verdict: list[bool | str] = [True]
    health.add_ready_check("thing", lambda: verdict[0])

    assert series("rtml_ready") == 1.0
    verdict[0] = "the thing is not there"
    assert series("rtml_ready") == 0.0
    (info,) = [m for m in REGISTRY.collect() if m.name == "rtml_build"]
    (sample,) = info.samples
    assert sample.labels["service"] == "test" and sample.labels["version"]


def test_forget_series_removes_every_series_of_a_version_and_only_those():
    registry = CollectorRegistry()
    made = Counter("made_total", "made", ["task", "version", "fell_back"], registry=registry)
    made.labels("eta", "v1", "false").inc()
    made.labels("eta", "v1", "true").inc()
    made.labels("eta", "v2", "false").inc()

    assert forget_series(made, version="v1") == 2

    assert (
        registry.get_sample_value(
            "made_total", {"task": "eta", "version": "v1", "fell_back": "false"}
        )
        is None
    )
    assert (
        registry.get_sample_value(
            "made_total", {"task": "eta", "version": "v1", "fell_back": "true"}
        )
        is None
    )
    assert (
        registry.get_sample_value(
            "made_total", {"task": "eta", "version": "v2", "fell_back": "false"}
        )
        == 1
    )
    assert forget_series(made, version="v1") == 0


def test_consumer_lag_reports_each_partition_once_the_one_further_behind():
    lag = ConsumerLag()
    lag.add_source(lambda: [Lag("g", "t", 0, 5), Lag("g", "t", 1, 0)])
    lag.add_source(lambda: [Lag("g", "t", 0, 7)])
    registry = CollectorRegistry()
    registry.register(lag)

    def value(partition: str) -> float | None:
        labels = {"group": "g", "topic": "t", "partition": partition}
        return registry.get_sample_value("rtml_consumer_lag", labels)

    assert value("0") == 7
    assert value("1") == 0
