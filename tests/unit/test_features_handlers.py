"""The features service's pure handlers."""

from __future__ import annotations

import msgpack
import pytest
from rtml.services.features.handlers import (
    CHANGELOG_RECORD_MAX_BYTES,
    Lookup,
    account,
    admit_events,
    advance,
    changelog_records,
    enriched,
    feature_vector,
    held,
    plan,
    replay_changelog,
)
from rtml.services.features.state import EntityStates
from rtml.shared.contracts import FeatureVector, PredictRequest, encode
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.features.definitions import FeatureValue
from rtml.shared.timings import FEATURES, LOOKUP_FORWARD

from rtml.tasks.eta.events import OrderReady
from tests.unit.test_features_batch import T0, placed

SEEN = 1_800_000_000.0  # wall clock when the service saw the request
# what enriched() carries along; its timings do not depend on it
VECTOR = FeatureVector(feature_set="eta@1", names=[], values=[], freshness_s=[], defaulted=[])


def request(received_at: float | None = None, **entities: str) -> PredictRequest:
    return PredictRequest(
        id="q1",
        ts=T0,
        task="eta",
        entities=entities,
        inputs={"distance_km": 2.5},
        received_at=received_at,
    )


def test_a_plan_visits_the_named_entities_in_order_and_defaults_the_others() -> None:
    lookup = plan(request(zone_id="z1", restaurant_id="r1"), SEEN)
    assert lookup.pending == [("restaurant", "r1"), ("zone", "z1")]
    only_zone = plan(request(zone_id="z1"), SEEN)
    assert only_zone.pending == [("zone", "z1")]
    assert only_zone.found["restaurant_orders_10m"].defaulted


def test_a_recs_request_looks_up_its_session() -> None:
    lookup = plan(PredictRequest(ts=T0, task="recs", entities={"session_id": "s1"}), SEEN)
    assert lookup.pending == [("session", "s1")]


def test_a_lookup_survives_the_wire() -> None:
    lookup = advance(
        held(plan(request(restaurant_id="r1", zone_id="z1", received_at=SEEN - 0.01), SEEN), 0.002),
        {"restaurant_orders_10m": FeatureValue(3.0, 12.5, False)},
    )
    again = Lookup.from_bytes(lookup.to_bytes())
    assert again == lookup and again.next_entity == ("zone", "z1")
    assert again.timings_ms == {"to_features": 10.0, "freshness_wait": 2.0}


def test_the_features_hops_add_up_from_ingestion_to_the_vector() -> None:
    received = SEEN - 0.010
    lookup = held(plan(request(restaurant_id="r1", received_at=received), SEEN), 0.004)
    lookup = advance(lookup, {"restaurant_orders_10m": FeatureValue(3.0, 12.5, False)})
    message = enriched(lookup, VECTOR, now=SEEN + 0.010)
    assert message.timings_ms == {"to_features": 10.0, "freshness_wait": 4.0, "features": 6.0}
    assert sum(message.timings_ms.values()) == pytest.approx(20.0)  # received -> enriched


def test_a_lookup_forwarded_to_another_worker_counts_its_time_in_the_lookup_topic() -> None:
    received = SEEN - 0.010
    first = held(plan(request(restaurant_id="r1", zone_id="z1", received_at=received), SEEN), 0.002)
    # the restaurant here, then off to the zone's owner at +3 ms
    sent = account(advance(first, {}), FEATURES, SEEN + 0.003)
    arrived = Lookup.from_bytes(sent.to_bytes())
    # read off the lookup topic at +10 ms, held 3 ms there too, enriched at +15 ms
    there = held(account(arrived, LOOKUP_FORWARD, SEEN + 0.010), 0.003)
    message = enriched(advance(there, {}), VECTOR, now=SEEN + 0.015)
    assert message.timings_ms == {
        "to_features": 10.0,
        "freshness_wait": 5.0,
        "features": 3.0,  # 1 ms before the forward, 2 ms on the owner
        "lookup_forward": 7.0,
    }
    assert sum(message.timings_ms.values()) == pytest.approx(25.0)  # received -> enriched


def test_clock_skew_counts_as_no_time_and_the_next_clock_takes_over() -> None:
    # ingestion's clock ahead of the features worker's: no wait, not a negative one
    lookup = plan(request(restaurant_id="r1", received_at=SEEN + 0.5), SEEN)
    assert lookup.timings_ms == {"to_features": 0.0}
    # another worker's clock 1 s behind: the forward took no time, and the owner's own
    # work is timed on the owner's clock
    there = account(account(lookup, FEATURES, SEEN + 0.001), LOOKUP_FORWARD, SEEN - 1.0)
    message = enriched(there, VECTOR, now=SEEN - 0.996)
    assert message.timings_ms == {"to_features": 0.0, "features": 5.0, "lookup_forward": 0.0}


def test_a_request_without_a_received_at_has_no_wait_before_the_service() -> None:
    lookup = held(plan(request(restaurant_id="r1"), SEEN), 0.0)
    message = enriched(lookup, VECTOR, now=SEEN + 0.001)
    assert message.timings_ms == {"freshness_wait": 0.0, "features": 1.0}


def test_a_lookup_forwarded_by_the_previous_release_is_read() -> None:
    lookup = plan(request(restaurant_id="r1", zone_id="z1"), SEEN)
    record = msgpack.packb(
        {
            "request": lookup.request.to_wire(),
            "pending": lookup.pending,
            "found": {},
            "received_at": SEEN,
        },
        use_bin_type=True,
    )
    old = Lookup.from_bytes(record)
    assert (old.timings_ms, old.accounted_until, old.pending) == ({}, SEEN, lookup.pending)


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
    lookup = plan(request(restaurant_id="r1"), SEEN)
    lookup = advance(lookup, states.get("restaurant", "r1").features_at(T0, {}))
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
    message = enriched(lookup, vector, now=SEEN + 0.25)
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
    for name, state in live.by_entity["restaurant"].items():
        assert rebuilt.get("restaurant", name).features_at(T0 + 5000, {}) == state.features_at(
            T0 + 5000, {}
        )
