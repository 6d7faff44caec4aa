"""The collector's adapters that need no broker: table views and re-keying."""

from __future__ import annotations

import pytest
from rtml.services.collector.join import JoinConfig, JoinState
from rtml.services.collector.routing import decode_joinable, rekey_event, rekey_prediction
from rtml.services.collector.store import FLOATS, MESSAGES, PartitionView
from rtml.shared.contracts import encode
from rtml.shared.errors import ContractError
from rtml.shared.kafka import partition_of

from rtml.tasks.eta.events import CourierOnline
from rtml.tasks.recs.events import ItemClicked
from tests.unit.test_collector_join import T0, delivered, eta_prediction, feed

PARTITIONS = 3


def keys_in(partition: int, count: int) -> list[str]:
    found = [
        f"o{i}" for i in range(1000) if partition_of(f"eta:o{i}".encode(), PARTITIONS) == partition
    ]
    return found[:count]


def views(table: dict[bytes, bytes], partition: int) -> tuple[PartitionView, ...]:
    return tuple(
        PartitionView(table, partition, PARTITIONS, codec) for codec in (MESSAGES, MESSAGES, FLOATS)
    )


def test_writes_reach_the_table_only_on_flush() -> None:
    table: dict[bytes, bytes] = {}
    view = PartitionView(table, 0, PARTITIONS, FLOATS)
    view["a"] = 1.5
    assert view["a"] == 1.5 and "a" in view and table == {}
    view.flush()
    assert table == {b"a": FLOATS.dumps(1.5)}
    del view["a"]
    assert "a" not in view and b"a" in table
    view.flush()
    assert table == {}
    view["b"] = 2.0
    del view["b"]  # set and deleted between two flushes: never reaches the table
    view.flush()
    assert table == {}
    with pytest.raises(KeyError):
        del view["b"]


def test_a_view_shows_its_partition_only() -> None:
    tables = [{}, {}, {}]  # predictions, labels, done: shared by every partition
    mine, theirs = keys_in(0, 3), keys_in(1, 2)
    for partition, orders in ((0, mine), (1, theirs)):
        join_views = views(tables[0], partition)  # type: ignore[arg-type]
        for order in orders:
            join_views[0][f"eta:{order}"] = eta_prediction(order, T0)
            join_views[0].flush()
    assert sorted(views(tables[0], 0)[0]) == sorted(f"eta:{o}" for o in mine)  # type: ignore[arg-type]


def test_join_state_over_views_survives_a_rebuild() -> None:
    tables: list[dict[bytes, bytes]] = [{}, {}, {}]
    order, other = keys_in(2, 2)
    first = views(tables[0], 2)[0], views(tables[1], 2)[1], views(tables[2], 2)[2]
    state = JoinState(JoinConfig(), *first)  # type: ignore[arg-type]
    feed(state, [eta_prediction(order, T0), delivered(other, T0, 10)])
    for view in first:
        view.flush()
    again = views(tables[0], 2)[0], views(tables[1], 2)[1], views(tables[2], 2)[2]
    rebuilt = JoinState(JoinConfig(), *again)  # type: ignore[arg-type]
    assert rebuilt.watermark == T0 + 600
    joined = feed(rebuilt, [delivered(order, T0, 25), eta_prediction(other, T0 + 1)])
    assert sorted(j.example.id for j in joined) == sorted([f"req-{order}", f"req-{other}"])


def test_rekeying_keeps_the_value_and_keys_by_join_key() -> None:
    prediction, label = eta_prediction("o1", T0), delivered("o1", T0, 20)
    for rekeyed, original in (
        (rekey_prediction(encode(prediction)), prediction),
        (rekey_event(encode(label)), label),
    ):
        assert rekeyed is not None and rekeyed.key == b"eta:o1"
        assert decode_joinable(rekeyed.value) == original
    click = ItemClicked(ts=T0, session_id="s", item_id=3)
    assert rekey_event(encode(click)).key == b"recs:s:3"  # type: ignore[union-attr]


def test_other_events_are_skipped_and_bad_records_raise() -> None:
    assert rekey_event(encode(CourierOnline(ts=T0, courier_id="c", zone_id="z"))) is None
    # mentions a label's name but is another kind: decoded, then skipped
    assert (
        rekey_event(encode(CourierOnline(ts=T0, courier_id="order_delivered", zone_id="z"))) is None
    )
    assert rekey_prediction(encode(eta_prediction("", T0))) is None  # no order id: no join key
    with pytest.raises(ContractError):
        rekey_event(b"\x81\xa6schema\xafitem_clicked")
    with pytest.raises(ContractError):
        rekey_prediction(encode(delivered("o1", T0, 20)))
