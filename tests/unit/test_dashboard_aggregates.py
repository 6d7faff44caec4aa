"""The dashboard's aggregates: pure folds over contract messages."""

from __future__ import annotations

import json
import math
import random

import pytest
from rtml.services.dashboard.aggregates import (
    CURRENT_RATE_S,
    EVENT_BUCKET_S,
    MAX_HOPS,
    RECENT_MAE_S,
    WALL_BUCKET_S,
    WALL_WINDOW_S,
    Dashboard,
    EventClock,
    Latency,
)
from rtml.services.dashboard.bounded import EventBuckets, RecentIds
from rtml.services.dashboard.histogram import GROWTH, LogHistogram
from rtml.shared.contracts import (
    ArmSummary,
    DlqRecord,
    FeatureVector,
    ModelAnnouncement,
    PredictEnriched,
    Prediction,
    PredictRequest,
    RouterState,
    TrainingExample,
    Trigger,
)

from rtml.tasks.eta.events import OrderPlaced

NOW = 1_800_000_000.0  # wall clock
T0 = 1_717_412_400.0  # event time, as the simulator's clock
SHA = "0" * 64
VECTOR = FeatureVector(
    feature_set="eta@1", names=["distance_km"], values=[1.0], freshness_s=[None], defaulted=[False]
)


def order(i: int, ts: float = T0) -> OrderPlaced:
    return OrderPlaced(
        id=f"e{i}",
        ts=ts,
        order_id=f"o{i}",
        restaurant_id="r1",
        zone_id="z1",
        distance_km=1.0,
        n_items=1,
    )


def prediction(
    i: int, ts: float = T0, version: str = "v1", total_ms: float = 10.0, **changes: object
) -> Prediction:
    fields = dict(
        id=f"p{i}", ts=ts, task="eta", request_ts=ts - 0.02, features=VECTOR, model_version=version,
        prediction=30.0, timings_ms={"total": total_ms},
    )  # fmt: skip
    return Prediction(**{**fields, **changes})


def request(i: int) -> PredictRequest:
    return PredictRequest(id=f"p{i}", ts=T0, task="eta")


def example(
    i: int, label_ts: float, error: float, version: str = "v1", **changes: object
) -> TrainingExample:
    fields = dict(
        id=f"x{i}", ts=label_ts, task="eta", features=VECTOR, label=30.0, model_version=version,
        prediction=30.0 + error, request_ts=label_ts - 1800, label_ts=label_ts,
    )  # fmt: skip
    return TrainingExample(**{**fields, **changes})


def announcement(
    version: str,
    action: str,
    parent: str | None = None,
    reason: str = "",
    task: str = "eta",
    trigger: Trigger | None = None,
) -> ModelAnnouncement:
    return ModelAnnouncement(
        ts=NOW, task=task, model_version=version, action=action, parent_version=parent,
        sha256=SHA, feature_set="eta@1", reason=reason, metrics={"mae": 4.0}, trigger=trigger,
    )  # fmt: skip


def enriched(i: int, freshness: list[float | None], defaulted: list[bool]) -> PredictEnriched:
    names = ["distance_km", "orders_30m", "prep_mean_28d"]
    vector = FeatureVector(
        feature_set="eta@1",
        names=names,
        values=[0.0] * 3,
        freshness_s=freshness,
        defaulted=defaulted,
    )
    return PredictEnriched(id=f"q{i}", ts=T0, task="eta", request_ts=T0, features=vector)


def dlq(i: int, service: str, reason: str, ts: float, error: str = "boom") -> DlqRecord:
    return DlqRecord(
        id=f"d{i}", ts=ts, service=service, reason=reason, error_class="ValueError", error=error
    )


# --- histogram -----------------------------------------------------------------------


def test_histogram_quantiles_are_within_the_bin_error_of_the_exact_ones() -> None:
    rng = random.Random(1)
    values = [rng.lognormvariate(2.0, 1.0) for _ in range(20_000)]
    histogram = LogHistogram()
    for value in values:
        histogram.add(value)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert histogram.quantile(q) == pytest.approx(exact, rel=math.sqrt(GROWTH) - 1 + 1e-9)
    assert histogram.count == len(values)


