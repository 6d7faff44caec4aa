"""The router's core without Kafka: routing with propensities, rewards exactly once,
arms following announcements, promotion, checkpoints."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from rtml.services.router.handlers import (
    CHAMPION_FALLBACK,
    RewardOutcome,
    Router,
    RouterConfig,
    TaskConfig,
    with_router_timings,
)
from rtml.services.router.ledger import Admission, LogPosition, RewardLedger
from rtml.shared.bandits.policies import PolicyError, PromotionRule
from rtml.shared.contracts import (
    FeatureVector,
    ModelAnnouncement,
    PredictEnriched,
    PredictRouted,
    Reward,
    RouterState,
    decode,
    encode,
)
from rtml.shared.settings import Settings

TS = 1_700_000_000.0
# few Monte Carlo draws: these tests fold rewards one at a time and route in between
FAST = {"mc_draws": 2000}


def config(policy: str = "thompson_beta", **overrides) -> RouterConfig:
    params = FAST if policy.startswith("thompson") else {}
    task = TaskConfig(
        policy=policy,
        params=overrides.pop("params", params),
        min_share=overrides.pop("min_share", 0.0),
        min_pulls=overrides.pop("min_pulls", 0),
    )
    return RouterConfig(tasks={"eta": task, "recs": TaskConfig(params=FAST)}, **overrides)


def enriched(request_id: str = "r1", task: str = "eta") -> PredictEnriched:
    return PredictEnriched(
        id=request_id,
        ts=TS,
        task=task,
        entities={"restaurant_id": "r7"},
        request_ts=TS,
        features=FeatureVector(
            feature_set="eta@1",
            names=["distance_km", "n_items"],
            values=[2.5, 3.0],
            freshness_s=[None, 4.0],
            defaulted=[False, True],
        ),
        timings_ms={"features": 1.5},
    )


def announcement(version: str, action: str = "registered", task: str = "eta") -> ModelAnnouncement:
    return ModelAnnouncement(
        ts=TS, task=task, model_version=version, action=action, sha256="0" * 64, feature_set="eta@1"
    )


def reward(request_id: str, arm: str, value: float, task: str = "eta") -> Reward:
    return Reward(id=request_id, ts=TS, task=task, arm=arm, reward=value)


def router_with(*arms: str, **kwargs) -> Router:
    router = Router(config(**kwargs))
    for arm in arms:
        router.on_announcement(announcement(arm))
    return router


class RewardLog:
    """A rewards partition: each folded reward takes the next offset."""

    def __init__(self, partition: int = 0) -> None:
        self.partition = partition
        self.records: list[Reward] = []

    def fold(self, router: Router, item: Reward) -> RewardOutcome:
        self.records.append(item)
        return router.on_reward(item, LogPosition(self.partition, len(self.records) - 1))

    def replay(self, router: Router) -> Counter[RewardOutcome]:
        """Read the log again from where the router says to resume, as a restart does."""
        start = router.resume_offset(self.partition)
        return Counter(
            router.on_reward(item, LogPosition(self.partition, offset))
            for offset, item in enumerate(self.records[start:], start)
        )


def feed(router: Router, log: RewardLog, arm: str, successes: int, failures: int) -> None:
    for value, count in ((1.0, successes), (0.0, failures)):
        for _ in range(count):
            log.fold(router, reward(f"{arm}-{len(log.records)}", arm, value))


# --- routing ---------------------------------------------------------------------


def test_a_task_without_arms_routes_to_the_champion_with_certainty():
    routed = Router(config()).route(enriched(), np.random.default_rng(0))

    assert (routed.model_version, routed.arm, routed.propensity) == (None, None, 1.0)
    assert routed.policy == CHAMPION_FALLBACK


def test_the_router_adds_its_wait_and_its_routing_after_the_upstream_hops():
    request = enriched().model_copy(
        update={"received_at": TS, "timings_ms": {"to_features": 2.0, "features": 1.5}}
    )
    routed = Router(config()).route(request, np.random.default_rng(0))

    # read 10 ms after ingestion took it (3.5 ms of it upstream), routed 0.25 ms later
    timed = with_router_timings(routed, seen_at=TS + 0.010, now=TS + 0.01025)

    assert timed.timings_ms == {
        "to_features": 2.0,
        "features": 1.5,
        "to_router": 6.5,
        "routing": 0.25,
    }
    assert timed.model_dump(exclude={"timings_ms"}) == routed.model_dump(exclude={"timings_ms"})
    assert routed.timings_ms == {"to_features": 2.0, "features": 1.5}  # a copy, not changed


def test_the_router_waits_no_time_before_a_request_its_clock_sees_early():
    routed = Router(config()).route(
        enriched().model_copy(update={"received_at": TS}), np.random.default_rng(0)
    )
    timed = with_router_timings(routed, seen_at=TS - 0.5, now=TS - 0.4995)
    assert timed.timings_ms == {"features": 1.5, "to_router": 0.0, "routing": 0.5}


def test_a_request_without_a_received_at_has_only_its_routing_timed():
    routed = Router(config()).route(enriched(), np.random.default_rng(0))
    timed = with_router_timings(routed, seen_at=TS, now=TS + 0.001)
    assert timed.timings_ms == {"features": 1.5, "routing": 1.0}


def test_a_routed_request_keeps_its_fields_and_names_arm_propensity_and_policy():
    router = router_with("v1", "v2")
    request = enriched("req-42")

    routed = router.route(request, np.random.default_rng(0))

    assert routed.arm in ("v1", "v2") and routed.model_version == routed.arm
    assert (
        routed.propensity
        == router.state("eta", TS).arms[router.arms("eta").index(routed.arm)].share
    )
    assert routed.policy == "thompson_beta"
    # what goes on the wire is a valid PredictRouted carrying the request unchanged
    wire = decode(encode(routed), PredictRouted)
    assert wire == routed
    assert wire.model_dump(include=set(PredictEnriched.model_fields)) == request.model_dump()


@pytest.mark.parametrize("policy", ["thompson_beta", "epsilon_greedy", "ab", "ucb1"])
def test_propensities_sum_to_one_and_match_choice_frequencies(policy: str):
    params = {"epsilon": 0.3} if policy == "epsilon_greedy" else None
    router = router_with("a", "b", "c", policy=policy, **({"params": params} if params else {}))
    log = RewardLog()
    for arm, successes in (("a", 12), ("b", 9), ("c", 5)):
        feed(router, log, arm, successes, 30 - successes)
    shares = {arm.arm: arm.share for arm in router.state("eta", TS).arms}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)

    rng, request = np.random.default_rng(5), enriched()
    decisions = [router.route(request, rng) for _ in range(20_000)]

    assert all(d.propensity == shares[d.arm] for d in decisions)
    counts = Counter(d.arm for d in decisions)
    for arm, share in shares.items():
        # five standard errors of a proportion: no flakiness should the seed change
        assert counts[arm] / len(decisions) == pytest.approx(
            share, abs=5 * math.sqrt(0.25 / 20_000)
        )


def test_rewards_for_one_arm_shift_traffic_toward_it():
    router = router_with("a", "b")
    before = {arm.arm: arm.share for arm in router.state("eta", TS).arms}
    log = RewardLog()
    feed(router, log, "a", successes=5, failures=45)
    feed(router, log, "b", successes=30, failures=20)

    after = {arm.arm: arm.share for arm in router.state("eta", TS).arms}
    rng = np.random.default_rng(1)
    routed = Counter(router.route(enriched(f"r{i}"), rng).arm for i in range(1000))

    assert before["b"] == pytest.approx(0.5, abs=0.05)
    assert after["b"] > 0.99
    assert routed["b"] > 950


# --- rewards -----------------------------------------------------------------------


def test_a_duplicate_reward_is_counted_once():
    router = router_with("a")
    log = RewardLog()

    first = log.fold(router, reward("req-1", "a", 1.0))
    again = log.fold(router, reward("req-1", "a", 1.0))

    assert (first, again) == (RewardOutcome.COUNTED, RewardOutcome.DUPLICATE)
    assert router.state("eta", TS).arms[0].pulls == 1


def test_a_reward_for_an_arm_the_task_does_not_have_is_not_folded():
    router = router_with("a")
    router.on_announcement(announcement("old", "registered"))
    router.on_announcement(announcement("old", "retired"))
    log = RewardLog()

    assert log.fold(router, reward("late", "old", 1.0)) is RewardOutcome.UNKNOWN_ARM
    assert router.arms("eta") == ("a",)


def test_a_reward_the_policy_cannot_take_is_refused_and_still_takes_its_place():
    router = router_with("a")
    log = RewardLog()

    with pytest.raises(PolicyError, match="0/1"):
        log.fold(router, reward("r1", "a", 0.5))

    assert router.state("eta", TS).reward_offsets == {"0": 1}
    assert router.state("eta", TS).arms[0].pulls == 0


def test_ledger_window_covers_the_last_offsets_of_each_partition():
    ledger = RewardLedger(window=3)

    assert ledger.admit(LogPosition(0, 10), "x") is Admission.NEW
    assert ledger.admit(LogPosition(1, 11), "x") is Admission.NEW  # another partition
    assert ledger.admit(LogPosition(0, 13), "x") is Admission.DUPLICATE  # 13 - 10 <= 3
    # the copy at 13 is in the window too, so a third copy at 16 is still recognised
    assert ledger.admit(LogPosition(0, 16), "x") is Admission.DUPLICATE
    assert ledger.admit(LogPosition(0, 20), "x") is Admission.NEW  # 20 - 16 > 3
    assert ledger.next_offsets() == {0: 21, 1: 12}
    assert ledger.resume_offset(0) == 18 and ledger.resume_offset(7) == 0


# --- restarts ----------------------------------------------------------------------


def restarted(router: Router, log: RewardLog, settings: RouterConfig | None = None) -> Router:
    """A new router from ``router``'s checkpoint: announcements replayed, then the log."""
    rebuilt = Router(settings or router.config)
    for task in router.tasks:
        state = decode(encode(router.state(task, TS)), RouterState)
        rebuilt.restore(state)
        for arm in router.arms(task):
            rebuilt.on_announcement(announcement(arm, task=task))
    log.replay(rebuilt)
    return rebuilt


