"""The router as a subprocess against a real embedded broker.

Each test has a broker of its own: the router rebuilds its state from whole
topics (checkpoints, announcements, rewards), so another test's messages would
be part of it. Waits poll the router until a condition holds (or a generous
deadline passes and the assertion shows what was missing); nothing asserts a
duration.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from rtml.services.router.handlers import Router, RouterConfig
from rtml.services.router.ledger import LogPosition
from rtml.shared import topics
from rtml.shared.contracts import DlqRecord, Message, PredictRouted, Reward, RouterState, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.model_announcements import read_announcements, register_and_announce
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings

from tests.helpers import metric, read_topic, service_process, wait_http
from tests.unit.test_prediction_handlers import FEATURE_SET, train_booster
from tests.unit.test_router_contextual import recs_request, recs_reward
from tests.unit.test_router_handlers import announcement, enriched, reward, same_posterior

FOLD_TIMEOUT_S = 30.0


@dataclass
class Stack:
    settings: Settings
    store: ModelStore

    def env(self, port: int, **overrides: str) -> dict[str, str]:
        return {
            "RTML_KAFKA_PORT": str(self.settings.kafka_port),
            "RTML_ROUTER_PORT": str(port),
            "RTML_MODEL_STORE": str(self.store),
            "RTML_ROUTER_SEED": "7",
            "RTML_ROUTER_FOLD_INTERVAL_MS": "20",
            **overrides,
        }


@dataclass
class RouterProcess:
    url: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL: no final checkpoint, no goodbye to the group."""
        self.process.kill()
        self.process.wait()

    def states(self) -> dict[str, RouterState]:
        with urllib.request.urlopen(f"{self.url}/v1/state", timeout=5) as response:
            states = json.load(response)
        for state in states:
            for arm in state["arms"]:
                # JSON carries an undefined mean or interval (NaN) as null
                arm.update({k: math.nan for k in ("mean", "ci_low", "ci_high") if arm[k] is None})
            packed = state["snapshot"].get("inverse_upper_f32")
            if packed is not None:  # a contextual policy's packed arrays come as base64
                state["snapshot"]["inverse_upper_f32"] = base64.urlsafe_b64decode(packed)
        return {s["task"]: RouterState.model_validate(s) for s in states}

    def pulls(self, task: str = "eta") -> dict[str, int]:
        return {arm.arm: arm.pulls for arm in self.states()[task].arms}

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.url, name, **labels)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        asyncio.run(ensure_topics(settings))
        yield Stack(settings, ModelStore(tmp_path / "models"))


@contextlib.contextmanager
def running_router(stack: Stack, **env: str) -> Iterator[RouterProcess]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with service_process(
        "rtml.services.router", stack.env(port, **env), f"{url}/readyz"
    ) as process:
        yield RouterProcess(url, process)


