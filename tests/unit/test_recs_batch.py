"""Stage 1: segment rankings, the batch predictions they become, and serving them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from rtml.services.prediction.app import PredictionApp
from rtml.services.prediction.handlers import Scorer
from rtml.shared.contracts import BatchPrediction, ContractError, decode, encode
from rtml.shared.service import HealthEndpoints

from rtml.tasks.recs.batch import batch_predictions
from rtml.tasks.recs.obd import UserFeatureEncoder, load_rounds
from rtml.tasks.recs.popularity import rank_segments, segment_name, segment_of_inputs
from rtml.tasks.recs.serving import (
    BatchListServing,
    BatchRecommender,
    NoBatchPredictions,
    parse_request,
)
from rtml.tasks.recs.spec import TASK as RECS


@pytest.fixture(scope="module")
def predictions() -> list[BatchPrediction]:
    return batch_predictions("all", k=5)


def test_the_global_list_ranks_items_by_their_shrunk_click_rate():
    log = load_rounds("men", "random")
    [ranking] = [
        r
        for r in rank_segments([log], UserFeatureEncoder.of_campaign("men"), k=34)
        if r.segment == "men/global"
    ]
    assert sorted(ranking.items) == list(range(34))
    assert ranking.scores == sorted(ranking.scores, reverse=True)
    assert (ranking.n_rounds, ranking.n_clicks) == (10_000, 46)
    # the item with the most clicks among equally shown items comes first
    clicks = np.bincount(log.items, weights=log.clicks, minlength=34)
    shown = np.bincount(log.items, minlength=34)
    raw = (clicks + 100 * log.ctr) / (shown + 100)
    assert ranking.items[0] == int(np.argmax(raw))


def test_known_segments_are_the_ones_with_enough_rounds(predictions):
    segments = {p.segment: p for p in predictions}
    assert "all/global" in segments
    assert segments["all/global"].n_rounds == 20_000
    known = [p for p in predictions if p.segment != "all/global"]
    assert known and all(p.n_rounds >= 100 for p in known)
    assert sum(p.n_rounds for p in known) <= 20_000
    assert all(len(p.items) == 5 and len(set(p.items)) == 5 for p in predictions)


def test_batch_predictions_are_stable_and_travel_as_contracts(predictions):
    again = batch_predictions("all", k=5)
    assert [p.id for p in again] == [p.id for p in predictions]
    assert decode(encode(predictions[0])) == predictions[0]
    assert predictions[0].key == predictions[0].segment.encode()
    with pytest.raises(ValueError, match="scores"):
        BatchPrediction(ts=0, task="recs", segment="x", items=[1, 2], scores=[0.1], n_rounds=1,
                        n_clicks=0)  # fmt: skip


def test_segments_come_from_the_first_two_user_feature_codes():
    assert segment_of_inputs("all", {"user_feature_0": 1.0, "user_feature_1": 0.0}) == (
        "all/u0=1,u1=0"
    )
    assert segment_of_inputs("all", {"user_feature_0": 1.0}) is None
    assert segment_of_inputs("all", {"user_feature_0": -1.0, "user_feature_1": 0.0}) is None
    assert segment_name("men", None) == "men/global"


def test_a_known_segment_gets_its_list_and_an_unseen_visitor_the_global_one(predictions):
    recommender = BatchRecommender()
    recommender.replace(predictions)
    segment = max((p for p in predictions if p.segment != "all/global"), key=lambda p: p.n_rounds)
    u0, u1 = (int(part.split("=")[1]) for part in segment.segment.split("/")[1].split(","))
    known = recommender.recommend("all", {"user_feature_0": u0, "user_feature_1": u1}, k=3)
    assert (known.segment, known.cold_start, known.items) == (
        segment.segment,
        False,
        segment.items[:3],
    )
    unseen = recommender.recommend("all", {}, k=3)
    rare = recommender.recommend("all", {"user_feature_0": 0, "user_feature_1": 3}, k=3)
    for cold in (unseen, rare):
        assert (cold.segment, cold.cold_start) == ("all/global", True)
    with pytest.raises(NoBatchPredictions, match="rtml batch predict"):
        recommender.recommend("men", {}, k=3)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b'{"k": 0}', "k"),
        (b'{"k": true}', "k"),
        (b'{"inputs": {"user_feature_0": "a"}}', "inputs"),
        (b'{"campaign": ""}', "campaign"),
    ],
)
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(ContractError) as caught:
        parse_request(body)
    assert caught.value.field == field


async def test_the_prediction_service_serves_batch_lists_and_counts_cold_starts(predictions):
    # the hook the recs task declares, as the prediction service makes it
    assert RECS.serving is not None
    hook = RECS.serving()
    assert isinstance(hook, BatchListServing)
    recommender = hook.recommender
    app = PredictionApp(Scorer(), [hook]).http_app(HealthEndpoints("prediction"))
    async with TestClient(TestServer(app)) as client:
        empty = await client.post("/v1/recommend", data=b"{}")
        assert empty.status == 503
        recommender.replace(predictions)
        before = REGISTRY.get_sample_value("rtml_recs_cold_start_total") or 0.0
        served_before = REGISTRY.get_sample_value("rtml_recs_batch_served_total") or 0.0
        known = await client.post(
            "/v1/recommend",
            data=json.dumps({"inputs": {"user_feature_0": 1, "user_feature_1": 0}, "k": 2}),
        )
        body = await known.json()
        assert known.status == 200
        assert (body["segment"], body["cold_start"], len(body["items"])) == (
            "all/u0=1,u1=0",
            False,
            2,
        )
        cold = await (await client.post("/v1/recommend", data=b'{"k": 4}')).json()
        assert (cold["segment"], cold["cold_start"], len(cold["items"])) == ("all/global", True, 4)
        bad = await client.post("/v1/recommend", data=b'{"k": 1000}')
        assert bad.status == 400
        assert (await bad.json())["problems"][0]["field"] == "k"
    assert REGISTRY.get_sample_value("rtml_recs_cold_start_total") == before + 1
    assert REGISTRY.get_sample_value("rtml_recs_batch_served_total") == served_before + 2