def test_histogram_refuses_what_is_not_a_duration_and_keeps_zeros() -> None:
    histogram = LogHistogram()
    assert histogram.quantile(0.5) is None
    assert [histogram.add(v) for v in (-1.0, math.nan, math.inf)] == [False, False, False]
    assert histogram.count == 0
    for value in (0.0, 0.0, 0.0, 100.0):
        histogram.add(value)
    assert histogram.quantile(0.5) == 0.0
    assert histogram.quantile(1.0) == pytest.approx(100.0, rel=0.021)


def test_histograms_merge_by_adding_counts() -> None:
    low, high = LogHistogram(), LogHistogram()
    for _ in range(90):
        low.add(1.0)
    for _ in range(10):
        high.add(1000.0)
    low.merge(high)
    assert low.count == 100
    assert low.quantile(0.9) == pytest.approx(1.0, rel=0.021)
    assert low.quantile(0.95) == pytest.approx(1000.0, rel=0.021)


# --- building blocks -----------------------------------------------------------------


def test_recent_ids_forget_the_oldest_beyond_capacity() -> None:
    ids = RecentIds(capacity=2)
    assert [ids.first_time(("k", k)) for k in "aab"] == [True, False, True]
    ids.first_time(("k", "c"))  # pushes "a" out
    assert ids.first_time(("k", "a"))
    assert not ids.first_time(("k", "c"))


def test_event_buckets_keep_the_newest_and_refuse_older_ones() -> None:
    buckets: EventBuckets[list[int]] = EventBuckets(list, bucket_s=60, keep=3)
    for minute in (0, 1, 2, 3):
        bucket = buckets.at(minute * 60 + 5)
        assert bucket is not None
        bucket.append(minute)
    assert [start for start, _ in buckets.items()] == [60, 120, 180]
    assert buckets.at(10) is None  # older than everything kept
    assert buckets.at(125) == [2]


def test_event_clock_maps_wall_time_to_the_event_time_reached_by_then() -> None:
    clock = EventClock()
    clock.observe(NOW, T0)
    clock.observe(NOW + 0.5, T0 + 30)
    clock.observe(NOW + 2, T0 + 120)
    clock.observe(NOW + 3, T0 + 90)  # a late message: the stream had already reached +120
    at = clock.mapper()
    assert at(NOW - 100) == T0  # before the stream began: its start
    assert at(NOW + 1.5) == T0 + 30
    assert at(NOW + 3.9) == T0 + 120
    assert EventClock().mapper()(NOW) is None


# --- the dashboard ---------------------------------------------------------------------


def test_redelivered_messages_are_counted_once() -> None:
    dashboard = Dashboard("eta")
    assert dashboard.observe(prediction(1), NOW)
    assert not dashboard.observe(prediction(1), NOW)
    snapshot = dashboard.snapshot(NOW + 1)
    assert snapshot["totals"] == {"predictions": 1, "repeats": 1}
    assert snapshot["latency"]["total_ms"]["count"] == 1


def test_rates_are_per_wall_second_over_the_window() -> None:
    dashboard = Dashboard("eta")
    for second in range(CURRENT_RATE_S):
        for i in range(3):
            dashboard.observe(order(second * 10 + i), NOW - CURRENT_RATE_S + second + 0.5)
        dashboard.observe(prediction(second), NOW - CURRENT_RATE_S + second + 0.5)
    dashboard.observe(order(999), NOW - WALL_WINDOW_S - 60)  # replayed history outside the window
    dashboard.observe(order(1000), NOW + 0.2)  # the second still filling: not in the rate yet
    rates = dashboard.snapshot(NOW)["rates"]
    assert rates["events_per_s"] == 3.0
    assert rates["predictions_per_s"] == 1.0
    assert len(rates["series"]) == WALL_WINDOW_S // WALL_BUCKET_S
    assert rates["series"][-1]["events"] == 3.0
    assert sum(p["events"] for p in rates["series"]) * WALL_BUCKET_S == 3 * CURRENT_RATE_S
    assert dashboard.snapshot(NOW)["totals"]["events"] == 3 * CURRENT_RATE_S + 2


