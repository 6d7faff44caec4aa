"""The drift monitor's reference level and the drift episode (services/trainer/drift.py)."""

from __future__ import annotations

import numpy as np
import pytest
from rtml.services.trainer.drift import DriftMonitor, Episode, Level, residual
from rtml.shared.contracts import Trigger

DRIFT = Trigger(kind="error_drift")


def test_an_error_drift_carries_the_error_from_before_the_change() -> None:
    rng = np.random.default_rng(4)
    monitor = DriftMonitor({})
    before, after = rng.normal(2.0, 0.5, 2000), rng.normal(6.0, 0.5, 1000)
    signal = next(
        s
        for i, error in enumerate(np.concatenate([before, after]))
        if (s := monitor.observe(float(error), {}, float(i))) is not None
    )
    assert signal.trigger == DRIFT and signal.at_ts >= len(before)
    # the part of ADWIN's window it dropped: the examples before the change
    assert signal.reference.mean == pytest.approx(2.0, abs=0.1)
    # the window just before the cut holds the first examples after the change too
    assert 0.4 < signal.reference.spread < 1.5


def test_an_input_drift_carries_the_errors_window_that_did_not_move() -> None:
    rng = np.random.default_rng(5)
    monitor = DriftMonitor({"couriers_idle": (10.0, 2.0)}, min_examples=1)
    errors = rng.normal(3.0, 1.0, 1000)
    idle = np.concatenate([rng.normal(10.0, 2.0, 500), rng.normal(2.0, 2.0, 500)])
    signal = next(
        s
        for i, (error, count) in enumerate(zip(errors, idle, strict=True))
        if (s := monitor.observe(float(error), {"couriers_idle": float(count)}, float(i)))
    )
    assert signal.trigger == Trigger(kind="input_drift", feature="couriers_idle")
    seen = errors[: signal.observed]
    assert signal.reference.mean == pytest.approx(seen.mean())
    assert signal.reference.spread == pytest.approx(seen.std(), rel=1e-6)


def test_the_residual_is_signed() -> None:
    assert residual(prediction=20.0, label=30.0) == 10.0
    assert residual(prediction=30.0, label=20.0) == -10.0


def episode(bound: int = 5) -> Episode:
    return Episode(DRIFT, Level(mean=1.0, spread=2.0), every=3, tolerance=0.5, bound=bound)


def feed(episode: Episode, errors: list[float]) -> list[Trigger | None]:
    return [episode.observe(error) for error in errors]


def test_an_episode_fine_tunes_again_every_so_many_labels_while_the_error_stays_off() -> None:
    adapting = episode()
    adapting.fine_tuned()  # the fine-tune of the firing
    assert feed(adapting, [5.0, 5.0, 5.0]) == [
        None,
        None,
        DRIFT.model_copy(update={"follow_up": 1}),
    ]
    # until a fine-tune starts and ends, every example asks again
    assert adapting.observe(5.0) == DRIFT.model_copy(update={"follow_up": 1})
    adapting.fine_tuned()  # kept or dropped by the holdout gate: the count starts again
    assert feed(adapting, [4.0, 4.0, 4.0])[-1] == DRIFT.model_copy(update={"follow_up": 2})
    assert adapting.ended is None


def test_a_dropped_fine_tune_is_retried_after_the_same_count() -> None:
    adapting = episode()
    adapting.fine_tuned()  # dropped: the champion, and its error, are the same
    assert feed(adapting, [5.0, 5.0]) == [None, None]
    assert adapting.observe(5.0) == DRIFT.model_copy(update={"follow_up": 1})


def test_an_episode_ends_when_the_error_is_back_within_the_tolerance() -> None:
    adapting = episode()
    adapting.fine_tuned()
    # within 0.5 spreads (1.0) of the reference 1.0 on average
    assert feed(adapting, [2.5, 1.0, 1.4]) == [None, None, None]
    assert adapting.ended == "recovered"
    assert adapting.observe(9.0) is None  # over: it asks for nothing more


def test_an_episode_ends_at_its_bound_of_fine_tunes() -> None:
    adapting = episode(bound=2)
    adapting.fine_tuned()
    assert feed(adapting, [9.0] * 3)[-1] == DRIFT.model_copy(update={"follow_up": 1})
    adapting.fine_tuned()
    assert feed(adapting, [9.0] * 3) == [None, None, None]
    assert adapting.ended == "bound"


def test_a_level_holds_within_its_tolerance_either_way() -> None:
    level = Level(mean=1.0, spread=2.0)
    assert level.holds(2.0, tolerance=0.5) and level.holds(0.0, tolerance=0.5)
    assert not level.holds(2.1, tolerance=0.5) and not level.holds(-0.1, tolerance=0.5)
