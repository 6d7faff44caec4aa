"""Per-entity event-time state behind the streaming features. Pure: no I/O.

Each restaurant, zone and session keeps the history its features need, bounded
by event time, in structures whose content does not depend on the order events
arrived in: sorted time series, and spans (an order open from placement to
pickup, a courier busy from assignment to delivery) built from whichever end
arrives first. A feature read at ``t`` therefore gives the same value whether
the events behind it came in order, out of order, or twice.

Admission, per entity: the watermark is the newest accepted event time; an
event older than ``watermark - allowed_lateness`` is LATE (never counted), an
event id seen before is a DUPLICATE (counted once), anything else is ACCEPTED.
Because the lateness check comes first, ids only need remembering while their
events could still be admitted, so the seen-id set is bounded as well.

What is kept: every entry an answer for ``t >= watermark - allowed_lateness``
can depend on. Reads for older ``t`` are outside what the state promises (a
request that old is itself later than the allowed lateness).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping

from rtml.shared.contracts import (
    CourierAssigned,
    CourierOffline,
    CourierOnline,
    ItemClicked,
    ItemViewed,
    Message,
    OrderDelivered,
    OrderPickedUp,
    OrderPlaced,
    OrderReady,
)
from rtml.shared.features.definitions import (
    DELIVERY_WINDOW_S,
    ITEM_EMBEDDING_DIM,
    LAST_ITEMS,
    MAX_WINDOW_S,
    NO_ITEM,
    OPEN_SPAN_MAX_S,
    ORDERS_LONG_WINDOW_S,
    ORDERS_SHORT_WINDOW_S,
    PREP_WINDOW_S,
    RESTAURANT_FEATURES,
    SESSION_FEATURES,
    SESSION_WINDOW_S,
    ZONE_FEATURES,
    EntityKind,
    FeatureValue,
    Outcome,
    default,
    entity_of,
    item_embedding,
    mean_embedding,
)
from rtml.shared.features.records import BatchFeatureRecord

# pruning walks each zone's couriers, so do it once the horizon has moved this far
PRUNE_STEP_S = 300.0


class TimeSeries:
    """Event times (with a value each), sorted, for windowed counts and means."""

    __slots__ = ("ts", "values", "pruned_newest")

    def __init__(self) -> None:
        self.ts: list[float] = []
        self.values: list[float] = []
        # the newest time pruned away: still the answer to "newest event <= t"
        # when everything after it is newer than t
        self.pruned_newest: float | None = None

    def add(self, ts: float, value: float = 0.0) -> None:
        index = bisect_right(self.ts, ts)
        self.ts.insert(index, ts)
        self.values.insert(index, value)

    def window(self, t: float, width: float) -> list[float]:
        """The values with ``t - width < ts <= t``."""
        return self.values[bisect_right(self.ts, t - width) : bisect_right(self.ts, t)]

    def newest_at(self, t: float) -> float | None:
        index = bisect_right(self.ts, t)
        if index:
            return self.ts[index - 1]
        if self.pruned_newest is not None and self.pruned_newest <= t:
            return self.pruned_newest
        return None

    def prune(self, horizon: float) -> None:
        cut = bisect_left(self.ts, horizon)
        if cut:
            self.pruned_newest = self.ts[cut - 1]
            del self.ts[:cut], self.values[:cut]


class Spans:
    """Intervals opened and closed by two kinds of event, either arriving first.

    A span is open on ``start <= t < end``, where ``end`` is the earliest stop
    when it is at or after the start, capped at ``OPEN_SPAN_MAX_S`` after the
    start (a stop before the start is inconsistent and ignored). Sorted lists
    of the starts and ends answer "how many are open at t" by two bisections,
    which is right because every end is at or after its start.
    """

    __slots__ = ("_bounds", "_starts", "_ends", "_expiries")

    def __init__(self) -> None:
        # key -> [earliest start, earliest stop]
        self._bounds: dict[str, list[float | None]] = {}
        self._starts: list[float] = []
        self._ends: list[float] = []
        # (time after which the key cannot matter, key); outdated entries are skipped
        self._expiries: list[tuple[float, str]] = []

    def start(self, key: str, ts: float) -> None:
        self._update(key, 0, ts)

    def stop(self, key: str, ts: float) -> None:
        self._update(key, 1, ts)

    def open_at(self, t: float) -> int:
        return bisect_right(self._starts, t) - bisect_right(self._ends, t)

    def prune(self, horizon: float) -> None:
        """Forget spans that ended, and stops that cannot close a span, before ``horizon``."""
        expiries = self._expiries
        while expiries and expiries[0][0] < horizon:
            expiry, key = heapq.heappop(expiries)
            bounds = self._bounds.get(key)
            if bounds is None or _expiry(*bounds) != expiry:
                continue  # gone already, or it changed and has a newer entry
            if bounds[0] is not None:
                self._unindex(bounds[0], bounds[1])
            del self._bounds[key]

    def __len__(self) -> int:
        return len(self._bounds)

    def intervals(self) -> list[tuple[float, float]]:
        """Every span that has a start, as ``(start, end)``."""
        return [
            (start, _end(start, stop)) for start, stop in self._bounds.values() if start is not None
        ]

    def _update(self, key: str, which: int, ts: float) -> None:
        bounds = self._bounds.setdefault(key, [None, None])
        old = bounds[which]
        if old is not None and old <= ts:
            return
        if bounds[0] is not None:
            self._unindex(bounds[0], bounds[1])
        bounds[which] = ts
        if bounds[0] is not None:
            insort(self._starts, bounds[0])
            insort(self._ends, _end(bounds[0], bounds[1]))
        heapq.heappush(self._expiries, (_expiry(*bounds), key))

    def _unindex(self, start: float, stop: float | None) -> None:
        del self._starts[bisect_left(self._starts, start)]
        del self._ends[bisect_left(self._ends, _end(start, stop))]


def _expiry(start: float | None, stop: float | None) -> float:
    """When a span has ended, or a lone stop can no longer close a span that starts later."""
    return _end(start, stop) if start is not None else stop  # type: ignore[return-value]


def _end(start: float, stop: float | None) -> float:
    cap = start + OPEN_SPAN_MAX_S
    if stop is None or stop < start:
        return cap
    return min(stop, cap)


class EntityState:
    """Admission (watermark, lateness, seen ids) shared by every entity kind."""

    __slots__ = ("watermark", "first_seen", "_seen", "_seen_by_ts", "_pruned_at")

    def __init__(self) -> None:
        self.watermark: float | None = None
        self.first_seen: float | None = None
        self._seen: set[str] = set()
        self._seen_by_ts: list[tuple[float, str]] = []
        self._pruned_at = -math.inf

    def apply(self, event: Message, allowed_lateness_s: float) -> Outcome:
        if self.watermark is not None and event.ts < self.watermark - allowed_lateness_s:
            return Outcome.LATE
        if event.id in self._seen:
            return Outcome.DUPLICATE
        self._seen.add(event.id)
        heapq.heappush(self._seen_by_ts, (event.ts, event.id))
        if self.watermark is None or event.ts > self.watermark:
            self.watermark = event.ts
        if self.first_seen is None or event.ts < self.first_seen:
            self.first_seen = event.ts
        self._record(event)
        self._maybe_prune(allowed_lateness_s)
        return Outcome.ACCEPTED

    def known_at(self, t: float) -> bool:
        return self.first_seen is not None and self.first_seen <= t

    def _record(self, event: Message) -> None:
        raise NotImplementedError

    def _prune(self, horizon: float) -> None:
        raise NotImplementedError

    def features_at(
        self, t: float, batch: Mapping[str, BatchFeatureRecord]
    ) -> dict[str, FeatureValue]:
        """The entity's streaming features as of ``t`` (batch: for item embeddings)."""
        raise NotImplementedError

    def _maybe_prune(self, allowed_lateness_s: float) -> None:
        assert self.watermark is not None
        admissible_from = self.watermark - allowed_lateness_s
        horizon = admissible_from - MAX_WINDOW_S
        if horizon < self._pruned_at + PRUNE_STEP_S:
            return
        self._pruned_at = horizon
        seen_by_ts = self._seen_by_ts
        while seen_by_ts and seen_by_ts[0][0] < admissible_from:
            self._seen.discard(heapq.heappop(seen_by_ts)[1])
        self._prune(horizon)


