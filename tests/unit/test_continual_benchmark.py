from __future__ import annotations

import numpy as np

from benchmarks.continual import predictions_to_recover, rolling_mae, timeline


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
