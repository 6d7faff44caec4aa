"""The Python client's calls, answers and retries against a real aiohttp server that
answers as a script says (503 with or without Retry-After, 400 with problems, ...).
Every test runs with both clients: AsyncClient (aiohttp) and Client (httpx)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from aiohttp import web
from rtml.shared.contracts import FeatureVector, Prediction
from rtml.shared.embedded_broker import free_port

from rtml.client import AsyncClient, Client, Pending, Rejected, ServerError, Unavailable
from rtml.client.protocol import retry_after_s
from rtml.tasks.eta.events import CourierOnline

TOKEN = "tok-8d1f"


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Script:
    """What the server answers, in turn per path (then the default answer), and what it saw."""

    answers: dict[str, list[web.Response]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def then(self, path: str, *responses: web.Response) -> None:
        self.answers.setdefault(path, []).extend(responses)


def not_now(status: int = 503, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return web.json_response({"error": "broker unavailable; retry"}, status=status, headers=headers)


class ScriptedIngestion:
    """An aiohttp app with ingestion's routes, run on its own thread and loop so that
    the blocking client can call it too."""

    def __init__(self) -> None:
        self.script = Script()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ScriptedIngestion:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        seen = Seen(
            request.path, dict(request.query), dict(request.headers), body, time.monotonic()
        )
        self.script.seen.append(seen)
        scripted = self.script.answers.get(request.path)
        if scripted:
            return scripted.pop(0)
        if request.path == "/v1/events":
            ids = [event["id"] for event in msgpack.unpackb(body)]
            return web.json_response({"accepted": len(ids), "ids": ids})
        if request.path == "/v1/predict":
            return web.json_response({"request_id": json.loads(body)["id"]}, status=202)
        return web.json_response({"error": "no prediction"}, status=404)


@pytest.fixture
def server() -> Iterator[ScriptedIngestion]:
    with ScriptedIngestion() as running:
        yield running


class Blocking:
    """Either client behind blocking calls, so that each test runs against both."""

    def __init__(self, kind: str, url: str, **options: Any) -> None:
        self.kind, self.url, self.options = kind, url, {"token": TOKEN, **options}

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "sync":
            with Client(self.url, **self.options) as client:
                return getattr(client, method)(*args, **kwargs)

        async def run() -> Any:
            async with AsyncClient(self.url, **self.options) as client:
                return await getattr(client, method)(*args, **kwargs)

        return asyncio.run(run())


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def event(courier: str = "c1") -> CourierOnline:
    return CourierOnline(ts=1_700_000_000.0, courier_id=courier, zone_id="z1")


def sent_ids(seen: Seen) -> list[str]:
    return [e["id"] for e in msgpack.unpackb(seen.body)]


def test_a_503_is_retried_after_its_retry_after_with_the_same_ids(
    server: ScriptedIngestion, kind: str
) -> None:
    server.script.then("/v1/events", not_now(retry_after="1"))
    events = [
        event("c1"),
        {"schema": "courier_online", "ts": 1.0, "courier_id": "c2", "zone_id": "z"},
    ]
    ids = Blocking(kind, server.url)("publish", events)
    first, second = server.script.seen
    assert sent_ids(first) == sent_ids(second) == ids
    assert ids[0] == events[0].id and len(ids[1]) == 32  # the mapping got an id, kept
    assert first.body == second.body
    # Retry-After: 1 is waited for, not the backoff's 0.2 s
    assert 0.9 <= second.at - first.at < 3


def test_without_retry_after_the_backoff_is_short_and_every_not_now_is_retried(
    server: ScriptedIngestion, kind: str
) -> None:
    server.script.then("/v1/events", not_now(502), not_now(504), not_now(429))
    ids = Blocking(kind, server.url)("publish", event())
    assert len(server.script.seen) == 4
    assert len({s.body for s in server.script.seen}) == 1
    assert ids == sent_ids(server.script.seen[0])
    assert server.script.seen[-1].at - server.script.seen[0].at < 3


def test_a_400_is_not_retried_and_names_index_field_and_reason(
    server: ScriptedIngestion, kind: str
) -> None:
    problems = [{"index": 1, "field": "zone_id", "reason": "Field required"}]
    server.script.then(
        "/v1/events",
        web.json_response(
            {"error": "invalid request; nothing was written", "problems": problems}, status=400
        ),
    )
    with pytest.raises(Rejected) as refused:
        Blocking(kind, server.url)("publish", [event(), {"schema": "courier_online", "ts": 1}])
    assert len(server.script.seen) == 1
    assert refused.value.status == 400
    [problem] = refused.value.problems
    assert (problem.index, problem.field, problem.reason) == (1, "zone_id", "Field required")
    assert "[1] zone_id: Field required" in str(refused.value)


def test_a_server_error_is_not_retried(server: ScriptedIngestion, kind: str) -> None:
    server.script.then("/v1/events", web.Response(status=500, text="boom"))
    with pytest.raises(ServerError, match="500 boom"):
        Blocking(kind, server.url)("publish", event())
    assert len(server.script.seen) == 1


def test_the_retry_budget_ends_in_unavailable_without_the_token(
    server: ScriptedIngestion, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.script.then("/v1/events", *[not_now() for _ in range(50)])
    caplog.set_level(logging.WARNING, logger="rtml.client")
    started = time.monotonic()
    with pytest.raises(Unavailable) as unavailable:
        Blocking(kind, server.url, retry_for_s=1.0)("publish", event())
    assert time.monotonic() - started < 3
    assert 2 <= len(server.script.seen) < 50
    assert "503" in str(unavailable.value) and "/v1/events" in str(unavailable.value)
    assert caplog.records, "each retry is logged"
    for text in [str(unavailable.value), repr(unavailable.value), caplog.text]:
        assert TOKEN not in text


def test_connection_refused_is_retried_then_unavailable(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(Unavailable, match="attempts"):
        Blocking(kind, url, retry_for_s=0.5)("publish", event())
    assert time.monotonic() - started < 3


def test_the_token_is_sent_as_a_bearer_and_never_shown(server: ScriptedIngestion) -> None:
    Blocking("sync", server.url)("publish", event())
    Blocking("async", server.url)("publish", event())
    assert [s.headers["Authorization"] for s in server.script.seen] == [f"Bearer {TOKEN}"] * 2
    assert TOKEN not in repr(Client(server.url, token=TOKEN))
    assert TOKEN not in repr(AsyncClient(server.url, token=TOKEN))
    Blocking("sync", server.url, token=None)("publish", event())
    assert "Authorization" not in server.script.seen[-1].headers


def prediction_body(request_id: str, task: str = "eta") -> dict[str, Any]:
    features = FeatureVector(
        feature_set="eta@1", names=["distance_km"], values=[3.0], freshness_s=[None],
        defaulted=[False],
    )  # fmt: skip
    # built without validation: the task may be one this process does not know
    prediction = Prediction.model_construct(
        id=request_id, ts=1.0, task=task, request_ts=1.0, features=features,
        model_version="v1", prediction=31.5, entities={}, received_at=None, arm=None,
        propensity=1.0, fell_back=False, timings_ms={},
    )  # fmt: skip
    return prediction.model_dump(mode="json")


def test_predict_keeps_its_request_id_across_retries_and_waits(
    server: ScriptedIngestion, kind: str
) -> None:
    server.script.then("/v1/predict", not_now())
    answer = Blocking(kind, server.url)(
        "predict", "eta", entities={"restaurant_id": "r1"}, inputs={"distance_km": 3.0},
        wait_ms=250,
    )  # fmt: skip
    first, second = server.script.seen
    assert first.body == second.body and first.query == second.query == {"wait_ms": "250"}
    sent = json.loads(first.body)
    assert answer == Pending(sent["id"])
    assert sent == {
        "id": sent["id"], "task": "eta", "entities": {"restaurant_id": "r1"},
        "inputs": {"distance_km": 3.0},
    }  # fmt: skip


def test_predict_answers_the_prediction_made_within_the_wait(
    server: ScriptedIngestion, kind: str
) -> None:
    server.script.then("/v1/predict", web.json_response(prediction_body("req-1", task="fraud")))
    answer = Blocking(kind, server.url)("predict", "fraud", request_id="req-1", ts=5.0, wait_ms=10)
    # "fraud" is no task of this process: ingestion checked it, the client takes it as given
    assert isinstance(answer, Prediction)
    assert (answer.id, answer.task, answer.prediction) == ("req-1", "fraud", 31.5)
    assert json.loads(server.script.seen[0].body)["ts"] == 5.0


def test_a_prediction_is_fetched_by_request_id_or_none(
    server: ScriptedIngestion, kind: str
) -> None:
    server.script.then("/v1/predictions/a/b c", web.json_response(prediction_body("a/b c")))
    fetched = Blocking(kind, server.url)("prediction", "a/b c")
    assert isinstance(fetched, Prediction) and fetched.id == "a/b c"
    assert Blocking(kind, server.url)("prediction", "not-made") is None


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_s("3") == 3.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:05 GMT", now=now) == 5.0
    assert retry_after_s("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("9" * 5000) is None
