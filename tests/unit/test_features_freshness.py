"""The freshness barrier: a held record goes on once every bulk partition is applied as of a
fetch response newer than the record's, or once its wait runs out."""

from __future__ import annotations

from rtml.services.features.freshness import UNFETCHED, FreshnessBarrier, PartitionFetch

P0, P1 = ("rtml.events", 0), ("rtml.events", 1)


def caught_up(at_ms: int, offset: int = 10) -> PartitionFetch:
    return PartitionFetch(fetched_at_ms=at_ms, highwater=offset, position=offset)


def behind(at_ms: int) -> PartitionFetch:
    return PartitionFetch(fetched_at_ms=at_ms, highwater=10, position=7)


def released(barrier: FreshnessBarrier[str], now: float = 0.0) -> list[tuple[str, bool]]:
    return [(r.record, r.proven) for r in barrier.release(now)]


def test_a_record_waits_for_a_fetch_newer_than_its_own_on_every_partition() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.hold("request", fetched_at_ms=100, now=0.0)
    barrier.observe({P0: caught_up(100), P1: caught_up(150)})
    assert released(barrier) == []  # P0's last response is the request's own: not proof
    barrier.observe({P0: caught_up(101), P1: caught_up(150)})
    assert released(barrier) == [("request", True)]


def test_a_partition_behind_its_last_response_is_applied_only_as_of_an_older_one() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: caught_up(90)})
    barrier.hold("request", fetched_at_ms=100, now=0.0)
    barrier.observe({P0: behind(120)})  # records of the 120 ms response still to apply
    assert released(barrier) == []
    assert barrier.fresh_as_of_ms == 90
    barrier.observe({P0: caught_up(120)})
    assert released(barrier) == [("request", True)]


def test_records_go_in_the_order_they_came_and_the_wait_is_bounded() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=0.5)
    barrier.hold("first", fetched_at_ms=200, now=0.0)
    barrier.hold("second", fetched_at_ms=100, now=0.1)
    barrier.observe({P0: caught_up(150)})
    assert released(barrier, now=0.2) == []  # "second" is provable but must not overtake
    assert released(barrier, now=0.55) == [("first", False), ("second", True)]
    assert len(barrier) == 0


def test_with_no_bulk_partition_there_is_nothing_to_wait_for() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.hold("lookup", fetched_at_ms=100, now=0.0)
    barrier.observe({})
    assert released(barrier) == [("lookup", True)]


def test_a_revoked_partition_no_longer_counts() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: caught_up(300), P1: behind(300)})
    barrier.hold("request", fetched_at_ms=200, now=0.0)
    assert released(barrier) == []
    barrier.observe({P0: caught_up(300)})  # P1 revoked
    assert released(barrier) == [("request", True)]


def test_a_rebalance_voids_what_was_seen_and_drops_records_held_from_before_it() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: caught_up(300)}, generation=1)
    barrier.hold("before", fetched_at_ms=400, now=0.0, generation=1)
    barrier.hold("after", fetched_at_ms=400, now=0.0, generation=2)  # fetched once it was done
    barrier.observe({P0: behind(500)}, generation=2)
    assert barrier.fresh_as_of_ms == float("-inf")  # the positions were reset
    assert len(barrier) == 1
    barrier.observe({P0: caught_up(500)}, generation=2)
    assert released(barrier) == [("after", True)]


def test_a_response_seen_before_its_records_were_applied_counts_once_they_are() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.hold("request", fetched_at_ms=100, now=0.0)
    barrier.observe({P0: PartitionFetch(fetched_at_ms=110, highwater=20, position=12)})
    # the 110 ms response is applied now, though the consumer has fetched a newer one
    barrier.observe({P0: PartitionFetch(fetched_at_ms=130, highwater=25, position=20)})
    assert barrier.fresh_as_of_ms == 110
    assert released(barrier) == [("request", True)]


def test_a_partition_not_fetched_yet_proves_nothing() -> None:
    # a new assignment: P1 waits for its committed offset, its events unread
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.hold("request", fetched_at_ms=100, now=0.0)
    barrier.observe({P0: caught_up(150), P1: UNFETCHED})
    assert released(barrier, now=0.5) == []
    barrier.observe({P0: caught_up(150), P1: caught_up(160)})
    assert released(barrier, now=0.5) == [("request", True)]


def test_a_reader_between_observations_is_proven_by_a_fetch_asked_for_after_it() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: caught_up(90), P1: caught_up(90)})

    def asked(at_ms: int, offset: int = 10) -> PartitionFetch:
        return PartitionFetch(at_ms + 5, highwater=offset, position=offset, asked_at_ms=at_ms)

    # each partition's last response was asked for after 100 ms, nothing new in it
    assert barrier.proven_since({P0: asked(110), P1: asked(101)}, wall_ms=100, after_ms=None)
    # asked for before 100 ms, though it came back after: not proof by itself
    assert not barrier.proven_since({P0: asked(110), P1: asked(98)}, wall_ms=100, after_ms=None)
    # ... unless it came back after every partition had had a response after 100 ms
    assert barrier.proven_since({P0: caught_up(120), P1: caught_up(130)}, wall_ms=100, after_ms=115)
    assert not barrier.proven_since(
        {P0: caught_up(120), P1: caught_up(130)}, wall_ms=100, after_ms=120
    )
    # a response that brought records the loop has not applied yet: not proven
    assert not barrier.proven_since(
        {P0: asked(110), P1: asked(110, offset=12)}, wall_ms=100, after_ms=None
    )
    # a partition not fetched (paused, or no position yet) proves nothing
    assert not barrier.proven_since({P0: asked(110), P1: UNFETCHED}, wall_ms=100, after_ms=0)
    assert not barrier.proven_since({}, wall_ms=100, after_ms=0)


def test_a_reader_is_fresh_once_a_response_asked_for_after_it_is_applied() -> None:
    barrier: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    barrier.observe({P0: PartitionFetch(104, 10, 10, asked_at_ms=99)})
    assert barrier.asked_fresh_as_of_ms == 99  # a reader that came at 100 waits
    # asked for at 101, its records (to 12) not applied yet
    barrier.observe({P0: PartitionFetch(106, 12, 10, asked_at_ms=101)})
    assert barrier.asked_fresh_as_of_ms == 99
    barrier.observe({P0: PartitionFetch(106, 12, 12, asked_at_ms=101)})
    assert barrier.asked_fresh_as_of_ms == 101
    # without the stamp (a broker without the doorbell) nothing is known this way
    fresh: FreshnessBarrier[str] = FreshnessBarrier(wait_s=1.0)
    fresh.observe({P0: caught_up(120)})
    assert fresh.asked_fresh_as_of_ms == float("-inf")
