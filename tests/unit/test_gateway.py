"""The gateway: its pure chain and answer reading, and its HTTP adapter against
in-process fake upstreams (no broker: the prediction log gets a fake producer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from rtml.services.features import handlers as features
from rtml.services.gateway.app import Gateway, HttpUpstreams, PredictionLog, upstream_urls
from rtml.services.gateway.handlers import (
    UPSTREAMS,
    UpstreamFailure,
    parse_predict,
    predict,
    read_answer,
    readiness,
)
from rtml.services.prediction.handlers import Scorer
from rtml.services.router.handlers import with_router_timings
from rtml.shared.contracts import (
    FeatureVector,
    PredictEnriched,
    Prediction,
    PredictRequest,
    PredictRouted,
    decode,
)
from rtml.shared.embedded_broker import free_port
from rtml.shared.ingest_requests import BadRequest
from rtml.shared.service import HealthEndpoints
from rtml.shared.settings import Settings
from rtml.shared.timings import hops

from rtml.cli import main as cli
from rtml.stack import SERVICES, services_for
from tests.unit.test_prediction_handlers import ETA_FEATURES, loaded, train_booster

NOW = 1_700_000_000.0
BODY = {"task": "eta", "entities": {"restaurant_id": "r1", "zone_id": "z1"}, "inputs": {"n": 2.0}}


def enriched_for(request: PredictRequest) -> PredictEnriched:
    return PredictEnriched(
        id=request.id,
        ts=request.ts,
        task=request.task,
        entities=request.entities,
        request_ts=request.ts,
        received_at=request.received_at,
        features=FeatureVector(
            feature_set="eta@1",
            names=["n"],
            values=[request.inputs.get("n", 0.0)],
            freshness_s=[None],
            defaulted=[False],
        ),
        timings_ms={"features": 0.5},
    )


def routed_for(enriched: PredictEnriched) -> PredictRouted:
    return PredictRouted(**enriched.__dict__, model_version="v1", arm="v1", propensity=0.5)


def prediction_for(routed: PredictRouted) -> Prediction:
    fields = routed.__dict__ | {"model_version": "v1"}
    fields.pop("policy")
    return Prediction(**fields, prediction=routed.features.values[0] * 10)


class FakeUpstreams:
    """The three upstreams in-process; ``fail_at`` makes one of them raise."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at = fail_at

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_at:
            raise UpstreamFailure(name, 503, "down")  # type: ignore[arg-type]

    async def enrich(self, request: PredictRequest) -> PredictEnriched:
        self._call("features")
        return enriched_for(request)

    async def route(self, enriched: PredictEnriched) -> PredictRouted:
        self._call("router")
        return routed_for(enriched)

    async def score(self, routed: PredictRouted) -> Prediction:
        self._call("prediction")
        return prediction_for(routed)


# --- the pure part -------------------------------------------------------------------


def test_parse_predict_takes_what_ingestion_takes() -> None:
    request = parse_predict(b'{"task": "eta", "inputs": {"n": 1}}', "application/json", NOW)
    assert (request.task, request.inputs, request.ts, request.received_at) == (
        "eta",
        {"n": 1.0},
        NOW,
        NOW,
    )
    with pytest.raises(BadRequest) as bad:
        parse_predict(b'{"task": "weather"}', "application/json", NOW)
    assert [p.field for p in bad.value.problems] == ["task"]
    assert "unknown task 'weather'; known tasks: eta, recs" in bad.value.problems[0].reason
    with pytest.raises(BadRequest) as bad:
        parse_predict(b"{not json", "application/json", NOW)
    assert [p.field for p in bad.value.problems] == ["body"]


async def test_predict_calls_features_router_prediction_in_turn() -> None:
    upstreams = FakeUpstreams()
    request = parse_predict(b'{"task": "eta", "inputs": {"n": 1.5}}', "", NOW)
    prediction = await predict(request, upstreams)
    assert upstreams.calls == ["features", "router", "prediction"]
    assert (prediction.id, prediction.prediction, prediction.arm) == (request.id, 15.0, "v1")


async def test_a_failing_upstream_ends_the_chain() -> None:
    upstreams = FakeUpstreams(fail_at="router")
    with pytest.raises(UpstreamFailure) as failure:
        await predict(parse_predict(b'{"task": "eta"}', "", NOW), upstreams)
    assert upstreams.calls == ["features", "router"]
    assert failure.value.upstream == "router"


