"""The prediction service's Prometheus metrics (``/metrics`` on its side port).

Latency per hop comes from here: every prediction carries its ``timings_ms`` (the
total and the hops that make it up, in both wirings), complete once it is scored.

``rtml_predictions_total`` has a series per model version; a version's series go
when it is retired (``models.py``), so the label set stays as small as the
versions being served.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from rtml.shared.contracts import Prediction
from rtml.shared.timings import CHAIN, TOTAL


class BatchHistogram(Collector):
    """A histogram with one label, fed a whole batch of values per call.

    prometheus_client takes ~4 us per observation (a lock per bucket counter); a
    prediction batch has up to 256 predictions of nine hops each, which would cost
    several milliseconds a batch. Here a batch is binned by numpy in one call. Fed and
    scraped on the service's event loop, so it needs no lock.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._bounds = np.array(buckets, dtype=float)
        # per label value: counts per bucket (the last one: above every bound), and the sum
        self._counts: dict[str, npt.NDArray[np.int64]] = {}
        self._sums: dict[str, float] = {}
        registry.register(self)

    def observe_many(self, value: str, observations: Sequence[float]) -> None:
        if not observations:
            return
        array = np.asarray(observations, dtype=float)
        counts = self._counts.get(value)
        if counts is None:
            counts = self._counts[value] = np.zeros(len(self._bounds) + 1, dtype=np.int64)
        # le semantics: an observation equal to a bound falls in that bound's bucket
        counts += np.bincount(
            np.searchsorted(self._bounds, array, side="left"), minlength=len(counts)
        )
        self._sums[value] = self._sums.get(value, 0.0) + float(array.sum())

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, counts in sorted(self._counts.items()):
            cumulative = np.cumsum(counts)
            buckets = [
                (floatToGoString(b), float(c))
                for b, c in zip(self._bounds, cumulative[:-1], strict=True)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric([value], buckets, self._sums[value])
        yield family


PREDICTIONS = Counter(
    "rtml_predictions_total", "predictions made", ["task", "version", "fell_back"]
)
BATCH_SIZE = Histogram(
    "rtml_prediction_batch_size",
    "requests scored together",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
SCORING_SECONDS = Histogram("rtml_prediction_scoring_seconds", "time to score one batch")

MODEL_LOADS = Counter("rtml_model_loads_total", "model versions loaded", ["outcome"])
# the alert: a version that was announced but could not be served
MODEL_LOAD_FAILURES = Counter(
    "rtml_model_load_failures_total",
    "model versions refused: unsafe, modified, unreadable, or crashing XGBoost in the probe child",
)
MODEL_LOAD_SECONDS = Histogram("rtml_model_load_seconds", "read, verify and parse one version")
MODELS_LOADED = Gauge("rtml_models_loaded", "model versions held in memory")
# what each prediction's timings_ms says (shared/timings.py): the total, and each hop
LATENCY = BatchHistogram(
    "rtml_prediction_latency_seconds",
    "time from a request's arrival to its prediction (hop=total), and each hop of it",
    "hop",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def observe_latency(predictions: Sequence[Prediction]) -> None:
    """Each prediction's total and hops, the names of the chain only (a bounded label)."""
    for hop in (TOTAL, *CHAIN):
        LATENCY.observe_many(
            hop, [p.timings_ms[hop] / 1000.0 for p in predictions if hop in p.timings_ms]
        )
