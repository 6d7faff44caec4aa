"""Contextual bandit policies: ridge algebra, learning, propensities, checkpoints, bad input."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from rtml.shared.bandits.contextual import (
    CONTEXTUAL_POLICY_NAMES,
    ContextualPolicyError,
    EpsilonGreedyLinear,
    LinearThompson,
    LinUCB,
    contextual_policy_from_snapshot,
    make_contextual_policy,
)
from rtml.shared.bandits.policies import PolicyError

N_ARMS, DIM = 4, 5


def trained(name: str, rounds: int = 300, seed: int = 0, **params: float):
    """A policy fed ``rounds`` random (arm, context, reward) triples."""
    policy = make_contextual_policy(name, N_ARMS, DIM, **params)
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        arm = int(rng.integers(N_ARMS))
        policy.update(arm, rng.normal(size=DIM), float(rng.random() < 0.4))
    return policy


@pytest.mark.parametrize("name", CONTEXTUAL_POLICY_NAMES)
def test_sherman_morrison_inverse_matches_a_direct_inverse_after_many_updates(name):
    ridge = 0.5
    policy = make_contextual_policy(name, N_ARMS, DIM, ridge=ridge)
    rng = np.random.default_rng(3)
    gram = np.broadcast_to(ridge * np.eye(DIM), (N_ARMS, DIM, DIM)).copy()
    targets = np.zeros((N_ARMS, DIM))
    for _ in range(5000):
        arm, x, reward = int(rng.integers(N_ARMS)), rng.normal(size=DIM) * 3, rng.normal()
        policy.update(arm, x, reward)
        gram[arm] += np.outer(x, x)
        targets[arm] += reward * x

    np.testing.assert_allclose(policy.inverse_gram(), np.linalg.inv(gram), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        policy.coefficients(), np.linalg.solve(gram, targets[..., None])[..., 0], atol=1e-9
    )
    assert policy.pulls().sum() == 5000


def separable_stream(rounds: int, seed: int):
    """Contexts whose best arm is argmax(true_theta @ x); reward 1 exactly for the best arm."""
    rng = np.random.default_rng(seed)
    true_theta = rng.normal(size=(N_ARMS, DIM))
    contexts = rng.normal(size=(rounds, DIM))
    return contexts, (contexts @ true_theta.T).argmax(axis=1)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("epsilon_greedy_linear", {"epsilon": 0.05}),
        ("linucb", {"alpha": 0.5}),
        ("linear_ts", {"scale": 0.1, "propensity_grid": 64}),
    ],
)
def test_learns_a_separable_linear_problem_well_above_random(name, params):
    rounds, tail = 1500, 500
    contexts, best = separable_stream(rounds, seed=11)
    policy = make_contextual_policy(name, N_ARMS, DIM, **params)
    rng = np.random.default_rng(5)
    rewards = np.zeros(rounds)
    for t in range(rounds):
        decision = policy.choose(contexts[t], rng)
        rewards[t] = float(decision.arm == best[t])
        policy.update(decision.arm, contexts[t], rewards[t])

    # random routing earns 1/4; a linear model of a 0/1 "is best" reward cannot be exact,
    # but must get most contexts right after a thousand rounds
    assert rewards[-tail:].mean() > 0.7


def test_epsilon_greedy_propensities_are_exact():
    policy = trained("epsilon_greedy_linear", epsilon=0.2)
    x = np.random.default_rng(1).normal(size=DIM)
    greedy = int(np.argmax(policy.coefficients() @ x))
    probabilities = policy.probabilities(x[None, :])[0]

    expected = np.full(N_ARMS, 0.2 / N_ARMS)
    expected[greedy] += 0.8
    np.testing.assert_allclose(probabilities, expected)
    decision = policy.choose(x, np.random.default_rng(2))
    assert decision.propensity == pytest.approx(expected[decision.arm])
    # the decisions follow those probabilities
    batch = policy.choose_batch(np.tile(x, (40_000, 1)), np.random.default_rng(3))
    frequencies = np.bincount(batch.arms, minlength=N_ARMS) / len(batch.arms)
    np.testing.assert_allclose(frequencies, expected, atol=0.01)
    np.testing.assert_allclose(batch.propensities, expected[batch.arms])


def test_epsilon_greedy_splits_ties_evenly():
    policy = EpsilonGreedyLinear(N_ARMS, DIM, epsilon=0.2)
    # no rewards yet: every estimate is 0, all arms tie for greedy
    probabilities = policy.probabilities(np.ones((1, DIM)))[0]
    np.testing.assert_allclose(probabilities, np.full(N_ARMS, 1 / N_ARMS))


def test_linucb_breaks_ties_uniformly_and_logs_one_over_the_ties():
    policy = LinUCB(N_ARMS, DIM)
    x = np.ones(DIM)
    batch = policy.choose_batch(np.tile(x, (20_000, 1)), np.random.default_rng(0))

    np.testing.assert_allclose(batch.propensities, 1 / N_ARMS)
    frequencies = np.bincount(batch.arms, minlength=N_ARMS) / len(batch.arms)
    np.testing.assert_allclose(frequencies, 1 / N_ARMS, atol=0.015)


def test_linucb_is_deterministic_without_ties():
    policy = trained("linucb")
    x = np.random.default_rng(1).normal(size=DIM)
    best = int(np.argmax(policy.upper_bounds(x[None, :])[0]))
    batch = policy.choose_batch(np.tile(x, (100, 1)), np.random.default_rng(0))
    assert set(batch.arms.tolist()) == {best}
    assert set(batch.propensities.tolist()) == {1.0}


def test_linear_thompson_propensities_match_the_choice_frequencies():
    policy = trained("linear_ts", rounds=60, scale=0.5, propensity_grid=256)
    x = np.random.default_rng(1).normal(size=DIM)
    p_best = policy.p_best(x)

    assert p_best.sum() == pytest.approx(1.0, abs=N_ARMS * policy.propensity_error_bound)
    assert ((p_best > 0) & (p_best <= 1)).all()
    # the arms must not be near-certain, or the check below would say little
    assert p_best.max() < 0.9
    batch = policy.choose_batch(np.tile(x, (20_000, 1)), np.random.default_rng(4))
    frequencies = np.bincount(batch.arms, minlength=N_ARMS) / len(batch.arms)
    # binomial standard error <= 0.0036 at 20,000 draws, the grid's error <= 0.002
    np.testing.assert_allclose(frequencies, p_best, atol=0.015)
    np.testing.assert_allclose(batch.propensities, p_best[batch.arms])


def test_linear_thompson_propensity_is_within_the_stated_bound_of_a_fine_grid():
    coarse = trained("linear_ts", rounds=60, scale=0.5, propensity_grid=32)
    fine = LinearThompson(N_ARMS, DIM, scale=0.5, propensity_grid=200_000)
    fine.restore(coarse.snapshot())
    x = np.random.default_rng(1).normal(size=DIM)

    difference = np.abs(coarse.p_best(x) - fine.p_best(x))
    assert (difference <= coarse.propensity_error_bound + fine.propensity_error_bound).all()


@pytest.mark.parametrize("name", CONTEXTUAL_POLICY_NAMES)
def test_batch_decisions_equal_single_decisions(name):
    policy = trained(name)
    contexts = np.random.default_rng(8).normal(size=(50, DIM))
    batch = policy.choose_batch(contexts, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    singles = [policy.choose(x, rng) for x in contexts]

    assert batch.arms.tolist() == [decision.arm for decision in singles]
    assert batch.propensities.tolist() == [decision.propensity for decision in singles]


@pytest.mark.parametrize("name", CONTEXTUAL_POLICY_NAMES)
def test_snapshot_round_trip_gives_identical_subsequent_decisions(name):
    original = trained(name)
    state = msgpack.unpackb(msgpack.packb(original.snapshot()))
    restored = make_contextual_policy(name, N_ARMS, DIM, **state["params"])
    restored.restore(state)
    rebuilt = contextual_policy_from_snapshot(state)

    rngs = [np.random.default_rng(21) for _ in range(3)]
    stream = np.random.default_rng(22)
    for _ in range(200):
        x = stream.normal(size=DIM)
        decisions = [
            policy.choose(x, rng)
            for policy, rng in zip((original, restored, rebuilt), rngs, strict=True)
        ]
        assert decisions[0] == decisions[1] == decisions[2]
        reward = float(stream.random() < 0.5)
        for policy in (original, restored, rebuilt):
            policy.update(decisions[0].arm, x, reward)


def test_restore_keeps_the_configured_parameters():
    state = trained("linucb", alpha=2.0).snapshot()
    policy = LinUCB(N_ARMS, DIM, alpha=0.1)
    policy.restore(state)
    assert policy.alpha == 0.1
    np.testing.assert_array_equal(policy.inverse_gram(), np.asarray(state["inverse"]))


@pytest.mark.parametrize(
    ("state_change", "message"),
    [
        ({"policy": "linucb"}, "not 'linear_ts'"),
        ({"version": 99}, "version"),
        ({"dim": DIM + 1}, "dim=6"),
        ({"b": [[0.0] * DIM]}, "b has shape"),
        ({"inverse": "garbage"}, "malformed snapshot"),
        ({"pulls": [-1] * N_ARMS}, "negative pulls"),
    ],
)
def test_restore_rejects_foreign_or_broken_snapshots(state_change, message):
    state = {**trained("linear_ts").snapshot(), **state_change}
    with pytest.raises(ContextualPolicyError, match=message):
        LinearThompson(N_ARMS, DIM).restore(state)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (np.ones(DIM + 1), r"shape \(5,\)"),
        (np.ones((1, DIM)), r"shape \(5,\)"),
        (np.array([1.0, np.nan, 0.0, np.inf, 0.0]), r"non-finite values at indices \[1, 3\]"),
    ],
)
@pytest.mark.parametrize("name", CONTEXTUAL_POLICY_NAMES)
def test_bad_contexts_raise(name, context, message):
    policy = make_contextual_policy(name, N_ARMS, DIM)
    with pytest.raises(ContextualPolicyError, match=message):
        policy.choose(context, np.random.default_rng(0))
    with pytest.raises(ContextualPolicyError, match=message):
        policy.update(0, context, 1.0)


def test_bad_batches_arms_and_rewards_raise():
    policy = LinUCB(N_ARMS, DIM)
    with pytest.raises(ContextualPolicyError, match=r"shape \(n, 5\)"):
        policy.choose_batch(np.ones(DIM), np.random.default_rng(0))
    with pytest.raises(ContextualPolicyError, match=r"rows \[1\]"):
        policy.choose_batch(np.array([[0.0] * DIM, [np.nan] * DIM]), np.random.default_rng(0))
    with pytest.raises(ContextualPolicyError, match=r"arm must be in \[0, 4\)"):
        policy.update(N_ARMS, np.ones(DIM), 1.0)
    with pytest.raises(ContextualPolicyError, match="arm must be an integer"):
        policy.update("0", np.ones(DIM), 1.0)  # type: ignore[arg-type]
    with pytest.raises(ContextualPolicyError, match="reward must be finite"):
        policy.update(0, np.ones(DIM), float("nan"))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("linucb_v2", {}, "unknown contextual policy 'linucb_v2'; choose one of"),
        ("linucb", {"epsilon": 0.1}, "linucb: .*epsilon"),
        ("epsilon_greedy_linear", {"epsilon": 1.5}, "epsilon must be finite and >= 0.0"),
        ("linucb", {"alpha": -1.0}, "alpha must be finite and >= 0"),
        ("linucb", {"ridge": 0.0}, "ridge must be finite and > 0"),
        ("linear_ts", {"scale": float("nan")}, "scale must be finite"),
        ("linear_ts", {"propensity_grid": 2.5}, "propensity_grid must be an integer >= 1"),
    ],
)
def test_bad_configuration_names_the_parameter(name, params, message):
    with pytest.raises(ContextualPolicyError, match=message) as raised:
        make_contextual_policy(name, N_ARMS, DIM, **params)
    assert isinstance(raised.value, PolicyError)


@pytest.mark.parametrize(("n_arms", "dim"), [(0, DIM), (N_ARMS, 0), (True, DIM)])
def test_bad_sizes_raise(n_arms, dim):
    with pytest.raises(ContextualPolicyError, match="must be an integer >= 1"):
        make_contextual_policy("linucb", n_arms, dim)


def test_a_single_arm_is_chosen_with_certainty():
    for name in CONTEXTUAL_POLICY_NAMES:
        decision = make_contextual_policy(name, 1, DIM).choose(
            np.ones(DIM), np.random.default_rng(0)
        )
        assert (decision.arm, decision.propensity) == (0, 1.0)
