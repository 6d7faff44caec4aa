"""What the built-in entity features are: names, windows, defaults; and the parts
of a task's vector that come from the request.

Shared by the streaming state, the reference implementation and the batch job,
so that the three agree on definitions while computing them independently. A
task's vector (which features, in which order) is its spec's (``shared/tasks``).

Every streaming feature is **point in time**: its value for a request at event
time ``t`` is a function of the accepted events with ``ts <= t`` of the entity
it describes, whatever the order they arrived in. Windows are half-open on the
left, ``t - width < ts <= t``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, NamedTuple

from rtml.shared.contracts import FeatureVector, Message, PredictRequest

if TYPE_CHECKING:
    from rtml.shared.features.records import BatchFeatureRecord
    from rtml.shared.tasks.spec import TaskSpec

EntityKind = Literal["restaurant", "zone", "session", "item"]

ENTITY_OF_KEY_FIELD: dict[str, EntityKind] = {
    "restaurant_id": "restaurant",
    "zone_id": "zone",
    "session_id": "session",
}


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


def entity_key(kind: EntityKind, entity_id: str) -> str:
    """How an entity is named where kinds share a key space (``rtml.features.batch``)."""
    return f"{kind}:{entity_id}"


def entity_of(event: Message) -> tuple[EntityKind, str]:
    """The entity an event belongs to: the one its topic key names."""
    kind = ENTITY_OF_KEY_FIELD.get(type(event).KEY_FIELD)
    if kind is None:
        raise ValueError(f"{type(event).SCHEMA} events are not keyed by an entity")
    return kind, str(getattr(event, type(event).KEY_FIELD))


RESTAURANT_FEATURES = (
    "restaurant_active_orders",
    "restaurant_orders_10m",
    "restaurant_orders_30m",
    "restaurant_mean_prep_min_60m",
)
ZONE_FEATURES = ("zone_couriers_idle", "zone_mean_delivery_min_30m")
RESTAURANT_BATCH_FEATURES = ("restaurant_hist_prep_mean_min", "restaurant_hist_prep_p90_min")
ZONE_BATCH_FEATURES = ("zone_hist_travel_min_per_km",)

# --- session features ------------------------------------------------------------

# how many of the session's latest viewed and clicked items, most recent first
LAST_ITEMS = 5
SESSION_WINDOW_S = 1800.0
# item_feature_0 (numeric) and one-hot item_feature_1/2/3 (12 + 21 + 7 values) of
# the Open Bandit Dataset's item_context.csv
ITEM_EMBEDDING_DIM = 41
SESSION_FEATURES = (
    *(f"last_viewed_{i}" for i in range(1, LAST_ITEMS + 1)),
    *(f"last_clicked_{i}" for i in range(1, LAST_ITEMS + 1)),
    "session_views_30m",
    "session_clicks_30m",
    *(f"session_emb_{i}" for i in range(ITEM_EMBEDDING_DIM)),
)
ITEM_EMBEDDING_NAMES = tuple(f"item_emb_{i}" for i in range(ITEM_EMBEDDING_DIM))
# an empty slot of a last-N list
NO_ITEM = -1.0

ORDERS_SHORT_WINDOW_S = 600.0
ORDERS_LONG_WINDOW_S = 1800.0
DELIVERY_WINDOW_S = 1800.0
PREP_WINDOW_S = 3600.0
# the longest look-back of any windowed feature: history older than the
# watermark minus lateness minus this can never be in a window again
MAX_WINDOW_S = max(
    ORDERS_SHORT_WINDOW_S, ORDERS_LONG_WINDOW_S, DELIVERY_WINDOW_S, PREP_WINDOW_S, SESSION_WINDOW_S
)

# An order not picked up within this long after it was placed, and a courier
# assignment not delivered within this long, are abandoned: they stop counting
# as active / busy. It bounds the state a lost event could otherwise pin forever.
OPEN_SPAN_MAX_S = 3 * 3600.0

# The entity kinds whose features ship with rtml, by name: what a task's
# ``Entity.name`` points at (shared/tasks/spec.py). Their streaming state is
# services/features/state.py, their reference reference.py, their batch job batch.py.
STREAMING_FEATURES_OF: dict[EntityKind, tuple[str, ...]] = {
    "restaurant": RESTAURANT_FEATURES,
    "zone": ZONE_FEATURES,
    "session": SESSION_FEATURES,
}
BATCH_FEATURES_OF: dict[EntityKind, tuple[str, ...]] = {
    "restaurant": RESTAURANT_BATCH_FEATURES,
    "zone": ZONE_BATCH_FEATURES,
}
# the look-back of each windowed feature the implementations compute
WINDOW_OF: dict[str, float] = {
    "restaurant_orders_10m": ORDERS_SHORT_WINDOW_S,
    "restaurant_orders_30m": ORDERS_LONG_WINDOW_S,
    "restaurant_mean_prep_min_60m": PREP_WINDOW_S,
    "zone_mean_delivery_min_30m": DELIVERY_WINDOW_S,
    "session_views_30m": SESSION_WINDOW_S,
    "session_clicks_30m": SESSION_WINDOW_S,
    **dict.fromkeys((f"session_emb_{i}" for i in range(ITEM_EMBEDDING_DIM)), SESSION_WINDOW_S),
}
# the calendar features of a request's event time (UTC)
CALENDAR: dict[str, Callable[[datetime], float]] = {
    "hour_of_day": lambda when: float(when.hour),
    "day_of_week": lambda when: float(when.weekday()),
}

# Cold-start values: what a feature is when its entity is unknown, or a mean
# has nothing in its window. Population priors of the simulated marketplace,
# finite so that every consumer of the vector can use it as is; the
# ``defaulted`` flag says when one was used.
DEFAULTS: dict[str, float] = {
    "restaurant_active_orders": 0.0,
    "restaurant_orders_10m": 0.0,
    "restaurant_orders_30m": 0.0,
    "restaurant_mean_prep_min_60m": 15.0,
    "zone_couriers_idle": 0.0,
    "zone_mean_delivery_min_30m": 35.0,
    "restaurant_hist_prep_mean_min": 15.0,
    "restaurant_hist_prep_p90_min": 25.0,
    "zone_hist_travel_min_per_km": 3.0,
    **dict.fromkeys(SESSION_FEATURES, 0.0),
    **{
        f"last_{kind}_{i}": NO_ITEM
        for kind in ("viewed", "clicked")
        for i in range(1, LAST_ITEMS + 1)
    },
}


class FeatureValue(NamedTuple):
    """One feature of one request: its value, freshness and fallback flag."""

    value: float
    # event-time age (s) of the newest event behind the value; None when there is none
    freshness_s: float | None
    defaulted: bool


def default(name: str) -> FeatureValue:
    return FeatureValue(DEFAULTS[name], None, True)


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
    kind: EntityKind,
    entity_id: str | None,
    names: tuple[str, ...],
    t: float,
) -> dict[str, FeatureValue]:
    """The entity's batch features; fresh as of the newest event the batch job used."""
    record = records.get(entity_key(kind, entity_id)) if entity_id is not None else None
    features: dict[str, FeatureValue] = {}
    for name in names:
        value = record.value(name) if record is not None else None
        features[name] = (
            default(name) if value is None else FeatureValue(value, t - record.ts, False)  # type: ignore[union-attr]
        )
    return features


def item_embedding(records: Mapping[str, BatchFeatureRecord], item_id: int) -> list[float] | None:
    """The precomputed embedding of an item (``item:<id>`` on rtml.features.batch)."""
    record = records.get(entity_key("item", str(item_id)))
    return None if record is None else record.values


def mean_embedding(embeddings: list[list[float]]) -> list[float]:
    return [math.fsum(column) / len(embeddings) for column in zip(*embeddings, strict=True)]
