"""The router's adapters: routing behind a topic and behind HTTP, and its metrics.

Event-driven: ``handle_batch`` is the shared Pipeline's handler from
``rtml.predict.enriched`` to ``rtml.predict.routed`` (keyed by request id).
Request-driven: ``POST /v1/route`` on the side port takes one PredictEnriched
as JSON and answers the PredictRouted as JSON. Both go through ``route``.
``GET /v1/state`` shows what a checkpoint would hold now, per task.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from aiohttp import web
from rtml.services.router.handlers import CHAMPION_FALLBACK, Router, with_router_timings
from rtml.services.router.metrics import DECISIONS
from rtml.shared import topics
from rtml.shared.bandits.contextual import ContextualPolicyError
from rtml.shared.contracts import PredictEnriched, PredictRouted, from_wire
from rtml.shared.errors import ContractError
from rtml.shared.logging import bound_request, debug_enabled, get_logger
from rtml.shared.pipeline import Incoming, Outgoing
from rtml.shared.service import HealthEndpoints

MAX_ROUTE_BODY_BYTES = 256 * 1024
log = get_logger(__name__)


class RouterApp:
    def __init__(self, router: Router, rng: np.random.Generator) -> None:
        self._router = router
        self._rng = rng
        # a line per request only at DEBUG: asked once, it costs nothing per request
        self._trace = debug_enabled()

    def route(self, enriched: PredictEnriched, seen_at: float) -> PredictRouted:
        """Route ``enriched``, which the router saw at ``seen_at`` (wall clock)."""
        routed = self._router.route(enriched, self._rng)
        DECISIONS.labels(routed.task, routed.arm or CHAMPION_FALLBACK).inc()
        if self._trace:
            with bound_request(routed.id):
                log.debug("routed", arm=routed.arm, policy=routed.policy)
        return with_router_timings(routed, seen_at, time.time())

    async def handle_batch(self, batch: Sequence[Incoming]) -> list[Outgoing]:
        return [
            Outgoing(
                topics.PREDICT_ROUTED.name,
                self.route(cast(PredictEnriched, item.message), item.seen_at),
            )
            for item in batch
        ]

    def http_app(self, health: HealthEndpoints) -> web.Application:
        app = web.Application(client_max_size=MAX_ROUTE_BODY_BYTES)
        app.router.add_post("/v1/route", self.post_route)
        app.router.add_get("/v1/state", self.get_state)
        return health.mount(app)

    async def post_route(self, request: web.Request) -> web.Response:
        seen_at = time.time()
        try:
            enriched = parse_enriched(await request.read())
            with bound_request(enriched.id):
                routed = self.route(enriched, seen_at)
        except ContractError as exc:
            return refusal(exc.field, exc.reason)
        except ContextualPolicyError as exc:
            # a contextual policy's context is built from the features
            return refusal("features", str(exc))
        return web.json_response(routed.model_dump(mode="json"))

    async def get_state(self, _: web.Request) -> web.Response:
        now = time.time()
        states = [self._router.state(task, now) for task in self._router.tasks]
        # pydantic writes an undefined interval (NaN) as null, which JSON can carry, and a
        # packed snapshot's bytes as base64 (RouterState's config, which a list adapter skips)
        body = "[" + ",".join(state.model_dump_json() for state in states) + "]"
        return web.Response(text=body, content_type="application/json")


def refusal(field: str, reason: str) -> web.Response:
    problem = {"index": 0, "field": field, "reason": reason}
    return web.json_response(
        {"error": "invalid request; nothing was routed", "problems": [problem]}, status=400
    )


def parse_enriched(body: bytes) -> PredictEnriched:
    """A PredictEnriched from its JSON body; ``schema`` may be left out."""
    try:
        item: Any = json.loads(body)
    except ValueError as exc:
        raise ContractError("body", f"not JSON: {exc}") from exc
    if not isinstance(item, dict):
        raise ContractError("body", "expected a JSON object")
    wire = {"schema": PredictEnriched.SCHEMA, **item}
    return cast(PredictEnriched, from_wire(wire, PredictEnriched))
