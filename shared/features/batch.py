"""Batch features: computed from an event log, and the item embeddings of the recs task.

Pure: no I/O. ``rtml batch features``
publishes the records to ``rtml.features.batch`` (``services/features/publish.py``);
the trainer's bootstrap and the skew check compute them from a log the same way.

Computed over every event of the log (duplicate ids counted once):

- ``restaurant_hist_prep_mean_min`` / ``restaurant_hist_prep_p90_min``: the mean and
  90th percentile (inclusive method) of ``order_ready.ts - placed_ts``, in minutes;
- ``zone_hist_travel_min_per_km``: over the zone's delivered orders whose pickup and
  placement are in the log, total ride minutes (``delivered.ts - picked_up.ts``)
  divided by total distance (``order_placed.distance_km``).

Each record's ``ts`` is the newest event it was computed from, which is what
the freshness of a batch feature is measured from.

Item embeddings (recs): one ``item:<id>`` record per row of an item table of the Open
Bandit Dataset (``item_context.csv``, ``rtml.tasks.recs.obd.item_context_rows``): the numeric
``item_feature_0`` followed by one-hot encodings of the categorical
``item_feature_1..3`` (categories in sorted order), ``ts`` 0 (static data).
"""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from rtml.shared.contracts import Message, OrderDelivered, OrderPickedUp, OrderPlaced, OrderReady
from rtml.shared.features.definitions import (
    ITEM_EMBEDDING_DIM,
    ITEM_EMBEDDING_NAMES,
    RESTAURANT_BATCH_FEATURES,
    ZONE_BATCH_FEATURES,
    EntityKind,
    entity_key,
)
from rtml.shared.features.records import BatchFeatureRecord

MINUTE = 60.0


def compute_batch_features(
    messages: Iterable[Message], on_message: Callable[[int], None] | None = None
) -> list[BatchFeatureRecord]:
    """The batch feature records of every restaurant and zone the log has data for."""
    seen: set[str] = set()
    prep_min: dict[str, list[float]] = defaultdict(list)
    prep_ts: dict[str, float] = {}
    placed: dict[str, OrderPlaced] = {}
    picked_ts: dict[str, float] = {}
    delivered: dict[str, OrderDelivered] = {}
    for count, message in enumerate(messages, 1):
        if on_message is not None:
            on_message(count)
        if message.id in seen:
            continue
        seen.add(message.id)
        if isinstance(message, OrderReady):
            prep_min[message.restaurant_id].append((message.ts - message.placed_ts) / MINUTE)
            prep_ts[message.restaurant_id] = max(
                prep_ts.get(message.restaurant_id, 0.0), message.ts
            )
        elif isinstance(message, OrderPlaced):
            placed.setdefault(message.order_id, message)
        elif isinstance(message, OrderPickedUp):
            picked_ts[message.order_id] = min(
                picked_ts.get(message.order_id, message.ts), message.ts
            )
        elif isinstance(message, OrderDelivered):
            delivered.setdefault(message.order_id, message)

    records = [
        _record(
            ("restaurant", restaurant_id),
            dict(
                zip(RESTAURANT_BATCH_FEATURES, (statistics.fmean(preps), _p90(preps)), strict=True)
            ),
            as_of=prep_ts[restaurant_id],
            n_events=len(preps),
        )
        for restaurant_id, preps in sorted(prep_min.items())
    ]
    ride_min: dict[str, float] = defaultdict(float)
    ride_km: dict[str, float] = defaultdict(float)
    rides: dict[str, int] = defaultdict(int)
    ride_ts: dict[str, float] = {}
    for order_id, delivery in delivered.items():
        order = placed.get(order_id)
        if order is None or order_id not in picked_ts or order.distance_km <= 0:
            continue
        zone = delivery.zone_id
        ride_min[zone] += (delivery.ts - picked_ts[order_id]) / MINUTE
        ride_km[zone] += order.distance_km
        rides[zone] += 1
        ride_ts[zone] = max(ride_ts.get(zone, 0.0), delivery.ts)
    (travel_name,) = ZONE_BATCH_FEATURES
    records += [
        _record(
            ("zone", zone),
            {travel_name: ride_min[zone] / ride_km[zone]},
            as_of=ride_ts[zone],
            n_events=rides[zone],
        )
        for zone in sorted(rides)
    ]
    return records


def item_embedding_records(rows: Sequence[Mapping[str, str]]) -> list[BatchFeatureRecord]:
    """Item embeddings from the rows of an OBD item table (item_context.csv)."""
    categorical = ("item_feature_1", "item_feature_2", "item_feature_3")
    categories = {column: sorted({row[column] for row in rows}) for column in categorical}
    records = []
    for row in sorted(rows, key=lambda r: int(r["item_id"])):
        embedding = [float(row["item_feature_0"])]
        for column in categorical:
            embedding += [float(row[column] == value) for value in categories[column]]
        if len(embedding) != ITEM_EMBEDDING_DIM:
            raise ValueError(
                f"item embeddings have {len(embedding)} dimensions, not {ITEM_EMBEDDING_DIM}"
            )
        features = dict(zip(ITEM_EMBEDDING_NAMES, embedding, strict=True))
        records.append(_record(("item", row["item_id"]), features, as_of=0.0, n_events=0))
    return records


def _p90(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def _record(
    entity: tuple[EntityKind, str], features: dict[str, float], as_of: float, n_events: int
) -> BatchFeatureRecord:
    key = entity_key(*entity)
    # the same values always get the same id: a re-published record is recognisable
    digest = hashlib.sha256(repr((key, features, as_of)).encode()).hexdigest()[:32]
    return BatchFeatureRecord(
        id=f"batch-{digest}",
        ts=as_of,
        entity=key,
        names=list(features),
        values=list(features.values()),
        n_events=n_events,
    )
