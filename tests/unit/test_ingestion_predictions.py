"""The predictions ingestion keeps for lookups: bounded, newest kept, a repeat replaces."""

from __future__ import annotations

from rtml.services.ingestion.predictions import PredictionWaiter
from rtml.shared.contracts import encode

from tests.integration.test_ingestion import _prediction_for


def kept(waiter: PredictionWaiter, *request_ids: str) -> list[str]:
    return [r for r in request_ids if waiter.recent(r) is not None]


def test_only_the_newest_are_kept() -> None:
    waiter = PredictionWaiter(consumer=None, keep=2)  # type: ignore[arg-type]
    for request_id in ("a", "b", "c"):
        waiter._remember(request_id, encode(_prediction_for(request_id)))
    assert kept(waiter, "a", "b", "c") == ["b", "c"]
    assert waiter.recent("c").id == "c"  # type: ignore[union-attr]


def test_a_repeat_counts_as_the_newest() -> None:
    waiter = PredictionWaiter(consumer=None, keep=2)  # type: ignore[arg-type]
    for request_id in ("a", "b", "a", "c"):
        waiter._remember(request_id, encode(_prediction_for(request_id)))
    assert kept(waiter, "a", "b", "c") == ["a", "c"]


def test_an_undecodable_record_is_not_served() -> None:
    waiter = PredictionWaiter(consumer=None, keep=2)  # type: ignore[arg-type]
    waiter._remember("x", b"\xc1 not msgpack")
    assert waiter.recent("x") is None


def test_keeping_none_keeps_nothing() -> None:
    waiter = PredictionWaiter(consumer=None, keep=0)  # type: ignore[arg-type]
    waiter._remember("a", encode(_prediction_for("a")))
    assert waiter.recent("a") is None