class RestaurantState(EntityState):
    __slots__ = ("placed", "order_events", "prep_min", "open_orders")

    def __init__(self) -> None:
        super().__init__()
        self.placed = TimeSeries()
        # placements and pickups: the events the active-order count moves with
        self.order_events = TimeSeries()
        self.prep_min = TimeSeries()
        self.open_orders = Spans()

    def _record(self, event: Message) -> None:
        if isinstance(event, OrderPlaced):
            self.placed.add(event.ts)
            self.order_events.add(event.ts)
            self.open_orders.start(event.order_id, event.ts)
        elif isinstance(event, OrderPickedUp):
            self.order_events.add(event.ts)
            self.open_orders.stop(event.order_id, event.ts)
        elif isinstance(event, OrderReady):
            self.prep_min.add(event.ts, (event.ts - event.placed_ts) / 60.0)

    def _prune(self, horizon: float) -> None:
        for series in (self.placed, self.order_events, self.prep_min):
            series.prune(horizon)
        self.open_orders.prune(horizon)

    def features_at(
        self, t: float, batch: Mapping[str, BatchFeatureRecord]
    ) -> dict[str, FeatureValue]:
        if not self.known_at(t):
            return {name: default(name) for name in RESTAURANT_FEATURES}
        placed_age = _age(t, self.placed.newest_at(t))
        prep = self.prep_min.window(t, PREP_WINDOW_S)
        prep_age = _age(t, self.prep_min.newest_at(t))
        return {
            "restaurant_active_orders": FeatureValue(
                float(self.open_orders.open_at(t)), _age(t, self.order_events.newest_at(t)), False
            ),
            "restaurant_orders_10m": FeatureValue(
                float(len(self.placed.window(t, ORDERS_SHORT_WINDOW_S))), placed_age, False
            ),
            "restaurant_orders_30m": FeatureValue(
                float(len(self.placed.window(t, ORDERS_LONG_WINDOW_S))), placed_age, False
            ),
            "restaurant_mean_prep_min_60m": (
                FeatureValue(math.fsum(prep) / len(prep), prep_age, False)
                if prep
                else default("restaurant_mean_prep_min_60m")._replace(freshness_s=prep_age)
            ),
        }


