"""The freshness barrier: a held record goes on once every bulk partition is applied up to
its end as of a read sent after the record came, or once its wait runs out."""

from __future__ import annotations

from rtml.services.features.freshness import UNFETCHED, FreshnessBarrier, PartitionFetch
from rtml.shared.watermarks import Watermarks

P0, P1 = ("rtml.events", 0), ("rtml.events", 1)


def at(position: int) -> PartitionFetch:
    return PartitionFetch(highwater=position, position=position)


def released(barrier: FreshnessBarrier[str], now: float = 0.0) -> list[tuple[str, bool]]:
    return [(r.record, r.proven) for r in barrier.release(now)]


def test_a_record_waits_for_a_read_sent_after_it_and_applied_on_every_partition() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: at(10), P1: at(10)})
    barrier.hold("request", now=5.0)
    assert barrier.unproven_since() == 5.0
    barrier.proved(Watermarks(4.9, {P0: 10, P1: 10}))  # sent before the request came
    assert released(barrier, now=5.1) == []
    barrier.proved(Watermarks(5.1, {P0: 10, P1: 12}))  # P1 has two events still to apply
    assert released(barrier, now=5.2) == []
    assert barrier.behind(Watermarks(5.1, {P0: 10, P1: 12}))
    barrier.observe({P0: at(10), P1: at(12)})
    assert released(barrier, now=5.2) == [("request", True)]
    assert barrier.unproven_since() is None


def test_each_read_counts_once_the_positions_reach_its_marks() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: at(10)})
    barrier.hold("first", now=1.0)
    barrier.proved(Watermarks(1.1, {P0: 12}))
    barrier.hold("second", now=1.15)
    barrier.proved(Watermarks(1.2, {P0: 15}))
    barrier.observe({P0: at(12)})
    assert barrier.fresh_as_of == 1.1
    assert released(barrier, now=1.3) == [("first", True)]
    barrier.observe({P0: at(15)})
    assert barrier.fresh_as_of == 1.2
    assert released(barrier, now=1.3) == [("second", True)]


def test_records_go_in_the_order_they_came_and_the_wait_is_bounded() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=0.5)
    barrier.observe({P0: at(10)})
    barrier.hold("first", now=0.0)
    barrier.hold("second", now=0.1)
    barrier.proved(Watermarks(0.05, {P0: 10}))
    assert released(barrier, now=0.2) == [("first", True)]  # "second" came after the read
    assert released(barrier, now=0.65) == [("second", False)]
    assert len(barrier) == 0


def test_with_no_bulk_partition_there_is_nothing_to_wait_for() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.hold("lookup", now=0.0)
    barrier.observe({})
    assert released(barrier) == [("lookup", True)]


def test_a_revoked_partition_no_longer_counts_and_a_new_one_must_be_read() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: at(10), P1: at(3)})
    barrier.hold("request", now=1.0)
    barrier.proved(Watermarks(1.1, {P0: 10, P1: 5}))
    assert released(barrier, now=1.2) == []
    barrier.observe({P0: at(10)})  # P1 revoked
    assert released(barrier, now=1.2) == [("request", True)]
    barrier.hold("later", now=2.0)
    barrier.observe({P0: at(10), P1: at(5)})
    barrier.proved(Watermarks(2.1, {P0: 10}))  # read before P1 came: not proof for it
    assert released(barrier, now=2.2) == []


def test_a_rebalance_voids_what_was_proven_and_drops_records_held_from_before_it() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: at(10)}, generation=1)
    barrier.hold("before", now=1.0, generation=1)
    barrier.proved(Watermarks(1.1, {P0: 12}), generation=1)
    barrier.hold("after", now=2.0, generation=2)  # fetched once it was done
    barrier.observe({P0: at(8)}, generation=2)
    assert barrier.fresh_as_of == float("-inf")
    assert len(barrier) == 1
    barrier.proved(Watermarks(1.5, {P0: 8}), generation=1)  # asked for in the old one
    assert released(barrier, now=2.1) == []
    barrier.proved(Watermarks(2.1, {P0: 8}), generation=2)
    assert released(barrier, now=2.2) == [("after", True)]


def test_a_partition_not_fetched_yet_proves_nothing() -> None:
    # a new assignment: P1 waits for its committed offset, its events unread
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: at(10), P1: UNFETCHED})
    barrier.hold("request", now=1.0)
    barrier.proved(Watermarks(1.1, {P0: 10, P1: 0}))
    assert released(barrier, now=1.5) == []
    assert barrier.behind(Watermarks(1.1, {P0: 10, P1: 0}))
    barrier.observe({P0: at(10), P1: at(0)})
    assert released(barrier, now=1.5) == [("request", True)]
