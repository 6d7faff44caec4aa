"""The request-driven adapter: the same lookups as the Kafka wiring, over HTTP.

``POST /v1/enrich`` takes a PredictRequest (JSON) and answers the
PredictEnriched message the Kafka wiring would emit for it. Each step of the
lookup plan runs where its entity lives: here when this worker holds the
entity's partition, otherwise on the owner, found through faust's assignor
(the URL every worker advertises is its side port) and asked with
``GET /v1/features/{kind}/{entity_id}?t=<request ts>``. The plan, the lookups
and the assembly are the functions the Kafka agents call (``handlers.py``).
Like a request read from Kafka, a lookup first waits for the events appended
before it arrived to be applied (``freshness.py``): once here before the local
lookups, if any, and on the owner before each remote one.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, cast

import aiohttp
from aiohttp import web

from services.features import metrics
from services.features.app import ENTITY_KINDS, FeaturesWorker
from services.features.handlers import advance, enriched, entity_features, feature_vector, plan
from shared.contracts import PredictRequest, from_wire
from shared.errors import ContractError
from shared.features.definitions import EntityKind, FeatureValue

OWNER_TIMEOUT_S = 2.0


class OwnerUnavailable(Exception):
    """The worker that holds an entity could not be asked (rebalancing, down)."""


class HttpAdapter:
    def __init__(self, worker: FeaturesWorker, http: aiohttp.ClientSession) -> None:
        self._worker = worker
        self._http = http

    def mount(self, app: web.Application) -> web.Application:
        app.router.add_post("/v1/enrich", self.enrich)
        app.router.add_get("/v1/features/{kind}/{entity_id}", self.entity_features)
        return app

    async def enrich(self, request: web.Request) -> web.Response:
        if (verdict := self._worker.readiness()) is not True:
            return _error(503, f"not ready: {verdict}")
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise ContractError("", "expected a JSON object")
            predict = from_wire({"schema": PredictRequest.SCHEMA, **body}, PredictRequest)
            assert isinstance(predict, PredictRequest)
            lookup = plan(predict)
        except ValueError as exc:
            return _error(400, f"body: not JSON: {exc}")
        except ContractError as exc:
            return _error(400, str(exc), field=exc.field)
        # an owner asked over HTTP waits for its own events (entity_features)
        if any(self._worker.holds(entity_id) for _, entity_id in lookup.pending):
            await self._worker.applied_until_now()
        try:
            while (entity := lookup.next_entity) is not None:
                kind, entity_id = entity
                lookup = advance(lookup, await self._features(kind, entity_id, predict.ts))
        except OwnerUnavailable as exc:
            return _error(503, str(exc))
        vector = feature_vector(lookup, self._worker.batch_records())
        metrics.observe(vector, "http")
        return web.json_response(enriched(lookup, vector, time.time()).model_dump(mode="json"))

    async def entity_features(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        entity_id = request.match_info["entity_id"]
        if kind not in ENTITY_KINDS:
            return _error(404, f"no features for {kind!r} entities", field="kind")
        try:
            t = float(request.query["t"])
        except (KeyError, ValueError):
            t = math.nan
        if not math.isfinite(t):
            return _error(400, "t: the event time to read the features at, in seconds", field="t")
        if not self._worker.holds(entity_id) or self._worker.readiness() is not True:
            return _error(503, f"this worker does not hold {kind} {entity_id} now")
        worker = self._worker
        await worker.applied_until_now()
        found = entity_features(
            worker.entities.all_states(),
            cast(EntityKind, kind),
            entity_id,
            t,
            worker.batch_records(),
        )
        return web.json_response({"features": {name: list(v) for name, v in found.items()}})

    async def _features(
        self, kind: EntityKind, entity_id: str, t: float
    ) -> dict[str, FeatureValue]:
        worker = self._worker
        if worker.holds(entity_id):
            metrics.LOOKUPS.labels(kind, "local").inc()
            return entity_features(
                worker.entities.all_states(), kind, entity_id, t, worker.batch_records()
            )
        metrics.LOOKUPS.labels(kind, "http").inc()
        try:
            owner = worker.app.router.key_store(worker.entities.name, entity_id.encode())
        except KeyError as exc:
            raise OwnerUnavailable(f"no worker holds {kind} {entity_id} now") from exc
        url = owner.with_path(f"/v1/features/{kind}/{entity_id}").with_query(t=repr(t))
        try:
            async with self._http.get(
                url, timeout=aiohttp.ClientTimeout(total=OWNER_TIMEOUT_S)
            ) as response:
                body: dict[str, Any] = await response.json()
                if response.status != 200:
                    raise OwnerUnavailable(
                        f"{owner} answered {response.status}: {body.get('error')}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OwnerUnavailable(f"{owner} did not answer: {exc!r}") from exc
        return {name: FeatureValue(*value) for name, value in body["features"].items()}


def _error(status: int, error: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)