class CourierState:
    __slots__ = ("presence", "busy", "indexed")

    def __init__(self) -> None:
        # (ts, 0 online | 1 offline), sorted: at equal times offline sorts last and wins
        self.presence: list[tuple[float, int]] = []
        self.busy = Spans()
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


class ZoneState(EntityState):
    """Deliveries, and the idle intervals of every courier of the zone.

    The idle intervals of all couriers are kept in two sorted lists (starts,
    ends), so "how many are idle at t" is two bisections however many couriers
    the zone has; a courier's intervals are recomputed when one of its events
    arrives.
    """

    __slots__ = ("couriers", "courier_events", "delivery_min", "_idle_starts", "_idle_ends")

    def __init__(self) -> None:
        super().__init__()
        self.couriers: dict[str, CourierState] = {}
        # every event that can change who is idle
        self.courier_events = TimeSeries()
        self.delivery_min = TimeSeries()
        self._idle_starts: list[float] = []
        self._idle_ends: list[float] = []

    def _record(self, event: Message) -> None:
        if isinstance(event, CourierOnline | CourierOffline):
            courier = self._courier(event.courier_id)
            insort(courier.presence, (event.ts, 0 if isinstance(event, CourierOnline) else 1))
        elif isinstance(event, CourierAssigned):
            courier = self._courier(event.courier_id)
            courier.busy.start(event.order_id, event.ts)
        elif isinstance(event, OrderDelivered):
            courier = self._courier(event.courier_id)
            courier.busy.stop(event.order_id, event.ts)
            self.delivery_min.add(event.ts, (event.ts - event.placed_ts) / 60.0)
        else:
            return
        self.courier_events.add(event.ts)
        self._reindex(courier)

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

    def _prune(self, horizon: float) -> None:
        self.courier_events.prune(horizon)
        self.delivery_min.prune(horizon)
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

    def features_at(
        self, t: float, batch: Mapping[str, BatchFeatureRecord]
    ) -> dict[str, FeatureValue]:
        if not self.known_at(t):
            return {name: default(name) for name in ZONE_FEATURES}
        deliveries = self.delivery_min.window(t, DELIVERY_WINDOW_S)
        delivery_age = _age(t, self.delivery_min.newest_at(t))
        # each courier has at most one interval containing t, and every end >= its start
        idle = bisect_right(self._idle_starts, t) - bisect_right(self._idle_ends, t)
        return {
            "zone_couriers_idle": FeatureValue(
                float(idle), _age(t, self.courier_events.newest_at(t)), False
            ),
            "zone_mean_delivery_min_30m": (
                FeatureValue(math.fsum(deliveries) / len(deliveries), delivery_age, False)
                if deliveries
                else default("zone_mean_delivery_min_30m")._replace(freshness_s=delivery_age)
            ),
        }


def _age(t: float, newest: float | None) -> float | None:
    return None if newest is None else t - newest


