"""The streaming state against the plain-Python reference, and its building blocks."""

from __future__ import annotations

import math
import random

import pytest
from rtml.services.features.handlers import (
    admit_events,
    advance,
    entity_features,
    feature_vector,
    plan,
)
from rtml.services.features.state import PRUNE_STEP_S, EntityStates
from rtml.shared.contracts import FeatureVector, Message, PredictRequest, encode
from rtml.shared.features.definitions import Outcome
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.features.reference import ReferenceFeatures
from rtml.shared.features.series import Spans, TimeSeries

from rtml.tasks.eta.events import (
    CourierAssigned,
    CourierOnline,
    OrderDelivered,
    OrderPickedUp,
    OrderPlaced,
)
from rtml.tasks.eta.features import OPEN_SPAN_MAX_S, IdleCouriers
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from rtml.tasks.eta.spec import TASK as ETA
from rtml.tasks.recs.events import Impression, ItemClicked, ItemViewed
from rtml.tasks.recs.features import ITEM_EMBEDDING_NAMES
from rtml.tasks.recs.spec import TASK as RECS

HOUR = 3600.0


def disordered(messages: list[Message], seed: int, max_delay_s: float) -> list[Message]:
    """``messages`` with events delayed by up to ``max_delay_s`` and some sent twice."""
    rng = random.Random(seed)
    keyed = []
    for index, message in enumerate(messages):
        delay = rng.uniform(0, max_delay_s) if rng.random() < 0.3 else 0.0
        keyed.append((message.ts + delay, index, message))
        if not isinstance(message, PredictRequest) and rng.random() < 0.05:
            keyed.append((message.ts + rng.uniform(0, max_delay_s), index, message))
    return [message for *_, message in sorted(keyed, key=lambda k: (k[0], k[1]))]


def late_copies(
    messages: list[Message], how_late_s: float, kinds: tuple[type[Message], ...] = ETA.events
) -> list[Message]:
    """Fresh events (new ids) far older than their entity's history, sent at the end."""
    events = [m for m in messages if isinstance(m, kinds)][:50]
    return [e.model_copy(update={"id": f"late-{e.id}", "ts": e.ts - how_late_s}) for e in events]


def service_vector(
    states: EntityStates, request: PredictRequest, batch: dict | None = None
) -> FeatureVector:
    lookup = plan(request, seen_at=request.ts)  # its timings are not looked at
    while (entity := lookup.next_entity) is not None:
        kind, entity_id = entity
        found = entity_features([states], kind, entity_id, request.ts, batch or {})
        lookup = advance(lookup, found)
    return feature_vector(lookup, batch or {})


def assert_vectors_equal(got: FeatureVector, want: FeatureVector, context: object) -> None:
    assert got.names == want.names and got.feature_set == want.feature_set
    assert got.defaulted == want.defaulted, context
    for name, a, b in zip(got.names, got.values, want.values, strict=True):
        assert math.isclose(a, b, rel_tol=0, abs_tol=1e-9), (context, name, a, b)
    for name, a, b in zip(got.names, got.freshness_s, want.freshness_s, strict=True):
        assert (a is None) == (b is None), (context, name, a, b)
        if a is not None:
            assert math.isclose(a, b, rel_tol=0, abs_tol=1e-9), (context, name, a, b)


@pytest.fixture(scope="module")
def sim_log() -> list[Message]:
    return list(
        simulate(SimConfig(seed=3, n_restaurants=20, n_couriers=30, orders_per_hour=240), 5 * HOUR)
    )


