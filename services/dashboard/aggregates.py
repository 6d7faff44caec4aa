"""The dashboard's rolling aggregates: pure folds over contract messages, no I/O.

``Dashboard.observe(message, wall_ts)`` takes each message read from the topics
with the wall-clock time it was written (the Kafka record timestamp), and
``Dashboard.snapshot(now)`` renders everything as plain JSON-ready data.

Two clocks, on purpose:
- wall time (record timestamps) for rates, latency over time and end to end:
  replaying the topics from the beginning at start-up then puts old traffic
  where it happened, not at the moment of the replay;
- event time (the messages' own ``ts``, ``label_ts``) for MAE and traffic share,
  which is the simulation's clock and may run 60x faster than the wall.
Model announcements are stamped with wall time, so ``EventClock`` learns from the
stream which event time had been reached at each wall second, and places them
on the event-time axis with it.

Every aggregate is bounded: windows drop old buckets, samples are capped, and a
log-binned histogram keeps latency quantiles in constant memory.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtml.services.dashboard.bounded import EventBuckets, RecentIds, WallBuckets
from rtml.services.dashboard.histogram import LogHistogram
from rtml.shared.contracts import (
    DlqRecord,
    Message,
    ModelAnnouncement,
    PredictEnriched,
    Prediction,
    PredictRequest,
    RouterState,
    Task,
    TrainingExample,
)
from rtml.shared.tasks.registry import tasks
from rtml.shared.timings import TOTAL, hops, in_chain_order

# wall-clock rates and latency: the last 5 minutes, in 5-second points
WALL_WINDOW_S = 300
WALL_BUCKET_S = 5
# the headline rate: complete seconds just before now
CURRENT_RATE_S = 10
# event-time series: 5 simulated minutes a point, a simulated day kept
EVENT_BUCKET_S = 300
EVENT_BUCKETS_KEPT = 288
# the headline MAE: the newest half hour of event time
RECENT_MAE_S = 1800
# feature freshness: the newest observations per feature, and how many features at most
FRESHNESS_SAMPLES = 2000
MAX_FEATURES = 64
# the hops of timings_ms: the chain has 8 (shared/timings.py); room for a few more
MAX_HOPS = 16
MAX_MARKERS = 200
# the clock map keeps this many wall seconds (over 5 hours)
CLOCK_SECONDS_KEPT = 20_000
# requests waiting for their prediction (or predictions read before their request)
PENDING_JOINS = 50_000
# message ids remembered to absorb redelivered duplicates (at-least-once upstream)
IDS_REMEMBERED = 100_000

JSON = dict[str, Any]


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such values (an arm without data) become null."""
    return value if value is not None and math.isfinite(value) else None


# --- the aggregates, one per panel -------------------------------------------------


@dataclass
class Tally:
    n: int = 0


class Throughput:
    """Events and predictions per second, by wall clock."""

    def __init__(self) -> None:
        self._events: WallBuckets[Tally] = WallBuckets(Tally, 1, WALL_WINDOW_S)
        self._predictions: WallBuckets[Tally] = WallBuckets(Tally, 1, WALL_WINDOW_S)

    def count_event(self, wall_ts: float) -> None:
        _count(self._events.at(wall_ts))

    def count_prediction(self, wall_ts: float) -> None:
        _count(self._predictions.at(wall_ts))

    def snapshot(self, now: float) -> JSON:
        events = _per_second(self._events, now)
        predictions = _per_second(self._predictions, now)
        series = [
            {
                "t": events[i][0],
                "events": _mean(events[i : i + WALL_BUCKET_S]),
                "predictions": _mean(predictions[i : i + WALL_BUCKET_S]),
            }
            for i in range(0, len(events), WALL_BUCKET_S)
        ]
        return {
            "window_s": WALL_WINDOW_S,
            "bucket_s": WALL_BUCKET_S,
            "events_per_s": _mean(events[-CURRENT_RATE_S:]),
            "predictions_per_s": _mean(predictions[-CURRENT_RATE_S:]),
            "series": series,
        }


def _count(tally: Tally | None) -> None:
    if tally is not None:
        tally.n += 1


