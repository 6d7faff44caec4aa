"""The router's policies: their math on known cases, propensities, convergence, checkpoints."""

from __future__ import annotations

import json
import math

import msgpack
import numpy as np
import pytest
from rtml.shared.bandits.policies import (
    POLICY_NAMES,
    UCB1,
    EpsilonGreedy,
    FixedSplit,
    Policy,
    PolicyError,
    PromotionRule,
    ThompsonBeta,
    ThompsonGaussian,
    UnknownArm,
    make_policy,
    policy_from_snapshot,
    promotion_decision,
    value_remaining,
)
from scipy import stats

# Monte Carlo draws for Thompson policies in tests that update after every decision:
# each update re-estimates P(best), and the default 10,000 draws would make those tests slow.
FAST_THOMPSON = {"mc_draws": 500}


def feed(policy: Policy, arm: str, successes: int, failures: int) -> None:
    for _ in range(successes):
        policy.update(arm, 1.0)
    for _ in range(failures):
        policy.update(arm, 0.0)


def test_beta_posterior_is_prior_plus_successes_and_failures():
    policy = ThompsonBeta()
    policy.add_arm("v1", alpha=2.0, beta=3.0)
    feed(policy, "v1", successes=7, failures=5)

    summary = policy.summary()["v1"]

    alpha, beta = 2 + 7, 3 + 5
    assert summary["pulls"] == 12
    assert summary["mean"] == pytest.approx(alpha / (alpha + beta))
    assert summary["ci_low"] == pytest.approx(stats.beta.ppf(0.025, alpha, beta))
    assert summary["ci_high"] == pytest.approx(stats.beta.ppf(0.975, alpha, beta))
    draws = policy.posterior_draws(200_000, np.random.default_rng(1))[:, 0]
    assert draws.mean() == pytest.approx(alpha / (alpha + beta), abs=0.002)


def test_beta_policy_refuses_rewards_other_than_zero_and_one():
    policy = make_policy("thompson_beta", arms=["v1"])
    with pytest.raises(PolicyError, match="0/1"):
        policy.update("v1", 0.5)
    with pytest.raises(PolicyError):
        policy.update("v1", math.nan)


def test_gaussian_posterior_is_the_normal_inverse_gamma_update():
    policy = ThompsonGaussian()
    policy.add_arm("v1")  # prior mean 0, kappa 1, alpha 1, beta 1
    for reward in (1.0, 2.0, 3.0):
        policy.update("v1", reward)

    summary = policy.summary()["v1"]

    # n = 3, mean 2, sum of squared deviations 2: kappa 4, mean 6/4, alpha 2.5,
    # beta = 1 + 2/2 + 1 * 3 * (2 - 0)^2 / (2 * 4) = 3.5
    marginal = stats.t(df=5.0, loc=1.5, scale=math.sqrt(3.5 / (2.5 * 4)))
    assert summary["mean"] == pytest.approx(1.5)
    assert summary["ci_low"] == pytest.approx(marginal.ppf(0.025))
    assert summary["ci_high"] == pytest.approx(marginal.ppf(0.975))


def test_ucb1_bonus_and_choice_on_a_known_case():
    policy = UCB1(c=1.0)
    policy.add_arm("a")
    policy.add_arm("b")
    feed(policy, "a", successes=2, failures=2)  # mean 0.5 over 4 pulls
    feed(policy, "b", successes=3, failures=3)  # mean 0.5 over 6 pulls

    # sqrt(2 ln 10 / 4) = 1.0730, against sqrt(2 ln 10 / 6) = 0.8761 for b
    assert policy.bonus(4, 10) == pytest.approx(1.0729830131446736)
    assert policy.bonus(6, 10) == pytest.approx(0.8760869616)
    assert policy.probabilities() == {"a": 1.0, "b": 0.0}
    assert policy.choose(np.random.default_rng(0)).arm == "a"


def test_ucb1_plays_unplayed_arms_first_and_splits_ties():
    policy = make_policy("ucb1", arms=["a", "b", "c"])
    feed(policy, "a", successes=1, failures=0)

    assert policy.probabilities() == {"a": 0.0, "b": 0.5, "c": 0.5}


