from __future__ import annotations

import math

import pytest
from rtml.shared.model_metrics import METRICS, log_loss, metrics_for


def test_each_kind_has_its_metrics() -> None:
    assert metrics_for("regression") == ("mae", "rmse")
    assert metrics_for("binary") == ("rmse", "logloss", "auc")
    assert metrics_for("ranking") == ()


@pytest.mark.parametrize(
    ("metric", "better", "worse"),
    [("mae", 4.0, 4.5), ("rmse", 0.3, 0.4), ("logloss", 0.2, 0.7), ("auc", 0.8, 0.6)],
)
def test_a_candidate_is_kept_when_its_metric_is_no_worse_in_the_metrics_direction(
    metric: str, better: float, worse: float
) -> None:
    judge = METRICS[metric]
    assert judge.at_least_as_good(better, than=worse)
    assert judge.at_least_as_good(better, than=better)
    assert not judge.at_least_as_good(worse, than=better)


def test_the_errors_per_example() -> None:
    assert METRICS["mae"].example_error(28.0, 31.0) == 3.0
    assert METRICS["rmse"].example_error(0.25, 1.0) == pytest.approx(0.5625)
    assert METRICS["logloss"].example_error(0.8, 1.0) == pytest.approx(-math.log(0.8))
    assert METRICS["logloss"].example_error(0.8, 0.0) == pytest.approx(-math.log(0.2))
    assert METRICS["auc"].example_error(0.8, 0.0) == pytest.approx(0.8)


def test_a_certain_wrong_probability_costs_a_large_but_finite_log_loss() -> None:
    assert 30 < log_loss(1.0, 0.0) < 40 and 30 < log_loss(0.0, 1.0) < 40
