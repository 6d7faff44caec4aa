"""Contextual routing of recs without Kafka: contexts from recs@1 features, items routed
with propensities, rewards folded exactly once from their own features, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from rtml.services.router.app import RouterApp
from rtml.services.router.contextual_routing import (
    ContextEncoder,
    ContextSpec,
    MissingContext,
    pack,
    unpack,
)
from rtml.services.router.handlers import RewardOutcome, Router, RouterConfig, TaskConfig
from rtml.services.router.ledger import LogPosition
from rtml.shared.bandits.contextual import ContextualPolicyError, LinUCB
from rtml.shared.bandits.policies import PolicyError
from rtml.shared.contracts import (
    MAX_MESSAGE_BYTES,
    FeatureVector,
    PredictEnriched,
    Reward,
    RouterState,
    decode,
    encode,
)
from rtml.shared.service import HealthEndpoints
from rtml.shared.settings import Settings

from rtml.tasks.recs.features import ITEM_EMBEDDING_DIM
from rtml.tasks.recs.spec import TASK as RECS
from tests.unit.test_router_handlers import announcement, enriched

TS = 1_700_000_000.0
ITEMS = RECS.router.items
assert ITEMS is not None
OBD = ContextSpec.of(ITEMS)
SMALL = ContextSpec.of(dataclasses.replace(ITEMS, count=5, categories=(5, 2, 2, 2)))


def recs_features(user: tuple[float, ...] = (-1.0,) * 4, session: float = 0.0) -> FeatureVector:
    values = {feature.name: feature.default for feature in RECS.features}
    values.update({f"user_feature_{i}": code for i, code in enumerate(user)})
    values.update({f"session_emb_{i}": session * (i + 1) for i in range(ITEM_EMBEDDING_DIM)})
    return FeatureVector(
        feature_set="recs@1",
        names=list(values),
        values=list(values.values()),
        freshness_s=[None] * len(values),
        defaulted=[False] * len(values),
    )


def recs_request(request_id: str, user0: int = 0) -> PredictEnriched:
    return PredictEnriched(
        id=request_id,
        ts=TS,
        task="recs",
        entities={"session_id": f"s-{request_id}"},
        request_ts=TS,
        features=recs_features((float(user0), 0.0, 1.0, 0.0)),
    )


def recs_reward(request: PredictEnriched, arm: str, value: float, **changes) -> Reward:
    fields = dict(id=request.id, ts=TS, task="recs", arm=arm, reward=value)
    return Reward(**{**fields, "features": request.features, **changes})


def contextual_router(policy: str = "linucb", spec: ContextSpec = SMALL, **params) -> Router:
    tasks = {"eta": TaskConfig(), "recs": TaskConfig(policy, params, context=spec)}
    return Router(RouterConfig(tasks=tasks))


def test_the_context_is_a_bias_the_user_one_hot_blocks_and_the_session_embedding():
    encoder = ContextEncoder(
        ContextSpec.of(dataclasses.replace(ITEMS, count=3, categories=(3, 2, 4, 2)))
    )
    # codes: known, out of range, unknown (-1), not an integer
    context = encoder.encode(recs_features((2.0, 5.0, -1.0, 0.5), session=0.25))

    assert context.shape == (1 + 11 + ITEM_EMBEDDING_DIM,)
    assert context[:12].tolist() == [1.0, 0, 0, 1] + [0, 0] + [0, 0, 0, 0] + [0, 0]
    np.testing.assert_allclose(context[12:], 0.25 * np.arange(1, ITEM_EMBEDDING_DIM + 1))


def test_features_without_the_context_names_are_refused():
    features = FeatureVector(
        feature_set="eta@1", names=["distance_km"], values=[1.0], freshness_s=[None],
        defaulted=[False],
    )  # fmt: skip
    with pytest.raises(MissingContext, match="user_feature_0"):
        ContextEncoder(SMALL).encode(features)


@pytest.mark.parametrize("policy", ["linucb", "linear_ts", "epsilon_greedy_linear"])
def test_a_recs_request_is_routed_to_an_item_with_its_propensity(policy: str):
    router = contextual_router(policy)
    request = recs_request("r1")

    routed = router.route(request, np.random.default_rng(0))

    assert routed.policy == policy and routed.model_version is None
    assert routed.arm in {str(item) for item in range(SMALL.n_items)}
    # nothing learned yet: every item is as good as any other
    assert routed.propensity == pytest.approx(1 / SMALL.n_items, abs=0.002)
    assert (routed.id, routed.features) == (request.id, request.features)
    assert router.arms("recs") == ("0", "1", "2", "3", "4")
    assert router.state("recs", TS).decisions == 1


def test_rewards_are_folded_once_from_their_own_features_and_move_the_posterior():
    router = contextual_router()
    request = recs_request("r1", user0=2)
    before = router.state("recs", TS).snapshot

    outcomes = [
        router.on_reward(recs_reward(request, "2", 1.0), LogPosition(0, 0)),
        router.on_reward(recs_reward(request, "2", 1.0), LogPosition(0, 1)),  # a repeat
    ]

    state = router.state("recs", TS)
    assert outcomes == [RewardOutcome.COUNTED, RewardOutcome.DUPLICATE]
    assert state.snapshot["pulls"] == [0, 0, 1, 0, 0]
    assert state.snapshot["b"] != before["b"]
    assert [arm.pulls for arm in state.arms] == [0, 0, 1, 0, 0]
    assert state.arms[2].mean == 1.0
    assert state.reward_offsets == {"0": 2}


def test_a_reward_for_no_item_is_not_folded_and_one_without_features_is_refused():
    router = contextual_router()
    request = recs_request("r1")

    unknown = router.on_reward(recs_reward(request, "v3", 1.0, id="a"), LogPosition(0, 0))
    beyond = router.on_reward(recs_reward(request, "5", 1.0, id="b"), LogPosition(0, 1))
    padded = router.on_reward(recs_reward(request, "01", 1.0, id="p"), LogPosition(0, 2))
    without = recs_reward(request, "1", 1.0, id="c", features=None)
    with pytest.raises(MissingContext, match="no features") as raised:
        router.on_reward(without, LogPosition(0, 3))

    assert unknown == beyond == padded == RewardOutcome.UNKNOWN_ARM
    assert isinstance(raised.value, PolicyError)  # the rewards follower dead-letters it
    assert router.state("recs", TS).snapshot["pulls"] == [0] * SMALL.n_items
    # every position counts as seen, refused or not
    assert router.state("recs", TS).reward_offsets == {"0": 4}


def test_routing_learns_which_item_each_user_segment_clicks():
    router = contextual_router("linucb", alpha=0.3)
    rng = np.random.default_rng(1)
    segments = np.random.default_rng(2).integers(0, SMALL.n_items, size=1500)
    clicks = []
    for i, segment in enumerate(segments):
        request = recs_request(f"r{i}", user0=int(segment))
        routed = router.route(request, rng)
        # the segment's own item is clicked, nothing else is
        clicks.append(float(routed.arm == str(segment)))
        router.on_reward(recs_reward(request, routed.arm, clicks[-1]), LogPosition(0, i))

    # random routing clicks 1 time in 5
    assert np.mean(clicks[-500:]) > 0.9


def test_a_restart_from_the_checkpoint_restores_the_posterior_and_the_offsets():
    router = contextual_router("linear_ts")
    requests = [recs_request(f"r{i}", user0=i % 5) for i in range(40)]
    for i, request in enumerate(requests):
        router.on_reward(recs_reward(request, str(i % 3), float(i % 2)), LogPosition(0, i))
    state = decode(encode(router.state("recs", TS)), RouterState)

    restarted = contextual_router("linear_ts")
    restarted.restore(state)

    assert restarted.state("recs", TS).snapshot["pulls"] == state.snapshot["pulls"]
    assert [a.pulls for a in restarted.state("recs", TS).arms] == [a.pulls for a in state.arms]
    # the posterior is the checkpointed one, to the float32 the checkpoint holds
    original, restored = (unpack(r.state("recs", TS).snapshot) for r in (router, restarted))
    np.testing.assert_allclose(restored["inverse"], original["inverse"], rtol=1e-6)
    np.testing.assert_array_equal(restored["b"], original["b"])
    # a checkpointed reward read again is not folded again; the next one is
    again = restarted.on_reward(recs_reward(requests[3], "0", 1.0), LogPosition(0, 3))
    fresh = restarted.on_reward(recs_reward(recs_request("new"), "4", 1.0), LogPosition(0, 40))
    assert (again, fresh) == (RewardOutcome.CHECKPOINTED, RewardOutcome.COUNTED)
    assert restarted.resume_offset(0) == 0  # within the dedupe window
    routed = [restarted.route(recs_request(f"q{i}"), np.random.default_rng(i)) for i in range(5)]
    assert all(0 < r.propensity <= 1 for r in routed)


def test_packing_keeps_the_inverse_to_float32_and_everything_else_exactly():
    policy = LinUCB(3, 4)
    rng = np.random.default_rng(0)
    for _ in range(50):
        policy.update(int(rng.integers(3)), rng.normal(size=4), 1.0)
    state = policy.snapshot()

    restored = LinUCB(3, 4)
    restored.restore(unpack(pack(state)))

    np.testing.assert_allclose(restored.inverse_gram(), policy.inverse_gram(), rtol=1e-6)
    np.testing.assert_array_equal(restored.inverse_gram(), restored.inverse_gram().swapaxes(1, 2))
    assert restored.snapshot()["b"] == state["b"] and restored.pulls().tolist() == state["pulls"]


def test_a_checkpoint_of_the_default_campaign_fits_in_one_message():
    router = contextual_router("linucb", spec=OBD)
    for i in range(200):
        request = recs_request(f"r{i}", user0=i % 3)
        router.on_reward(recs_reward(request, str(i % 80), 1.0), LogPosition(0, i))

    size = len(encode(router.state("recs", TS)))

    assert OBD.dim == 68
    assert size < MAX_MESSAGE_BYTES


def test_a_checkpoint_too_large_for_a_message_is_refused_at_start():
    with pytest.raises(ContextualPolicyError, match="message limit"):
        contextual_router(spec=ContextSpec.of(dataclasses.replace(ITEMS, count=400)))


def test_a_checkpoint_of_another_policy_is_not_restored_and_every_reward_is_refolded():
    old = Router(RouterConfig(tasks={"eta": TaskConfig(), "recs": TaskConfig()}))
    old.on_announcement(announcement("v1", task="recs"))
    old.on_reward(Reward(id="x", ts=TS, task="recs", arm="v1", reward=1.0), LogPosition(0, 7))
    router = contextual_router()

    router.restore(old.state("recs", TS))

    assert router.state("recs", TS).snapshot["pulls"] == [0] * SMALL.n_items
    assert router.resume_offset(0) == 0


def test_announcements_move_the_champion_but_never_the_items():
    router = contextual_router()
    router.on_announcement(announcement("v1", task="recs"))
    router.on_announcement(announcement("v2", "promoted", task="recs"))
    router.on_announcement(announcement("v2", "retired", task="recs"))

    assert router.arms("recs") == tuple(str(i) for i in range(SMALL.n_items))
    assert router.champion("recs") == "v2"
    assert router.promotions_due() == []


def test_eta_keeps_routing_model_versions_next_to_contextual_recs():
    router = contextual_router()
    router.on_announcement(announcement("v1"))

    routed = router.route(enriched("e1"), np.random.default_rng(0))

    assert (routed.arm, routed.policy) == ("v1", "thompson_beta")


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RTML_ROUTER_POLICY_RECS", "linear_ts")
    monkeypatch.setenv("RTML_ROUTER_PARAMS_RECS", '{"scale": 0.5}')
    monkeypatch.setenv("RTML_ROUTER_RECS_ITEMS", "34")
    monkeypatch.setenv("RTML_ROUTER_RECS_CATEGORIES", "[3, 5, 9, 9]")

    router = Router(RouterConfig.from_settings(Settings()))

    assert router.arms("recs") == tuple(str(i) for i in range(34))
    assert router.state("recs", TS).snapshot["params"]["scale"] == 0.5


@pytest.mark.parametrize(
    ("task", "policy", "params", "message"),
    [
        ("eta", "linucb", {}, "task eta declares none"),
        ("recs", "linucb", {"alpha": -1}, "alpha must be finite and >= 0"),
        ("recs", "linucb", {"scale": 1}, "linucb: .*scale"),
    ],
)
def test_a_bad_contextual_configuration_is_refused_at_start(task, policy, params, message):
    context = OBD if task == "recs" else None
    tasks = {
        "eta": TaskConfig(),
        "recs": TaskConfig(),
        task: TaskConfig(policy, params, context=context),
    }
    with pytest.raises(PolicyError, match=message):
        Router(RouterConfig(tasks=tasks))


async def test_post_route_refuses_a_recs_request_without_its_context_naming_features():
    app = RouterApp(contextual_router(), np.random.default_rng(0))
    bad = enriched("no-context", task="recs").model_dump(mode="json")
    async with TestClient(TestServer(app.http_app(HealthEndpoints("router")))) as client:
        refused = await client.post("/v1/route", json=bad)
        routed = await client.post("/v1/route", json=recs_request("ok").model_dump(mode="json"))
        state = await client.get("/v1/state")

        problem = (await refused.json())["problems"][0]
        assert refused.status == 400 and problem["field"] == "features"
        assert "user_feature_0" in problem["reason"]
        assert routed.status == 200 and (await routed.json())["policy"] == "linucb"
        # the packed snapshot comes as base64 in JSON
        states = {s["task"]: s for s in await state.json()}
        assert isinstance(states["recs"]["snapshot"]["inverse_upper_f32"], str)
