"""Drift detection on the live error of the champion and on feature distributions.

Detectors are river's (ADWIN for the error, whose mean shifts when the world
changes; Page-Hinkley per feature for a shift in its mean). The error of an
example is the one the task's metric defines (``shared/model_metrics.py``): the
absolute error for ``mae``, the log loss of the probability for ``logloss``; the
trainer computes it for every labelled example by re-scoring the example's logged
features with the champion (``service.py``), whichever version served it.
The design notes record that ADWIN finds large shifts in hundreds of events but
misses small relative changes: it is chosen here because the drift that matters
for a delivery time (storms, slow kitchens) moves the error by minutes, not by
percent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from river import drift
from rtml.shared.contracts import Trigger


@dataclass(frozen=True)
class DriftSignal:
    # error_drift, or input_drift with the feature
    trigger: Trigger
    at_ts: float
    observed: int  # examples seen by the detector when it fired


@dataclass
class DriftMonitor:
    """Feeds each labelled example to the detectors; returns a signal when one fires."""

    # (mean, std) on the training data of each feature whose mean should hold
    # still; daily-cycle features (hour of day) do not belong here
    baseline: dict[str, tuple[float, float]]
    error_delta: float = 0.002
    # Page-Hinkley on z-scores: delta 0.1 keeps the no-drift random walk's
    # excursions near 1/(2 delta) = 5, so 50 would be a false alarm in ~e^-10; a
    # feature that follows the time of day moves on a calm day too, hence 200 (the
    # trainer's RTML_DRIFT_FEATURE_THRESHOLD)
    feature_delta: float = 0.1
    feature_threshold: float = 200.0
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
        self._observed += 1
        self._error.update(error)
        trigger = Trigger(kind="error_drift") if self._error.drift_detected else None
        for name, detector in self._features.items():
            mean, std = self.baseline[name]
            detector.update((features[name] - mean) / std)
            if detector.drift_detected and trigger is None:
                trigger = Trigger(kind="input_drift", feature=name)
        if trigger is not None and self._observed >= self.min_examples:
            return DriftSignal(trigger, ts, self._observed)
        return None


def feature_baseline(
    X: np.ndarray, names: list[str], monitored: list[str]
) -> dict[str, tuple[float, float]]:
    """Mean and std of the monitored columns of training data (std floored to avoid /0)."""
    columns = {name: X[:, names.index(name)] for name in monitored}
    return {name: (float(col.mean()), max(float(col.std()), 1e-6)) for name, col in columns.items()}