def _per_second(buckets: WallBuckets[Tally], now: float) -> list[tuple[float, int]]:
    """(second, count) for each second of the window before ``now``."""
    return [(start, tally.n if tally else 0) for start, tally in buckets.window(now)]


def _mean(counts: list[tuple[float, int]]) -> float:
    return sum(n for _, n in counts) / len(counts)


class Latency:
    """Percentiles of the services' own timing, of each hop of it and of end to end.

    ``timings_ms.total`` is what the prediction chain measured (ingestion's
    ``received_at`` -> prediction made); the other entries of ``timings_ms`` are
    its hops (``shared/timings.py``), whatever the wiring that wrote them.
    End to end is wall time from the request's record on rtml.predict.requests
    to its prediction's record on rtml.predictions, joined by request id: the
    messages' own ``ts``/``request_ts`` are event times (a simulation's clock,
    equal to each other along the chain), so they cannot time the pipeline.
    Totals and hops are over everything read; the series is per wall-clock bucket.
    """

    def __init__(self, pending_joins: int = PENDING_JOINS) -> None:
        self._total = LogHistogram()
        # timings_ms is a free map: names beyond MAX_HOPS are not counted
        self._hops: dict[str, LogHistogram] = {}
        self._end_to_end = LogHistogram()
        self._over_time: WallBuckets[LogHistogram] = WallBuckets(
            LogHistogram, WALL_BUCKET_S, WALL_WINDOW_S
        )
        self._pending_joins = pending_joins
        # request id -> (whether the request or its prediction was read first, its wall time)
        self._unmatched: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    def observe_request(self, request: PredictRequest, wall_ts: float) -> None:
        self._join(request.id, wall_ts, is_request=True)

    def observe_prediction(self, prediction: Prediction, wall_ts: float) -> None:
        total_ms = prediction.timings_ms.get(TOTAL)
        if total_ms is not None and self._total.add(total_ms):
            bucket = self._over_time.at(wall_ts)
            if bucket is not None:
                bucket.add(total_ms)
        for name, hop_ms in hops(prediction.timings_ms).items():
            histogram = self._hops.get(name)
            if histogram is None:
                if len(self._hops) >= MAX_HOPS:
                    continue
                histogram = self._hops[name] = LogHistogram()
            histogram.add(hop_ms)
        self._join(prediction.id, wall_ts, is_request=False)

    def _join(self, request_id: str, wall_ts: float, is_request: bool) -> None:
        # replaying several topics interleaves them freely: either side may come first
        other = self._unmatched.pop(request_id, None)
        if other is None or other[0] == is_request:
            self._unmatched[request_id] = (is_request, wall_ts)
            if len(self._unmatched) > self._pending_joins:
                self._unmatched.popitem(last=False)  # a request that never got its prediction
            return
        requested, predicted = (wall_ts, other[1]) if is_request else (other[1], wall_ts)
        # a negative difference is clock skew between producers, not a latency: add() refuses it
        self._end_to_end.add((predicted - requested) * 1000)

    def snapshot(self, now: float) -> JSON:
        series = []
        for start, histogram in self._over_time.window(now):
            if histogram is not None and histogram.count:
                series.append({"t": start, **histogram.percentiles()})
        return {
            "total_ms": self._total.percentiles(),
            "hops_ms": [
                {"hop": name, **self._hops[name].percentiles()}
                for name in in_chain_order(self._hops)
            ],
            "end_to_end_ms": self._end_to_end.percentiles(),
            "series": series,
        }


@dataclass
class ErrorSum:
    absolute: float = 0.0
    count: int = 0

    def add(self, error: float) -> None:
        self.absolute += error
        self.count += 1

    @property
    def mean(self) -> float | None:
        return self.absolute / self.count if self.count else None


@dataclass
class ErrorBucket:
    overall: ErrorSum = field(default_factory=ErrorSum)
    by_version: dict[str, ErrorSum] = field(default_factory=dict)