class TimedUpstreams:
    """The upstreams' own timing arithmetic on a fake clock: each request reaches its
    upstream 2 ms after the previous answer was made (the HTTP hop through the
    gateway), features hold it 1 ms for freshness and take 3 ms, routing 0.5 ms."""

    def __init__(self) -> None:
        self.clock = NOW
        self.scorer = Scorer()
        self.scorer.add(loaded("v1", train_booster()))
        self.scorer.set_champion("eta", "v1")

    def _reached(self) -> float:
        self.clock += 0.002
        return self.clock

    async def enrich(self, request: PredictRequest) -> PredictEnriched:
        lookup = features.held(features.plan(request, self._reached()), 0.001)
        self.clock += 0.004
        vector = FeatureVector(
            feature_set="eta@1",
            names=list(ETA_FEATURES),
            values=[1.0] * len(ETA_FEATURES),
            freshness_s=[None] * len(ETA_FEATURES),
            defaulted=[False] * len(ETA_FEATURES),
        )
        return features.enriched(lookup, vector, self.clock)

    async def route(self, enriched: PredictEnriched) -> PredictRouted:
        seen_at = self._reached()
        self.clock += 0.0005
        return with_router_timings(routed_for(enriched), seen_at, self.clock)

    async def score(self, routed: PredictRouted) -> Prediction:
        seen_at = self._reached()
        [prediction] = self.scorer.score_batch([routed], seen_at, seen_at)
        return prediction


async def test_the_request_driven_hops_add_up_to_the_total() -> None:
    request = parse_predict(b'{"task": "eta", "inputs": {"n": 1.5}}', "", NOW)
    timings = (await predict(request, TimedUpstreams())).timings_ms
    # the same names as the event-driven chain's, the HTTP hops as its topic waits
    assert hops(timings) == {
        "to_features": 2.0,
        "freshness_wait": 1.0,
        "features": 3.0,
        "to_router": 2.0,
        "routing": 0.5,
        "to_prediction": 2.0,
        "scoring": pytest.approx(timings["total"] - 10.5, abs=0.002),
    }


def test_read_answer_returns_the_expected_message() -> None:
    request = parse_predict(b'{"task": "eta", "inputs": {"n": 1}}', "", NOW)
    body = enriched_for(request).model_dump(mode="json")
    assert read_answer("features", 200, body, PredictEnriched, request.id) == enriched_for(request)


@pytest.mark.parametrize(
    ("status", "body", "gateway_status", "says"),
    [
        (503, {"error": "not ready: recovering"}, 503, "answered 503: not ready: recovering"),
        (504, None, 503, "answered 504: no error message"),
        (500, {"error": "boom"}, 502, "answered 500: boom"),
        (422, {"error": "misfit", "problems": [{"field": "features"}]}, 502, "misfit"),
        (200, ["not", "an", "object"], 502, "without a JSON object"),
        (200, {"id": "r1", "ts": 1.0}, 502, "invalid predict_enriched: task"),
        (200, "WRONG_ID", 502, "answered for request 'other', not 'r1'"),
    ],
)
def test_read_answer_names_the_upstream_and_why(
    status: int, body: Any, gateway_status: int, says: str
) -> None:
    if body == "WRONG_ID":
        other = parse_predict(b'{"id": "other", "task": "eta", "inputs": {"n": 1}}', "", NOW)
        body = enriched_for(other).model_dump(mode="json")
    with pytest.raises(UpstreamFailure) as failure:
        read_answer("features", status, body, PredictEnriched, "r1")
    assert failure.value.status == gateway_status
    assert failure.value.upstream == "features"
    assert says in failure.value.reason
    assert failure.value.to_json()["upstream"] == "features"
    assert "features" in failure.value.to_json()["error"]


def test_readiness_names_every_upstream_that_is_not_ready() -> None:
    assert readiness({"features": True, "router": True, "prediction": True}) is True
    verdict = readiness({"features": True, "router": "down", "prediction": "no champion"})
    assert verdict == "router: down; prediction: no champion"


def test_upstream_urls_default_to_the_services_own_settings() -> None:
    settings = Settings(
        features_port=9001,
        router_host="0.0.0.0",
        router_port=9002,
        gateway_prediction_url="http://prediction:8083/",
    )
    assert upstream_urls(settings) == {
        "features": "http://127.0.0.1:9001",
        "router": "http://127.0.0.1:9002",
        "prediction": "http://prediction:8083",
    }


# --- the HTTP adapter against fake upstream servers -----------------------------------


