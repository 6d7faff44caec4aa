"""The bake-off's conversion, progressive-validation accounting, skyline and verdicts."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import stats

from rtml.research.bakeoff import (
    METHODS,
    BakeoffError,
    Dataset,
    FullInformationRidge,
    MabwiserLinear,
    OurPolicy,
    Setting,
    UniformRandom,
    VowpalWabbitADF,
    load_dataset,
    mean_interval,
    progressive_pass,
    standardize,
    stream,
    targets,
    to_bandit,
)


def separable(n: int = 1200, n_classes: int = 4, seed: int = 0) -> Dataset:
    """Classes are the quadrant of two informative features (plus noise features)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(n_classes, 5))
    labels = rng.integers(n_classes, size=n)
    features = centers[labels] + rng.normal(size=(n, 5))
    return to_bandit("separable", features, labels)


class Oracle:
    """Knows every row's label by its context."""

    def __init__(self, dataset: Dataset) -> None:
        self.labels = {
            row.tobytes(): int(label)
            for row, label in zip(dataset.contexts, dataset.labels, strict=True)
        }

    def choose(self, context, rng):
        return self.labels[context.tobytes()]

    def learn(self, context, arm, reward):
        pass


class Recorder:
    def __init__(self, arm: int) -> None:
        self.arm, self.calls = arm, []

    def choose(self, context, rng):
        self.calls.append(("choose", context[0]))
        return self.arm

    def learn(self, context, arm, reward):
        self.calls.append(("learn", context[0], arm, reward))

    def learn_label(self, context, label):
        self.calls.append(("learn_label", context[0], label))


class Memorizer:
    """Answers from what it was told about this very context: it can only score on a
    row if the reward of that row reached it before the row's decision."""

    def __init__(self) -> None:
        self.seen: dict[bytes, int] = {}

    def choose(self, context, rng):
        return self.seen.get(context.tobytes(), 0)

    def learn_label(self, context, label):
        self.seen[context.tobytes()] = label


# --- conversion ----------------------------------------------------------------------


def test_standardize_gives_mean_zero_unit_variance_and_zeroes_constant_columns():
    features = np.column_stack([np.arange(10.0), 5.0 * np.ones(10), np.linspace(-3, 40, 10) ** 2])

    scaled = standardize(features)

    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled.std(axis=0), [1.0, 0.0, 1.0])
    assert not scaled[:, 1].any()


def test_to_bandit_maps_labels_to_arm_indices_and_appends_the_intercept():
    features = np.array([[1.0, 2.0], [3.0, 5.0], [0.0, 1.0], [2.0, 2.0]])

    dataset = to_bandit("toy", features, ["cat", "ant", "cat", "bee"])

    assert dataset.n_classes == 3
    assert dataset.labels.tolist() == [2, 0, 2, 1]  # sorted class names: ant, bee, cat
    assert dataset.dim == 3
    np.testing.assert_array_equal(dataset.contexts[:, -1], 1.0)
    np.testing.assert_allclose(dataset.contexts[:, :2], standardize(features))


def test_to_bandit_rejects_a_single_class():
    with pytest.raises(BakeoffError, match="at least 2 classes"):
        to_bandit("one", np.ones((3, 2)), [1, 1, 1])


@pytest.mark.parametrize(
    ("name", "rows", "features", "classes"),
    [("digits", 1797, 64, 10), ("wine", 178, 13, 3), ("breast_cancer", 569, 30, 2)],
)
def test_load_dataset_reads_the_datasets_shipped_with_scikit_learn(name, rows, features, classes):
    pytest.importorskip("sklearn")

    dataset = load_dataset(name)

    assert dataset.contexts.shape == (rows, features + 1)
    assert dataset.n_classes == classes
    assert sorted(set(dataset.labels.tolist())) == list(range(classes))
    assert np.isfinite(dataset.contexts).all()


def test_load_dataset_names_the_choices_for_an_unknown_dataset():
    with pytest.raises(BakeoffError, match="digits, wine, breast_cancer"):
        load_dataset("iris")


def test_stream_is_one_seeded_shuffle_shared_by_every_method():
    dataset = separable(n=50)

    first, rng_a = stream(dataset, seed=3)
    again, rng_b = stream(dataset, seed=3)
    other, _ = stream(dataset, seed=4)
    prefix, _ = stream(dataset, seed=3, rounds=20)

    assert sorted(first.tolist()) == list(range(50))
    np.testing.assert_array_equal(first, again)
    assert rng_a.random() == rng_b.random()
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(prefix, first[:20])