class ItemSeries:
    """Items viewed or clicked, sorted by (ts, event id): the latest N and windows."""

    __slots__ = ("ts", "_keys", "items")

    def __init__(self) -> None:
        self.ts: list[float] = []
        self._keys: list[tuple[float, str]] = []
        self.items: list[int] = []

    def add(self, ts: float, event_id: str, item_id: int) -> None:
        index = bisect_right(self._keys, (ts, event_id))
        self._keys.insert(index, (ts, event_id))
        self.ts.insert(index, ts)
        self.items.insert(index, item_id)

    def latest(self, t: float, n: int) -> list[int]:
        """The last ``n`` items at or before ``t``, most recent first."""
        end = bisect_right(self.ts, t)
        return self.items[max(0, end - n) : end][::-1]

    def window(self, t: float, width: float) -> list[int]:
        return self.items[bisect_right(self.ts, t - width) : bisect_right(self.ts, t)]

    def newest_at(self, t: float) -> float | None:
        end = bisect_right(self.ts, t)
        return self.ts[end - 1] if end else None

    def prune(self, horizon: float) -> None:
        # the latest N before the horizon are still the latest for a t just after it
        cut = max(0, bisect_left(self.ts, horizon) - LAST_ITEMS)
        del self.ts[:cut], self._keys[:cut], self.items[:cut]


class SessionState(EntityState):
    __slots__ = ("views", "clicks")

    def __init__(self) -> None:
        super().__init__()
        self.views = ItemSeries()
        self.clicks = ItemSeries()

    def _record(self, event: Message) -> None:
        if isinstance(event, ItemViewed):
            self.views.add(event.ts, event.id, event.item_id)
        elif isinstance(event, ItemClicked):
            self.clicks.add(event.ts, event.id, event.item_id)

    def _prune(self, horizon: float) -> None:
        self.views.prune(horizon)
        self.clicks.prune(horizon)

    def features_at(
        self, t: float, batch: Mapping[str, BatchFeatureRecord]
    ) -> dict[str, FeatureValue]:
        if not self.known_at(t):
            return {name: default(name) for name in SESSION_FEATURES}
        features: dict[str, FeatureValue] = {}
        for series, last, count in (
            (self.views, "last_viewed", "session_views_30m"),
            (self.clicks, "last_clicked", "session_clicks_30m"),
        ):
            age = _age(t, series.newest_at(t))
            latest = series.latest(t, LAST_ITEMS)
            for slot in range(LAST_ITEMS):
                item = float(latest[slot]) if slot < len(latest) else NO_ITEM
                features[f"{last}_{slot + 1}"] = FeatureValue(item, age, False)
            features[count] = FeatureValue(
                float(len(series.window(t, SESSION_WINDOW_S))), age, False
            )
        newest = max(
            (ts for ts in (self.views.newest_at(t), self.clicks.newest_at(t)) if ts is not None),
            default=None,
        )
        items = self.views.window(t, SESSION_WINDOW_S) + self.clicks.window(t, SESSION_WINDOW_S)
        embeddings = [e for item in items if (e := item_embedding(batch, item)) is not None]
        mean = mean_embedding(embeddings) if embeddings else None
        for dim in range(ITEM_EMBEDDING_DIM):
            name = f"session_emb_{dim}"
            features[name] = (
                FeatureValue(mean[dim], _age(t, newest), False)
                if mean is not None
                else default(name)._replace(freshness_s=_age(t, newest))
            )
        return features


class EntityStates:
    """The states of every entity whose events one partition carries."""

    def __init__(self, allowed_lateness_s: float) -> None:
        self.allowed_lateness_s = allowed_lateness_s
        self.restaurants: dict[str, RestaurantState] = {}
        self.zones: dict[str, ZoneState] = {}
        self.sessions: dict[str, SessionState] = {}
        self._of_kind: dict[str, tuple[dict, type[EntityState]]] = {
            "restaurant": (self.restaurants, RestaurantState),
            "zone": (self.zones, ZoneState),
            "session": (self.sessions, SessionState),
        }

    def apply(self, event: Message) -> Outcome:
        kind, entity_id = entity_of(event)
        states, new_state = self._of_kind[kind]
        state = states.get(entity_id)
        if state is None:
            state = states[entity_id] = new_state()
        return state.apply(event, self.allowed_lateness_s)

    def get(self, kind: EntityKind, entity_id: str) -> EntityState | None:
        return self._of_kind[kind][0].get(entity_id)