def fake_upstream(path: str, answer: Callable[[dict[str, Any]], web.Response]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return answer(await request.json())

    app = web.Application()
    app.router.add_post(path, handle)
    return app


def json_of(message: Any) -> web.Response:
    return web.json_response(message.model_dump(mode="json"))


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, value, key))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Harness:
    def __init__(self, client: TestClient, producer: FakeProducer) -> None:
        self.client = client
        self.producer = producer


async def start_gateway(
    prediction_answer: Callable[[dict[str, Any]], web.Response],
    prediction_url: str | None = None,
) -> AsyncIterator[Harness]:
    """The gateway app over fake features and router servers, and a fake prediction
    server answering with ``prediction_answer`` (or ``prediction_url`` instead)."""
    servers = [
        TestServer(
            fake_upstream(
                "/v1/enrich", lambda b: json_of(enriched_for(PredictRequest.model_validate(b)))
            )
        ),
        TestServer(
            fake_upstream(
                "/v1/route", lambda b: json_of(routed_for(PredictEnriched.model_validate(b)))
            )
        ),
        TestServer(fake_upstream("/v1/score", prediction_answer)),
    ]
    for server in servers:
        await server.start_server()
    urls = dict(zip(UPSTREAMS, (str(s.make_url("")).rstrip("/") for s in servers), strict=True))
    if prediction_url:
        urls["prediction"] = prediction_url
    producer = FakeProducer()
    try:
        async with aiohttp.ClientSession() as http:
            app = Gateway(
                HttpUpstreams(http, urls),
                PredictionLog(producer),  # type: ignore[arg-type]
            ).app(HealthEndpoints("gateway"))
            async with TestClient(TestServer(app)) as client:
                yield Harness(client, producer)
    finally:
        for server in servers:
            await server.close()


def score(body: dict[str, Any]) -> web.Response:
    return json_of(prediction_for(PredictRouted.model_validate(body)))


@pytest.fixture
async def gateway() -> AsyncIterator[Harness]:
    async for harness in start_gateway(score):
        yield harness


async def test_adapter_answers_the_prediction_and_logs_it(gateway: Harness) -> None:
    response = await gateway.client.post("/v1/predict", json={**BODY, "id": "req-1"})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["id"], body["prediction"], body["model_version"]) == ("req-1", 20.0, "v1")
    for _ in range(100):  # the log is written after the answer
        if gateway.producer.sent:
            break
        await asyncio.sleep(0.01)
    [(topic, value, key)] = gateway.producer.sent
    assert (topic, key) == ("rtml.predictions", b"req-1")
    assert decode(value, Prediction).model_dump(mode="json") == body


async def test_adapter_refuses_bad_input_with_field_and_reason(gateway: Harness) -> None:
    response = await gateway.client.post("/v1/predict", json={**BODY, "inputs": {"n": "x"}})
    assert response.status == 400
    [problem] = (await response.json())["problems"]
    assert problem["field"].startswith("inputs")
    assert gateway.producer.sent == []


@pytest.mark.parametrize(
    ("answer", "closed_port", "status"),
    [
        (lambda b: web.json_response({"error": "no champion"}, status=503), False, 503),
        (lambda b: web.json_response({"id": "x"}), False, 502),
        (score, True, 503),
    ],
    ids=["answers-503", "answers-no-prediction", "not-listening"],
)
async def test_adapter_names_the_failing_upstream(
    answer: Callable[[dict[str, Any]], web.Response], closed_port: bool, status: int
) -> None:
    url = f"http://127.0.0.1:{free_port()}" if closed_port else None
    async for harness in start_gateway(answer, url):
        response = await harness.client.post("/v1/predict", json=BODY)
        assert response.status == status
        assert (await response.json())["upstream"] == "prediction"
        assert (response.headers.get("Retry-After") == "1") == (status == 503)
        assert harness.producer.sent == []


# --- where it runs ----------------------------------------------------------------------


def test_only_the_request_wiring_runs_the_gateway() -> None:
    assert "gateway" not in {spec.name for spec in services_for("event")}
    request = services_for("request")
    assert request[: len(SERVICES)] == SERVICES
    assert [spec.module for spec in request[len(SERVICES) :]] == ["rtml.services.gateway"]
    assert Settings().gateway_port == request[-1].default_port


def test_rtml_up_takes_the_wiring() -> None:
    result = CliRunner().invoke(cli, ["up", "--wiring", "both"])
    assert result.exit_code == 2 and "'event', 'request'" in result.output