async def send(settings: Settings, topic: str, messages: Sequence[Message]) -> None:
    producer = await start_producer(settings, linger_ms=5)
    try:
        acks = [await producer.send(topic, encode(m), key=m.key) for m in messages]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float = FOLD_TIMEOUT_S) -> None:
    """Poll ``condition``; at the deadline, return and let the caller's assertion speak."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def rewards_for(arm: str, successes: int, failures: int, prefix: str) -> list[Reward]:
    values = [1.0] * successes + [0.0] * failures
    return [reward(f"{prefix}-{arm}-{i}", arm, value) for i, value in enumerate(values)]


async def routed_messages(settings: Settings, expected: int) -> list[PredictRouted]:
    messages = await read_topic(settings, topics.PREDICT_ROUTED.name, expected)
    return cast(list[PredictRouted], messages)


def expected_statistics(rewards: Sequence[Reward]) -> dict[str, tuple[int, float]]:
    """(pulls, total) per arm when each request id counts once."""
    first = {r.id: r for r in reversed(rewards)}
    tally: dict[str, tuple[int, float]] = {}
    for r in first.values():
        pulls, total = tally.get(r.arm, (0, 0.0))
        tally[r.arm] = (pulls + 1, total + r.reward)
    return tally


def statistics(state: RouterState) -> dict[str, tuple[int, float]]:
    return {a["arm"]: (a["pulls"], a["total"]) for a in state.snapshot["arms"]}


# --- routing ------------------------------------------------------------------------


async def test_routed_requests_carry_propensities_that_sum_to_one_and_match_choice_frequencies(
    stack: Stack,
) -> None:
    await send(stack.settings, topics.MODELS.name, [announcement(v) for v in ("v1", "v2", "v3")])
    # folded at start, so the shares are unequal and stay put while the requests are routed
    prior_rewards = [
        *rewards_for("v1", 12, 18, "warm"),
        *rewards_for("v2", 9, 21, "warm"),
        *rewards_for("v3", 5, 25, "warm"),
    ]
    await send(stack.settings, topics.REWARDS.name, prior_rewards)
    eta = [enriched(f"eta-{i}") for i in range(3000)]
    recs = [enriched(f"recs-{i}", task="recs") for i in range(20)]

    with running_router(stack) as router:
        shares = {arm.arm: arm.share for arm in router.states()["eta"].arms}
        await send(stack.settings, topics.PREDICT_ENRICHED.name, [*eta, *recs])
        routed = await routed_messages(stack.settings, len(eta) + len(recs))
        over_http, refused = (
            post_route(router.url, enriched("over-http")),
            post_route(router.url, {"task": "eta"}),
        )

    assert sorted(r.id for r in routed) == sorted(r.id for r in [*eta, *recs])
    by_task = {task: [r for r in routed if r.task == task] for task in ("eta", "recs")}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert max(shares.values()) - min(shares.values()) > 0.2
    assert {(r.policy, r.model_version == r.arm) for r in by_task["eta"]} == {
        ("thompson_beta", True)
    }
    assert all(r.propensity == shares[r.arm] for r in by_task["eta"])
    counts = Counter(r.arm for r in by_task["eta"])
    for arm, share in shares.items():
        # five standard errors of a proportion, on a fixed routing seed
        assert counts[arm] / len(eta) == pytest.approx(share, abs=5 * math.sqrt(0.25 / len(eta)))
    # no recs model yet: the prediction service's champion answers
    assert {(r.arm, r.model_version, r.propensity, r.policy) for r in by_task["recs"]} == {
        (None, None, 1.0, "champion")
    }
    # the request-driven wiring: the same handler over HTTP
    status, body = over_http
    assert status == 200 and body["id"] == "over-http" and body["propensity"] == shares[body["arm"]]
    status, body = refused
    assert status == 400 and body["problems"][0]["field"] == "ts"


def post_route(url: str, request: Any) -> tuple[int, dict]:
    body = request.model_dump(mode="json") if hasattr(request, "model_dump") else request
    call = urllib.request.Request(
        f"{url}/v1/route",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(call, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


async def test_rewards_shift_traffic_toward_the_better_arm_and_a_duplicate_counts_once(
    stack: Stack,
) -> None:
    await send(stack.settings, topics.MODELS.name, [announcement("v1"), announcement("v2")])
    rewards = [*rewards_for("v1", 10, 40, "a"), *rewards_for("v2", 40, 10, "a")]
    duplicates = rewards[::5]  # the collector sent these twice
    late = reward("late", "gone", 1.0)  # for a version the router never had
    not_binary = reward("half", "v1", 0.5)  # a Beta-Bernoulli arm takes 0/1 only

    with running_router(stack) as router:
        before = {arm.arm: arm.share for arm in router.states()["eta"].arms}
        stream = [*rewards, *duplicates, late, not_binary]
        await send(stack.settings, topics.REWARDS.name, stream)
        wait_until(lambda: router.metric("rtml_router_rewards_total") >= len(stream))
        state = router.states()["eta"]
        after = {arm.arm: arm.share for arm in state.arms}
        requests = [enriched(f"after-{i}") for i in range(500)]
        await send(stack.settings, topics.PREDICT_ENRICHED.name, requests)
        routed = await routed_messages(stack.settings, len(requests))
        outcomes = {
            outcome: router.metric("rtml_router_rewards_total", outcome=outcome)
            for outcome in ("counted", "duplicate", "unknown_arm", "invalid")
        }
    dead = await read_topic(stack.settings, topics.DLQ.name, expected=1)

    assert outcomes == {
        "counted": 100,
        "duplicate": len(duplicates),
        "unknown_arm": 1,
        "invalid": 1,
    }
    assert [(d.service, d.reason, d.original) for d in cast(list[DlqRecord], dead)] == [
        ("router", "handler", encode(not_binary))
    ]
    assert statistics(state) == {"v1": (50, 10.0), "v2": (50, 40.0)}
    assert before["v2"] == pytest.approx(0.5, abs=0.05)
    # all but v1's exploration floor (5% until it has 200 rewards)
    assert after["v2"] == pytest.approx(0.95)
    assert Counter(r.arm for r in routed)["v2"] > 0.9 * len(routed)


# --- arms follow the model store ------------------------------------------------------


async def test_a_new_version_joins_as_an_arm_and_a_clear_winner_is_promoted(stack: Stack) -> None:
    producer = await start_producer(stack.settings)
    try:
        registration = dict(
            task="eta", feature_set=FEATURE_SET, data_range={}, params={}, metrics={}
        )
        await register_and_announce(
            stack.store, producer, train_booster(seed=1), version="v1", **registration
        )
        stack.store.set_champion("eta", "v1")

        with running_router(stack, RTML_ROUTER_PROMOTE_EVERY="100") as router:
            assert router.states()["eta"].champion == "v1"
            await register_and_announce(
                stack.store, producer, train_booster(seed=2), version="v2", **registration
            )
            wait_until(lambda: "v2" in router.pulls())
            newcomer = {arm.arm: arm.share for arm in router.states()["eta"].arms}["v2"]
            await send(
                stack.settings,
                topics.REWARDS.name,
                [*rewards_for("v1", 20, 80, "p"), *rewards_for("v2", 90, 10, "p")],
            )
            wait_until(lambda: router.states()["eta"].champion == "v2")
            champion = router.states()["eta"].champion
    finally:
        await producer.stop()

    assert newcomer >= 0.05  # the new arm's exploration floor
    assert champion == "v2"
    record = stack.store.champion("eta")
    assert record is not None and record.version == "v2"
    [promoted] = [a for a in await read_announcements(stack.settings) if a.action == "promoted"]
    assert promoted.model_version == "v2" and promoted.sha256 == record.sha256
    assert "P(best)=1.000 >= 0.95" in promoted.reason


# --- state survives restarts ------------------------------------------------------------


async def last_checkpoints(settings: Settings) -> dict[str, RouterState]:
    states = await read_topic(settings, topics.ROUTER_STATE.name, expected=10**9, timeout_s=0)
    return {s.task: s for s in cast(list[RouterState], states)}


async def test_sigterm_checkpoints_and_the_restarted_router_has_the_same_posterior(
    stack: Stack,
) -> None:
    await send(stack.settings, topics.MODELS.name, [announcement("v1"), announcement("v2")])
    rewards = [*rewards_for("v1", 30, 70, "s"), *rewards_for("v2", 55, 45, "s")]

    with running_router(stack, RTML_ROUTER_CHECKPOINT_EVERY="40") as router:
        await send(stack.settings, topics.REWARDS.name, [*rewards, *rewards[:17]])
        await send(
            stack.settings, topics.PREDICT_ENRICHED.name, [enriched(f"d-{i}") for i in range(30)]
        )
        await routed_messages(stack.settings, 30)
        wait_until(lambda: sum(router.pulls().values()) == len(rewards))
        before = router.states()["eta"]
    # leaving the block sent SIGTERM: the router checkpoints on its way out
    checkpoint = (await last_checkpoints(stack.settings))["eta"]
    with running_router(stack) as restarted:
        after = restarted.states()["eta"]

    assert statistics(before) == expected_statistics(rewards)
    for rebuilt in (checkpoint, after):
        assert rebuilt.snapshot == before.snapshot
        assert rebuilt.arms == before.arms
        assert rebuilt.reward_offsets == before.reward_offsets
        assert rebuilt.decisions == before.decisions == 30


async def test_after_a_kill_mid_stream_the_restart_folds_every_reward_exactly_once(
    stack: Stack,
) -> None:
    await send(stack.settings, topics.MODELS.name, [announcement("v1"), announcement("v2")])
    rng = np.random.default_rng(4)
    rewards = [
        reward(f"k-{i}", "v1" if i % 2 else "v2", float(rng.random() < (0.3 if i % 2 else 0.6)))
        for i in range(900)
    ]
    # duplicates, some of rewards folded before the kill, arriving after it
    stream = [*rewards[:600], *rewards[100:160], *rewards[600:], *rewards[500:520]]
    killed_early = stream[:400]

    with running_router(stack, RTML_ROUTER_CHECKPOINT_EVERY="50") as router:
        await send(stack.settings, topics.REWARDS.name, killed_early)
        wait_until(lambda: sum(router.pulls().values()) == len(killed_early))
        await send(stack.settings, topics.REWARDS.name, stream[400:700])
        router.kill()
    checkpoint_at_kill = (await last_checkpoints(stack.settings))["eta"]
    await send(stack.settings, topics.REWARDS.name, stream[700:])
    with running_router(stack) as restarted:
        wait_until(lambda: sum(restarted.pulls().values()) == len(rewards))
        after = restarted.states()["eta"]
        replayed = restarted.metric("rtml_router_rewards_total", outcome="checkpointed")

    assert sum(pulls for pulls, _ in statistics(checkpoint_at_kill).values()) >= 350
    assert replayed > 0  # it started from the checkpoint, not from the first reward
    assert statistics(after) == expected_statistics(stream)
    assert same_posterior(after, reference_state(stream))


def reference_state(rewards: Sequence[Reward]) -> RouterState:
    """What a router that never stopped would hold, computed by the core in this process."""
    router = Router(RouterConfig())
    for arm in ("v1", "v2"):
        router.on_announcement(announcement(arm))
    for offset, item in enumerate(rewards):
        router.on_reward(item, LogPosition(0, offset))
    return router.state("eta", 0.0)


# --- replicas -----------------------------------------------------------------------------


def ready(router: RouterProcess) -> bool:
    try:
        wait_http(f"{router.url}/readyz", timeout_s=0.5)
    except AssertionError:
        return False
    return True


async def test_two_replicas_split_the_routing_and_each_folds_every_reward_once(
    stack: Stack,
) -> None:
    await send(stack.settings, topics.MODELS.name, [announcement("v1"), announcement("v2")])
    rewards = [*rewards_for("v1", 40, 60, "r"), *rewards_for("v2", 70, 30, "r")]
    requests = [enriched(f"two-{i}") for i in range(600)]

    with (
        running_router(stack, RTML_ROUTER_CHECKPOINT_EVERY="50") as first,
        running_router(stack, RTML_ROUTER_CHECKPOINT_EVERY="50") as second,
    ):
        wait_until(lambda: ready(first) and ready(second))  # the rebalance is over
        await send(stack.settings, topics.PREDICT_ENRICHED.name, requests)
        routed = await routed_messages(stack.settings, len(requests))
        await send(stack.settings, topics.REWARDS.name, [*rewards, *rewards[:30]])
        replicas = (first, second)
        wait_until(lambda: all(sum(r.pulls().values()) == len(rewards) for r in replicas))
        states = [r.states()["eta"] for r in replicas]
        decisions = [r.metric("rtml_router_decisions_total") for r in replicas]
        checkpoints = [r.metric("rtml_router_checkpoints_total") for r in replicas]
    final = (await last_checkpoints(stack.settings))["eta"]

    assert {r.id for r in routed} == {r.id for r in requests}
    assert min(decisions) > 0 and sum(decisions) >= len(requests)  # the partitions are shared
    for state in (*states, final):
        assert statistics(state) == expected_statistics(rewards)  # not twice, not half
    assert same_posterior(states[0], states[1])
    assert sorted(c > 0 for c in checkpoints) == [False, True]  # one checkpoint writer


# --- contextual bandit over items (recs) ----------------------------------------------------

CONTEXTUAL_RECS = {
    "RTML_ROUTER_POLICY_RECS": "linucb",
    "RTML_ROUTER_PARAMS_RECS": '{"alpha": 0.3}',
    "RTML_ROUTER_RECS_ITEMS": "5",
    "RTML_ROUTER_RECS_CATEGORIES": "[5, 2, 2, 2]",
}


async def test_contextual_recs_routes_items_learns_from_rewards_and_survives_a_restart(
    stack: Stack,
) -> None:
    requests = [recs_request(f"c-{i}", user0=i % 5) for i in range(60)]
    # each user segment (user_feature_0) clicks its own item and not the next one
    rewards = [
        recs_reward(q, str((i + shift) % 5), value, id=f"{q.id}-{shift}")
        for i, q in enumerate(requests)
        for shift, value in ((0, 1.0), (1, 0.0))
    ]
    without_context = recs_reward(requests[0], "1", 1.0, id="no-context", features=None)
    with running_router(stack, **CONTEXTUAL_RECS) as router:
        empty = router.states()["recs"]
        await send(stack.settings, topics.PREDICT_ENRICHED.name, requests)
        routed = await routed_messages(stack.settings, len(requests))
        await send(stack.settings, topics.REWARDS.name, [*rewards, *rewards[:7], without_context])
        wait_until(lambda: sum(router.pulls("recs").values()) == len(rewards))
        learned = router.states()["recs"]
    # leaving the block sent SIGTERM: the router checkpoints on its way out
    checkpoint = (await last_checkpoints(stack.settings))["recs"]
    with running_router(stack, **CONTEXTUAL_RECS) as restarted:
        rebuilt = restarted.states()["recs"]
        answers = [post_route(restarted.url, recs_request(f"after-{s}", user0=s)) for s in range(5)]
    dead = cast(list[DlqRecord], await read_topic(stack.settings, topics.DLQ.name, expected=1))

    assert sorted(r.id for r in routed) == sorted(q.id for q in requests)
    # nothing learned while they were routed: every item tied, each logged with 1/5
    assert {(r.policy, r.model_version, r.propensity) for r in routed} == {("linucb", None, 0.2)}
    assert {r.arm for r in routed} <= {"0", "1", "2", "3", "4"}
    assert {a.arm: a.pulls for a in learned.arms} == {str(item): 24 for item in range(5)}
    assert learned.snapshot["b"] != empty.snapshot["b"]  # the posterior moved; repeats once
    assert [(d.reason, d.original) for d in dead] == [("handler", encode(without_context))]
    for state in (checkpoint, rebuilt):
        assert state.snapshot == learned.snapshot
        assert state.reward_offsets == learned.reward_offsets
    # the restarted router recommends each segment its own item
    assert [(status, body["arm"]) for status, body in answers] == [(200, str(s)) for s in range(5)]
