"""The eta task's feature definitions beyond the built-in kinds: what its events
contribute, the idle couriers of a zone (custom state), and the zone's travel
speed over the whole log (a batch job)."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import defaultdict
from collections.abc import Mapping, Sequence

from rtml.shared.contracts import Message
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.features.series import Spans, TimeSeries, earliest_by, span_open
from rtml.shared.tasks.spec import BatchJob, BatchValues, CustomFeatures, Reading
from rtml.tasks.eta.events import (
    CourierAssigned,
    CourierOffline,
    CourierOnline,
    OrderDelivered,
    OrderPickedUp,
    OrderPlaced,
    OrderReady,
)

MINUTE = 60.0
# An order not picked up within this long after it was placed, and a courier
# assignment not delivered within this long, are abandoned: they stop counting
# as active / busy. It bounds the state a lost event could otherwise pin forever.
OPEN_SPAN_MAX_S = 3 * 3600.0


def prep_minutes(ready: Message) -> float:
    assert isinstance(ready, OrderReady)
    return (ready.ts - ready.placed_ts) / MINUTE


def delivery_minutes(delivered: Message) -> float:
    assert isinstance(delivered, OrderDelivered)
    return (delivered.ts - delivered.placed_ts) / MINUTE


# --- idle couriers of a zone -----------------------------------------------------------

# the events that change which couriers are idle
COURIER_EVENTS = (CourierOnline, CourierOffline, CourierAssigned, OrderDelivered)
IDLE = "zone_couriers_idle"


class CourierState:
    __slots__ = ("presence", "busy", "indexed")

    def __init__(self) -> None:
        # (ts, 0 online | 1 offline), sorted: at equal times offline sorts last and wins
        self.presence: list[tuple[float, int]] = []
        self.busy = Spans(OPEN_SPAN_MAX_S)
        # the idle intervals this courier has in its zone's index
        self.indexed: list[tuple[float, float]] = []

    def idle_intervals(self) -> list[tuple[float, float]]:
        """When the courier is idle: online (the last change at or before t is
        online) and in no busy span, as disjoint half-open intervals."""
        idle: list[tuple[float, float]] = []
        busy = _union(self.busy.intervals())
        for online_from, online_to in _online_intervals(self.presence):
            start = online_from
            for busy_from, busy_to in busy:
                if busy_to <= start or busy_from >= online_to:
                    continue
                if busy_from > start:
                    idle.append((start, busy_from))
                start = max(start, busy_to)
            if start < online_to:
                idle.append((start, online_to))
        return idle

    def prune(self, horizon: float) -> None:
        # keep the last change before the horizon: it is the state at the horizon
        cut = bisect_left(self.presence, (horizon, 0))
        if cut > 1:
            del self.presence[: cut - 1]
        self.busy.prune(horizon)

    def forgettable(self, horizon: float) -> bool:
        """Offline since before the horizon, with nothing open: as if never seen."""
        return (
            len(self.presence) == 1
            and self.presence[0][0] < horizon
            and self.presence[0][1] == 1
            and not self.busy
        )


def _online_intervals(presence: list[tuple[float, int]]) -> list[tuple[float, float]]:
    intervals: list[tuple[float, float]] = []
    online_from: float | None = None
    for ts, offline in presence:
        if not offline and online_from is None:
            online_from = ts
        elif offline and online_from is not None:
            if ts > online_from:
                intervals.append((online_from, ts))
            online_from = None
    if online_from is not None:
        intervals.append((online_from, math.inf))
    return intervals


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class IdleCouriers:
    """The idle intervals of every courier of a zone, kept in two sorted lists
    (starts, ends), so "how many are idle at t" is two bisections however many
    couriers the zone has; a courier's intervals are recomputed when one of its
    events arrives."""

    __slots__ = ("couriers", "events", "_idle_starts", "_idle_ends")

    def __init__(self) -> None:
        self.couriers: dict[str, CourierState] = {}
        # every event that can change who is idle: the freshness
        self.events = TimeSeries()
        self._idle_starts: list[float] = []
        self._idle_ends: list[float] = []

    def record(self, event: Message) -> None:
        courier = self._courier(event.courier_id)  # type: ignore[attr-defined]
        if isinstance(event, CourierOnline | CourierOffline):
            insort(courier.presence, (event.ts, 0 if isinstance(event, CourierOnline) else 1))
        elif isinstance(event, CourierAssigned):
            courier.busy.start(event.order_id, event.ts)
        elif isinstance(event, OrderDelivered):
            courier.busy.stop(event.order_id, event.ts)
        self.events.add(event.ts)
        self._reindex(courier)

    def values_at(self, t: float, batch: Mapping[str, BatchFeatureRecord]) -> dict[str, Reading]:
        # each courier has at most one interval containing t, and every end >= its start
        idle = bisect_right(self._idle_starts, t) - bisect_right(self._idle_ends, t)
        newest = self.events.newest_at(t)
        return {IDLE: (float(idle), None if newest is None else t - newest)}

    def prune(self, horizon: float) -> None:
        self.events.prune(horizon)
        for courier_id, courier in list(self.couriers.items()):
            courier.prune(horizon)
            # what pruning removes only mattered before the horizon, so the indexed
            # intervals stay right from it on; drop the ones that ended before it
            ended = 0
            while ended < len(courier.indexed) and courier.indexed[ended][1] < horizon:
                ended += 1
            self._unindex(courier.indexed[:ended])
            del courier.indexed[:ended]
            if courier.forgettable(horizon):
                self._unindex(courier.indexed)
                del self.couriers[courier_id]

    def _courier(self, courier_id: str) -> CourierState:
        courier = self.couriers.get(courier_id)
        if courier is None:
            courier = self.couriers[courier_id] = CourierState()
        return courier

    def _reindex(self, courier: CourierState) -> None:
        old, new = courier.indexed, courier.idle_intervals()
        # an event usually changes the last interval or two: update only what differs
        same = 0
        for a, b in zip(old, new, strict=False):
            if a != b:
                break
            same += 1
        self._unindex(old[same:])
        for start, end in new[same:]:
            insort(self._idle_starts, start)
            insort(self._idle_ends, end)
        courier.indexed = new

    def _unindex(self, intervals: list[tuple[float, float]]) -> None:
        for start, end in intervals:
            del self._idle_starts[bisect_left(self._idle_starts, start)]
            del self._idle_ends[bisect_left(self._idle_ends, end)]


def idle_couriers_reference(
    events: Sequence[Message], t: float, batch: Mapping[str, BatchFeatureRecord]
) -> dict[str, Reading]:
    """The definition read directly: a courier is idle at ``t`` when its last
    presence change at or before ``t`` is online and no assignment of it is open."""
    by_courier: dict[str, list[Message]] = defaultdict(list)
    for e in events:
        by_courier[e.courier_id].append(e)  # type: ignore[attr-defined]
    idle = sum(1 for of_courier in by_courier.values() if _courier_idle(of_courier, t))
    times = [e.ts for e in events if e.ts <= t]
    return {IDLE: (float(idle), t - max(times) if times else None)}


def _courier_idle(events: list[Message], t: float) -> bool:
    presence = [
        (e.ts, 0 if isinstance(e, CourierOnline) else 1)
        for e in events
        if isinstance(e, CourierOnline | CourierOffline) and e.ts <= t
    ]
    if not presence or max(presence)[1] == 1:
        return False
    starts = earliest_by((e for e in events if isinstance(e, CourierAssigned)), "order_id")
    stops = earliest_by((e for e in events if isinstance(e, OrderDelivered)), "order_id")
    return not any(
        span_open(start, stops.get(order), t, OPEN_SPAN_MAX_S) for order, start in starts.items()
    )


IDLE_COURIERS = CustomFeatures(
    names=(IDLE,),
    events=COURIER_EVENTS,
    state=IdleCouriers,
    reference=idle_couriers_reference,
)


# --- the zone's travel speed over the whole log --------------------------------------


def travel_min_per_km(log: Sequence[Message]) -> BatchValues:
    """Per zone, over its delivered orders whose pickup and placement are in the log:
    total ride minutes (``delivered.ts - picked_up.ts``) / total distance
    (``order_placed.distance_km``)."""
    placed: dict[str, OrderPlaced] = {}
    picked_ts: dict[str, float] = {}
    delivered: dict[str, OrderDelivered] = {}
    for message in log:
        if isinstance(message, OrderPlaced):
            placed.setdefault(message.order_id, message)
        elif isinstance(message, OrderPickedUp):
            picked_ts[message.order_id] = min(
                picked_ts.get(message.order_id, message.ts), message.ts
            )
        elif isinstance(message, OrderDelivered):
            delivered.setdefault(message.order_id, message)
    ride_min: dict[str, float] = defaultdict(float)
    ride_km: dict[str, float] = defaultdict(float)
    rides: dict[str, int] = defaultdict(int)
    ride_ts: dict[str, float] = {}
    for order_id, delivery in delivered.items():
        order = placed.get(order_id)
        if order is None or order_id not in picked_ts or order.distance_km <= 0:
            continue
        zone = delivery.zone_id
        ride_min[zone] += (delivery.ts - picked_ts[order_id]) / MINUTE
        ride_km[zone] += order.distance_km
        rides[zone] += 1
        ride_ts[zone] = max(ride_ts.get(zone, 0.0), delivery.ts)
    return {zone: (ride_min[zone] / ride_km[zone], ride_ts[zone], rides[zone]) for zone in rides}


TRAVEL = BatchJob(travel_min_per_km)
