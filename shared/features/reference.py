"""The plain-Python reference: every task's features computed from an event log.

It shares the definitions (``definitions.py``) with the streaming service but
none of its algorithms: it keeps every accepted event and answers by scanning
them, the most direct reading of each definition. Tests hold the service to
it, the training-serving skew check compares live vectors with it, and
bootstrap training builds its training set with it.

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

from rtml.shared.contracts import (
    CourierAssigned,
    CourierOffline,
    CourierOnline,
    FeatureVector,
    ItemClicked,
    ItemViewed,
    Message,
    OrderDelivered,
    OrderPickedUp,
    OrderPlaced,
    OrderReady,
    PredictRequest,
)
from rtml.shared.features.definitions import (
    DELIVERY_WINDOW_S,
    ITEM_EMBEDDING_DIM,
    LAST_ITEMS,
    NO_ITEM,
    OPEN_SPAN_MAX_S,
    ORDERS_LONG_WINDOW_S,
    ORDERS_SHORT_WINDOW_S,
    PREP_WINDOW_S,
    SESSION_FEATURES,
    SESSION_WINDOW_S,
    EntityKind,
    FeatureValue,
    Outcome,
    batch_features,
    default,
    entity_of,
    item_embedding,
    request_features,
    task_vector,
)
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.tasks.registry import task_spec
from rtml.shared.tasks.spec import TaskSpec

Entity = tuple[EntityKind, str]
# the events that change which couriers are idle
COURIER_EVENTS = (CourierOnline, CourierOffline, CourierAssigned, OrderDelivered)


class ReferenceFeatures:
    def __init__(
        self,
        allowed_lateness_s: float = 300.0,
        batch: Mapping[str, BatchFeatureRecord] | None = None,
    ) -> None:
        self.allowed_lateness_s = allowed_lateness_s
        self.batch: Mapping[str, BatchFeatureRecord] = batch or {}
        self._accepted: dict[Entity, list[Message]] = defaultdict(list)
        self._seen: dict[Entity, set[str]] = defaultdict(set)
        self._watermark: dict[Entity, float] = {}

    def apply(self, event: Message) -> Outcome:
        entity = entity_of(event)
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
        t = request.ts
        features = request_features(request, spec)
        for entity in spec.entities:
            entity_id = request.entities.get(entity.key)
            features.update(self._entity_features[entity.name](self, entity_id, t))
            names = spec.features_of(entity.name, ("batch",))
            if names:
                features.update(batch_features(self.batch, entity.name, entity_id, names, t))  # type: ignore[arg-type]
        return task_vector(spec, features)

    def _session(self, session_id: str | None, t: float) -> dict[str, FeatureValue]:
        events = self._events("session", session_id, t)
        if events is None:
            return {n: default(n) for n in SESSION_FEATURES}
        features: dict[str, FeatureValue] = {}
        shown: list[Message] = []
        for kind, last, count in (
            (ItemViewed, "last_viewed", "session_views_30m"),
            (ItemClicked, "last_clicked", "session_clicks_30m"),
        ):
            of_kind = sorted((e for e in events if isinstance(e, kind)), key=lambda e: (e.ts, e.id))
            latest = [float(e.item_id) for e in reversed(of_kind)][:LAST_ITEMS]  # type: ignore[attr-defined]
            latest += [NO_ITEM] * (LAST_ITEMS - len(latest))
            age = _age(t, of_kind)
            for slot, item in enumerate(latest, 1):
                features[f"{last}_{slot}"] = FeatureValue(item, age, False)
            in_window = [e for e in of_kind if e.ts > t - SESSION_WINDOW_S]
            features[count] = FeatureValue(float(len(in_window)), age, False)
            shown += in_window
        age = _age(t, [e for e in events if isinstance(e, ItemViewed | ItemClicked)])
        embeddings = [
            embedding
            for e in shown
            if (embedding := item_embedding(self.batch, e.item_id)) is not None  # type: ignore[attr-defined]
        ]
        for dim in range(ITEM_EMBEDDING_DIM):
            name = f"session_emb_{dim}"
            features[name] = (
                FeatureValue(math.fsum(e[dim] for e in embeddings) / len(embeddings), age, False)
                if embeddings
                else default(name)._replace(freshness_s=age)
            )
        return features

    def _events(self, kind: EntityKind, entity_id: str | None, t: float) -> list[Message] | None:
        """The entity's accepted events up to ``t``; None when it is unknown at ``t``."""
        if entity_id is None:
            return None
        events = [e for e in self._accepted.get((kind, entity_id), []) if e.ts <= t]
        return events or None

    def _restaurant(self, restaurant_id: str | None, t: float) -> dict[str, FeatureValue]:
        events = self._events("restaurant", restaurant_id, t)
        names = ("restaurant_active_orders", "restaurant_orders_10m", "restaurant_orders_30m")
        if events is None:
            return {n: default(n) for n in (*names, "restaurant_mean_prep_min_60m")}
        placed = [e for e in events if isinstance(e, OrderPlaced)]
        pickups = [e for e in events if isinstance(e, OrderPickedUp)]
        ready = [e for e in events if isinstance(e, OrderReady)]
        # a span's bounds are compared with t, so every accepted event takes part
        every = self._accepted[("restaurant", restaurant_id)]
        starts = _earliest(e for e in every if isinstance(e, OrderPlaced))
        stops = _earliest(e for e in every if isinstance(e, OrderPickedUp))
        active = sum(1 for order, start in starts.items() if _open(start, stops.get(order), t))
        prep = [(e.ts - e.placed_ts) / 60.0 for e in ready if e.ts > t - PREP_WINDOW_S]
        prep_age = _age(t, ready)
        placed_age = _age(t, placed)
        return {
            "restaurant_active_orders": FeatureValue(
                float(active), _age(t, placed + pickups), False
            ),
            "restaurant_orders_10m": FeatureValue(
                float(sum(1 for e in placed if e.ts > t - ORDERS_SHORT_WINDOW_S)), placed_age, False
            ),
            "restaurant_orders_30m": FeatureValue(
                float(sum(1 for e in placed if e.ts > t - ORDERS_LONG_WINDOW_S)), placed_age, False
            ),
            "restaurant_mean_prep_min_60m": (
                FeatureValue(math.fsum(prep) / len(prep), prep_age, False)
                if prep
                else default("restaurant_mean_prep_min_60m")._replace(freshness_s=prep_age)
            ),
        }

    def _zone(self, zone_id: str | None, t: float) -> dict[str, FeatureValue]:
        events = self._events("zone", zone_id, t)
        if events is None:
            return {n: default(n) for n in ("zone_couriers_idle", "zone_mean_delivery_min_30m")}
        by_courier: dict[str, list[Message]] = defaultdict(list)
        for e in self._accepted[("zone", zone_id)]:
            if isinstance(e, COURIER_EVENTS):
                by_courier[e.courier_id].append(e)
        idle = sum(1 for courier_events in by_courier.values() if _courier_idle(courier_events, t))
        courier_events = [e for e in events if isinstance(e, COURIER_EVENTS)]
        delivered = [e for e in events if isinstance(e, OrderDelivered)]
        minutes = [(e.ts - e.placed_ts) / 60.0 for e in delivered if e.ts > t - DELIVERY_WINDOW_S]
        delivery_age = _age(t, delivered)
        return {
            "zone_couriers_idle": FeatureValue(float(idle), _age(t, courier_events), False),
            "zone_mean_delivery_min_30m": (
                FeatureValue(math.fsum(minutes) / len(minutes), delivery_age, False)
                if minutes
                else default("zone_mean_delivery_min_30m")._replace(freshness_s=delivery_age)
            ),
        }

    # the reference of each built-in entity kind (shared/tasks/spec.py: the hook)
    _entity_features = {"restaurant": _restaurant, "zone": _zone, "session": _session}