def test_latency_percentiles_overall_and_per_wall_bucket() -> None:
    dashboard = Dashboard("eta")
    for i in range(100):
        dashboard.observe(prediction(i, total_ms=float(i + 1)), NOW - 7)
    latency = dashboard.snapshot(NOW)["latency"]
    assert latency["total_ms"]["p50"] == pytest.approx(50, rel=0.021)
    assert latency["total_ms"]["p99"] == pytest.approx(99, rel=0.021)
    [point] = latency["series"]
    assert point["t"] == (NOW - 7) // WALL_BUCKET_S * WALL_BUCKET_S
    assert point["count"] == 100


def test_each_hop_has_its_percentiles_in_the_order_of_the_chain() -> None:
    dashboard = Dashboard("eta")
    for i in range(100):
        # written by the prediction service last, its own hops after the upstream ones
        timings = {"features": 2.0, "to_features": float(i + 1), "scoring": 0.5, "total": 9.0}
        dashboard.observe(prediction(i, timings_ms=timings), NOW - 7)
    # a request-driven prediction: the same names, whichever wiring wrote them
    dashboard.observe(prediction(100, timings_ms={"to_router": 3.0, "total": 3.0}), NOW - 7)
    hops = dashboard.snapshot(NOW)["latency"]["hops_ms"]
    assert [h["hop"] for h in hops] == ["to_features", "features", "to_router", "scoring"]
    by_hop = {h["hop"]: h for h in hops}
    assert by_hop["to_features"]["p50"] == pytest.approx(50, rel=0.021)
    assert by_hop["to_features"]["p99"] == pytest.approx(99, rel=0.021)
    assert by_hop["features"]["count"] == 100 and by_hop["to_router"]["count"] == 1


def test_hops_unknown_to_the_chain_come_after_it_up_to_a_bound() -> None:
    latency = Latency()
    # "queue", written before the chain had hops, is shown as it came, after them
    latency.observe_prediction(prediction(1, timings_ms={"queue": 5.0, "scoring": 1.0}), NOW)
    names = [f"hop{i}" for i in range(MAX_HOPS)]
    latency.observe_prediction(prediction(2, timings_ms={n: 1.0 for n in names}), NOW)
    hops = [h["hop"] for h in latency.snapshot(NOW)["hops_ms"]]
    assert hops == ["scoring", "queue", *names[: MAX_HOPS - 2]]


def test_end_to_end_is_wall_time_from_request_record_to_prediction_record() -> None:
    dashboard = Dashboard("eta")
    dashboard.observe(request(1), NOW)
    dashboard.observe(prediction(1), NOW + 0.020)
    # read in the other order, as a replay of two topics may
    dashboard.observe(prediction(2), NOW + 0.050)
    dashboard.observe(request(2), NOW + 0.010)
    # not measured: clock skew put a prediction before its request; no request seen
    dashboard.observe(request(3), NOW + 1)
    dashboard.observe(prediction(3), NOW)
    dashboard.observe(prediction(4), NOW)
    end_to_end = dashboard.snapshot(NOW)["latency"]["end_to_end_ms"]
    assert end_to_end["count"] == 2
    assert end_to_end["p50"] == pytest.approx(20, rel=0.021)
    assert end_to_end["p99"] == pytest.approx(40, rel=0.021)


def test_unmatched_requests_are_forgotten_beyond_capacity() -> None:
    latency = Latency(pending_joins=1)
    latency.observe_request(request(1), NOW)
    latency.observe_request(request(2), NOW)  # request 1 is given up
    latency.observe_prediction(prediction(2), NOW + 1)
    latency.observe_prediction(prediction(1), NOW + 1)
    assert latency.snapshot(NOW)["end_to_end_ms"]["count"] == 1


