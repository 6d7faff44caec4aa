"""Read-your-writes across topics: hold records until the bulk topics are applied past them.

Why. Events and requests are separate topics, read by one consumer. A client
appends its events, waits for the acknowledgement, then sends the request
(often the request's own ``order_placed`` is among those events), yet the
worker can see the request first: the events may sit in a fetch the consumer
has not handed out yet, or in a partition left out of the fetch that brought
the request (aiokafka leaves out a partition whose records it still buffers).
Served then, the vector misses events the client knew had happened: skew
between serving and the point-in-time reference that ``rtml skew`` finds.

How, without a broker round trip. The consumer has one fetch in flight per
broker, so a fetch response received after the one that brought a record was
built after that record, and every record appended before it, was in the log.
A bulk partition is *applied as of* a response when the handler has applied
it up to that response's high watermark. A held record is handed on once every
bulk partition is applied as of a response newer than the record's own, or
once it has waited ``wait_s`` (counted: under a backlog freshness gives way to
latency). Records are released in the order they came, a poll at a time, so
a stream of requests pays a couple of fetch round trips (a response's high
watermark often runs ahead of the records it carries; the next response brings
the rest), not a wait per request.

On a multi-broker Kafka the events and request partitions can have different
leaders; "newer" (milliseconds, wall clock) is then a close approximation, and
a miss would show in ``rtml skew``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

Record = TypeVar("Record")
# responses remembered per partition until applied; forgetting the oldest only
# makes the proof wait for a newer one
_RESPONSES_KEPT = 64


@dataclass(frozen=True, slots=True)
class PartitionFetch:
    """What the consumer knows of a bulk partition: its last fetch response and position."""

    fetched_at_ms: int | None
    highwater: int | None
    position: int | None
    # when that response was asked for, where known (the embedded broker's doorbell)
    asked_at_ms: int | None = None


# a partition assigned but not being fetched (no position yet, or paused)
UNFETCHED = PartitionFetch(None, None, None)


@dataclass(frozen=True, slots=True)
class Released(Generic[Record]):
    record: Record
    proven: bool  # False: handed on because the wait ran out
    held_s: float


@dataclass(frozen=True, slots=True)
class _Held(Generic[Record]):
    record: Record
    fetched_at_ms: int
    since: float
    generation: int


class FreshnessBarrier(Generic[Record]):
    """Records waiting for the bulk partitions to be applied as of a newer fetch."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._held: deque[_Held[Record]] = deque()
        self._applied_as_of: dict[object, int] = {}
        # per partition: (fetched at ms, high watermark, asked at ms) of responses not yet
        # applied in full
        self._seen: dict[object, deque[tuple[int, int, int | None]]] = {}
        self.fresh_as_of_ms: float = -math.inf
        # per partition: when the newest response applied in full was asked for
        self._applied_asked: dict[object, int] = {}
        self.asked_fresh_as_of_ms: float = -math.inf
        # per partition: the position when last observed, every record below it applied
        self._applied_to: dict[object, int] = {}
        self._generation = 0

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, record: Record, fetched_at_ms: int, now: float, generation: int = 0) -> None:
        """Hold ``record``, fetched in the consumer group's ``generation``."""
        self._held.append(_Held(record, fetched_at_ms, now, generation))

    def observe(self, partitions: Mapping[object, PartitionFetch], generation: int = 0) -> None:
        """Note the bulk partitions' state, taken after their handlers applied all handed out.

        The consumer fetches ahead while the handlers work, so a partition is often
        seen with a newer response's records still to hand out. Each response seen is
        remembered until the position passes its high watermark: the partition is
        applied as of it then, even if a newer one has come meanwhile.

        A new ``generation`` (a rebalance) resets positions to the committed offsets:
        what was seen before is void, and records held from before come again.
        """
        if generation != self._generation:
            self._generation = generation
            self._seen.clear()
            self._applied_as_of.clear()
            self._applied_asked.clear()
            self._held = deque(h for h in self._held if h.generation == generation)
        seen = {tp: self._seen.get(tp, deque(maxlen=_RESPONSES_KEPT)) for tp in partitions}
        applied = {tp: at for tp, at in self._applied_as_of.items() if tp in partitions}
        asked = {tp: at for tp, at in self._applied_asked.items() if tp in partitions}
        for tp, fetch in partitions.items():
            responses = seen[tp]
            if fetch.fetched_at_ms is None or fetch.highwater is None or fetch.position is None:
                continue
            if not responses or responses[-1][0] != fetch.fetched_at_ms:
                responses.append((fetch.fetched_at_ms, fetch.highwater, fetch.asked_at_ms))
            while responses and responses[0][1] <= fetch.position:
                fetched_at, _, asked_at = responses.popleft()
                applied[tp] = max(applied.get(tp, -1), fetched_at)
                if asked_at is not None:
                    asked[tp] = max(asked.get(tp, -1), asked_at)
        self._seen = seen
        self._applied_as_of = applied
        self._applied_asked = asked
        # a reader that arrived before this was asked for is fresh (known where the
        # broker's doorbell stamps when a fetch was asked for)
        self.asked_fresh_as_of_ms = (
            min(asked.get(tp, -math.inf) for tp in partitions) if partitions else math.inf
        )
        self._applied_to = {
            tp: fetch.position for tp, fetch in partitions.items() if fetch.position is not None
        }
        if partitions:
            self.fresh_as_of_ms = min(applied.get(tp, -math.inf) for tp in partitions)
        else:
            self.fresh_as_of_ms = math.inf

    def proven_since(
        self, live: Mapping[object, PartitionFetch], wall_ms: int, after_ms: int | None
    ) -> bool:
        """Whether ``live`` (the bulk partitions' fetch state now, read between two
        observations) proves them applied as of a fetch asked for after ``wall_ms``:
        each partition's last response was, with a high watermark the last observed
        position had reached. A response was asked for after ``wall_ms`` if its
        ``asked_at_ms`` says so, or if it came back after ``after_ms``, when every
        partition had had a response back after ``wall_ms`` (one fetch in flight per
        broker). For a reader outside the consumer's loop (a lookup over HTTP), which
        need not wait for the loop's next turn."""
        return bool(live) and all(
            fetch.highwater is not None
            and fetch.highwater <= self._applied_to.get(tp, -1)
            and (
                (fetch.asked_at_ms is not None and fetch.asked_at_ms > wall_ms)
                or (
                    after_ms is not None
                    and fetch.fetched_at_ms is not None
                    and fetch.fetched_at_ms > after_ms
                )
            )
            for tp, fetch in live.items()
        )

    def release(self, now: float) -> list[Released[Record]]:
        """The held records that may go on, oldest first: proven fresh, or waited out."""
        released: list[Released[Record]] = []
        while self._held:
            held = self._held[0]
            proven = held.fetched_at_ms < self.fresh_as_of_ms
            if not proven and now - held.since < self.wait_s:
                break
            self._held.popleft()
            released.append(Released(held.record, proven, now - held.since))
        return released