class ModelError:
    """MAE |prediction - label| of one regression task, per event-time bucket of the label."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._buckets: EventBuckets[ErrorBucket] = EventBuckets(
            ErrorBucket, EVENT_BUCKET_S, EVENT_BUCKETS_KEPT
        )

    def observe(self, example: TrainingExample) -> None:
        # rankings (a list per request) have no absolute error
        if example.task != self.task or not isinstance(example.prediction, float):
            return
        error = abs(example.prediction - example.label)
        if not math.isfinite(error):
            return
        bucket = self._buckets.at(example.label_ts)
        if bucket is None:
            return
        bucket.overall.add(error)
        bucket.by_version.setdefault(example.model_version, ErrorSum()).add(error)

    def snapshot(self) -> JSON:
        buckets = self._buckets.items()
        series = [
            {
                "t": start,
                "mae": bucket.overall.mean,
                "n": bucket.overall.count,
                "by_version": {v: s.mean for v, s in bucket.by_version.items()},
            }
            for start, bucket in buckets
        ]
        recent = ErrorSum()
        if buckets:
            newest_end = buckets[-1][0] + self._buckets.bucket_s
            for start, bucket in buckets:
                if start >= newest_end - RECENT_MAE_S:
                    recent.absolute += bucket.overall.absolute
                    recent.count += bucket.overall.count
        return {
            "task": self.task,
            "bucket_s": self._buckets.bucket_s,
            "recent_s": RECENT_MAE_S,
            "recent": recent.mean,
            "series": series,
        }


class TrafficShare:
    """Which model version answered one task's requests, per event-time bucket of the request."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._buckets: EventBuckets[Counter[str]] = EventBuckets(
            Counter, EVENT_BUCKET_S, EVENT_BUCKETS_KEPT
        )
        self._versions: dict[str, None] = {}  # in order of first appearance

    def observe(self, prediction: Prediction) -> None:
        if prediction.task != self.task:
            return
        bucket = self._buckets.at(prediction.ts)
        if bucket is not None:
            bucket[prediction.model_version] += 1
            self._versions.setdefault(prediction.model_version)

    def snapshot(self) -> JSON:
        series = []
        for start, counts in self._buckets.items():
            total = sum(counts.values())
            series.append(
                {"t": start, "n": total, "shares": {v: c / total for v, c in counts.items()}}
            )
        return {
            "task": self.task,
            "bucket_s": self._buckets.bucket_s,
            "versions": list(self._versions),
            "series": series,
        }


class Posteriors:
    """The latest router checkpoint of each task: arms with their intervals and shares."""

    def __init__(self) -> None:
        self._latest: dict[str, RouterState] = {}

    def observe(self, state: RouterState) -> None:
        self._latest[state.task] = state

    def snapshot(self) -> list[JSON]:
        return [
            {
                "task": state.task,
                "policy": state.policy,
                "decisions": state.decisions,
                "champion": state.champion,
                "ts": state.ts,
                "arms": [
                    {
                        "arm": arm.arm,
                        "pulls": arm.pulls,
                        "mean": finite(arm.mean),
                        "ci_low": finite(arm.ci_low),
                        "ci_high": finite(arm.ci_high),
                        "share": arm.share,
                    }
                    for arm in state.arms
                ],
            }
            for state in sorted(self._latest.values(), key=lambda s: s.task)
        ]


class EventClock:
    """The event time the stream had reached by each wall-clock second."""

    def __init__(self, seconds_kept: int = CLOCK_SECONDS_KEPT) -> None:
        self._seconds_kept = seconds_kept
        self._reached: dict[int, float] = {}
        self._earliest = math.inf

    def observe(self, wall_ts: float, event_ts: float) -> None:
        self._earliest = min(self._earliest, event_ts)
        second = int(wall_ts)
        previous = self._reached.get(second)
        if previous is None:
            self._reached[second] = event_ts
            if len(self._reached) > self._seconds_kept:
                del self._reached[min(self._reached)]
        elif event_ts > previous:
            self._reached[second] = event_ts

    def mapper(self) -> Callable[[float], float | None]:
        """wall time -> event time reached by the end of that wall second; before the
        stream's first second, its earliest event time (a model announced before any
        traffic was there from the start)."""
        seconds = sorted(self._reached)
        reached: list[float] = []
        for second in seconds:
            reached.append(
                max(self._reached[second], reached[-1]) if reached else self._reached[second]
            )

        def event_time_at(wall_ts: float) -> float | None:
            if not seconds:
                return None
            position = bisect.bisect_right(seconds, wall_ts) - 1
            return reached[position] if position >= 0 else self._earliest

        return event_time_at


