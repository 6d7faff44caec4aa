"""Serving stage-1 batch recommendations: the pure lookup, its HTTP route and the
follower that keeps it in step with ``rtml.batch.predictions``; the recs task's
serving hook (``TaskSpec.serving``), which the prediction service mounts.

A visitor whose user features name a known segment gets that segment's list; any
other visitor -- no user features, or a segment too rare to have its own list --
gets the campaign's global popularity list, and counts as a cold start
(``rtml_recs_cold_start_total``, next to ``rtml_recs_batch_served_total``): the
problem batch prediction has with new visitors, made visible.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from rtml.shared import topics
from rtml.shared.contracts import BatchPrediction
from rtml.shared.errors import ContractError
from rtml.shared.kafka import read_all
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings
from rtml.tasks.recs.popularity import segment_name, segment_of_inputs

log = get_logger(__name__)

SERVED = Counter("rtml_recs_batch_served_total", "recs requests answered from batch predictions")
COLD_STARTS = Counter(
    "rtml_recs_cold_start_total", "recs requests of no known segment, answered with the global list"
)
MAX_K = 100
MAX_BODY_BYTES = 16 * 1024


class NoBatchPredictions(LookupError):
    """Nothing to serve yet: the campaign has no global list on the topic."""


@dataclass(frozen=True)
class Recommendation:
    items: list[int]
    scores: list[float]
    segment: str
    cold_start: bool
    # event time of the newest log the list was computed from
    as_of: float


class BatchRecommender:
    """The newest batch list per segment; ``replace`` swaps in a whole new set at once."""

    def __init__(self) -> None:
        self._lists: Mapping[str, BatchPrediction] = {}

    @property
    def segments(self) -> int:
        return len(self._lists)

    def replace(self, predictions: Iterable[BatchPrediction]) -> None:
        self._lists = {p.segment: p for p in predictions if p.task == "recs"}

    def recommend(self, campaign: str, inputs: Mapping[str, float], k: int) -> Recommendation:
        segment = segment_of_inputs(campaign, inputs)
        found = self._lists.get(segment) if segment is not None else None
        cold_start = found is None
        if found is None:
            found = self._lists.get(segment_name(campaign, None))
        if found is None:
            raise NoBatchPredictions(
                f"no batch predictions for campaign {campaign!r}: run "
                "`rtml batch predict --task recs`"
            )
        return Recommendation(
            found.items[:k], found.scores[:k], found.segment, cold_start, found.ts
        )


def parse_request(body: bytes) -> tuple[str, dict[str, float], int]:
    """(campaign, user-feature inputs, k) from ``{"campaign", "inputs", "k"}``."""
    try:
        request: Any = json.loads(body)
    except ValueError as exc:
        raise ContractError("body", f"not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise ContractError("body", "expected a JSON object")
    campaign = request.get("campaign", "all")
    if not isinstance(campaign, str) or not campaign:
        raise ContractError("campaign", "must be a non-empty string")
    inputs = request.get("inputs", {})
    if not isinstance(inputs, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in inputs.values()
    ):
        raise ContractError("inputs", "must map feature names to finite numbers")
    k = request.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ContractError("k", f"must be an integer in [1, {MAX_K}]")
    return campaign, inputs, k


def recommend_route(recommender: BatchRecommender):
    """``POST /v1/recommend``: the batch list for the visitor's segment, or the global one."""

    async def handler(request: web.Request) -> web.Response:
        try:
            campaign, inputs, k = parse_request(await request.read())
        except ContractError as exc:
            problem = {"index": 0, "field": exc.field, "reason": exc.reason}
            return web.json_response(
                {"error": "invalid request", "problems": [problem]}, status=400
            )
        try:
            found = recommender.recommend(campaign, inputs, k)
        except NoBatchPredictions as exc:
            return web.json_response({"error": str(exc)}, status=503, headers={"Retry-After": "5"})
        SERVED.inc()
        if found.cold_start:
            COLD_STARTS.inc()
        return web.json_response(found.__dict__)

    return handler


async def follow_batch_predictions(
    settings: Settings, recommender: BatchRecommender, every_s: float = 5.0
) -> None:
    """Re-read the compacted topic every ``every_s``: it holds one small list per segment,
    and a batch job rewrites it at most once per run."""
    while True:
        try:
            records = await read_all(settings, topics.BATCH_PREDICTIONS.name)
        except Exception as exc:  # keep serving the lists held; the next read retries
            log.warning("batch_predictions_unreadable", error=repr(exc))
        else:
            recommender.replace(m for _, m in records if isinstance(m, BatchPrediction))
        await asyncio.sleep(every_s)


@dataclass
class BatchListServing:
    """``POST /v1/recommend`` from the newest batch lists on ``rtml.batch.predictions``."""

    recommender: BatchRecommender = field(default_factory=BatchRecommender)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/recommend", recommend_route(self.recommender))]

    async def run(self, settings: Settings) -> None:
        await follow_batch_predictions(settings, self.recommender)