@pytest.mark.parametrize("lateness_s", [300.0, 10 * HOUR])
def test_live_answers_equal_the_reference_with_disorder_duplicates_and_late_events(
    sim_log: list[Message], lateness_s: float
) -> None:
    """Each request answered when it arrives, as the service does, from the same prefix."""
    log = disordered(sim_log, seed=1, max_delay_s=min(lateness_s, 2 * HOUR) * 0.8)
    log += late_copies(sim_log, how_late_s=lateness_s + HOUR)
    states = EntityStates(lateness_s)
    reference = ReferenceFeatures(lateness_s)
    outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
    answered = 0
    for message in log:
        if isinstance(message, PredictRequest):
            # the state promises answers from the allowed lateness on; these are all in it
            assert_vectors_equal(
                service_vector(states, message), reference.vector(message), message.id
            )
            answered += 1
            continue
        want = reference.apply(message)
        got = admit_events(states, [encode(message)])
        outcome = (
            Outcome.ACCEPTED
            if got.accepted
            else Outcome.DUPLICATE
            if got.duplicates
            else Outcome.LATE
        )
        assert outcome is want, message
        outcomes[want] += 1
    assert answered > 500
    assert outcomes[Outcome.DUPLICATE] > 100 and outcomes[Outcome.LATE] >= 50


def test_answers_after_the_whole_log_equal_the_reference_within_the_lateness(
    sim_log: list[Message],
) -> None:
    lateness_s = 10 * HOUR  # covers the log, so every request is within it at the end
    log = disordered(sim_log, seed=2, max_delay_s=HOUR)
    states = EntityStates(lateness_s)
    reference = ReferenceFeatures(lateness_s)
    for message in log:
        if not isinstance(message, PredictRequest):
            admit_events(states, [encode(message)])
            reference.apply(message)
    requests = [m for m in log if isinstance(m, PredictRequest)]
    for request in requests:
        assert_vectors_equal(service_vector(states, request), reference.vector(request), request.id)


def test_unknown_entities_are_cold_starts() -> None:
    request = PredictRequest(
        ts=1_700_000_000.0, task="eta", entities={"restaurant_id": "nowhere"}, inputs={"n_items": 3}
    )
    vector = service_vector(EntityStates(300.0), request)
    flags = dict(zip(vector.names, vector.defaulted, strict=True))
    assert not flags["n_items"] and not flags["hour_of_day"] and flags["distance_km"]
    assert all(flags[name] for name in vector.names[4:])
    assert all(f is None for f in vector.freshness_s[4:11])


def test_a_span_closes_at_its_stop_or_after_the_cap_whichever_end_arrives_first() -> None:
    spans = Spans(OPEN_SPAN_MAX_S)
    spans.stop("a", 50.0)  # the pickup arrives before the placement
    spans.start("a", 10.0)
    spans.start("b", 20.0)
    assert [spans.open_at(t) for t in (5.0, 10.0, 20.0, 49.9, 50.0)] == [0, 1, 2, 2, 1]
    assert spans.open_at(20.0 + OPEN_SPAN_MAX_S) == 0  # b was never picked up
    spans.stop("c", 5.0)
    spans.start("c", 30.0)  # a stop before the start is ignored
    assert spans.open_at(31.0) == 3
    spans.prune(horizon=51.0)
    assert len(spans) == 2 and spans.open_at(31.0) == 2  # a ended at 50


def test_time_series_windows_are_open_on_the_left_and_remember_the_newest_pruned() -> None:
    series = TimeSeries()
    for ts in (30.0, 10.0, 20.0):
        series.add(ts, ts / 10)
    assert series.window(30.0, 20.0) == [2.0, 3.0]
    series.prune(horizon=25.0)
    assert series.ts == [30.0] and series.newest_at(29.0) == 20.0 and series.newest_at(5.0) is None