# --- progressive validation ----------------------------------------------------------


def test_a_perfect_oracle_scores_one():
    dataset = separable()
    order, rng = stream(dataset, seed=0)

    result = progressive_pass(Oracle(dataset), dataset, order, rng)

    assert result.reward == 1.0
    assert result.rounds == len(dataset.labels)
    assert result.seconds > 0


def test_uniform_random_scores_one_over_k():
    dataset = separable(n=8000, n_classes=4)
    order, rng = stream(dataset, seed=1)

    result = progressive_pass(UniformRandom(dataset.n_classes), dataset, order, rng)

    assert result.reward == pytest.approx(0.25, abs=4 * np.sqrt(0.25 * 0.75 / 8000))


def test_each_round_is_scored_before_its_feedback_and_in_the_streams_order():
    dataset = to_bandit("toy", np.arange(4.0)[:, None], [0, 1, 1, 0])
    # standardize/intercept aside, the first context column identifies the row
    keys = dataset.contexts[:, 0]
    order = np.array([2, 0, 3])
    recorder = Recorder(arm=1)

    result = progressive_pass(recorder, dataset, order, np.random.default_rng(0))

    assert recorder.calls == [
        ("choose", keys[2]), ("learn", keys[2], 1, 1.0),
        ("choose", keys[0]), ("learn", keys[0], 1, 0.0),
        ("choose", keys[3]), ("learn", keys[3], 1, 0.0),
    ]  # fmt: skip
    assert result.reward == pytest.approx(1 / 3)


def test_full_information_reveals_the_label_but_only_after_the_decision():
    dataset = separable(n=300)
    dataset = Dataset(dataset.name, dataset.contexts, np.maximum(dataset.labels, 1), 4)
    order, rng = stream(dataset, seed=0)
    recorder = Recorder(arm=0)

    progressive_pass(recorder, dataset, order[:2], rng, full_information=True)
    # every row appears once per pass, and the label of a row is known only after it
    memorized = progressive_pass(Memorizer(), dataset, order, rng, full_information=True)

    assert [call[0] for call in recorder.calls] == ["choose", "learn_label"] * 2
    assert recorder.calls[1][2] == dataset.labels[order[0]]
    assert memorized.reward == 0.0


# --- the skyline ---------------------------------------------------------------------


def test_skyline_is_the_ridge_regression_of_the_one_hot_labels():
    dataset = separable(n=200)
    ridge = 3.0
    skyline = FullInformationRidge(dataset.n_classes, dataset.dim, ridge)

    for context, label in zip(dataset.contexts, dataset.labels, strict=True):
        skyline.learn_label(context, int(label))

    x, onehot = dataset.contexts, np.eye(dataset.n_classes)[dataset.labels]
    expected = np.linalg.solve(ridge * np.eye(dataset.dim) + x.T @ x, x.T @ onehot)
    np.testing.assert_allclose(skyline._coefficients, expected, atol=1e-8)
    greedy = np.argmax(x @ expected, axis=1)
    rng = np.random.default_rng(0)
    assert [skyline.choose(row, rng) for row in x] == greedy.tolist()


def test_an_untrained_skyline_breaks_ties_at_random():
    skyline = FullInformationRidge(n_arms=5, dim=3, ridge=1.0)
    rng = np.random.default_rng(0)

    picks = {skyline.choose(np.ones(3), rng) for _ in range(200)}

    assert picks == set(range(5))


def test_skyline_learns_a_separable_stream_better_than_any_bandit_feedback_could_hurt():
    dataset = separable()
    order, rng = stream(dataset, seed=0)

    skyline = progressive_pass(
        FullInformationRidge(dataset.n_classes, dataset.dim, 1.0), dataset, order, rng, True
    )
    bandit = progressive_pass(
        OurPolicy("linucb", dataset, {"alpha": 0.3, "ridge": 1.0}), dataset, order, rng
    )

    assert skyline.reward > 0.9
    assert 0.5 < bandit.reward <= skyline.reward


