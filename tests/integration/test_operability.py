"""What an operator relies on, against a real stack: ingestion, features, router,
prediction, collector and trainer as processes on an embedded broker of their own,
each logging at DEBUG to a file of its own.

- every metric the alert rules and the Grafana dashboard name is on a service's
  /metrics (infra/k8s/components/monitoring), consumer lag among them from an
  aiokafka group, a faust app and a reader without a group;
- hammering unknown paths and ids adds no series to any service's /metrics;
- one predict request is followed by its id through the JSON logs of every service
  on its path, up to the training example its label made;
- retiring a version takes its series off the router and the collector.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import start_producer
from rtml.shared.model_announcements import Action, announce
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.settings import Settings

from tests.helpers import wait_http
from tests.infra import monitoring
from tests.integration.test_wiring import (
    REQUEST_TS,
    marketplace_events,
    predict_body,
    register_champion,
    send_events,
    train_champion,
)

READY_TIMEOUT_S = 180.0
SERVICES = {
    "ingestion": "RTML_INGEST_PORT",
    "features": "RTML_FEATURES_PORT",
    "router": "RTML_ROUTER_PORT",
    "prediction": "RTML_PREDICTION_PORT",
    "collector": "RTML_COLLECTOR_PORT",
    "trainer": "RTML_TRAINER_PORT",
}
# the services a predict request passes through, in order, and what each logs of it
FOLLOWED = {
    "ingestion": "predict_request_accepted",
    "features": "request_enriched",
    "router": "routed",
    "prediction": "scored",
    "collector": "example_emitted",
}
# the order the request is for: placed by marketplace_events(), delivered by the test
ORDER, RESTAURANT, ZONE = "r1-o0", "r1", "z1"


@dataclass
class Running:
    name: str
    url: str
    log: Path
    process: subprocess.Popen

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line the service wrote; each must be one JSON object (no escape codes, no
        stray prints), or the line that is not fails the test."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@dataclass
class Stack:
    settings: Settings
    store: ModelStore
    champion: str
    services: dict[str, Running]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("operability")
    store = ModelStore(root / "models")
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        champion = asyncio.run(register_champion(settings, store, train_champion()))
        env = {
            **os.environ,
            "RTML_KAFKA_PORT": str(broker.port),
            "RTML_MODEL_STORE": str(store),
            "RTML_WAREHOUSE": str(root / "warehouse"),
            "RTML_LOG_LEVEL": "DEBUG",
            **{port_env: str(free_port()) for port_env in SERVICES.values()},
        }
        env.pop("RTML_KAFKA_BOOTSTRAP", None)
        services: dict[str, Running] = {}
        try:
            for name, port_env in SERVICES.items():
                log = root / f"{name}.log"
                with log.open("wb") as out:
                    process = subprocess.Popen(
                        [sys.executable, "-m", f"rtml.services.{name}"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                url = f"http://127.0.0.1:{env[port_env]}"
                services[name] = Running(name, url, log, process)
            for service in services.values():
                wait_http(f"{service.url}/readyz", timeout_s=READY_TIMEOUT_S)
            events = marketplace_events()
            asyncio.run(send_events(settings, events))
            yield Stack(settings, store, champion, services)
        finally:
            for service in services.values():
                service.process.send_signal(signal.SIGTERM)
            for service in services.values():
                try:
                    service.process.wait(30)
                except subprocess.TimeoutExpired:
                    service.process.kill()
                    service.process.wait()


@pytest.fixture
def stack(running: Stack) -> dict[str, Running]:
    return running.services


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def post_json(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def exposition(service: Running) -> str:
    status, text = get(f"{service.url}/metrics")
    assert status == 200, (service.name, status)
    return text


def sample_names(text: str) -> set[str]:
    """The names a PromQL query can use: every sample's, and those of a family with no
    sample yet (a labelled metric nothing has touched), by its type's suffixes."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def series(text: str) -> set[str]:
    """Each series of an exposition: its name and labels, without the value."""
    return {
        line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(stack):
    exported = set().union(*(sample_names(exposition(s)) for s in stack.values()))
    # lag from an aiokafka group, a faust app and a reader without a group
    lag = {
        (s.labels["group"], s.labels["topic"])
        for service in stack.values()
        for family in text_string_to_metric_families(exposition(service))
        for s in family.samples
        if s.name == "rtml_consumer_lag"
    }
    assert {
        ("rtml-router", "rtml.predict.enriched"),
        ("rtml-features", "rtml.events"),
        ("rtml-collector", "rtml.predictions"),
        ("none", "rtml.predictions"),
    } <= lag
    named = monitoring.metrics_named(
        monitoring.rule_expressions() + monitoring.dashboard_expressions()
    )

    assert named, "the rules and the dashboard name no rtml metric?"
    assert named <= exported, f"named but exported by no service: {sorted(named - exported)}"


def answer(url: str, method: str = "GET", body: bytes | None = None) -> int:
    request = urllib.request.Request(url, body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def hammer(service: Running, marker: str) -> None:
    """Unknown paths, unknown ids on routes that take one, and methods on the wrong route."""
    for i in range(20):
        unique = f"{marker}{i}"
        for path in (f"/{unique}.php", f"/v1/{unique}/x", f"/{unique}/{unique}/{unique}"):
            assert answer(f"{service.url}{path}") == 404, (service.name, path)
        # ids on the routes that take one (a 404 where the service has no such route)
        answer(f"{service.url}/v1/predictions/{unique}")
        answer(f"{service.url}/v1/features/zone/{unique}?t=1")
        answer(f"{service.url}/v1/features/{unique}/{unique}?t=1")
        assert answer(f"{service.url}/{unique}", "POST", b"{}") == 404
        assert answer(f"{service.url}/metrics", "DELETE") == 405


def requests_series(service) -> set[str]:
    """The series of ``service`` but the consumer lag's: a consumer's partitions get
    theirs at its first fetch, whenever that comes, and they are bounded by the
    assignment, not by what is asked."""
    return {line for line in series(exposition(service)) if "rtml_consumer_lag" not in line}


def test_unknown_paths_and_ids_add_no_series(stack):
    for service in stack.values():
        hammer(service, "warmup")  # the first of each kind of answer makes its series
    before = {name: requests_series(service) for name, service in stack.items()}

    for service in stack.values():
        hammer(service, "scan")
    after = {name: requests_series(service) for name, service in stack.items()}

    for name in stack:
        assert len(after[name]) == len(before[name]), (name, sorted(after[name] - before[name]))
        assert not any("scan" in line or "warmup" in line for line in after[name]), name
    unmatched = [line for line in after["ingestion"] if 'route="unmatched"' in line]
    assert unmatched and any('route="/v1/predictions/{request_id}"' in line
                             for line in after["ingestion"])  # fmt: skip


def test_one_request_is_followed_through_every_service_by_its_id(stack):
    body = predict_body(0)
    body["entities"] = {**body["entities"], "order_id": ORDER}
    assert body["entities"]["restaurant_id"] == RESTAURANT
    url = f"{stack['ingestion'].url}/v1/predict?wait_ms=20000"

    status, prediction = post_json(url, body)
    assert status == 200, prediction
    request_id = prediction["id"]
    delivered = {
        "schema": "order_delivered",
        "ts": REQUEST_TS + 1500,
        "order_id": ORDER,
        "courier_id": f"{ZONE}-c0",
        "restaurant_id": RESTAURANT,
        "zone_id": ZONE,
        "placed_ts": REQUEST_TS - 1800,
    }
    status, accepted = post_json(f"{stack['ingestion'].url}/v1/events", delivered)
    assert status == 200, accepted

    deadline = time.monotonic() + 60
    missing = dict(FOLLOWED)
    while missing and time.monotonic() < deadline:
        for name, event in list(missing.items()):
            lines = [
                line for line in stack[name].log_lines() if line.get("request_id") == request_id
            ]
            if any(line["event"] == event for line in lines):
                del missing[name]
        time.sleep(0.5)

    assert not missing, f"no line of the request {request_id} from {missing}"
    for name in FOLLOWED:
        lines = [line for line in stack[name].log_lines() if line.get("request_id") == request_id]
        assert all(line["service"] == name for line in lines)
    # and no other request's lines carry it (the binding ends with the request)
    trainer = [
        line for line in stack["trainer"].log_lines() if line.get("request_id") == request_id
    ]
    assert trainer == []
    other = uuid.uuid4().hex
    assert not any(
        line.get("request_id") == other for s in stack.values() for line in s.log_lines()
    )


def test_a_retired_versions_series_leave_the_router_and_the_collector(running: Stack):
    """Last in the module: it retires the champion."""
    stack = running.services
    series_of = {
        "router": "rtml_router_decisions_total",
        "collector": "rtml_model_live_error_count",
    }

    def carrying_the_champion(name: str) -> list[str]:
        return [
            line
            for line in exposition(stack[name]).splitlines()
            if line.startswith(series_of[name]) and f'"{running.champion}"' in line
        ]

    # the request followed above was routed to the champion and joined with its label
    assert carrying_the_champion("router") and carrying_the_champion("collector")
    record = running.store.record(running.champion)
    asyncio.run(announce_once(running.settings, record, "retired"))

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        carrying_the_champion("router") or carrying_the_champion("collector")
    ):
        time.sleep(0.5)
    assert carrying_the_champion("router") == [] and carrying_the_champion("collector") == []


async def announce_once(settings: Settings, record: ModelRecord, action: Action) -> None:
    producer = await start_producer(settings)
    try:
        await announce(producer, record, action)
    finally:
        await producer.stop()
