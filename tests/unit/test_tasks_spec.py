from __future__ import annotations

from rtml.tasks.eta.spec import TASK as ETA
from rtml.tasks.recs.spec import TASK as RECS


def test_the_feature_set_is_named_after_the_task_and_its_version() -> None:
    assert ETA.feature_set == "eta@1"
    assert RECS.feature_set == "recs@1"


def test_the_declared_features_are_the_vectors_served_today_in_their_order() -> None:
    # a model is trained on one order: these are the orders of eta@1 and recs@1
    assert ETA.feature_names == (
        "distance_km", "n_items", "hour_of_day", "day_of_week", "restaurant_active_orders",
        "restaurant_orders_10m", "restaurant_orders_30m", "zone_couriers_idle",
        "zone_mean_delivery_min_30m", "restaurant_mean_prep_min_60m",
        "restaurant_hist_prep_mean_min", "restaurant_hist_prep_p90_min",
        "zone_hist_travel_min_per_km",
    )  # fmt: skip
    assert RECS.feature_names == (
        "hour_of_day", "day_of_week", *(f"user_feature_{i}" for i in range(4)),
        *(f"last_viewed_{i}" for i in range(1, 6)), *(f"last_clicked_{i}" for i in range(1, 6)),
        "session_views_30m", "session_clicks_30m", *(f"session_emb_{i}" for i in range(41)),
    )  # fmt: skip


def test_inputs_and_the_entity_keys_come_from_the_declaration() -> None:
    assert [f.name for f in ETA.inputs] == ["distance_km", "n_items"]
    assert ETA.entity_key_names() == ("restaurant_id", "zone_id")
