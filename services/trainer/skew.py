"""Training-serving skew check: the features logged with each prediction (the
training data, by log and wait) against the reference implementation's
recomputation from the stored event log. With log and wait there should be no
mismatch; one means the serving path saw something the log does not say."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from rtml.shared.contracts import FeatureVector
from rtml.shared.warehouse import ExampleTable

TOLERANCE = 1e-9


@dataclass
class SkewReport:
    compared: int = 0
    # logged examples whose request the event log does not have
    missing: int = 0
    mismatches: Counter[str] = field(default_factory=Counter)
    first: list[tuple[str, str, float, float]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.compared > 0 and not self.mismatches


def skew_report(
    logged: ExampleTable, reference: Mapping[str, FeatureVector], shown: int = 10
) -> SkewReport:
    report = SkewReport()
    for request_id, row in zip(logged.ids, logged.X, strict=True):
        vector = reference.get(str(request_id))
        if vector is None:
            report.missing += 1
            continue
        report.compared += 1
        recomputed = dict(zip(vector.names, vector.values, strict=True))
        for name, value in zip(logged.feature_names, row, strict=True):
            expected = recomputed.get(name, np.nan)
            if not np.isclose(value, expected, rtol=0, atol=TOLERANCE):
                report.mismatches[name] += 1
                if len(report.first) < shown:
                    report.first.append((str(request_id), name, float(value), float(expected)))
    return report