def test_restart_from_a_checkpoint_then_the_rewards_after_it_rebuilds_the_same_posterior():
    router = router_with("a", "b", min_share=0.1, min_pulls=100)
    log = RewardLog()
    feed(router, log, "a", 20, 30)
    feed(router, log, "b", 25, 25)
    router.route(enriched(), np.random.default_rng(0))
    checkpoint = decode(encode(router.state("eta", TS)), RouterState)
    feed(router, log, "a", 3, 4)  # after the checkpoint

    rebuilt = Router(router.config)
    rebuilt.restore(checkpoint)
    outcomes = log.replay(rebuilt)

    assert outcomes == {RewardOutcome.CHECKPOINTED: 100, RewardOutcome.COUNTED: 7}
    assert rebuilt.state("eta", TS).snapshot == router.state("eta", TS).snapshot
    assert rebuilt.state("eta", TS).arms == router.state("eta", TS).arms
    assert rebuilt.state("eta", TS).decisions == 1


def test_a_duplicate_of_a_checkpointed_reward_is_still_absorbed_after_a_restart():
    router = router_with("a")
    log = RewardLog()
    feed(router, log, "a", 5, 5)
    rebuilt = restarted(router, log)

    outcome = log.fold(rebuilt, reward(log.records[-1].id, "a", 0.0))

    assert outcome is RewardOutcome.DUPLICATE
    assert rebuilt.state("eta", TS).arms[0].pulls == 10


