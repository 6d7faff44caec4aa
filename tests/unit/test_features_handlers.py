"""The features service's pure handlers."""

from __future__ import annotations

import msgpack

from services.features.handlers import (
    CHANGELOG_RECORD_MAX_BYTES,
    Lookup,
    admit_events,
    advance,
    changelog_records,
    enriched,
    feature_vector,
    plan,
    replay_changelog,
)
from services.features.state import EntityStates
from shared.contracts import (
    OrderPlaced,
    OrderReady,
    PredictRequest,
    encode,
)
from shared.features.batch import compute_batch_features
from shared.features.definitions import FeatureValue

T0 = 1_717_412_400.0  # a Monday, 11:00 UTC


def request(**entities: str) -> PredictRequest:
    return PredictRequest(
        id="q1", ts=T0, task="eta", entities=entities, inputs={"distance_km": 2.5}
    )


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


def test_a_plan_visits_the_named_entities_in_order_and_defaults_the_others() -> None:
    lookup = plan(request(zone_id="z1", restaurant_id="r1"))
    assert lookup.pending == [("restaurant", "r1"), ("zone", "z1")]
    only_zone = plan(request(zone_id="z1"))
    assert only_zone.pending == [("zone", "z1")]
    assert only_zone.found["restaurant_orders_10m"].defaulted


def test_a_recs_request_looks_up_its_session() -> None:
    lookup = plan(PredictRequest(ts=T0, task="recs", entities={"session_id": "s1"}))
    assert lookup.pending == [("session", "s1")]


def test_a_lookup_survives_the_wire() -> None:
    lookup = advance(
        plan(request(restaurant_id="r1", zone_id="z1")),
        {"restaurant_orders_10m": FeatureValue(3.0, 12.5, False)},
    )
    again = Lookup.from_bytes(lookup.to_bytes())
    assert again == lookup and again.next_entity == ("zone", "z1")


def test_the_vector_is_named_ordered_and_carries_request_and_batch_features() -> None:
    states = EntityStates(300.0)
    admit_events(states, [encode(placed(1))])
    batch = {
        r.entity: r
        for r in compute_batch_features(
            [
                placed(1),
                OrderReady(ts=T0 - 30, order_id="o1", restaurant_id="r1", placed_ts=T0 - 90),
            ]
        )
    }
    lookup = plan(request(restaurant_id="r1"))
    lookup = advance(lookup, states.restaurants["r1"].features_at(T0, {}))
    vector = feature_vector(lookup, batch)
    features = dict(
        zip(
            vector.names,
            zip(vector.values, vector.freshness_s, vector.defaulted, strict=True),
            strict=True,
        )
    )
    assert vector.feature_set == "eta@1"
    assert features["distance_km"] == (2.5, None, False)
    assert features["n_items"][2] and features["hour_of_day"] == (11.0, None, False)
    assert features["day_of_week"] == (0.0, None, False)
    assert features["restaurant_orders_10m"] == (1.0, 60.0, False)
    assert features["restaurant_hist_prep_mean_min"] == (1.0, 30.0, False)
    assert features["zone_couriers_idle"][2]  # no zone named: a cold start
    message = enriched(lookup, vector, now=lookup.received_at + 0.25)
    assert message.id == "q1" and message.timings_ms == {"features": 250.0}


def test_admission_reports_duplicates_and_late_and_bad_events() -> None:
    states = EntityStates(allowed_lateness_s=300.0)
    raws = [
        encode(placed(1)),
        encode(placed(1)),
        encode(placed(2, ts=T0 - 3600)),
        b"\xc1",
        encode(request()),
    ]
    admitted = admit_events(states, raws)
    assert admitted.accepted == [raws[0]] and admitted.duplicates == 1
    assert [(r.index, r.reason) for r in admitted.rejected] == [
        (2, "late"),
        (3, "decode"),
        (4, "schema"),
    ]


def test_changelog_records_stay_small_and_replay_to_the_same_state() -> None:
    events = [encode(placed(i, restaurant=f"r{i % 7}", ts=T0 + i)) for i in range(5000)]
    records = changelog_records(events)
    assert len(records) > 1 and all(len(r) <= CHANGELOG_RECORD_MAX_BYTES + 5 for r in records)
    assert [e for r in records for e in msgpack.unpackb(r)] == events
    live, rebuilt = EntityStates(300.0), EntityStates(300.0)
    admit_events(live, events)
    assert sum(replay_changelog(rebuilt, r) for r in records) == len(events)
    assert sum(replay_changelog(rebuilt, r) for r in records) == 0  # a second replay adds nothing
    for name, state in live.restaurants.items():
        assert rebuilt.restaurants[name].features_at(T0 + 5000, {}) == state.features_at(
            T0 + 5000, {}
        )
