"""The router's adapters without Kafka: the topic handler, the HTTP routes, the metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from rtml.services.router.app import RouterApp
from rtml.services.router.handlers import Router, RouterConfig, TaskConfig
from rtml.services.router.ledger import LogPosition
from rtml.services.router.metrics import PosteriorCollector
from rtml.services.router.models import AnnouncementFollower
from rtml.shared import topics
from rtml.shared.contracts import PredictRouted
from rtml.shared.model_store import ModelStore
from rtml.shared.pipeline import Incoming
from rtml.shared.service import HealthEndpoints
from rtml.shared.settings import Settings

from tests.unit.test_router_handlers import FAST, announcement, enriched, reward


def router_with(*arms: str, policy: str = "thompson_beta") -> Router:
    params = FAST if policy.startswith("thompson") else {}
    router = Router(RouterConfig(tasks={"eta": TaskConfig(policy, params), "recs": TaskConfig()}))
    for arm in arms:
        router.on_announcement(announcement(arm))
    return router


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = RouterApp(router_with("v1", "v2", policy="epsilon_greedy"), np.random.default_rng(0))
    async with TestClient(TestServer(app.http_app(HealthEndpoints("router")))) as test_client:
        yield test_client


async def test_each_enriched_request_goes_to_the_routed_topic_under_its_request_id():
    app = RouterApp(router_with("v1"), np.random.default_rng(0))
    seen_at = time.time()
    batch = [Incoming(enriched(f"r{i}"), None, seen_at) for i in range(3)]  # type: ignore[arg-type]

    outgoing = await app.handle_batch(batch)

    assert [o.topic for o in outgoing] == [topics.PREDICT_ROUTED.name] * 3
    assert [o.message.id for o in outgoing] == ["r0", "r1", "r2"]
    assert all(isinstance(o.message, PredictRouted) and o.message.arm == "v1" for o in outgoing)
    # routed since the batch was read: the router's own hop, after the upstream ones
    assert all(list(o.message.timings_ms) == ["features", "routing"] for o in outgoing)


async def test_post_route_answers_the_routed_request(client: TestClient):
    response = await client.post("/v1/route", json=enriched("over-http").model_dump(mode="json"))

    body = await response.json()
    assert response.status == 200
    assert body["id"] == "over-http" and body["arm"] in ("v1", "v2")
    assert body["policy"] == "epsilon_greedy" and body["propensity"] == 0.5
    assert list(body["timings_ms"]) == ["features", "routing"]


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"{nope", "body"), (b"[1]", "body"), (b'{"task": "eta", "ts": 1}', "request_ts")],
)
async def test_post_route_refuses_a_bad_body_naming_the_field(
    client: TestClient, body: bytes, field: str
):
    response = await client.post("/v1/route", data=body)

    problem = (await response.json())["problems"][0]
    assert response.status == 400 and problem["field"] == field


async def test_state_shows_an_undefined_interval_as_null(client: TestClient):
    response = await client.get("/v1/state")

    states = {state["task"]: state for state in await response.json()}
    assert [arm["ci_low"] for arm in states["eta"]["arms"]] == [None, None]  # no rewards yet
    assert states["recs"]["arms"] == []


def test_metrics_give_each_arm_its_share_and_posterior_and_drop_a_retired_arm():
    router = router_with("v1", "v2")
    for i in range(10):
        router.on_reward(reward(f"r{i}", "v1", 1.0), LogPosition(0, i))
    registry = CollectorRegistry()
    registry.register(PosteriorCollector(router))

    text = generate_latest(registry).decode()
    router.on_announcement(announcement("v2", "retired"))
    after_retirement = generate_latest(registry).decode()

    assert 'rtml_router_arm_rewards{arm="v1",task="eta"} 10.0' in text
    assert 'rtml_router_arm_posterior_mean{arm="v1",task="eta"} 0.9166666666666666' in text
    assert 'rtml_router_arm_ci_high{arm="v2",task="eta"} 0.975' in text
    assert 'rtml_router_arm_share{arm="v2",task="eta"}' in text
    assert 'arm="v2"' not in after_retirement
    p_best = {
        arm: registry.get_sample_value("rtml_router_arm_p_best", {"task": "eta", "arm": arm})
        for arm in ("v1", "v2")
    }
    assert p_best["v2"] is None and p_best["v1"] == 1.0  # the lone arm left


def test_p_best_follows_the_evidence_and_is_empty_for_item_arms():
    router = router_with("v1", "v2")
    for i in range(30):
        router.on_reward(reward(f"r{i}", "v1", 1.0), LogPosition(0, i))
        router.on_reward(reward(f"s{i}", "v2", 0.0), LogPosition(1, i))

    p_best = router.p_best("eta")

    assert set(p_best) == {"v1", "v2"} and p_best["v1"] > 0.99
    assert sum(p_best.values()) == pytest.approx(1.0)
    assert router.p_best("recs") == {}  # no version arms


def test_a_retired_versions_decision_series_go_with_it():
    router = router_with("v1", "v2")
    app = RouterApp(router, np.random.default_rng(0))
    for i in range(20):
        app.route(enriched(f"r{i}"), time.time())
    follower = AnnouncementFollower(Settings(), router, ModelStore(Path("unused")))

    follower.apply(announcement("v2", "retired"))

    def decisions(arm: str) -> float | None:
        labels = {"task": "eta", "arm": arm}
        return REGISTRY.get_sample_value("rtml_router_decisions_total", labels)

    assert decisions("v1") and decisions("v2") is None
