"""Read-your-writes across topics: hold records until the bulk topics are applied past them.

Why. Events and requests are separate topics, read by one consumer. A client
appends its events, waits for the acknowledgement, then sends the request
(often the request's own ``order_placed`` is among those events), yet the
worker can see the request first: the events may sit in a fetch the consumer
has not handed out yet, or in a partition left out of the fetch that brought
the request (aiokafka leaves out a partition whose records it still buffers).
Served then, the vector misses events the client knew had happened: skew
between serving and the point-in-time reference that ``rtml skew`` finds.

How. A held record goes on once every bulk partition is applied up to its
high watermark as of a read sent after the record was handed out (the
request was in the log by then, and every event appended before it:
``shared/watermarks.py``), or once it has waited ``wait_s`` (counted: under a
backlog freshness gives way to latency). A lookup over HTTP waits the same way
for a read sent after it arrived. A read costs one round trip that the broker
answers at once; many held records and lookups share one. Records are
released in the order they came.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from rtml.shared.watermarks import Watermarks

Record = TypeVar("Record")


@dataclass(frozen=True, slots=True)
class PartitionFetch:
    """What the consumer knows of a bulk partition: the high watermark of its last
    fetch response (where a read of its end looks) and its position."""

    highwater: int | None
    position: int | None  # None: not being fetched (no position yet, or paused)


# a partition assigned but not being fetched (no position yet, or paused)
UNFETCHED = PartitionFetch(None, None)


@dataclass(frozen=True, slots=True)
class Released(Generic[Record]):
    record: Record
    proven: bool  # False: handed on because the wait ran out
    held_s: float


@dataclass(frozen=True, slots=True)
class _Held(Generic[Record]):
    record: Record
    since: float
    generation: int


class FreshnessBarrier(Generic[Record]):
    """Records waiting for the bulk partitions to be applied up to a read of their ends."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._held: deque[_Held[Record]] = deque()
        # per bulk partition: the position when last observed, every record below it
        # applied (None: not being fetched)
        self._applied_to: dict[object, int | None] = {}
        # reads of the partitions' ends (asked at, marks) not yet applied, oldest first
        self._reads: deque[Watermarks] = deque()
        # every record appended before this instant (time.monotonic) is applied
        self.fresh_as_of: float = -math.inf
        self._generation = 0

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, record: Record, now: float, generation: int = 0) -> None:
        """Hold ``record``, handed out at ``now`` in the consumer group's ``generation``."""
        self._held.append(_Held(record, now, generation))

    def unproven_since(self) -> float | None:
        """When the newest held record came, if no read after it is applied yet: a read
        sent after this instant would prove every held record."""
        if not self._held or self._held[-1].since < self.fresh_as_of:
            return None
        return self._held[-1].since

    def observe(self, partitions: Mapping[object, PartitionFetch], generation: int = 0) -> None:
        """Note the bulk partitions' positions, taken after their handlers applied all
        handed out.

        A new ``generation`` (a rebalance) resets positions to the committed offsets:
        what was proven before is void, and records held from before come again.
        """
        if generation != self._generation:
            self._generation = generation
            self._reads.clear()
            self.fresh_as_of = -math.inf
            self._held = deque(h for h in self._held if h.generation == generation)
        self._applied_to = {tp: fetch.position for tp, fetch in partitions.items()}
        self._settle()

    def proved(self, read: Watermarks, generation: int = 0) -> None:
        """A read of the partitions' ends, asked for in ``generation``."""
        if generation != self._generation or read.asked_at <= self.fresh_as_of:
            return
        if not self._reads or self._reads[-1].asked_at < read.asked_at:
            self._reads.append(read)  # reads come in the order they were asked for
        self._settle()

    def behind(self, read: Watermarks) -> bool:
        """Whether a bulk partition's position is short of ``read``'s mark: its records
        are still to fetch."""
        return any(
            position is None or position < read.marks.get(tp, 0)  # type: ignore[call-overload]
            for tp, position in self._applied_to.items()
        )

    def _settle(self) -> None:
        if not self._applied_to:
            self.fresh_as_of = math.inf  # no bulk partition here: nothing to wait for
            return
        for read in reversed(self._reads):
            if self._applied(read):
                self.fresh_as_of = max(self.fresh_as_of, read.asked_at)
                break
        while self._reads and self._reads[0].asked_at <= self.fresh_as_of:
            self._reads.popleft()

    def _applied(self, read: Watermarks) -> bool:
        return all(
            position is not None and tp in read.marks and position >= read.marks[tp]  # type: ignore[index]
            for tp, position in self._applied_to.items()
        )

    def release(self, now: float) -> list[Released[Record]]:
        """The held records that may go on, oldest first: proven fresh, or waited out."""
        released: list[Released[Record]] = []
        while self._held:
            held = self._held[0]
            proven = held.since < self.fresh_as_of
            if not proven and now - held.since < self.wait_s:
                break
            self._held.popleft()
            released.append(Released(held.record, proven, now - held.since))
        return released