def test_epsilon_greedy_probabilities():
    policy = EpsilonGreedy(epsilon=0.3)
    for arm in ("a", "b", "c"):
        policy.add_arm(arm)
    feed(policy, "a", successes=3, failures=1)
    feed(policy, "b", successes=1, failures=3)

    # c has no reward yet, so it is reached through exploration only
    probabilities = policy.probabilities()
    assert probabilities["a"] == pytest.approx(0.1 + 0.7)
    assert probabilities["b"] == pytest.approx(0.1)
    assert probabilities["c"] == pytest.approx(0.1)

    feed(policy, "b", successes=8, failures=0)  # b reaches a's 0.75: the greedy share splits
    probabilities = policy.probabilities()
    assert probabilities["a"] == pytest.approx(0.1 + 0.35)
    assert probabilities["b"] == pytest.approx(0.1 + 0.35)


def test_fixed_split_follows_its_weights():
    policy = FixedSplit({"a": 3.0, "b": 1.0})
    assert policy.probabilities() == {"a": 0.75, "b": 0.25}
    feed(policy, "b", successes=10, failures=0)
    assert policy.probabilities() == {"a": 0.75, "b": 0.25}


def trained(name: str) -> Policy:
    """A policy whose probabilities are not trivially one-hot where the math allows it."""
    params = {"epsilon": 0.3} if name == "epsilon_greedy" else {}
    policy = make_policy(name, arms=["a", "b", "c"], **params)
    feed(policy, "a", successes=12, failures=18)
    feed(policy, "b", successes=10, failures=20)
    feed(policy, "c", successes=6, failures=24)
    return policy


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_propensities_sum_to_one_and_match_choice_frequencies(name: str):
    policy = trained(name)
    probabilities = policy.probabilities()
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-12)

    rng = np.random.default_rng(7)
    draws = 20_000
    decisions = [policy.choose(rng) for _ in range(draws)]

    assert all(decision.propensity == probabilities[decision.arm] for decision in decisions)
    assert all(decision.propensity > 0 for decision in decisions)
    for arm, probability in probabilities.items():
        frequency = sum(decision.arm == arm for decision in decisions) / draws
        # five standard errors: a fixed seed, and still no flakiness if the seed changes
        assert frequency == pytest.approx(probability, abs=5 * math.sqrt(0.25 / draws))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("epsilon_greedy", {"epsilon": 0.1}),
        ("ucb1", {}),
        ("thompson_beta", FAST_THOMPSON),
        ("thompson_gaussian", FAST_THOMPSON),
    ],
)
def test_allocation_converges_to_the_better_arm(name: str, params: dict):
    policy = make_policy(name, arms=["worse", "better"], **params)
    rates = {"worse": 0.3, "better": 0.5}
    rng = np.random.default_rng(11)
    chosen = []
    for _ in range(3000):
        arm = policy.choose(rng).arm
        policy.update(arm, float(rng.random() < rates[arm]))
        chosen.append(arm)

    late_share = chosen[-1000:].count("better") / 1000
    assert late_share > 0.85
    assert policy.probabilities()["better"] > 0.85


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_snapshot_and_restore_give_identical_behaviour(name: str, codec: str):
    params = FAST_THOMPSON if name.startswith("thompson") else {}
    original = make_policy(name, arms=["a", "b"], **params)
    original.add_arm("c", min_share=0.1, min_pulls=50)
    feed(original, "a", successes=5, failures=9)
    feed(original, "b", successes=7, failures=6)
    if codec == "json":
        wire = json.loads(json.dumps(original.snapshot()))
    else:
        wire = msgpack.unpackb(msgpack.packb(original.snapshot()), raw=False)
    rebuilt = policy_from_snapshot(wire)

    def play(policy: Policy) -> list[tuple[str, float]]:
        rng, rewards = np.random.default_rng(3), np.random.default_rng(4)
        played = []
        for _ in range(200):
            decision = policy.choose(rng)
            policy.update(decision.arm, float(rewards.random() < 0.4))
            played.append((decision.arm, decision.propensity))
        return played

    assert play(rebuilt) == play(original)
    assert rebuilt.snapshot() == original.snapshot()
    # through JSON because summaries hold NaN intervals for arms with fewer than 2 rewards
    assert json.dumps(rebuilt.summary()) == json.dumps(original.summary())


