"""Per-entity event-time state behind the streaming features. Pure: no I/O.

Each entity keeps the history its features need (``catalog.EntityFeatures``: every
loaded task's features of it), bounded by event time, in structures whose content
does not depend on the order events arrived in (``shared/features/series.py``):
sorted time series for counts and means, ranked series for latest values, spans
built from whichever end arrives first, and the tasks' own ``CustomFeatures``. A
feature read at ``t`` therefore gives the same value whether the events behind it
came in order, out of order, or twice.

Features that read the same events share one structure: a count over 10 and one
over 30 minutes of the same placements keep one series.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rtml.shared.contracts import Message
from rtml.shared.features.catalog import EntityFeatures, entity_of
from rtml.shared.features.definitions import FeatureValue, Outcome, default, from_reading
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.features.series import RankedSeries, Spans, TimeSeries
from rtml.shared.tasks.registry import tasks
from rtml.shared.tasks.spec import CustomFeatures, CustomState, Feature, Reading

# pruning walks every structure of the entity, so do it once the horizon has moved this far
PRUNE_STEP_S = 300.0


class SpanTimes:
    """A span feature's structure: the spans, and the times of the events that open
    and close them (what the feature's freshness is measured from)."""

    __slots__ = ("spans", "times")

    def __init__(self, max_open_s: float) -> None:
        self.spans = Spans(max_open_s)
        self.times = TimeSeries()

    def prune(self, horizon: float) -> None:
        self.spans.prune(horizon)
        self.times.prune(horizon)


Structure = TimeSeries | RankedSeries | SpanTimes | CustomState
# (event, structure) -> None: what an event does to one structure
Update = Callable[[Message, Structure], None]
# (t, structure, batch) -> Reading
Read = Callable[[float, Structure, Mapping[str, BatchFeatureRecord]], Reading]


def _age(t: float, newest: float | None) -> float | None:
    return None if newest is None else t - newest


@dataclass(frozen=True)
class _Program:
    """How one entity's features are kept and read: built once per entity kind."""

    # one factory per structure; an entity's state holds one of each
    structures: tuple[Callable[[], Structure], ...]
    # event class -> (structure index, update) for each structure it moves
    updates: dict[type[Message], tuple[tuple[int, Update], ...]]
    # (feature, structure index, read), in the catalog's order
    reads: tuple[tuple[Feature, int, Read], ...]
    features: tuple[Feature, ...]
    lookback_s: float


def _series_update(value: Callable[[Message], float] | None) -> Update:
    if value is None:
        return lambda event, series: series.add(event.ts)  # type: ignore[union-attr]
    return lambda event, series: series.add(event.ts, value(event))  # type: ignore[union-attr]


def _read(feature: Feature) -> Read:
    window, rank = feature.window_s, feature.rank
    if feature.kind == "count":

        def count(t: float, series: TimeSeries, batch: object) -> Reading:
            return float(len(series.window(t, window))), _age(t, series.newest_at(t))

        return count
    if feature.kind == "mean":

        def mean(t: float, series: TimeSeries, batch: object) -> Reading:
            values = series.window(t, window)
            value = math.fsum(values) / len(values) if values else None
            return value, _age(t, series.newest_at(t))

        return mean
    if feature.kind == "latest":
        return lambda t, series, batch: (series.ranked(t, rank), _age(t, series.newest_at(t)))
    if feature.kind == "span":
        return lambda t, span, batch: (
            float(span.spans.open_at(t)),
            _age(t, span.times.newest_at(t)),
        )
    name = feature.name
    return lambda t, state, batch: state.values_at(t, batch)[name]


def _program(entity: EntityFeatures, lookback_s: float) -> _Program:
    structures: list[Callable[[], Structure]] = []
    updates: dict[type[Message], list[tuple[int, Update]]] = {}
    index_of: dict[object, int] = {}

    def structure(identity: object, factory: Callable[[], Structure]) -> tuple[int, bool]:
        if identity in index_of:
            return index_of[identity], False
        index_of[identity] = len(structures)
        structures.append(factory)
        return index_of[identity], True

    def on(events: tuple[type[Message], ...], index: int, update: Update) -> None:
        for event in events:
            updates.setdefault(event, []).append((index, update))

    ranks: dict[object, int] = {}
    for feature in entity.streaming:
        if feature.kind == "latest":
            identity = ("ranked", feature.events, feature.value)
            ranks[identity] = max(ranks.get(identity, 0), feature.rank)
    reads: list[tuple[Feature, int, Read]] = []
    for feature in entity.streaming:
        kind, events, value = feature.kind, feature.events, feature.value
        if kind in ("count", "mean"):
            index, new = structure(
                ("series", events, value if kind == "mean" else None), TimeSeries
            )
            if new:
                on(events, index, _series_update(value if kind == "mean" else None))
        elif kind == "latest":
            identity = ("ranked", events, value)
            keep = ranks[identity]
            index, new = structure(identity, lambda keep=keep: RankedSeries(keep))
            if new:
                on(events, index, lambda e, s, value=value: s.add(e.ts, e.id, value(e)))  # type: ignore[misc]
        elif kind == "span":
            identity = ("span", events, feature.closes, feature.span_key, feature.max_open_s)
            max_open_s, span_key = feature.max_open_s, feature.span_key
            index, new = structure(identity, lambda m=max_open_s: SpanTimes(m))
            if new:

                def opened(event: Message, span: SpanTimes, key: str = span_key) -> None:
                    span.spans.start(str(getattr(event, key)), event.ts)
                    span.times.add(event.ts)

                def closed(event: Message, span: SpanTimes, key: str = span_key) -> None:
                    span.spans.stop(str(getattr(event, key)), event.ts)
                    span.times.add(event.ts)

                on(events, index, opened)
                on(feature.closes, index, closed)
        else:
            custom = feature.custom
            assert isinstance(custom, CustomFeatures)
            index, new = structure(custom, custom.state)
            if new:
                on(custom.events, index, lambda e, state: state.record(e))  # type: ignore[union-attr]
        reads.append((feature, index, _read(feature)))
    return _Program(
        structures=tuple(structures),
        updates={event: tuple(entries) for event, entries in updates.items()},
        reads=tuple(reads),
        features=entity.streaming,
        lookback_s=lookback_s,
    )


class EntityState:
    """One entity's admission (watermark, lateness, seen ids) and feature structures."""

    __slots__ = (
        "program",
        "structures",
        "watermark",
        "first_seen",
        "_seen",
        "_seen_by_ts",
        "_pruned_at",
    )

    def __init__(self, program: _Program) -> None:
        self.program = program
        self.structures = [factory() for factory in program.structures]
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
        structures = self.structures
        for index, update in self.program.updates.get(type(event), ()):
            update(event, structures[index])
        self._maybe_prune(allowed_lateness_s)
        return Outcome.ACCEPTED

    def known_at(self, t: float) -> bool:
        return self.first_seen is not None and self.first_seen <= t

    def features_at(
        self, t: float, batch: Mapping[str, BatchFeatureRecord]
    ) -> dict[str, FeatureValue]:
        """The entity's streaming features as of ``t`` (batch: for custom features)."""
        if not self.known_at(t):
            return {feature.name: default(feature) for feature in self.program.features}
        structures = self.structures
        return {
            feature.name: from_reading(feature, read(t, structures[index], batch))
            for feature, index, read in self.program.reads
        }

    def _maybe_prune(self, allowed_lateness_s: float) -> None:
        assert self.watermark is not None
        admissible_from = self.watermark - allowed_lateness_s
        horizon = admissible_from - self.program.lookback_s
        if horizon < self._pruned_at + PRUNE_STEP_S:
            return
        self._pruned_at = horizon
        seen_by_ts = self._seen_by_ts
        while seen_by_ts and seen_by_ts[0][0] < admissible_from:
            self._seen.discard(heapq.heappop(seen_by_ts)[1])
        for structure in self.structures:
            structure.prune(horizon)


class EntityStates:
    """The states of every entity whose events one partition carries."""

    def __init__(
        self, allowed_lateness_s: float, entities: dict[str, EntityFeatures] | None = None
    ) -> None:
        self.allowed_lateness_s = allowed_lateness_s
        self.entities = tasks().entities if entities is None else entities
        # every entity keeps the longest look-back of any: a request answered later than
        # the allowed lateness (a loaded worker) then still finds its windows whole, for
        # entities whose own windows are shorter
        lookback_s = max((entity.lookback_s for entity in self.entities.values()), default=0.0)
        self._programs = {
            name: _program(entity, lookback_s) for name, entity in self.entities.items()
        }
        self.by_entity: dict[str, dict[str, EntityState]] = {name: {} for name in self.entities}

    def apply(self, event: Message) -> Outcome:
        found = entity_of(event, self.entities)
        if found is None:
            raise ValueError(f"{type(event).SCHEMA} events are keyed by no task's entity")
        name, entity_id = found
        states = self.by_entity[name]
        state = states.get(entity_id)
        if state is None:
            state = states[entity_id] = EntityState(self._programs[name])
        return state.apply(event, self.allowed_lateness_s)

    def get(self, entity: str, entity_id: str) -> EntityState | None:
        return self.by_entity[entity].get(entity_id)
