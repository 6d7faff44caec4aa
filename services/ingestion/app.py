"""Ingestion's HTTP adapter: ``POST /v1/events`` and ``POST /v1/predict``."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from rtml.services.ingestion.config import IngestionSettings
from rtml.services.ingestion.openapi import openapi_document
from rtml.services.ingestion.predictions import PredictionWaiter
from rtml.shared import topics
from rtml.shared.contracts import Message, new_id
from rtml.shared.ingest_requests import (
    BadRequest,
    Problem,
    parse_body,
    predict_request,
    validate_events,
)
from rtml.shared.kafka import ensure_topics, send_messages
from rtml.shared.logging import bind_request, bound_request, get_logger
from rtml.shared.service import HealthEndpoints
from rtml.shared.settings import Settings, revealed

log = get_logger(__name__)

EVENTS_ACCEPTED = Counter("rtml_ingest_events_accepted_total", "events acknowledged by the broker")
REQUESTS_REJECTED = Counter("rtml_ingest_requests_rejected_total", "requests refused", ["status"])
PREDICT_REQUESTS = Counter("rtml_ingest_predict_requests_total", "predict requests accepted")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RETRY_AFTER_S = "1"
MAX_WAIT_MS = 30_000


class Ingestion:
    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        waiter: PredictionWaiter,
        limits: IngestionSettings | None = None,
    ) -> None:
        self._settings = settings
        self._limits = limits or IngestionSettings()
        self._producer = producer
        self._waiter = waiter
        # after a failed send the broker may have come back empty (the embedded
        # one keeps nothing): check the topics before the next send
        self._recheck_topics = False

    def app(self, health: HealthEndpoints) -> web.Application:
        app = web.Application(
            client_max_size=self._settings.ingest_max_body_bytes,
            middlewares=[
                _hang_up_on_stalled_bodies,
                self._request_id,
                _json_errors,
                self._auth,
                self._limit_body,
            ],
        )
        app.router.add_post("/v1/events", self.post_events)
        app.router.add_post("/v1/predict", self.post_predict)
        app.router.add_get("/v1/predictions/{request_id}", self.get_prediction)
        app.router.add_get("/openapi.json", self.get_openapi)
        return health.mount(app)

    async def get_openapi(self, _: web.Request) -> web.Response:
        document = openapi_document(
            max_batch=self._settings.ingest_max_batch,
            max_wait_ms=MAX_WAIT_MS,
            bearer=bool(revealed(self._settings.ingest_token)),
        )
        return web.json_response(document)

    @web.middleware
    async def _request_id(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get("X-Request-Id") or new_id()
        with bound_request(rid):
            response = await handler(request)
            response.headers["X-Request-Id"] = rid
            return response

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = revealed(self._settings.ingest_token)
        if token and request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                REQUESTS_REJECTED.labels("401").inc()
                raise web.HTTPUnauthorized(
                    reason="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
                )
        return await handler(request)

    @web.middleware
    async def _limit_body(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # refuse a declared oversize body before reading a byte of it
        limit = self._settings.ingest_max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        return await handler(request)

    async def post_events(self, request: web.Request) -> web.Response:
        try:
            items = parse_body(await self._read_body(request), request.content_type)
            events = validate_events(items, self._settings.ingest_max_batch)
        except BadRequest as exc:
            return _bad_request(exc)
        unavailable = await self._publish(topics.EVENTS.name, events)
        if unavailable:
            return unavailable
        EVENTS_ACCEPTED.inc(len(events))
        return web.json_response({"accepted": len(events), "ids": [e.id for e in events]})

    async def post_predict(self, request: web.Request) -> web.Response:
        try:
            wait_ms = _wait_ms(request)
            items = parse_body(await self._read_body(request), request.content_type)
            predict = predict_request(items[0] if len(items) == 1 else items)
        except BadRequest as exc:
            return _bad_request(exc)
        # from here on, the id the whole chain logs (the HTTP one stays in the header:
        # a body's id may hold anything a header may not)
        bind_request(predict.id)
        answer = self._waiter.expect(predict.id) if wait_ms else None
        try:
            unavailable = await self._publish(topics.PREDICT_REQUESTS.name, [predict])
            if unavailable:
                return unavailable
            PREDICT_REQUESTS.inc()
            log.debug("predict_request_accepted", task=predict.task, wait_ms=wait_ms)
            if answer is not None:
                try:
                    prediction = await asyncio.wait_for(answer, wait_ms / 1000)
                    return web.json_response(prediction.model_dump(mode="json"))
                except TimeoutError:
                    pass
            return web.json_response({"request_id": predict.id}, status=202)
        finally:
            self._waiter.forget(predict.id)

    async def get_prediction(self, request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        prediction = self._waiter.recent(request_id)
        if prediction is None:
            return web.json_response(
                {
                    "error": f"no prediction for request {request_id!r} here: not scored yet, "
                    "older than the ones kept, or scored before this replica started"
                },
                status=404,
            )
        return web.json_response(prediction.model_dump(mode="json"))

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body (decompressed, within the size limit) or an HTTP error."""
        timeout_s = self._limits.ingest_body_timeout_s
        try:
            return await asyncio.wait_for(request.read(), timeout_s)
        except TimeoutError:
            REQUESTS_REJECTED.labels("408").inc()
            raise web.HTTPRequestTimeout(
                reason=f"the body did not arrive within {timeout_s:g}s"
            ) from None
        except ConnectionResetError:
            # an everyday event, not a server error: left to aiohttp it logs a stack trace
            REQUESTS_REJECTED.labels(str(ClientClosedRequest.status_code)).inc()
            log.info("client_hung_up_mid_body", path=request.path)
            raise ClientClosedRequest() from None

    async def _publish(self, topic: str, messages: Sequence[Message]) -> web.Response | None:
        """Send and wait for the broker's acks; a 503 response if they do not come."""
        try:
            await asyncio.wait_for(
                self._send_all(topic, messages), self._settings.ingest_ack_timeout_s
            )
            return None
        except (KafkaError, TimeoutError) as exc:
            self._recheck_topics = True
            log.warning("broker_unavailable", error=repr(exc), topic=topic)
            REQUESTS_REJECTED.labels("503").inc()
            return web.json_response(
                {"error": "broker unavailable, nothing was acknowledged; retry"},
                status=503,
                headers={"Retry-After": RETRY_AFTER_S},
            )

    async def _send_all(self, topic: str, messages: Sequence[Message]) -> None:
        if self._recheck_topics:
            await ensure_topics(self._settings)
            self._recheck_topics = False
        await send_messages(self._producer, topic, messages)


