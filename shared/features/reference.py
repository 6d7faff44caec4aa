"""The plain-Python reference: every task's features computed from an event log.

It reads the same declarations (``TaskSpec`` features, per entity ``catalog.py``)
as the streaming service but shares none of its algorithms: it keeps every
accepted event and answers by scanning them, the most direct reading of each
kind's definition. Tests hold the service to it, the training-serving skew check
compares live vectors with it, and bootstrap training builds its training set
with it.

    reference = ReferenceFeatures(allowed_lateness_s=300, batch=records)
    for message in messages:
        reference.apply(message)          # events only; returns the Outcome
    vector = reference.vector(request)    # FeatureVector as of request.ts

``task_vectors(messages, spec)`` does both for a whole log: every event of the
task is applied in log order (which decides what is late or a duplicate, as
arrival order does for the service), then every request of the task is answered
as of its own event time. That is the value with complete knowledge: what the
service answers when a request arrives after the events before it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from rtml.shared.contracts import FeatureVector, Message, PredictRequest
from rtml.shared.features.catalog import EntityFeatures, entity_of
from rtml.shared.features.definitions import (
    FeatureValue,
    Outcome,
    default,
    from_reading,
    request_batch_features,
    request_features,
    task_vector,
)
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.features.series import earliest_by, span_open
from rtml.shared.tasks.registry import task_spec, tasks
from rtml.shared.tasks.spec import CustomFeatures, Feature, Reading, TaskSpec

Entity = tuple[str, str]


class ReferenceFeatures:
    def __init__(
        self,
        allowed_lateness_s: float = 300.0,
        batch: Mapping[str, BatchFeatureRecord] | None = None,
        entities: dict[str, EntityFeatures] | None = None,
    ) -> None:
        self.allowed_lateness_s = allowed_lateness_s
        self.batch: Mapping[str, BatchFeatureRecord] = batch or {}
        self.entities = tasks().entities if entities is None else entities
        self._accepted: dict[Entity, list[Message]] = defaultdict(list)
        self._seen: dict[Entity, set[str]] = defaultdict(set)
        self._watermark: dict[Entity, float] = {}

    def apply(self, event: Message) -> Outcome:
        entity = entity_of(event, self.entities)
        if entity is None:
            raise ValueError(f"{type(event).SCHEMA} events are keyed by no task's entity")
        watermark = self._watermark.get(entity)
        if watermark is not None and event.ts < watermark - self.allowed_lateness_s:
            return Outcome.LATE
        if event.id in self._seen[entity]:
            return Outcome.DUPLICATE
        self._seen[entity].add(event.id)
        self._watermark[entity] = event.ts if watermark is None else max(watermark, event.ts)
        self._accepted[entity].append(event)
        return Outcome.ACCEPTED

    def vector(self, request: PredictRequest) -> FeatureVector:
        spec = task_spec(request.task)
        features = request_features(request, spec)
        for entity in spec.entities:
            features.update(
                self.entity_features(entity.name, request.entities.get(entity.key), request.ts)
            )
        features.update(request_batch_features(request, spec, self.batch))
        return task_vector(spec, features)

    def entity_features(
        self, entity: str, entity_id: str | None, t: float
    ) -> dict[str, FeatureValue]:
        """The entity's streaming features as of ``t``: defaults when no event of it
        is known at ``t``."""
        declared = self.entities[entity].streaming
        every = self._accepted.get((entity, entity_id), []) if entity_id is not None else []
        if not any(e.ts <= t for e in every):
            return {feature.name: default(feature) for feature in declared}
        custom: dict[int, Mapping[str, Reading]] = {}
        found: dict[str, FeatureValue] = {}
        for feature in declared:
            if isinstance(feature.custom, CustomFeatures):
                key = id(feature.custom)
                if key not in custom:
                    fed = [e for e in every if isinstance(e, feature.custom.events)]
                    custom[key] = feature.custom.reference(fed, t, self.batch)
                reading = custom[key][feature.name]
            else:
                reading = _read(feature, every, t)
            found[feature.name] = from_reading(feature, reading)
        return found


def _newest_age(events: Iterable[Message], t: float) -> float | None:
    times = [e.ts for e in events if e.ts <= t]
    return t - max(times) if times else None


def _read(feature: Feature, every: list[Message], t: float) -> Reading:
    """A built-in kind's definition, read off every accepted event of the entity."""
    of_kind = [e for e in every if isinstance(e, feature.events) and e.ts <= t]
    if feature.kind == "span":
        # a span's bounds are compared with t, so every accepted event takes part
        key = feature.span_key
        starts = earliest_by((e for e in every if isinstance(e, feature.events)), key)  # type: ignore[arg-type]
        stops = earliest_by((e for e in every if isinstance(e, feature.closes)), key)  # type: ignore[arg-type]
        open_now = sum(
            1
            for span, start in starts.items()
            if span_open(start, stops.get(span), t, feature.max_open_s)
        )
        return float(open_now), _newest_age(
            (e for e in every if isinstance(e, (*feature.events, *feature.closes))), t
        )
    age = _newest_age(of_kind, t)
    if feature.kind == "latest":
        ranked = sorted(of_kind, key=lambda e: (e.ts, e.id))
        rank = feature.rank
        return (feature.value(ranked[-rank]) if len(ranked) >= rank else None), age  # type: ignore[misc]
    in_window = [e for e in of_kind if e.ts > t - feature.window_s]  # type: ignore[operator]
    if feature.kind == "count":
        return float(len(in_window)), age
    values = [feature.value(e) for e in in_window]  # type: ignore[misc]
    return (math.fsum(values) / len(values) if values else None), age


def task_vectors(
    messages: Iterable[Message],
    spec: TaskSpec,
    allowed_lateness_s: float = 300.0,
    batch: Mapping[str, BatchFeatureRecord] | None = None,
) -> list[tuple[PredictRequest, FeatureVector]]:
    """Every request of the task in ``messages`` with its reference vector (see the
    module doc); ``batch`` holds the batch features the service would serve (and the
    static records its custom features read, such as item embeddings)."""
    reference = ReferenceFeatures(allowed_lateness_s, batch)
    requests: list[PredictRequest] = []
    for message in messages:
        if isinstance(message, PredictRequest):
            if message.task == spec.name:
                requests.append(message)
        elif isinstance(message, spec.events):
            reference.apply(message)
    return [(request, reference.vector(request)) for request in requests]
