"""What a feature value is, and the parts of a task's vector that come from the request.

Shared by the streaming state, the reference implementation and the batch job;
which features exist, and how each is computed, is the tasks' declaration
(``shared/tasks/spec.py``; per entity: ``catalog.py``).

Every streaming feature is **point in time**: its value for a request at event
time ``t`` is a function of the accepted events with ``ts <= t`` of the entity
it describes, whatever the order they arrived in. Windows are half-open on the
left, ``t - width < ts <= t``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from rtml.shared.contracts import FeatureVector, PredictRequest
from rtml.shared.features.records import entity_key

if TYPE_CHECKING:
    from rtml.shared.features.records import BatchFeatureRecord
    from rtml.shared.tasks.spec import Feature, Reading, TaskSpec


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


# the calendar features of a request's event time (UTC)
CALENDAR: dict[str, Callable[[datetime], float]] = {
    "hour_of_day": lambda when: float(when.hour),
    "day_of_week": lambda when: float(when.weekday()),
}


def p90(values: Sequence[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


# the batch aggregates (spec.BATCH_AGGREGATES) over an entity's values in the log
AGGREGATE: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": statistics.fmean,
    "p90": p90,
    "count": lambda values: float(len(values)),
    "sum": math.fsum,
}


class FeatureValue(NamedTuple):
    """One feature of one request: its value, freshness and fallback flag."""

    value: float
    # event-time age (s) of the newest event behind the value; None when there is none
    freshness_s: float | None
    defaulted: bool


def default(feature: Feature) -> FeatureValue:
    """The value of a feature of an entity unknown at the time asked."""
    return FeatureValue(feature.default, None, True)


def from_reading(feature: Feature, reading: Reading) -> FeatureValue:
    value, freshness_s = reading
    if value is None:
        return FeatureValue(feature.default, freshness_s, True)
    return FeatureValue(value, freshness_s, False)


def request_features(request: PredictRequest, spec: TaskSpec) -> dict[str, FeatureValue]:
    """The features of ``spec`` that come from the request: its inputs (the spec's
    default for one it does not give) and the calendar of its ts (UTC)."""
    when = datetime.fromtimestamp(request.ts, UTC)
    features: dict[str, FeatureValue] = {}
    for feature in spec.features:
        if feature.kind == "input":
            given = request.inputs.get(feature.name)
            features[feature.name] = (
                FeatureValue(feature.default, None, True)
                if given is None
                else FeatureValue(given, None, False)
            )
        elif feature.kind == "calendar":
            features[feature.name] = FeatureValue(CALENDAR[feature.name](when), None, False)
    return features


def task_vector(spec: TaskSpec, features: Mapping[str, FeatureValue]) -> FeatureVector:
    """``features`` as the task's vector: its features, in its order."""
    names = spec.feature_names
    return FeatureVector(
        feature_set=spec.feature_set,
        names=list(names),
        values=[features[name].value for name in names],
        freshness_s=[features[name].freshness_s for name in names],
        defaulted=[features[name].defaulted for name in names],
    )


def batch_features(
    records: Mapping[str, BatchFeatureRecord],
    entity: str,
    entity_id: str | None,
    features: Sequence[Feature],
    t: float,
) -> dict[str, FeatureValue]:
    """The entity's batch features; fresh as of the newest event the batch job used."""
    record = records.get(entity_key(entity, entity_id)) if entity_id is not None else None
    found: dict[str, FeatureValue] = {}
    for feature in features:
        value = record.value(feature.name) if record is not None else None
        found[feature.name] = (
            default(feature) if value is None else FeatureValue(value, t - record.ts, False)  # type: ignore[union-attr]
        )
    return found


def request_batch_features(
    request: PredictRequest, spec: TaskSpec, records: Mapping[str, BatchFeatureRecord]
) -> dict[str, FeatureValue]:
    """Every batch feature of the request's entities."""
    found: dict[str, FeatureValue] = {}
    for entity in spec.entities:
        features = [f for f in spec.features if f.entity == entity.name and f.kind == "batch"]
        if features:
            entity_id = request.entities.get(entity.key)
            found.update(batch_features(records, entity.name, entity_id, features, request.ts))
    return found
