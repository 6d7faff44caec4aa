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
    assert 0.9 * len(before) <= signal.reference.count <= len(before)
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
    assert signal.reference.count == signal.observed


def test_the_residual_is_signed() -> None:
    assert residual(prediction=20.0, label=30.0) == 10.0
    assert residual(prediction=30.0, label=20.0) == -10.0


def episode(bound: int = 5, every: int = 3, margin: float = 0.0) -> Episode:
    return Episode(
        DRIFT, Level(mean=1.0, spread=2.0, count=2000), since_ts=0.0, every=every,
        margin=margin, significance=0.01, bound=bound,
    )  # fmt: skip


def follow_up(number: int) -> Trigger:
    return DRIFT.model_copy(update={"follow_up": number})


def feed(episode: Episode, errors: list[float]) -> list[Trigger | None]:
    return [episode.observe(error) for error in errors]


def test_an_episode_fine_tunes_again_every_so_many_labels_while_the_error_stays_off() -> None:
    adapting = episode()
    adapting.fine_tuned()  # the fine-tune of the firing
    assert feed(adapting, [5.0, 5.1, 4.9]) == [
        None,
        None,
        follow_up(1),
    ]
    # until a fine-tune starts and ends, every example asks again
    assert adapting.observe(5.0) == follow_up(1)
    adapting.fine_tuned()  # kept or dropped by the holdout gate: the count starts again
    assert feed(adapting, [-4.0, -4.1, -3.9])[-1] == follow_up(2)
    assert adapting.ended is None


def test_a_dropped_fine_tune_is_retried_after_the_same_count() -> None:
    adapting = episode()
    adapting.fine_tuned()  # dropped: the champion, and its error, are the same
    assert feed(adapting, [5.0, 5.1]) == [None, None]
    assert adapting.observe(4.9) == follow_up(1)


def residuals(shift: float, labels: int, seed: int) -> list[float]:
    """``labels`` errors around the episode's level (1.0, spread 2.0) moved by ``shift``."""
    return list(np.random.default_rng(seed).normal(1.0 + shift, 2.0, labels))


@pytest.mark.parametrize("seed", range(5))
def test_a_biased_error_keeps_the_episode_going_and_an_unbiased_one_ends_it(seed: int) -> None:
    # a quarter of a spread over 600 labels: ~6 standard errors off, far outside chance
    biased = episode(every=600)
    biased.fine_tuned()
    assert feed(biased, residuals(0.5, 600, seed))[-1] == follow_up(1)
    unbiased = episode(every=600)
    unbiased.fine_tuned()
    assert feed(unbiased, residuals(0.0, 600, seed)) == [None] * 600
    assert unbiased.ended == "recovered"


def test_the_evidence_grows_with_the_labels_averaged() -> None:
    # the same mean shift: within chance over 20 labels, far outside it over 2,000
    noise = np.random.default_rng(7).normal(0.0, 2.0, 20)
    shift = list(noise - noise.mean() + 1.5)  # mean exactly 1.5: a quarter of a spread off
    few = episode(every=20)
    few.fine_tuned()
    feed(few, shift)
    assert few.ended == "recovered"
    many = episode(every=2000)
    many.fine_tuned()
    assert feed(many, shift * 100)[-1] == follow_up(1)


def test_a_shift_within_the_margin_ends_the_episode_however_many_labels() -> None:
    adapting = episode(every=5000, margin=0.5)  # one spread either side: 1.0 +- 1.0
    adapting.fine_tuned()
    feed(adapting, residuals(-0.6, 5000, 3))  # 0.3 spreads below: inside the band
    assert adapting.ended == "recovered"
    beyond = episode(every=5000, margin=0.5)
    beyond.fine_tuned()
    assert feed(beyond, residuals(-1.4, 5000, 3))[-1] == follow_up(1)


def test_an_episode_that_ended_asks_for_nothing_more() -> None:
    adapting = episode()
    adapting.fine_tuned()
    assert feed(adapting, [2.5, -1.0, 1.4]) == [None, None, None]
    assert adapting.ended == "recovered"
    assert adapting.observe(9.0) is None


def test_an_episode_ends_at_its_bound_of_fine_tunes() -> None:
    adapting = episode(bound=2)
    adapting.fine_tuned()
    assert feed(adapting, [9.0, 9.1, 8.9])[-1] == follow_up(1)
    adapting.fine_tuned()
    assert feed(adapting, [9.0, 9.1, 8.9]) == [None, None, None]
    assert adapting.ended == "bound"