class ClientClosedRequest(web.HTTPClientError):
    """nginx's 499: the client went away before the answer; only logs and metrics see it."""

    status_code = 499


@web.middleware
async def _hang_up_on_stalled_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Send a 408 at once and close the connection: aiohttp would otherwise go on
    reading what is left of the stalled body for ten more seconds."""
    response = await handler(request)
    if response.status == 408 and request.transport is not None:
        await response.prepare(request)
        await response.write_eof()
        request.transport.close()
    return response


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors as JSON bodies, like every other answer of this API."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            REQUESTS_REJECTED.labels("413").inc()
        headers = {
            k: v
            for k, v in exc.headers.items()
            if k.lower() not in ("content-type", "content-length")
        }
        # aiohttp's default text is "STATUS: Reason"; a specific text says more
        detail = exc.reason if (exc.text or "").startswith(f"{exc.status}:") else exc.text
        return web.json_response({"error": detail}, status=exc.status, headers=headers)


def _wait_ms(request: web.Request) -> int:
    raw = request.query.get("wait_ms", "0")
    # ASCII digits only (str.isdigit() also takes "²", which int() refuses), and few
    # of them (int() refuses thousands)
    plain = raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_WAIT_MS))
    if not plain or int(raw) > MAX_WAIT_MS:
        raise BadRequest([Problem(-1, "wait_ms", f"must be an integer from 0 to {MAX_WAIT_MS}")])
    return int(raw)


def _bad_request(exc: BadRequest) -> web.Response:
    REQUESTS_REJECTED.labels("400").inc()
    return web.json_response(
        {
            "error": "invalid request; nothing was written",
            "problems": [p.to_json() for p in exc.problems],
        },
        status=400,
    )
