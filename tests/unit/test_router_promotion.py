"""The router's promotions move the store's champion by compare-and-swap: two replicas that
decide the same promotion, or a router behind an operator's promotion, never overwrite a
champion they did not see (real model store, real embedded broker for the announcement)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from rtml.services.router.handlers import PromotionProposal, Router
from rtml.services.router.models import Promoter
from rtml.shared.kafka import start_producer
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings

from tests.unit.test_prediction_handlers import FEATURE_SET, train_booster
from tests.unit.test_router_handlers import router_with

ARMS = ("eta-a", "eta-b", "eta-c")


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models", mirror=None)
    booster = train_booster()
    for version in ARMS:
        store.register(booster, task="eta", version=version, feature_set=FEATURE_SET,
                       data_range={}, params={}, metrics={})  # fmt: skip
    store.set_champion("eta", "eta-a")
    return store


def replica(store: ModelStore) -> Router:
    router = router_with(*ARMS)
    router.set_champion("eta", store.champion("eta").version)
    return router


def promotions(outcome: str) -> float:
    labels = {"task": "eta", "outcome": outcome}
    return REGISTRY.get_sample_value("rtml_router_promotions_total", labels) or 0.0


async def test_of_two_replicas_promoting_at_once_one_wins_and_the_other_follows(
    store: ModelStore, settings: Settings
) -> None:
    routers = [replica(store), replica(store)]
    before = {outcome: promotions(outcome) for outcome in ("promoted", "superseded")}
    producer = await start_producer(settings)
    try:
        won = await asyncio.gather(
            Promoter(routers[0], store, producer).promote(PromotionProposal("eta", "eta-b", "r0")),
            Promoter(routers[1], store, producer).promote(PromotionProposal("eta", "eta-b", "r1")),
        )
    finally:
        await producer.stop()

    assert sorted(won) == [False, True]
    assert {o: promotions(o) - before[o] for o in before} == {"promoted": 1, "superseded": 1}
    assert store.champion("eta").version == "eta-b"
    assert [router.champion("eta") for router in routers] == ["eta-b", "eta-b"]


async def test_a_router_behind_an_operators_promotion_keeps_the_operators_champion(
    store: ModelStore,
) -> None:
    router = replica(store)  # knows eta-a
    store.set_champion("eta", "eta-c")  # rtml models promote, elsewhere

    # refused before anything is announced: no producer is needed
    promoted = await Promoter(router, store, producer=None).promote(  # type: ignore[arg-type]
        PromotionProposal("eta", "eta-b", "value remaining")
    )

    assert promoted is False
    assert store.champion("eta").version == "eta-c"
    assert router.champion("eta") == "eta-c"
