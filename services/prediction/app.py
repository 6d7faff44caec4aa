"""The prediction service's adapters: the scorer behind a topic and behind HTTP.

Event-driven: ``handle_batch`` is the shared Pipeline's handler for
``rtml.predict.routed``; each fetched batch (capped by RTML_PREDICTION_MAX_BATCH)
is one micro-batch, and its predictions go to ``rtml.predictions`` keyed by
request id. Request-driven: ``POST /v1/score`` on the side port takes one
PredictRouted as JSON and answers the Prediction as JSON. Both call the same
``score`` and so the same ``Scorer.score_batch``.
"""

from __future__ import annotations

import json
import time
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any, cast

from aiohttp import web
from rtml.services.prediction.handlers import FeatureMismatch, NoModel, Scorer
from rtml.services.prediction.metrics import (
    BATCH_SIZE,
    PREDICTIONS,
    SCORING_SECONDS,
    observe_latency,
)
from rtml.shared import topics
from rtml.shared.contracts import Prediction, PredictRouted, from_wire
from rtml.shared.errors import ContractError
from rtml.shared.logging import bound_request, debug_enabled, get_logger
from rtml.shared.pipeline import Incoming, Outgoing
from rtml.shared.service import HealthEndpoints
from rtml.shared.tasks.spec import ServingHook
from rtml.shared.timings import TOTAL

MAX_SCORE_BODY_BYTES = 256 * 1024
log = get_logger(__name__)


class PredictionApp:
    def __init__(self, scorer: Scorer, hooks: Sequence[ServingHook] = ()) -> None:
        self._scorer = scorer
        # a line per prediction only at DEBUG: asked once, it costs nothing per request
        self._trace = debug_enabled()
        # what the tasks serve besides their models' predictions (TaskSpec.serving)
        self._hooks = hooks

    def score(self, routed: Sequence[PredictRouted], seen_at: float) -> list[Prediction]:
        """Score ``routed``, which the service read at ``seen_at`` (wall clock)."""
        now = time.time()
        started = time.perf_counter()
        # On the event loop, not a worker thread: measured here, the hop to a thread
        # cost 0.3-0.4 ms per call (more than scoring one request) and gained no
        # batched throughput, while a batch of 256 holds the loop for a few ms only,
        # far inside the consumer session timeout.
        predictions = self._scorer.score_batch(routed, seen_at, now)
        SCORING_SECONDS.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(routed))
        tally = Tally((p.task, p.model_version, str(p.fell_back).lower()) for p in predictions)
        for labels, count in tally.items():
            PREDICTIONS.labels(*labels).inc(count)
        observe_latency(predictions)
        if self._trace:
            for prediction in predictions:
                with bound_request(prediction.id):
                    log.debug(
                        "scored",
                        version=prediction.model_version,
                        fell_back=prediction.fell_back,
                        total_ms=prediction.timings_ms.get(TOTAL),
                    )
        return predictions

    async def handle_batch(self, batch: Sequence[Incoming]) -> list[Outgoing]:
        routed = [cast(PredictRouted, item.message) for item in batch]
        # one fetch brought the whole batch (shared/pipeline.py)
        seen_at = batch[0].seen_at
        return [Outgoing(topics.PREDICTIONS.name, p) for p in self.score(routed, seen_at)]

    def http_app(self, health: HealthEndpoints) -> web.Application:
        app = web.Application(client_max_size=MAX_SCORE_BODY_BYTES)
        app.router.add_post("/v1/score", self.post_score)
        for hook in self._hooks:
            app.router.add_routes(hook.routes())
        return health.mount(app)

    async def post_score(self, request: web.Request) -> web.Response:
        seen_at = time.time()
        try:
            routed = parse_routed(await request.read())
        except ContractError as exc:
            return _problem(400, "invalid request; nothing was scored", exc.field, exc.reason)
        try:
            with bound_request(routed.id):
                [prediction] = self.score([routed], seen_at)
        except FeatureMismatch as exc:
            return _problem(422, "the features do not fit the model", "features", str(exc))
        except NoModel as exc:
            return web.json_response({"error": str(exc)}, status=503, headers={"Retry-After": "1"})
        return web.json_response(prediction.model_dump(mode="json"))


def parse_routed(body: bytes) -> PredictRouted:
    """A PredictRouted from its JSON body; ``schema`` may be left out."""
    try:
        item: Any = json.loads(body)
    except ValueError as exc:
        raise ContractError("body", f"not JSON: {exc}") from exc
    if not isinstance(item, dict):
        raise ContractError("body", "expected a JSON object")
    return cast(PredictRouted, from_wire({"schema": PredictRouted.SCHEMA, **item}, PredictRouted))


def _problem(status: int, error: str, field: str, reason: str) -> web.Response:
    # the same shape as ingestion's 4xx bodies
    problem = {"index": 0, "field": field, "reason": reason}
    return web.json_response({"error": error, "problems": [problem]}, status=status)