def test_two_replicas_reading_the_same_log_hold_the_same_posterior():
    """However fetches interleave the partitions, each reward counts once per replica."""
    logs = [RewardLog(0), RewardLog(1)]
    rng = np.random.default_rng(3)
    for i in range(400):
        arm = "a" if i % 3 else "b"
        item = reward(f"req-{i % 350}", arm, float(rng.random() < 0.4))  # 50 duplicates
        logs[i % 2].records.append(item)
    replicas = [router_with("a", "b"), router_with("a", "b")]
    # replica 0 reads partition 0 then 1; replica 1 alternates record by record
    for log in logs:
        log.replay(replicas[0])
    for offset in range(200):
        for log in logs:
            replicas[1].on_reward(log.records[offset], LogPosition(log.partition, offset))

    states = [replica.state("eta", TS) for replica in replicas]
    assert same_posterior(states[0], states[1])
    assert sum(arm.pulls for arm in states[0].arms) == 350


def same_posterior(one: RouterState, other: RouterState) -> bool:
    """Equal reward counts and sums; the sums of squares (Welford) equal up to the rounding
    that another order of folding across partitions gives."""

    def statistics(state: RouterState) -> list[tuple]:
        return [(a["arm"], a["pulls"], a["total"], a["prior"]) for a in state.snapshot["arms"]]

    def squares(state: RouterState) -> list[float]:
        return [a["m2"] for a in state.snapshot["arms"]]

    return statistics(one) == statistics(other) and squares(one) == pytest.approx(squares(other))


