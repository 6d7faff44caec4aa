"""The gateway's adapters: ``POST /v1/predict`` over HTTP, the upstreams over HTTP,
and the prediction log on ``rtml.predictions``.

``POST /v1/predict`` takes the body ingestion's ``POST /v1/predict`` takes and
answers the Prediction that ingestion answers with ``?wait_ms=`` -- but made by
calling features (``POST /v1/enrich``), router (``POST /v1/route``) and
prediction (``POST /v1/score``) in turn, through one keep-alive session.

Log and wait needs every served prediction on ``rtml.predictions`` (the
collector joins it with its label into training data, and turns it into a
reward for the router), and ``/v1/score`` does not write it. The gateway does,
after answering and off the request path: the answer never waits for the
broker, and a prediction the broker does not take is counted
(``rtml_gateway_predictions_logged_total{outcome="failed"}``) and logged, not
retried -- the client has its answer; only the training example is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from rtml.services.gateway.handlers import (
    UPSTREAMS,
    M,
    Upstream,
    UpstreamFailure,
    parse_predict,
    predict,
    read_answer,
    readiness,
    unavailable,
)
from rtml.shared import topics
from rtml.shared.contracts import (
    Message,
    PredictEnriched,
    Prediction,
    PredictRequest,
    PredictRouted,
    encode,
)
from rtml.shared.ingest_requests import BadRequest
from rtml.shared.logging import bound_request, get_logger
from rtml.shared.service import HealthEndpoints
from rtml.shared.settings import Settings

log = get_logger(__name__)

ANSWERS = Counter("rtml_gateway_requests_total", "predict requests answered", ["status"])
LATENCY = Histogram("rtml_gateway_request_seconds", "predict request handling time")
UPSTREAM_LATENCY = Histogram(
    "rtml_gateway_upstream_seconds", "time to one upstream's answer", ["upstream"]
)
LOGGED = Counter(
    "rtml_gateway_predictions_logged_total", "predictions sent to rtml.predictions", ["outcome"]
)
MAX_PREDICT_BODY_BYTES = 256 * 1024
# predictions waiting for the broker's ack; beyond this the log drops (and counts)
# rather than let a broker outage grow the gateway's memory
MAX_PENDING_LOG = 10_000
PROBE_INTERVAL_S = 1.0
PATHS: Mapping[Upstream, str] = {
    "features": "/v1/enrich",
    "router": "/v1/route",
    "prediction": "/v1/score",
}


def upstream_urls(settings: Settings) -> dict[Upstream, str]:
    """Each upstream's base URL: as configured, else its own host and port setting."""
    s = settings
    return {
        "features": _url(s.gateway_features_url, s.features_host, s.features_port),
        "router": _url(s.gateway_router_url, s.router_host, s.router_port),
        "prediction": _url(s.gateway_prediction_url, s.prediction_host, s.prediction_port),
    }


def _url(explicit: str | None, host: str, port: int) -> str:
    if explicit:
        return explicit.rstrip("/")
    # a service listening on every interface is reached on loopback
    return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"


class HttpUpstreams:
    """The chain's three calls over one aiohttp session (its pool keeps connections alive)."""

    def __init__(self, http: aiohttp.ClientSession, urls: Mapping[Upstream, str]) -> None:
        self._http = http
        self._urls = urls

    async def enrich(self, request: PredictRequest) -> PredictEnriched:
        return await self._call("features", request, PredictEnriched)

    async def route(self, enriched: PredictEnriched) -> PredictRouted:
        return await self._call("router", enriched, PredictRouted)

    async def score(self, routed: PredictRouted) -> Prediction:
        return await self._call("prediction", routed, Prediction)

    async def _call(self, upstream: Upstream, message: Message, expect: type[M]) -> M:
        url = self._urls[upstream] + PATHS[upstream]
        started = time.perf_counter()
        try:
            async with self._http.post(url, json=message.model_dump(mode="json")) as response:
                status = response.status
                try:
                    body: Any = await response.json(content_type=None)
                except ValueError:
                    body = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unavailable(upstream, f"{url} did not answer: {exc!r}") from exc
        finally:
            UPSTREAM_LATENCY.labels(upstream).observe(time.perf_counter() - started)
        return read_answer(upstream, status, body, expect, message.id)


class PredictionLog:
    """Sends answered predictions to rtml.predictions without holding up the answer."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, prediction: Prediction) -> None:
        if len(self._pending) >= MAX_PENDING_LOG:
            LOGGED.labels("dropped").inc()
            log.warning("prediction_not_logged", request_id=prediction.id, why="backlog full")
            return
        task = asyncio.create_task(self._send(prediction))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, prediction: Prediction) -> None:
        try:
            ack = await self._producer.send(
                topics.PREDICTIONS.name, encode(prediction), key=prediction.key
            )
            await ack
        except KafkaError as exc:
            LOGGED.labels("failed").inc()
            log.warning("prediction_not_logged", request_id=prediction.id, error=repr(exc))
        else:
            LOGGED.labels("logged").inc()

    async def drain(self, timeout_s: float) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=timeout_s)


class UpstreamProbe:
    """Polls each upstream's /readyz, so that the gateway's /readyz says which is not ready."""

    def __init__(self, http: aiohttp.ClientSession, urls: Mapping[Upstream, str]) -> None:
        self._http = http
        self._urls = urls
        self.verdicts: dict[Upstream, bool | str] = {name: "not probed yet" for name in UPSTREAMS}

    def readiness(self) -> bool | str:
        return readiness(self.verdicts)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name in UPSTREAMS:
                self.verdicts[name] = await self._probe(self._urls[name])
            try:
                await asyncio.wait_for(stop.wait(), PROBE_INTERVAL_S)
            except TimeoutError:
                pass

    async def _probe(self, url: str) -> bool | str:
        try:
            async with self._http.get(
                f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=PROBE_INTERVAL_S)
            ) as response:
                return (
                    True if response.status == 200 else f"{url}/readyz answered {response.status}"
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{url} did not answer: {type(exc).__name__}"


class Gateway:
    def __init__(self, upstreams: HttpUpstreams, predictions: PredictionLog) -> None:
        self._upstreams = upstreams
        self._predictions = predictions

    def app(self, health: HealthEndpoints) -> web.Application:
        app = web.Application(client_max_size=MAX_PREDICT_BODY_BYTES)
        app.router.add_post("/v1/predict", self.post_predict)
        return health.mount(app)

    async def post_predict(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await self._answer(request)
        LATENCY.observe(time.perf_counter() - started)
        ANSWERS.labels(str(response.status)).inc()
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        try:
            wanted = parse_predict(await request.read(), request.content_type, time.time())
        except BadRequest as exc:
            return web.json_response(
                {
                    "error": "invalid request; nothing was predicted",
                    "problems": [p.to_json() for p in exc.problems],
                },
                status=400,
            )
        with bound_request(wanted.id):
            try:
                prediction = await predict(wanted, self._upstreams)
            except UpstreamFailure as exc:
                log.warning("upstream_failed", upstream=exc.upstream, why=exc.reason)
                headers = {"Retry-After": "1"} if exc.status == 503 else None
                return web.json_response(exc.to_json(), status=exc.status, headers=headers)
            self._predictions.record(prediction)
        return web.json_response(prediction.model_dump(mode="json"))