def test_mae_is_per_event_time_bucket_of_the_label_and_per_version() -> None:
    dashboard = Dashboard("eta")
    dashboard.observe(example(1, T0 + 10, error=2.0, version="v1"), NOW)
    dashboard.observe(example(2, T0 + 20, error=-4.0, version="v2"), NOW)
    dashboard.observe(example(3, T0 + EVENT_BUCKET_S + 1, error=6.0, version="v2"), NOW)
    # not counted: another task, a ranking, a non-finite prediction
    dashboard.observe(example(4, T0, error=100.0, task="recs"), NOW)
    dashboard.observe(example(5, T0, error=0.0, prediction=[0.1, 0.9]), NOW)
    dashboard.observe(example(6, T0, error=0.0, prediction=math.nan), NOW)
    mae = dashboard.snapshot(NOW)["mae"]
    assert mae["series"] == [
        {
            "t": T0 // EVENT_BUCKET_S * EVENT_BUCKET_S,
            "mae": 3.0,
            "n": 2,
            "by_version": {"v1": 2.0, "v2": 4.0},
        },
        {
            "t": (T0 // EVENT_BUCKET_S + 1) * EVENT_BUCKET_S,
            "mae": 6.0,
            "n": 1,
            "by_version": {"v2": 6.0},
        },
    ]
    assert mae["recent"] == 4.0


def test_recent_mae_covers_the_newest_stretch_of_event_time_only() -> None:
    dashboard = Dashboard("eta")
    dashboard.observe(example(1, T0, error=100.0), NOW)
    dashboard.observe(example(2, T0 + RECENT_MAE_S + EVENT_BUCKET_S, error=1.0), NOW)
    assert dashboard.snapshot(NOW)["mae"]["recent"] == 1.0


def test_traffic_share_per_event_time_bucket_of_the_request() -> None:
    dashboard = Dashboard("eta")
    versions = ["v1", "v1", "v1", "v2"]
    for i, version in enumerate(versions):
        dashboard.observe(prediction(i, version=version), NOW)
    dashboard.observe(prediction(10, ts=T0 + EVENT_BUCKET_S, version="v2"), NOW)
    dashboard.observe(prediction(11, version="r1", task="recs"), NOW)
    traffic = dashboard.snapshot(NOW)["traffic"]
    assert traffic["versions"] == ["v1", "v2"]
    assert [p["shares"] for p in traffic["series"]] == [{"v1": 0.75, "v2": 0.25}, {"v2": 1.0}]
    assert [p["n"] for p in traffic["series"]] == [4, 1]


def test_router_posteriors_keep_the_latest_checkpoint_and_turn_nan_into_null() -> None:
    dashboard = Dashboard("eta")
    old = RouterState(ts=T0, task="eta", policy="ucb", decisions=1, arms=[])
    arms = [
        ArmSummary(arm="v1", pulls=40, mean=-3.0, ci_low=-3.5, ci_high=-2.5, share=0.7),
        ArmSummary(arm="v2", pulls=1, mean=-2.0, ci_low=math.nan, ci_high=math.nan, share=0.3),
    ]
    new = RouterState(
        ts=T0 + 1, task="eta", policy="thompson", decisions=41, arms=arms, champion="v1"
    )
    dashboard.observe(old, NOW)
    dashboard.observe(new, NOW)
    [eta] = dashboard.snapshot(NOW)["router"]
    assert (eta["policy"], eta["decisions"], eta["champion"]) == ("thompson", 41, "v1")
    assert eta["arms"][1] == {
        "arm": "v2",
        "pulls": 1,
        "mean": -2.0,
        "ci_low": None,
        "ci_high": None,
        "share": 0.3,
    }


def test_lineage_follows_parents_promotions_and_retirements() -> None:
    dashboard = Dashboard("eta")
    dashboard.observe(announcement("v1", "registered", trigger=Trigger(kind="bootstrap")), NOW)
    dashboard.observe(announcement("v1", "promoted"), NOW + 1)
    shifted = Trigger(kind="input_drift", feature="zone_couriers_idle")
    dashboard.observe(
        announcement("v2", "registered", parent="v1", reason="holdout mae 4", trigger=shifted),
        NOW + 2,
    )
    dashboard.observe(announcement("v2", "promoted", parent="v1", reason="bandit winner"), NOW + 3)
    dashboard.observe(announcement("v1", "retired"), NOW + 4)
    dashboard.observe(announcement("r1", "promoted", task="recs"), NOW + 5)
    lineage = dashboard.snapshot(NOW)["lineage"]
    nodes = {n["version"]: n for n in lineage["nodes"]}
    assert list(nodes) == ["v1", "v2", "r1"]
    assert nodes["v2"] == {
        "version": "v2", "task": "eta", "parent": "v1", "status": "promoted", "champion": True,
        "drift": True, "trigger": "input drift on zone_couriers_idle",
        "reason": "holdout mae 4", "metrics": {"mae": 4.0},
    }  # fmt: skip
    assert (nodes["v1"]["status"], nodes["v1"]["champion"], nodes["v1"]["drift"]) == (
        "retired",
        False,
        False,
    )
    assert nodes["v1"]["trigger"] == "bootstrap"
    assert lineage["champions"] == {"eta": "v2", "recs": "r1"}


def test_retiring_the_champion_leaves_its_task_without_one() -> None:
    dashboard = Dashboard("eta")
    dashboard.observe(announcement("v1", "promoted"), NOW)
    dashboard.observe(announcement("v1", "retired"), NOW + 1)
    assert dashboard.snapshot(NOW)["lineage"]["champions"] == {}


def test_announcements_are_marked_at_the_event_time_the_stream_had_reached() -> None:
    dashboard = Dashboard("eta")
    for minute in range(10):
        # 60x: each wall second the stream moves one event-time minute on
        dashboard.observe(prediction(minute, ts=T0 + 60 * minute), NOW + minute)
    drifted = announcement("v2", "registered", parent="v1", trigger=Trigger(kind="error_drift"))
    dashboard.observe(drifted, NOW + 4.5)
    dashboard.observe(announcement("v1", "registered", trigger=Trigger(kind="schedule")), NOW - 30)
    markers = dashboard.snapshot(NOW + 10)["markers"]
    assert [(m["version"], m["t"], m["drift"], m["trigger"]) for m in markers] == [
        ("v2", T0 + 240, True, "error drift"),
        ("v1", T0, False, "schedule"),
    ]


def test_feature_freshness_leaves_request_inputs_out_and_counts_defaults() -> None:
    dashboard = Dashboard("eta")
    dashboard.observe(enriched(1, [None, 10.0, 3600.0], [False, False, False]), NOW)
    dashboard.observe(enriched(2, [None, 30.0, 7200.0], [False, False, False]), NOW)
    dashboard.observe(enriched(3, [None, None, 5400.0], [False, True, False]), NOW)
    dashboard.observe(enriched(4, [None, math.nan, 5400.0], [False, False, False]), NOW)
    rows = {r["feature"]: r for r in dashboard.snapshot(NOW)["freshness"]}
    assert list(rows) == ["orders_30m", "prep_mean_28d"]
    assert rows["orders_30m"] == {
        "feature": "orders_30m",
        "mean_s": 20.0,
        "p95_s": 30.0,
        "samples": 2,
        "defaulted_share": 1 / 3,
    }
    assert rows["prep_mean_28d"]["mean_s"] == 5400.0
    assert rows["prep_mean_28d"]["defaulted_share"] == 0.0


def test_dead_letters_by_service_and_reason_with_the_latest_error() -> None:
    dashboard = Dashboard("eta")
    dashboard.observe(dlq(1, "features", "schema", T0 + 2, error="newest"), NOW)
    dashboard.observe(dlq(2, "features", "schema", T0 + 1, error="older, read later"), NOW)
    dashboard.observe(dlq(3, "prediction", "handler", T0), NOW)
    rows = dashboard.snapshot(NOW)["dlq"]
    assert [(r["service"], r["reason"], r["count"], r["last_error"]) for r in rows] == [
        ("features", "schema", 2, "newest"),
        ("prediction", "handler", 1, "boom"),
    ]
    assert dashboard.snapshot(NOW)["totals"]["dlq"] == 3


def test_the_snapshot_is_strict_json_whatever_the_messages_held() -> None:
    dashboard = Dashboard("eta")
    dashboard.observe(order(1), NOW)
    dashboard.observe(prediction(1, total_ms=math.inf, prediction=math.nan), NOW)
    dashboard.observe(example(1, T0, error=math.inf), NOW)
    nan_arm = ArmSummary(
        arm="v1", pulls=0, mean=math.nan, ci_low=math.nan, ci_high=math.inf, share=1.0
    )
    dashboard.observe(
        RouterState(ts=T0, task="eta", policy="ucb", decisions=0, arms=[nan_arm]), NOW
    )
    nan_metrics = announcement("v1", "registered").model_copy(update={"metrics": {"mae": math.nan}})
    dashboard.observe(nan_metrics, NOW)
    dashboard.count_undecodable()
    text = json.dumps(dashboard.snapshot(NOW + 1), allow_nan=False)
    assert json.loads(text)["totals"]["undecodable"] == 1
