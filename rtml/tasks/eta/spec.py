"""The eta task: minutes from order placement to delivery, predicted when the order
is placed, from the restaurant's and the zone's recent activity."""

from __future__ import annotations

from rtml.shared.tasks.spec import Entity, Feature, Label, Model, RouterPolicy, TaskSpec
from rtml.tasks.eta.events import (
    CourierAssigned,
    CourierOffline,
    CourierOnline,
    OrderDelivered,
    OrderPickedUp,
    OrderPlaced,
    OrderReady,
)
from rtml.tasks.eta.features import (
    IDLE_COURIERS,
    TRAVEL,
    delivery_minutes,
    prep_minutes,
)

# a prediction within this many minutes of the actual delivery earns reward 1
TOLERANCE_MIN = 5.0


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
        # orders placed and not yet picked up
        Feature(
            "restaurant_active_orders",
            "span",
            entity="restaurant",
            events=(OrderPlaced,),
            closes=(OrderPickedUp,),
            span_key="order_id",
        ),
        Feature(
            "restaurant_orders_10m",
            "count",
            entity="restaurant",
            window_s=600.0,
            events=(OrderPlaced,),
        ),
        Feature(
            "restaurant_orders_30m",
            "count",
            entity="restaurant",
            window_s=1800.0,
            events=(OrderPlaced,),
        ),
        Feature("zone_couriers_idle", "custom", entity="zone", custom=IDLE_COURIERS),
        Feature(
            "zone_mean_delivery_min_30m",
            "mean",
            entity="zone",
            window_s=1800.0,
            default=35.0,
            events=(OrderDelivered,),
            value=delivery_minutes,
        ),
        Feature(
            "restaurant_mean_prep_min_60m",
            "mean",
            entity="restaurant",
            window_s=3600.0,
            default=15.0,
            events=(OrderReady,),
            value=prep_minutes,
        ),
        # over the whole log, computed by `rtml batch features`
        Feature(
            "restaurant_hist_prep_mean_min",
            "batch",
            entity="restaurant",
            default=15.0,
            events=(OrderReady,),
            value=prep_minutes,
            aggregate="mean",
        ),
        Feature(
            "restaurant_hist_prep_p90_min",
            "batch",
            entity="restaurant",
            default=25.0,
            events=(OrderReady,),
            value=prep_minutes,
            aggregate="p90",
        ),
        Feature("zone_hist_travel_min_per_km", "batch", entity="zone", default=3.0, custom=TRAVEL),
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