def test_restore_keeps_configured_parameters_and_refuses_other_policies():
    source = make_policy("epsilon_greedy", arms=["a", "b"], epsilon=0.2)
    feed(source, "a", successes=1, failures=0)
    target = EpsilonGreedy(epsilon=0.5)
    target.restore(source.snapshot())

    assert target.arms == ("a", "b")
    assert target.probabilities()["a"] == pytest.approx(0.25 + 0.5)
    with pytest.raises(PolicyError, match="snapshot of policy"):
        make_policy("ucb1").restore(source.snapshot())
    malformed = source.snapshot()
    del malformed["arms"][0]["pulls"]
    with pytest.raises(PolicyError, match="malformed"):
        target.restore(malformed)


def test_new_arm_joins_with_its_prior_and_a_minimum_share():
    policy = make_policy("thompson_beta", arms=["old", "other"])
    feed(policy, "old", successes=60, failures=40)
    feed(policy, "other", successes=40, failures=60)
    assert policy.probabilities()["old"] > 0.99

    policy.add_arm("new", min_share=0.2, min_pulls=10, alpha=30.0, beta=70.0)
    assert policy.summary()["new"]["mean"] == pytest.approx(0.3)
    assert policy.probabilities()["new"] >= 0.2

    feed(policy, "new", successes=0, failures=10)
    assert policy.probabilities()["new"] < 0.01  # the floor lifts after min_pulls rewards

    policy.add_arm("new")  # a replayed announcement changes nothing
    assert policy.summary()["new"]["pulls"] == 10


def test_min_shares_cannot_exceed_the_whole_traffic():
    policy = make_policy("ab", arms=["a"])
    policy.add_arm("b", min_share=0.7, min_pulls=10)
    with pytest.raises(PolicyError, match="min_share"):
        policy.add_arm("c", min_share=0.4, min_pulls=10)


def test_removed_arm_gets_no_traffic_and_no_rewards():
    policy = FixedSplit({"a": 1.0, "b": 1.0, "c": 2.0})
    policy.remove_arm("c")
    policy.remove_arm("never-there")

    assert policy.probabilities() == {"a": 0.5, "b": 0.5}
    with pytest.raises(UnknownArm):
        policy.update("c", 1.0)
    policy.remove_arm("a")
    policy.remove_arm("b")
    with pytest.raises(PolicyError, match="no arms"):
        policy.choose(np.random.default_rng(0))


def test_promotion_of_a_clear_winner():
    policy = make_policy("thompson_beta", arms=["a", "b"])
    feed(policy, "a", successes=300, failures=700)
    feed(policy, "b", successes=200, failures=800)

    promotion = promotion_decision(policy)

    assert promotion.champion == "a"
    assert promotion.p_best > 0.999
    assert promotion.loss < 1e-4
    assert promotion.promote


def test_no_promotion_when_the_leader_is_unclear():
    policy = make_policy("thompson_beta", arms=["a", "b"])
    feed(policy, "a", successes=31, failures=69)
    feed(policy, "b", successes=30, failures=70)

    promotion = promotion_decision(policy)

    assert 0.5 < promotion.p_best < 0.8
    assert not promotion.promote


def test_expected_loss_clause_can_block_a_likely_best_arm():
    policy = make_policy("thompson_beta", arms=["a", "b"])
    feed(policy, "a", successes=20, failures=80)
    feed(policy, "b", successes=10, failures=90)
    strict = PromotionRule(min_p_best=0.95, max_loss=0.001)

    promotion = promotion_decision(policy, strict)

    assert promotion.p_best >= 0.95
    assert promotion.loss >= 0.001
    assert not promotion.promote
    assert promotion_decision(policy).promote  # the default 1% bound lets it through


def test_quantile_value_remaining_is_zero_once_p_best_exceeds_the_quantile():
    # what lets the experiment reduce the source's rule to its P(best) clause
    draws = np.random.default_rng(5).beta([25, 12], [75, 88], size=(20_000, 2))
    remaining = value_remaining(draws)

    assert remaining.p_best[remaining.champion] > 0.95
    assert np.quantile(remaining.loss, 0.95) == 0.0


def test_factory_rejects_unknown_policies_and_parameters():
    with pytest.raises(PolicyError, match="unknown policy"):
        make_policy("softmax")
    with pytest.raises(PolicyError, match="epsilon"):
        make_policy("ucb1", epsilon=0.1)
    with pytest.raises(PolicyError, match="prior"):
        make_policy("ucb1").add_arm("a", alpha=2.0)
    with pytest.raises(PolicyError, match="epsilon"):
        make_policy("epsilon_greedy", epsilon=1.5)
