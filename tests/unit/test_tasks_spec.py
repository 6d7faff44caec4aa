from __future__ import annotations

from rtml.tasks.eta.spec import TASK as ETA
from rtml.tasks.recs.spec import TASK as RECS
from shared.features.definitions import ETA_FEATURES, RECS_FEATURES


def test_the_feature_set_is_named_after_the_task_and_its_version() -> None:
    assert ETA.feature_set == "eta@1"
    assert RECS.feature_set == "recs@1"


def test_the_declared_features_are_the_vectors_served_today_in_their_order() -> None:
    assert ETA.feature_names == ETA_FEATURES
    assert RECS.feature_names == RECS_FEATURES


def test_inputs_and_the_features_of_an_entity_come_from_the_declaration() -> None:
    assert [f.name for f in ETA.inputs] == ["distance_km", "n_items"]
    assert ETA.features_of("zone", ("batch",)) == ("zone_hist_travel_min_per_km",)
    assert ETA.features_of("restaurant", ("count",)) == (
        "restaurant_orders_10m",
        "restaurant_orders_30m",
    )
    assert ETA.entity_key_names() == ("restaurant_id", "zone_id")