def test_a_checkpoint_of_another_policy_hands_its_evidence_to_the_configured_one():
    router = router_with("a", "b", policy="ab")
    log = RewardLog()
    feed(router, log, "a", 10, 40)
    feed(router, log, "b", 30, 20)

    rebuilt = restarted(router, log, config("thompson_beta"))

    arms = {arm.arm: arm for arm in rebuilt.state("eta", TS).arms}
    assert rebuilt.state("eta", TS).policy == "thompson_beta"
    assert (arms["a"].pulls, arms["b"].pulls) == (50, 50)
    assert arms["b"].mean == pytest.approx(31 / 52)  # Beta(1 + 30, 1 + 20)
    assert log.replay(rebuilt) == {RewardOutcome.CHECKPOINTED: 100}


# --- arms --------------------------------------------------------------------------


def test_a_new_version_joins_with_its_exploration_floor_and_a_retired_one_leaves():
    router = router_with("v1", min_share=0.2, min_pulls=10)
    log = RewardLog()
    feed(router, log, "v1", 40, 0)
    router.on_announcement(announcement("v2"))

    shares = {arm.arm: arm.share for arm in router.state("eta", TS).arms}
    assert shares["v2"] >= 0.2

    router.on_announcement(announcement("v1", "retired"))
    assert router.arms("eta") == ("v2",)


def test_replayed_announcements_keep_what_an_arm_has_learned():
    router = router_with("v1")
    log = RewardLog()
    feed(router, log, "v1", 3, 2)

    router.on_announcement(announcement("v1"))
    router.on_announcement(announcement("v1", "promoted"))

    assert router.state("eta", TS).arms[0].pulls == 5
    assert router.champion("eta") == "v1"


def test_exploration_floors_never_add_up_to_more_than_the_whole_traffic():
    router = router_with(*[f"v{i}" for i in range(30)], min_share=0.05, min_pulls=100)

    shares = [arm.share for arm in router.state("eta", TS).arms]
    assert len(shares) == 30
    assert sum(shares) == pytest.approx(1.0)


def test_announcements_of_another_task_leave_this_one_alone():
    router = router_with("v1")
    router.on_announcement(announcement("r1", task="recs"))

    assert router.arms("eta") == ("v1",) and router.arms("recs") == ("r1",)


# --- promotion ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["thompson_beta", "epsilon_greedy", "ucb1"])
def test_a_clear_winner_is_proposed_for_promotion_after_enough_rewards(policy: str):
    router = router_with("a", "b", policy=policy, promote_every=200)
    log = RewardLog()
    feed(router, log, "a", 20, 80)
    assert router.promotions_due() == []  # 100 rewards: not checked yet
    feed(router, log, "b", 60, 40)

    [proposal] = router.promotions_due()

    assert (proposal.task, proposal.arm) == ("eta", "b")
    assert "P(best)=1.000 >= 0.95" in proposal.reason
    assert router.promotions_due() == []  # the counter starts again


def test_no_promotion_for_the_current_champion_nor_an_unclear_leader_nor_a_lone_arm():
    router = router_with("a", "b", promote_every=10, promotion_rule=PromotionRule())
    log = RewardLog()
    feed(router, log, "a", 6, 4)
    feed(router, log, "b", 5, 5)
    assert router.promotions_due() == []  # unclear

    feed(router, log, "b", 60, 0)
    router.set_champion("eta", "b")
    assert router.promotions_due() == []  # already the champion

    lone = router_with("a", promote_every=10)
    feed(lone, RewardLog(), "a", 10, 0)
    assert lone.promotions_due() == []


# --- configuration -----------------------------------------------------------------


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RTML_ROUTER_POLICY_RECS", "epsilon_greedy")
    monkeypatch.setenv("RTML_ROUTER_PARAMS_RECS", '{"epsilon": 0.2}')
    monkeypatch.setenv("RTML_ROUTER_PRIOR_ETA", '{"alpha": 2, "beta": 8}')
    monkeypatch.setenv("RTML_ROUTER_NEW_ARM_MIN_SHARE", "0.1")

    router = Router(RouterConfig.from_settings(Settings()))
    router.on_announcement(announcement("v1"))
    router.on_announcement(announcement("r1", task="recs"))

    eta, recs = router.state("eta", TS), router.state("recs", TS)
    assert eta.policy == "thompson_beta" and eta.arms[0].mean == pytest.approx(0.2)
    assert eta.snapshot["arms"][0]["min_share"] == 0.1
    assert recs.policy == "epsilon_greedy" and recs.snapshot["params"] == {"epsilon": 0.2}


def test_an_unknown_policy_or_prior_is_refused_at_start():
    with pytest.raises(PolicyError, match="unknown policy"):
        Router(config("thompson"))
    with pytest.raises(PolicyError, match="unknown prior"):
        Router(RouterConfig(tasks={"eta": TaskConfig(prior={"gamma": 1.0})}))
