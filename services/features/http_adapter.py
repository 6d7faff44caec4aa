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
lookups, if any, and on the owner before each remote one. The answer's timings
name the hops the Kafka wiring names: a remote lookup's round trip is
``lookup_forward``, less the owner's wait, which is ``freshness_wait``.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import aiohttp
from aiohttp import web
from rtml.services.features import metrics
from rtml.services.features.app import FeaturesWorker
from rtml.services.features.handlers import (
    Lookup,
    account,
    advance,
    enriched,
    entity_features,
    feature_vector,
    held,
    plan,
)
from rtml.shared.contracts import PredictRequest, from_wire
from rtml.shared.errors import ContractError
from rtml.shared.features.definitions import FeatureValue
from rtml.shared.logging import bound_request, get_logger
from rtml.shared.tasks.registry import tasks
from rtml.shared.timings import FEATURES, LOOKUP_FORWARD

log = get_logger(__name__)

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
        seen_at = time.time()
        if (verdict := self._worker.serving()) is not True:
            return _error(503, f"not ready: {verdict}")
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise ContractError("", "expected a JSON object")
            predict = from_wire({"schema": PredictRequest.SCHEMA, **body}, PredictRequest)
            assert isinstance(predict, PredictRequest)
            lookup = plan(predict, seen_at)
        except ValueError as exc:
            return _error(400, f"body: not JSON: {exc}")
        except ContractError as exc:
            return _error(400, str(exc), field=exc.field)
        with bound_request(predict.id):
            return await self._enrich(lookup)

    async def _enrich(self, lookup: Lookup) -> web.Response:
        # an owner asked over HTTP waits for its own events (entity_features); a wait of
        # nothing still counts, so that both wirings name the same hops
        held_s = 0.0
        if any(self._worker.holds(entity_id) for _, entity_id in lookup.pending):
            held_s = await self._worker.applied_until_now()
        lookup = held(lookup, held_s)
        try:
            while lookup.next_entity is not None:
                lookup = await self._look_up(lookup)
        except OwnerUnavailable as exc:
            return _error(503, str(exc))
        vector = feature_vector(lookup, self._worker.batch_records())
        metrics.observe(vector, "http")
        log.debug(
            "request_enriched", feature_set=vector.feature_set, defaulted=sum(vector.defaulted)
        )
        return web.json_response(enriched(lookup, vector, time.time()).model_dump(mode="json"))

    async def entity_features(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        entity_id = request.match_info["entity_id"]
        if kind not in tasks().entities:
            return _error(404, f"no features for {kind!r} entities", field="kind")
        try:
            t = float(request.query["t"])
        except (KeyError, ValueError):
            t = math.nan
        if not math.isfinite(t):
            return _error(400, "t: the event time to read the features at, in seconds", field="t")
        if not self._worker.holds(entity_id) or self._worker.serving() is not True:
            return _error(503, f"this worker does not hold {kind} {entity_id} now")
        worker = self._worker
        held_s = await worker.applied_until_now()
        found = entity_features(
            worker.entities.all_states(),
            kind,
            entity_id,
            t,
            worker.batch_records(),
        )
        return web.json_response(
            {
                "features": {name: list(v) for name, v in found.items()},
                # the asker's freshness_wait, not its lookup_forward
                "held_s": held_s,
            }
        )

    async def _look_up(self, lookup: Lookup) -> Lookup:
        """The lookup after its next entity's features were found, here or on their owner."""
        kind, entity_id = lookup.next_entity  # type: ignore[misc]
        worker = self._worker
        t = lookup.request.ts
        if worker.holds(entity_id):
            metrics.LOOKUPS.labels(kind, "local").inc()
            found = entity_features(
                worker.entities.all_states(), kind, entity_id, t, worker.batch_records()
            )
            return advance(lookup, found)
        metrics.LOOKUPS.labels(kind, "http").inc()
        lookup = account(lookup, FEATURES, time.time())
        found, owner_held_s = await self._ask_owner(kind, entity_id, t)
        # the round trip to the owner, less the owner's freshness wait
        lookup = account(lookup, LOOKUP_FORWARD, time.time() - owner_held_s)
        return advance(held(lookup, owner_held_s), found)

    async def _ask_owner(
        self, kind: str, entity_id: str, t: float
    ) -> tuple[dict[str, FeatureValue], float]:
        """The entity's features from the worker that holds it, and how long it held the
        question for freshness (s)."""
        worker = self._worker
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
        found = {name: FeatureValue(*value) for name, value in body["features"].items()}
        # an owner of the previous release (a rolling upgrade) does not say
        return found, body.get("held_s", 0.0)


def _error(status: int, error: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)
