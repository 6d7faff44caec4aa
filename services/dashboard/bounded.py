"""Bounded containers the aggregates are built from: time buckets that keep a
window (by wall clock) or the newest buckets (by event time), and a memory of
recently seen ids. Pure, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RecentIds:
    """The last ``capacity`` keys seen, to tell a redelivery from a new message."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._seen: set[tuple[str, str]] = set()
        self._order: deque[tuple[str, str]] = deque()

    def first_time(self, key: tuple[str, str]) -> bool:
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self._capacity:
            self._seen.discard(self._order.popleft())
        return True


class WallBuckets(Generic[T]):
    """One value per wall-clock bucket over a sliding window that ends at the newest time seen."""

    def __init__(self, factory: Callable[[], T], bucket_s: int, window_s: int) -> None:
        self._factory = factory
        self.bucket_s = bucket_s
        self._window_buckets = window_s // bucket_s
        self._buckets: dict[int, T] = {}
        self._newest = -math.inf

    def at(self, wall_ts: float) -> T | None:
        """The bucket of ``wall_ts``; None when it is already out of the window."""
        index = int(wall_ts // self.bucket_s)
        if index <= self._newest - self._window_buckets:
            return None
        if index > self._newest:
            self._newest = index
            self._drop_older_than(index - self._window_buckets)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = self._factory()
        return bucket

    def window(self, now: float) -> Iterator[tuple[float, T | None]]:
        """(bucket start, value or None) of each bucket that ended in the window before ``now``."""
        last = int(now // self.bucket_s)  # the bucket still filling: left out
        first = last - self._window_buckets
        for index in range(first, last):
            yield index * self.bucket_s, self._buckets.get(index)

    def _drop_older_than(self, oldest_kept: int) -> None:
        for index in [i for i in self._buckets if i <= oldest_kept]:
            del self._buckets[index]


class EventBuckets(Generic[T]):
    """One value per event-time bucket; the newest ``keep`` buckets are kept."""

    def __init__(self, factory: Callable[[], T], bucket_s: int, keep: int) -> None:
        self._factory = factory
        self.bucket_s = bucket_s
        self._keep = keep
        self._buckets: dict[int, T] = {}

    def at(self, event_ts: float) -> T | None:
        """The bucket of ``event_ts``; None when it is older than every bucket kept."""
        index = int(event_ts // self.bucket_s)
        bucket = self._buckets.get(index)
        if bucket is not None:
            return bucket
        if len(self._buckets) >= self._keep:
            oldest = min(self._buckets)
            if index < oldest:
                return None
            del self._buckets[oldest]
        bucket = self._buckets[index] = self._factory()
        return bucket

    def items(self) -> list[tuple[float, T]]:
        """(bucket start, value), oldest first."""
        return [(index * self.bucket_s, self._buckets[index]) for index in sorted(self._buckets)]
