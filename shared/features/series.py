"""Event-time structures for streaming features, whatever order events arrive in. Pure.

Each keeps what a feature needs sorted by event time, so an answer at ``t`` does
not depend on arrival order: the streaming state (``services/features/state.py``)
builds every built-in feature kind from them, and a task's own custom state
(``CustomFeatures``) may too.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable

from rtml.shared.contracts import Message


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


class RankedSeries:
    """Values sorted by (ts, event id): the latest N at ``t``, ties broken by id."""

    __slots__ = ("ts", "_keys", "values", "keep")

    def __init__(self, keep: int) -> None:
        self.ts: list[float] = []
        self._keys: list[tuple[float, str]] = []
        self.values: list[float] = []
        # how many of the latest must survive pruning (the deepest rank read)
        self.keep = keep

    def add(self, ts: float, event_id: str, value: float) -> None:
        index = bisect_right(self._keys, (ts, event_id))
        self._keys.insert(index, (ts, event_id))
        self.ts.insert(index, ts)
        self.values.insert(index, value)

    def ranked(self, t: float, rank: int) -> float | None:
        """The ``rank``-th latest value at or before ``t`` (1: the latest)."""
        end = bisect_right(self.ts, t)
        return self.values[end - rank] if end >= rank else None

    def window(self, t: float, width: float) -> list[float]:
        return self.values[bisect_right(self.ts, t - width) : bisect_right(self.ts, t)]

    def newest_at(self, t: float) -> float | None:
        end = bisect_right(self.ts, t)
        return self.ts[end - 1] if end else None

    def prune(self, horizon: float) -> None:
        # the latest N before the horizon are still the latest for a t just after it
        cut = max(0, bisect_left(self.ts, horizon) - self.keep)
        del self.ts[:cut], self._keys[:cut], self.values[:cut]


class Spans:
    """Intervals opened and closed by two kinds of event, either arriving first.

    A span is open on ``start <= t < end``, where ``end`` is the earliest stop
    when it is at or after the start, capped at ``max_open_s`` after the start
    (a stop before the start is inconsistent and ignored). Sorted lists of the
    starts and ends answer "how many are open at t" by two bisections, which is
    right because every end is at or after its start.
    """

    __slots__ = ("max_open_s", "_bounds", "_starts", "_ends", "_expiries")

    def __init__(self, max_open_s: float) -> None:
        # a span never closed (its stop lost) stops counting this long after its start
        self.max_open_s = max_open_s
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
            if bounds is None or self._expiry(*bounds) != expiry:
                continue  # gone already, or it changed and has a newer entry
            if bounds[0] is not None:
                self._unindex(bounds[0], bounds[1])
            del self._bounds[key]

    def __len__(self) -> int:
        return len(self._bounds)

    def intervals(self) -> list[tuple[float, float]]:
        """Every span that has a start, as ``(start, end)``."""
        return [
            (start, self.end(start, stop))
            for start, stop in self._bounds.values()
            if start is not None
        ]

    def end(self, start: float, stop: float | None) -> float:
        cap = start + self.max_open_s
        if stop is None or stop < start:
            return cap
        return min(stop, cap)

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
            insort(self._ends, self.end(bounds[0], bounds[1]))
        heapq.heappush(self._expiries, (self._expiry(*bounds), key))

    def _unindex(self, start: float, stop: float | None) -> None:
        del self._starts[bisect_left(self._starts, start)]
        del self._ends[bisect_left(self._ends, self.end(start, stop))]

    def _expiry(self, start: float | None, stop: float | None) -> float:
        """When a span has ended, or a lone stop can no longer close a span that starts later."""
        return self.end(start, stop) if start is not None else stop  # type: ignore[return-value]


def earliest_by(events: Iterable[Message], key: str) -> dict[str, float]:
    """The earliest event time per value of ``key``: the spans' ends the reference reads."""
    earliest: dict[str, float] = {}
    for event in events:
        span = str(getattr(event, key))
        earliest[span] = min(earliest.get(span, math.inf), event.ts)
    return earliest


def span_open(start: float, stop: float | None, t: float, max_open_s: float) -> bool:
    """The definition ``Spans`` implements, for one span: the reference's reading."""
    end = start + max_open_s
    if stop is not None and stop >= start:
        end = min(end, stop)
    return start <= t < end