def test_state_stays_bounded_by_event_time() -> None:
    states = EntityStates(allowed_lateness_s=300.0)
    start = 1_700_000_000.0
    for i in range(20_000):
        ts = start + i * 2.0  # 11 hours of one busy restaurant and its zone
        states.apply(
            OrderPlaced(
                id=f"p{i}",
                ts=ts,
                order_id=f"o{i}",
                restaurant_id="r",
                zone_id="z",
                distance_km=1,
                n_items=1,
            )
        )
        states.apply(
            OrderPickedUp(
                id=f"u{i}", ts=ts + 60, order_id=f"o{i}", courier_id="c", restaurant_id="r"
            )
        )
        states.apply(
            CourierAssigned(
                id=f"a{i}", ts=ts, order_id=f"o{i}", courier_id=f"c{i % 50}", zone_id="z"
            )
        )
        states.apply(
            OrderDelivered(
                id=f"d{i}",
                ts=ts + 600,
                order_id=f"o{i}",
                courier_id=f"c{i % 50}",
                restaurant_id="r",
                zone_id="z",
                placed_ts=ts,
            )
        )
        states.apply(CourierOnline(id=f"on{i}", ts=ts, courier_id=f"c{i % 50}", zone_id="z"))
    restaurant, zone = states.get("restaurant", "r"), states.get("zone", "z")
    # an order every 2 s; kept: the longest window + the lateness + up to a prune step
    orders_kept = (restaurant.program.lookback_s + 300 + PRUNE_STEP_S) / 2.0 + 10
    structure_of = {f.name: restaurant.structures[i] for f, i, _ in restaurant.program.reads}
    placed = structure_of["restaurant_orders_10m"]
    open_orders = structure_of["restaurant_active_orders"].spans
    assert 0 < len(placed.ts) <= orders_kept and 0 < len(open_orders) <= orders_kept
    # ids (3 restaurant events per order) while they could still be admitted
    assert len(restaurant._seen) <= 3 * (300 + PRUNE_STEP_S) / 2.0 + 10
    (couriers,) = [s for s in zone.structures if isinstance(s, IdleCouriers)]
    assert 0 < sum(len(c.busy) for c in couriers.couriers.values()) <= orders_kept
    assert all(len(c.presence) <= orders_kept / 50 + 2 for c in couriers.couriers.values())


def item_embeddings(seed: int = 0) -> list[BatchFeatureRecord]:
    """Made-up embeddings of the 80 items, shaped like the batch job's."""
    rng = random.Random(seed)
    return [
        BatchFeatureRecord(
            ts=0.0,
            entity=f"item:{item}",
            names=list(ITEM_EMBEDDING_NAMES),
            values=[rng.gauss(0, 1) for _ in ITEM_EMBEDDING_NAMES],
            n_events=0,
        )
        for item in range(80)
    ]


def session_log(seed: int, hours: float) -> list[Message]:
    """Sessions viewing and clicking Open Bandit items, with recs requests among them."""
    rng = random.Random(seed)
    start = 1_700_000_000.0
    messages: list[Message] = []
    for i in range(int(hours * 3600 / 3)):
        ts = start + i * 3 + rng.random()
        session = f"s{rng.randrange(30)}"
        item = rng.randrange(80)
        kind = rng.choice((ItemViewed, ItemViewed, ItemClicked, Impression))
        if kind is Impression:
            messages.append(
                Impression(id=f"e{i}", ts=ts, session_id=session, item_id=item, position=1)
            )
        else:
            messages.append(kind(id=f"e{i}", ts=ts, session_id=session, item_id=item))
        if i % 7 == 0:
            inputs = {"user_feature_0": float(rng.randrange(5))} if i % 2 else {}
            entities = {"session_id": session} if i % 50 else {}
            messages.append(
                PredictRequest(id=f"q{i}", ts=ts, task="recs", entities=entities, inputs=inputs)
            )
    return messages


@pytest.mark.parametrize("lateness_s", [300.0, 10 * HOUR])
def test_session_features_equal_the_reference(lateness_s: float) -> None:
    log = session_log(seed=4, hours=3)
    items = {r.entity: r for r in item_embeddings()}
    traffic = disordered(log, seed=3, max_delay_s=min(lateness_s, HOUR) * 0.8)
    traffic += late_copies(log, how_late_s=lateness_s + HOUR, kinds=RECS.events)
    states = EntityStates(lateness_s)
    reference = ReferenceFeatures(lateness_s, items)
    for message in traffic:
        if isinstance(message, PredictRequest):
            want = reference.vector(message)
            assert_vectors_equal(service_vector(states, message, items), want, message.id)
            continue
        admitted = admit_events(states, [encode(message)])
        assert bool(admitted.accepted) == (reference.apply(message) is Outcome.ACCEPTED)
    vector = reference.vector(next(m for m in log if isinstance(m, PredictRequest) and m.entities))
    assert vector.feature_set == "recs@1" and len(vector.names) == 6 + 12 + 41
