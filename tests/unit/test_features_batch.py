"""Batch features from an event log, as the eta task declares them (shared/features/batch.py)."""

from __future__ import annotations

import math

from rtml.shared.contracts import encode
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.features.records import decode_batch_record

from rtml.tasks.eta.events import OrderDelivered, OrderPickedUp, OrderPlaced, OrderReady

T0 = 1_717_412_400.0  # a Monday, 11:00 UTC


def placed(i: int, restaurant: str = "r1", ts: float = T0 - 60) -> OrderPlaced:
    return OrderPlaced(
        id=f"p{i}",
        ts=ts,
        order_id=f"o{i}",
        restaurant_id=restaurant,
        zone_id="z1",
        distance_km=2.0,
        n_items=1,
    )


def test_batch_features_are_prep_and_travel_times_over_the_log() -> None:
    log = [
        placed(1),
        placed(2),
        OrderReady(id="ready1", ts=T0 + 600, order_id="o1", restaurant_id="r1", placed_ts=T0),
        OrderReady(id="ready2", ts=T0 + 1200, order_id="o2", restaurant_id="r1", placed_ts=T0),
        OrderReady(
            id="ready2", ts=T0 + 1200, order_id="o2", restaurant_id="r1", placed_ts=T0
        ),  # a repeat
        OrderPickedUp(id="up1", ts=T0 + 700, order_id="o1", courier_id="c", restaurant_id="r1"),
        OrderDelivered(
            id="d1",
            ts=T0 + 1300,
            order_id="o1",
            courier_id="c",
            restaurant_id="r1",
            zone_id="z1",
            placed_ts=T0,
        ),
    ]
    records = {r.entity: r for r in compute_batch_features(log)}
    restaurant, zone = records["restaurant:r1"], records["zone:z1"]
    assert (
        restaurant.values == [15.0, 19.0]
        and restaurant.ts == T0 + 1200
        and restaurant.n_events == 2
    )
    assert (
        math.isclose(zone.value("zone_hist_travel_min_per_km"), 10.0 / 2.0) and zone.ts == T0 + 1300
    )
    assert compute_batch_features(log) == list(records.values())  # same log, same records, same ids
    assert decode_batch_record(encode(restaurant)) == restaurant
