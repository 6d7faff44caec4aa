"""The eta task: minutes from order placement to delivery, predicted when the order
is placed, from the restaurant's and the zone's recent activity."""

from __future__ import annotations

from rtml.shared.contracts import (
    CourierAssigned,
    CourierOffline,
    CourierOnline,
    Message,
    OrderDelivered,
    OrderPickedUp,
    OrderPlaced,
    OrderReady,
)
from rtml.shared.tasks.spec import Entity, Feature, Label, Model, RouterPolicy, TaskSpec

MINUTE = 60.0
# a prediction within this many minutes of the actual delivery earns reward 1
TOLERANCE_MIN = 5.0


def delivery_minutes(delivered: Message) -> float:
    assert isinstance(delivered, OrderDelivered)
    return (delivered.ts - delivered.placed_ts) / MINUTE


def close_enough(predicted: float | list[float], minutes: float) -> float:
    # a list is no delivery time: it earns nothing
    scalar = predicted if isinstance(predicted, float) else float("nan")
    return 1.0 if abs(scalar - minutes) <= TOLERANCE_MIN else 0.0


TASK = TaskSpec(
    name="eta",
    events=(
        OrderPlaced,
        OrderReady,
        OrderPickedUp,
        CourierOnline,
        CourierOffline,
        CourierAssigned,
        OrderDelivered,
    ),  # fmt: skip
    entities=(Entity("restaurant", key="restaurant_id"), Entity("zone", key="zone_id")),
    # the label joins on the order, which no feature describes
    request_keys=("order_id",),
    features=(
        Feature("distance_km", "input", default=3.0),
        Feature("n_items", "input", default=2.0),
        Feature("hour_of_day", "calendar"),
        Feature("day_of_week", "calendar"),
        Feature("restaurant_active_orders", "span", entity="restaurant"),
        Feature("restaurant_orders_10m", "count", entity="restaurant", window_s=600.0),
        Feature("restaurant_orders_30m", "count", entity="restaurant", window_s=1800.0),
        Feature("zone_couriers_idle", "span", entity="zone"),
        Feature("zone_mean_delivery_min_30m", "mean", entity="zone", window_s=1800.0, default=35.0),
        Feature(
            "restaurant_mean_prep_min_60m",
            "mean",
            entity="restaurant",
            window_s=3600.0,
            default=15.0,
        ),  # fmt: skip
        Feature("restaurant_hist_prep_mean_min", "batch", entity="restaurant", default=15.0),
        Feature("restaurant_hist_prep_p90_min", "batch", entity="restaurant", default=25.0),
        Feature("zone_hist_travel_min_per_km", "batch", entity="zone", default=3.0),
    ),
    label=Label(
        OrderDelivered,
        join=(("order_id", "order_id"),),
        value=delivery_minutes,
        reward=close_enough,
    ),
    model=Model(
        "regression",
        objective="reg:absoluteerror",
        metric="mae",
        drift_features=("zone_couriers_idle",),
    ),
    router=RouterPolicy("thompson_beta"),
)
