from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.continual import (
    CALM_STRATEGIES,
    STRATEGIES,
    Estimate,
    averaged,
    main,
    paired,
    predictions_to_recover,
    rolling_mae,
    table,
    timeline,
)


def test_rolling_mae_is_the_trailing_mean_once_the_window_is_full() -> None:
    rolling = rolling_mae(np.array([1.0, 3.0, 5.0, 7.0]), window=2)
    np.testing.assert_allclose(rolling, [np.nan, 2.0, 4.0, 6.0])
    assert np.isnan(rolling_mae(np.array([1.0]), window=2)).all()


def test_recovery_counts_predictions_until_the_window_first_meets_the_target() -> None:
    errors = np.array([9.0, 9.0, 5.0, 1.0, 1.0, 9.0])
    # windows of 2 end at predictions 2..6 with means 9, 7, 3, 1, 5: first <= 3 at the 4th
    assert predictions_to_recover(errors, target=3.0, window=2) == 4
    assert predictions_to_recover(errors, target=0.5, window=2) is None
    assert predictions_to_recover(errors[:1], target=100.0, window=2) is None


def test_timeline_puts_each_label_after_its_request_in_event_time() -> None:
    class Served:
        def __init__(self, ts: float, label_ts: float) -> None:
            self.request = type("Request", (), {"ts": ts})()
            self.label_ts = label_ts

    points = timeline([Served(0.0, 50.0), Served(10.0, 20.0)])
    assert points == [(0.0, False, 0), (10.0, False, 1), (20.0, True, 1), (50.0, True, 0)]


def test_an_estimate_is_the_mean_with_a_student_t_interval_over_the_seeds() -> None:
    estimate = Estimate.of([1.0, 2.0, 3.0])
    # mean 2, standard error 1/sqrt(3), t(0.975, 2 degrees of freedom) = 4.303
    assert estimate.mean == 2.0
    assert estimate.high - 2.0 == pytest.approx(4.303 / np.sqrt(3), rel=1e-3)
    assert estimate.text("{:.1f}") == "2.0 [-0.5, 4.5]"
    assert Estimate.of([5.0]).text("{:.1f}") == "5.0"  # one seed: no interval


def run(strategy: str, post_mae: float, to_calm: int | None) -> dict[str, object]:
    return {
        "strategy": strategy, "pre_drift_mae": 5.0, "post_drift_mae": post_mae,
        "post_drift_vs_none": 1.0, "predictions_to_recover": 10, "predictions_to_calm": to_calm,
        "post_drift_predictions": 1000, "trainings_run": 2, "trainings_kept": 1,
        "training_cpu_s": 1.0, "trainings": [],
    }  # fmt: skip


def test_a_run_that_never_recovers_counts_every_post_drift_prediction() -> None:
    seeds = [[run("none", 8.0, None)], [run("none", 8.0, 400)]]
    (row,) = averaged(seeds)
    assert row["predictions_to_calm"].mean == 700.0 and row["never"]["predictions_to_calm"] == 1
    assert row["cpu_s_per_training"].mean == 0.5
    assert "(1 never)" in table([row])[2]


def test_the_paired_differences_are_taken_seed_by_seed_against_the_reference() -> None:
    seeds = [
        [run("scheduled-finetune", 7.0, 900), run("drift-finetune", 6.0, 500)],
        [run("scheduled-finetune", 9.0, 800), run("drift-finetune", 8.5, 600)],
    ]
    (row,) = paired(seeds, "drift-finetune")
    assert row["strategy"] == "scheduled-finetune"
    assert row["post_drift_mae"].mean == pytest.approx(0.75)
    assert row["predictions_to_calm"].mean == pytest.approx(300.0)


@pytest.mark.slow
def test_the_reduced_benchmark_reports_the_storm_the_calm_and_the_retention_tables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A few simulated hours and a quarter of a day of retention (the reported run is
    in BENCHMARKS.md; it takes tens of minutes)."""
    main(["--seeds", "2", "--warmup-h", "1.5", "--live-h", "2", "--drift-after-h", "0.5",
          "--retention-days", "0.25", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert [r["strategy"] for r in report["strategies"]] == list(STRATEGIES)
    for row in report["strategies"]:
        assert row["post_drift_mae"]["seeds"] == 2
        assert row["post_drift_mae"]["low"] <= row["post_drift_mae"]["mean"]
    others = [s for s in STRATEGIES if s != "drift-finetune"]
    assert [r["strategy"] for r in report["paired"]] == others
    assert [set(seed) for seed in report["calm_trainings"]] == [set(CALM_STRATEGIES)] * 2
    scheduled = [seed["scheduled-finetune"] for seed in report["calm_trainings"]]
    assert scheduled == [1, 1]  # one tick in 2 live hours at 1 h, nothing left out
    (retention,) = report["retention"]
    assert retention["hours"] == 6.0
    assert retention["scratch_cpu_s"] > 0 and retention["finetune_cpu_s"] > 0
    kept = [t for seed in report["per_seed"] for r in seed for t in r["trainings"] if t["kept"]]
    assert kept and all(t["trigger"] != "drift" for t in kept)  # a kept version names its trigger