@dataclass
class ModelNode:
    version: str
    task: str
    parent: str | None
    status: str
    metrics: dict[str, float]
    reason: str
    # what started its training, in words ("" when the announcement does not say)
    trigger: str
    drift: bool
    first_seen: float


def drift_triggered(announcement: ModelAnnouncement) -> bool:
    """Whether a drift detector started the version's training."""
    trigger = announcement.trigger
    return trigger is not None and trigger.kind in ("error_drift", "input_drift")


class Lineage:
    """Every announced model version with its parent, latest status and the champion of
    each task; and each announcement as a marker for the time axis."""

    def __init__(self) -> None:
        self._nodes: dict[str, ModelNode] = {}
        self._champions: dict[str, str] = {}
        self._markers: deque[tuple[float, ModelAnnouncement]] = deque(maxlen=MAX_MARKERS)

    def observe(self, announcement: ModelAnnouncement, wall_ts: float) -> None:
        trigger = announcement.trigger
        drift = drift_triggered(announcement)
        node = self._nodes.get(announcement.model_version)
        if node is None:
            node = self._nodes[announcement.model_version] = ModelNode(
                version=announcement.model_version,
                task=announcement.task,
                parent=announcement.parent_version,
                status=announcement.action,
                metrics={},
                reason=announcement.reason,
                trigger=trigger.text if trigger else "",
                drift=drift,
                first_seen=wall_ts,
            )
        node.status = announcement.action
        node.drift = node.drift or drift
        node.reason = node.reason or announcement.reason
        node.trigger = node.trigger or (trigger.text if trigger else "")
        node.metrics.update(announcement.metrics)
        if announcement.action == "promoted":
            self._champions[announcement.task] = announcement.model_version
        elif (
            announcement.action == "retired"
            and self._champions.get(announcement.task) == announcement.model_version
        ):
            del self._champions[announcement.task]
        self._markers.append((wall_ts, announcement))

    def snapshot(self) -> JSON:
        champions = set(self._champions.values())
        return {
            "nodes": [
                {
                    "version": n.version,
                    "task": n.task,
                    "parent": n.parent,
                    "status": n.status,
                    "champion": n.version in champions,
                    "drift": n.drift,
                    "trigger": n.trigger,
                    "reason": n.reason,
                    "metrics": {k: finite(v) for k, v in n.metrics.items()},
                }
                for n in self._nodes.values()
            ],
            "champions": dict(self._champions),
        }

    def markers(self, event_time_at: Callable[[float], float | None]) -> list[JSON]:
        return [
            {
                "t": event_time_at(wall_ts),
                "version": a.model_version,
                "task": a.task,
                "action": a.action,
                "reason": a.reason,
                "trigger": a.trigger.text if a.trigger else "",
                "drift": drift_triggered(a),
            }
            for wall_ts, a in self._markers
        ]


class Freshness:
    """Event-time age of each feature at request time, and how often it was defaulted.

    Request inputs have no age and are left out; a defaulted feature has no age
    either, but counts towards its feature's defaulted share.
    """

    def __init__(self) -> None:
        self._ages: dict[str, deque[float]] = {}
        self._defaulted: dict[str, deque[bool]] = {}

    def observe(self, enriched: PredictEnriched) -> None:
        vector = enriched.features
        for name, age, defaulted in zip(
            vector.names, vector.freshness_s, vector.defaulted, strict=True
        ):
            has_age = age is not None and math.isfinite(age)
            if not (has_age or defaulted):
                continue  # a request input
            if name not in self._defaulted:
                if len(self._defaulted) >= MAX_FEATURES:
                    continue
                self._defaulted[name] = deque(maxlen=FRESHNESS_SAMPLES)
                self._ages[name] = deque(maxlen=FRESHNESS_SAMPLES)
            self._defaulted[name].append(defaulted)
            if has_age:
                self._ages[name].append(age)

    def snapshot(self) -> list[JSON]:
        rows = []
        for name, defaulted in self._defaulted.items():
            ages = sorted(self._ages[name])
            rank = max(1, math.ceil(0.95 * len(ages)))
            rows.append(
                {
                    "feature": name,
                    "mean_s": sum(ages) / len(ages) if ages else None,
                    "p95_s": ages[rank - 1] if ages else None,
                    "samples": len(ages),
                    "defaulted_share": sum(defaulted) / len(defaulted),
                }
            )
        return rows


