"""Replay, IPS and DR on synthetic uniform-random logs whose policy values are known,
and one run of ``rtml evaluate recs`` on the real sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rtml.tasks.recs.obd import UserFeatureEncoder
from rtml.tasks.recs.offline import (
    BatchPopularity,
    Choice,
    Counts,
    UniformRandom,
    cross_fitted_reward_model,
    evaluate_campaign,
    format_report,
    interval,
    jeffreys,
    replay_pass,
)

CLICK_RATES = np.array([0.05, 0.10, 0.20, 0.30, 0.40])
K = len(CLICK_RATES)


def uniform_log(rounds: int, rng: np.random.Generator):
    items = rng.integers(K, size=rounds)
    clicks = (rng.random(rounds) < CLICK_RATES[items]).astype(float)
    return items, clicks, np.full(rounds, 1.0 / K)


class Fixed:
    """A non-learning policy with known choice probabilities; records its updates."""

    def __init__(self, probabilities):
        self.probabilities = np.asarray(probabilities, dtype=float)
        self.cumulative = np.cumsum(self.probabilities)
        self.updates = 0

    def choose(self, context, rng):
        arm = min(int(np.searchsorted(self.cumulative, rng.random(), side="right")), K - 1)
        return Choice(arm, float(self.probabilities[arm]))

    def update(self, arm, context, reward):
        self.updates += 1


def counts_of(policy, rounds, rng, reward_model=None):
    items, clicks, propensities = uniform_log(rounds, rng)
    chosen = replay_pass(policy, np.zeros((rounds, 1)), items, clicks, rng)
    model = (
        cross_fitted_reward_model(items, clicks, K)
        if reward_model is None
        else reward_model(rounds)
    )
    return Counts.of(chosen, items, clicks, propensities, model)


def test_a_deterministic_policy_is_recovered_with_intervals_of_the_right_width():
    rng = np.random.default_rng(1)
    counts = counts_of(Fixed([0, 0, 0, 0, 1]), 20_000, rng)
    points, draws = counts.estimates(), counts.draws(4000, rng)
    # replay: a mean over the matched rounds; IPS and DR: K x a mean over all rounds
    standard_errors = {
        "replay": np.sqrt(0.4 * 0.6 / counts.matched),
        "ips": K * np.sqrt(0.4 / K * (1 - 0.4 / K) / counts.rounds),
    }
    standard_errors["dr"] = standard_errors["ips"]
    for estimator, standard_error in standard_errors.items():
        found = interval(points[estimator], draws[estimator])
        # a miss by 4 standard errors has probability < 1e-4
        assert abs(found.value - 0.40) < 4 * standard_error, (estimator, found)
        assert found.low <= found.value <= found.high
        assert found.high - found.low == pytest.approx(2 * 1.96 * standard_error, rel=0.25)


@pytest.mark.parametrize("bad_model", [False, True])
def test_replay_ips_and_dr_are_unbiased_for_a_stochastic_policy(bad_model):
    probabilities = np.array([0.1, 0.1, 0.2, 0.2, 0.4])
    truth = float(probabilities @ CLICK_RATES)  # 0.25
    rng = np.random.default_rng(2)
    # DR stays unbiased with a reward model that is plain wrong
    model = (lambda rounds: np.tile(CLICK_RATES[::-1], (rounds, 1))) if bad_model else None
    runs = [counts_of(Fixed(probabilities), 1000, rng, model).estimates() for _ in range(200)]
    for estimator in ("replay", "ips", "dr"):
        values = np.array([run[estimator] for run in runs])
        standard_error = values.std(ddof=1) / np.sqrt(len(values))
        assert abs(values.mean() - truth) < 4 * standard_error, estimator


def test_intervals_cover_the_true_value_at_about_their_level():
    rng = np.random.default_rng(3)
    truth = float(CLICK_RATES.mean())
    covered = dict.fromkeys(("replay", "ips", "dr"), 0)
    for _ in range(200):
        counts = counts_of(Fixed(np.full(K, 1 / K)), 500, rng)
        points, draws = counts.estimates(), counts.draws(2000, rng)
        for estimator in covered:
            found = interval(points[estimator], draws[estimator])
            covered[estimator] += found.low <= truth <= found.high
    # 95% nominal; fewer than 180 of 200 has probability < 1e-3
    assert min(covered.values()) >= 180, covered


def test_zero_matched_clicks_do_not_look_worse_than_random():
    # ~110 matched rounds at a 0.4% click rate: no click is the likely outcome
    rng = np.random.default_rng(4)
    baseline = jeffreys(38, 10_000, 4000, rng)
    lift = interval(0.0 - 0.0038, jeffreys(0, 110, 4000, rng) - baseline)
    assert lift.contains_zero


def test_a_policy_learns_from_the_matched_rounds_only():
    rng = np.random.default_rng(5)
    policy = Fixed(np.full(K, 1 / K))
    items, clicks, _ = uniform_log(5000, rng)
    chosen = replay_pass(policy, np.zeros((5000, 1)), items, clicks, rng)
    assert policy.updates == int((chosen == items).sum())
    assert 800 < policy.updates < 1200


def test_uniform_random_matches_one_round_in_n_items():
    rng = np.random.default_rng(6)
    policy = UniformRandom(K)
    assert {policy.choose(np.zeros(1), rng).arm for _ in range(200)} == set(range(K))
    assert policy.choose(np.zeros(1), rng).propensity == pytest.approx(1 / K)


def test_batch_popularity_shows_the_segment_list_in_slot_order():
    encoder = UserFeatureEncoder.of_campaign("men")
    lists = {"men/global": [0, 1, 2], "men/u0=1,u1=0": [5, 6, 7]}
    policy = BatchPopularity(lists, encoder, "men")

    def context(codes, position):
        user = encoder.one_hot(np.array([codes]))[0]
        return np.concatenate([user, np.eye(3)[position - 1]])

    rng = np.random.default_rng(7)
    assert policy.choose(context([1, 0, 0, 0], 2), rng).arm == 6
    assert policy.choose(context([0, 3, 0, 0], 3), rng).arm == 2  # no list of its own
    assert policy.choose(context([-1, 0, 0, 0], 1), rng).arm == 0  # unseen feature value


def test_a_log_with_non_uniform_propensities_is_refused():
    items = np.array([0, 1])
    with pytest.raises(ValueError, match="uniform"):
        Counts.of(items, items, np.zeros(2), np.array([0.5, 0.2]), np.zeros((2, K)))


def test_cli_on_the_real_sample(tmp_path):
    from rtml.cli import main

    plot = tmp_path / "recs.png"
    args = ["evaluate", "recs", "--campaign", "men", "--policy", "random"]
    args += ["--policy", "popularity", "--policy", "epsilon_greedy", "--draws", "500", "--json"]
    result = CliRunner().invoke(main, [*args, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)
    assert (report["n_rounds"], report["n_clicks"], report["n_items"]) == (10_000, 46, 34)
    # one lift verdict per policy, Bonferroni-corrected over the three
    assert report["lift_level"] == pytest.approx(1 - 0.05 / 3)
    policies = [row["policy"] for row in report["rows"]]
    assert policies == [p for p in ("random", "popularity", "epsilon_greedy") for _ in range(3)]
    for row in report["rows"]:
        # a uniform policy matches the logged item in ~1/34 of the rounds
        assert 150 < row["matched_rounds"] < 450
        assert row["ctr"]["low"] <= row["ctr"]["value"] <= row["ctr"]["high"]
        if row["lift"]["low"] <= 0 <= row["lift"]["high"]:
            assert row["verdict"] == "not distinguishable from random"
    bts = report["references"][1]
    assert (bts["rounds"], bts["clicks"]) == (10_000, 69)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_text_report_states_the_sample_and_the_verdicts():
    report = evaluate_campaign("men", ["random"], seed=1, draws=200)
    text = format_report(report)
    assert "10000 rounds" in text and "46 clicks" in text and "34 items" in text
    assert text.count("not distinguishable from random") >= 3
    assert "bts (logged, on-policy)" in text
