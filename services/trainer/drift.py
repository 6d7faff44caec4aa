"""Drift detection on the live error of the champion and on feature distributions,
and the drift episode a detection starts.

Detectors are river's (ADWIN for the error, whose mean shifts when the world
changes; Page-Hinkley per feature for a shift in its mean). The error of an
example is the signed residual (label - prediction) or the one the task's metric
defines (``shared/model_metrics.py``: the absolute error for ``mae``, the log loss
of the probability for ``logloss``), as RTML_DRIFT_ERROR_SIGNAL says; the trainer
computes it for every labelled example by re-scoring the example's logged features
with the champion (``service.py``), whichever version served it. A storm that slows
every ride biases every answer: in benchmarks/continual.py's worlds it moves the
residual's mean about twice as far as the dinner peak of a calm day does, while both
move the mean absolute error alike (the peak widens the spread), so ADWIN on the
residual fires sooner on the storm and less often on a calm day (BENCHMARKS.md).
The design notes record that ADWIN finds large shifts in hundreds of events but
misses small relative changes: it is chosen here because the drift that matters
for a delivery time (storms, slow kitchens) moves the error by minutes, not by
percent.

A detection gives the level of the error before the drift; the ``Episode`` it starts
fine-tunes again, across the champions it makes, while the champion's error stays off
that level by more than chance: a Welch test of the mean of the labels since its last
fine-tune against the level's, so the evidence grows with the labels it averages (600
labels average one delivery's noise down ~25-fold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from river import drift, stats
from rtml.shared.contracts import Trigger
from scipy.stats import ttest_ind_from_stats


@dataclass(frozen=True)
class Level:
    """Where the watched error stood: its mean and spread (standard deviation) over
    ``count`` of a champion's examples in ADWIN's window."""

    mean: float
    spread: float
    count: float

    def departed(self, later: stats.Var, margin: float, significance: float) -> bool:
        """Whether the mean of ``later`` errors is off this level by more than ``margin``
        spreads, with a one-sided Welch test's p-value below ``significance``."""
        above = later.mean.get() > self.mean
        # the edge of the band of ``margin`` spreads around the level on the side the
        # later mean moved to
        edge = self.mean + (margin if above else -margin) * self.spread
        test = ttest_ind_from_stats(
            later.mean.get(), math.sqrt(later.get()), later.mean.n, edge, self.spread,
            self.count, equal_var=False, alternative="greater" if above else "less",
        )  # fmt: skip
        return bool(test.pvalue < significance)


@dataclass(frozen=True)
class DriftSignal:
    # error_drift, or input_drift with the feature
    trigger: Trigger
    at_ts: float
    observed: int  # examples seen by the detector when it fired
    # the error before the drift: what the drift's episode adapts back to
    reference: Level


@dataclass
class DriftMonitor:
    """Feeds each labelled example to the detectors; returns a signal when one fires."""

    # (mean, std) on the training data of each feature whose mean should hold
    # still; daily-cycle features (hour of day) do not belong here
    baseline: dict[str, tuple[float, float]]
    # the trainer's RTML_DRIFT_ERROR_DELTA: 0.002 fired on the dinner peak of a calm day
    # too (BENCHMARKS.md's exploration)
    error_delta: float = 2e-5
    # Page-Hinkley on z-scores: delta 0.1 keeps the no-drift random walk's
    # excursions near 1/(2 delta) = 5, so 50 would be a false alarm in ~e^-10; a
    # feature that follows the time of day moves on a calm day too, hence 500 (the
    # trainer's RTML_DRIFT_FEATURE_THRESHOLD; 200 fired on calm evenings)
    feature_delta: float = 0.1
    feature_threshold: float = 500.0
    min_examples: int = 200
    _error: drift.ADWIN = field(init=False)
    _features: dict[str, drift.PageHinkley] = field(init=False)
    _observed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """After a fine-tune the new model's error is the new normal: start over."""
        self._error = drift.ADWIN(delta=self.error_delta)
        self._features = {
            name: drift.PageHinkley(delta=self.feature_delta, threshold=self.feature_threshold)
            for name in self.baseline
        }
        self._observed = 0

    @property
    def observed(self) -> int:
        """Labelled examples seen since the monitor started."""
        return self._observed

    def observe(self, error: float, features: dict[str, float], ts: float) -> DriftSignal | None:
        """``error``: the champion's on one example (RTML_DRIFT_ERROR_SIGNAL says which:
        the metric's error or the signed residual)."""
        self._observed += 1
        before, width, total = self._window(), self._error.width, self._error.total
        self._error.update(error)
        trigger = Trigger(kind="error_drift") if self._error.drift_detected else None
        for name, detector in self._features.items():
            mean, std = self.baseline[name]
            detector.update((features[name] - mean) / std)
            if detector.drift_detected and trigger is None:
                trigger = Trigger(kind="input_drift", feature=name)
        if trigger is None or self._observed < self.min_examples:
            return None
        if self._error.drift_detected:
            # ADWIN cut its window where the error changed: the part it dropped is the
            # error before the drift, the window just before the cut its spread
            dropped = width + 1 - self._error.width
            mean = (total + error - self._error.total) / dropped
            level = Level(mean, before.spread, dropped)
            return DriftSignal(trigger, ts, self._observed, level)
        return DriftSignal(trigger, ts, self._observed, self._window())

    def _window(self) -> Level:
        width = max(self._error.width, 1.0)
        return Level(self._error.estimation, math.sqrt(self._error.variance / width), width)


def feature_baseline(
    X: np.ndarray, names: list[str], monitored: list[str]
) -> dict[str, tuple[float, float]]:
    """Mean and std of the monitored columns of training data (std floored to avoid /0)."""
    columns = {name: X[:, names.index(name)] for name in monitored}
    return {name: (float(col.mean()), max(float(col.std()), 1e-6)) for name, col in columns.items()}


def residual(prediction: float, label: float) -> float:
    """The signed error of one example: a shift that biases every answer (a storm that
    slows every ride) moves its mean, a busier hour mostly widens its spread."""
    return label - prediction


@dataclass
class Episode:
    """A drift's adaptation, across the champions it makes: after each of its fine-tunes
    (kept or dropped by the holdout gate) it waits ``every`` labelled examples, then
    asks for another fine-tune while the champion's mean error over them is off the
    error before the drift (``Level.departed``: by more than ``margin`` spreads, at
    ``significance``), or else ends; ``bound`` fine-tunes at most."""

    trigger: Trigger  # what fired; a follow-up carries it with its number
    reference: Level
    # the label time of the firing: a follow-up fine-tunes on every example since
    since_ts: float
    every: int
    margin: float
    significance: float
    bound: int
    fine_tunes: int = 0
    # why it ended: recovered, or bound; None while it lasts
    ended: str | None = None
    # the champion's error since the episode's last fine-tune ended
    _since: stats.Var = field(default_factory=stats.Var, init=False)

    def fine_tuned(self) -> None:
        """One of its fine-tunes ended, kept or not: the next count starts now."""
        self.fine_tunes += 1
        self._since = stats.Var()

    def observe(self, error: float) -> Trigger | None:
        """The current champion's error on one labelled example; the trigger of the
        episode's next fine-tune when it is due (until one starts, every later example
        asks again)."""
        self._since.update(error)
        if self.ended is not None or self._since.mean.n < self.every:
            return None
        if not self.reference.departed(self._since, self.margin, self.significance):
            self.ended = "recovered"
        elif self.fine_tunes >= self.bound:
            self.ended = "bound"
        else:
            return self.trigger.model_copy(update={"follow_up": self.fine_tunes})
        return None