@dataclass
class DeadLetterGroup:
    count: int = 0
    last_error: str = ""
    last_error_class: str = ""
    last_ts: float = 0.0


class DeadLetters:
    """What went to rtml.dlq, by service and reason, with the latest error of each."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], DeadLetterGroup] = {}

    def observe(self, record: DlqRecord) -> None:
        group = self._groups.setdefault((record.service, record.reason), DeadLetterGroup())
        group.count += 1
        if record.ts >= group.last_ts:
            group.last_error, group.last_error_class, group.last_ts = (
                record.error,
                record.error_class,
                record.ts,
            )

    def snapshot(self) -> list[JSON]:
        ordered = sorted(self._groups.items(), key=lambda item: (-item[1].count, item[0]))
        return [
            {
                "service": service,
                "reason": reason,
                "count": g.count,
                "last_error": g.last_error,
                "last_error_class": g.last_error_class,
                "last_ts": g.last_ts,
            }
            for (service, reason), g in ordered
        ]


# --- the whole dashboard ----------------------------------------------------------


class Dashboard:
    """Every panel's aggregate, fed one message at a time.

    Live error and traffic share follow one task (``RTML_DASHBOARD_TASK``).
    """

    def __init__(self, task: Task) -> None:
        self.throughput = Throughput()
        self.latency = Latency()
        self.model_error = ModelError(task)
        self.traffic = TrafficShare(task)
        self.posteriors = Posteriors()
        self.clock = EventClock()
        self.lineage = Lineage()
        self.freshness = Freshness()
        self.dead_letters = DeadLetters()
        self._ids = RecentIds(IDS_REMEMBERED)
        self.totals: Counter[str] = Counter()
        self.events_by_kind: Counter[str] = Counter()

    def observe(self, message: Message, wall_ts: float) -> bool:
        """Fold ``message``, written at ``wall_ts``; False for a redelivered one (ignored)."""
        if not self._ids.first_time((message.SCHEMA, message.id)):
            self.totals["repeats"] += 1
            return False
        match message:
            case PredictRequest():
                self.totals["predict_requests"] += 1
                self.latency.observe_request(message, wall_ts)
            case Prediction():
                self.totals["predictions"] += 1
                self.throughput.count_prediction(wall_ts)
                self.latency.observe_prediction(message, wall_ts)
                self.traffic.observe(message)
                self.clock.observe(wall_ts, message.ts)
            case TrainingExample():
                self.totals["training_examples"] += 1
                self.model_error.observe(message)
                self.clock.observe(wall_ts, message.label_ts)
            case PredictEnriched():
                self.totals["enriched_requests"] += 1
                self.freshness.observe(message)
            case ModelAnnouncement():
                self.totals["announcements"] += 1
                self.lineage.observe(message, wall_ts)
            case RouterState():
                self.totals["router_states"] += 1
                self.posteriors.observe(message)
            case DlqRecord():
                self.totals["dlq"] += 1
                self.dead_letters.observe(message)
            case _ if isinstance(message, tasks().events):
                self.totals["events"] += 1
                self.events_by_kind[message.SCHEMA] += 1
                self.throughput.count_event(wall_ts)
                self.clock.observe(wall_ts, message.ts)
            case _:
                self.totals["other"] += 1
        return True

    def count_undecodable(self) -> None:
        self.totals["undecodable"] += 1

    def snapshot(self, now: float) -> JSON:
        """Everything the page shows, as of wall time ``now``."""
        return {
            "generated_at": now,
            "totals": dict(self.totals),
            "events_by_kind": dict(self.events_by_kind),
            "rates": self.throughput.snapshot(now),
            "latency": self.latency.snapshot(now),
            "mae": self.model_error.snapshot(),
            "traffic": self.traffic.snapshot(),
            "markers": self.lineage.markers(self.clock.mapper()),
            "router": self.posteriors.snapshot(),
            "lineage": self.lineage.snapshot(),
            "freshness": self.freshness.snapshot(),
            "dlq": self.dead_letters.snapshot(),
        }