def _earliest(events: Iterable[Message]) -> dict[str, float]:
    earliest: dict[str, float] = {}
    for e in events:
        order_id = e.order_id  # type: ignore[attr-defined]
        earliest[order_id] = min(earliest.get(order_id, math.inf), e.ts)
    return earliest


def _open(start: float, stop: float | None, t: float) -> bool:
    """Open from the start to the stop (ignored if before the start), at most OPEN_SPAN_MAX_S."""
    end = start + OPEN_SPAN_MAX_S
    if stop is not None and stop >= start:
        end = min(end, stop)
    return start <= t < end


def _courier_idle(events: list[Message], t: float) -> bool:
    presence = [
        (e.ts, 0 if isinstance(e, CourierOnline) else 1)
        for e in events
        if isinstance(e, CourierOnline | CourierOffline) and e.ts <= t
    ]
    if not presence or max(presence)[1] == 1:
        return False
    starts = _earliest(e for e in events if isinstance(e, CourierAssigned))
    stops = _earliest(e for e in events if isinstance(e, OrderDelivered))
    return not any(_open(start, stops.get(order), t) for order, start in starts.items())


def _age(t: float, events: list[Message]) -> float | None:
    return t - max(e.ts for e in events) if events else None


def task_vectors(
    messages: Iterable[Message],
    spec: TaskSpec,
    allowed_lateness_s: float = 300.0,
    batch: Mapping[str, BatchFeatureRecord] | None = None,
) -> list[tuple[PredictRequest, FeatureVector]]:
    """Every request of the task in ``messages`` with its reference vector (see the
    module doc); ``batch`` holds the batch features the service would serve (the item
    embeddings, ``batch.item_embedding_records()``, for session features)."""
    reference = ReferenceFeatures(allowed_lateness_s, batch)
    requests: list[PredictRequest] = []
    for message in messages:
        if isinstance(message, PredictRequest):
            if message.task == spec.name:
                requests.append(message)
        elif isinstance(message, spec.events):
            reference.apply(message)
    return [(request, reference.vector(request)) for request in requests]