# --- peers ---------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("vowpalwabbit") is None, reason="no vowpalwabbit")
@pytest.mark.parametrize("exploration", ["epsilon", "bag", "cover", "squarecb"])
def test_vw_adf_encoding_learns_the_classes(exploration):
    dataset = separable(n=800)
    order, rng = stream(dataset, seed=0)
    learner = VowpalWabbitADF(exploration, dataset, {"learning_rate": 0.3}, seed=0)

    result = progressive_pass(learner, dataset, order, rng)

    assert result.reward > 0.5  # uniform random: 0.25


@pytest.mark.skipif(importlib.util.find_spec("mabwiser") is None, reason="no mabwiser")
@pytest.mark.parametrize("policy_name", ["LinUCB", "LinTS"])
def test_mabwiser_adapter_learns_the_classes(policy_name):
    dataset = separable(n=400)
    order, rng = stream(dataset, seed=0)
    learner = MabwiserLinear(policy_name, dataset, {"alpha": 0.1, "ridge": 1.0}, seed=0)

    result = progressive_pass(learner, dataset, order, rng)

    assert result.reward > 0.5


def test_every_family_has_the_same_grid_budget_and_mabwiser_shares_ours():
    grids = {method.key: method.grid for method in METHODS}

    assert max(len(grid) for grid in grids.values()) == 6
    assert all(len(method.quick_grid) == 1 for method in METHODS)
    assert grids["mabwiser LinUCB"] == grids["ours LinUCB"]
    renamed = [{"alpha": p["scale"], "ridge": p["ridge"]} for p in grids["ours linear TS"]]
    assert grids["mabwiser LinTS"] == tuple(renamed)


# --- statistics and verdicts ---------------------------------------------------------


def test_mean_interval_is_the_student_t_interval():
    values = np.array([0.70, 0.72, 0.75, 0.71, 0.69])

    mean, low, high = mean_interval(values)

    half = stats.t.ppf(0.975, 4) * values.std(ddof=1) / np.sqrt(5)
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half))
    assert mean_interval(np.array([0.5, 0.5, 0.5])) == (0.5, 0.5, 0.5)


def row(method, family, reward, half=0.01, speed=1000.0, ratio=None):
    return {
        "method": method, "family": family, "reward": reward, "reward_low": reward - half,
        "reward_high": reward + half, "decisions_per_s": speed,
        "ratio_to_skyline": reward / 0.9 if ratio is None else ratio,
    }  # fmt: skip


def test_targets_judge_our_best_against_the_best_peer_of_each_family():
    rows = [
        row("ours LinUCB", "ours", 0.86, speed=4000),
        row("ours linear TS", "ours", 0.80, speed=9000),
        row("vw bag", "vw", 0.72, speed=3000),
        row("vw epsilon", "vw", 0.70, speed=5000),
        row("mabwiser LinTS", "mabwiser", 0.855, half=0.02),
        row("skyline", "skyline", 0.9),
    ]

    verdict = targets(rows)

    assert verdict["our_best"] == "ours LinUCB"
    assert verdict["above_vw"] and verdict["above_vw_separated"]
    assert verdict["best_vw"] == "vw bag"
    assert verdict["above_mabwiser"] and not verdict["above_mabwiser_separated"]
    assert verdict["skyline_ratio"] == pytest.approx(0.86 / 0.9)
    assert verdict["skyline_met"]
    # against the fastest VW configuration, not the best-scoring one
    assert verdict["speed_vs_fastest_vw"] == pytest.approx(0.8)
    assert not verdict["speed_met"]


def test_targets_say_when_a_peer_family_was_not_run():
    verdict = targets([row("ours LinUCB", "ours", 0.5, ratio=0.6), row("sky", "skyline", 0.9)])

    assert verdict["above_vw"] is None and verdict["above_mabwiser"] is None
    assert not verdict["skyline_met"]
    assert "speed_met" not in verdict
    assert targets([row("vw bag", "vw", 0.7), row("sky", "skyline", 0.9)]) is None


def test_setting_rejects_one_seed_and_unknown_datasets():
    with pytest.raises(BakeoffError, match="seeds must be >= 2"):
        Setting(seeds=1)
    with pytest.raises(BakeoffError, match="iris"):
        Setting(datasets=("digits", "iris"))
    with pytest.raises(BakeoffError, match="ours, vw, mabwiser"):
        Setting(families=("ours", "river"))
    assert Setting.reduced().rounds == 500 and Setting().rounds is None
