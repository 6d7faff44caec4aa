"""A user's own task through the real stack: the fraud example (examples/fraud).

The example is installed as a package of its own (pip, offline, into a folder of
the test's) and found through its ``rtml.tasks`` entry point (``RTML_TASKS`` left
empty), so rtml loads eta, fraud and recs; nothing of rtml names it. On a broker of
its own:

1. a day of generated card traffic is an event log: ``rtml batch features`` publishes
   its batch features and ``rtml train --task fraud --event-log`` makes the first
   version (a binary:logistic classifier), registered and announced;
2. ingestion, features, router, prediction, collector and trainer run as real
   processes (prediction and trainer for the fraud task);
3. four more hours of traffic go through ingestion: authorizations, their predict
   requests, chargebacks within the label window (an hour, set for the collector).

What is asserted: every request gets a prediction, a probability, from the first
version, with the card's features as the reference computes them from the events
before it; the collector joins chargebacks and closes unlabelled windows as
negatives (``when_missing``), so the warehouse holds fraud examples of both labels;
the trainer fine-tunes the first version on them, registers the new version with
its parent, and announces it, and the router adds it as an arm of the fraud task.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rtml.shared import topics
from rtml.shared.contracts import Prediction, PredictRequest
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.eventlog import write_event_log
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.features.reference import task_vectors
from rtml.shared.kafka import ensure_topics
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.settings import Settings
from rtml.shared.tasks import registry
from rtml.shared.warehouse import Warehouse

from rtml.client import AsyncClient
from rtml.tasks.eta.simulator.driver import drive
from tests.helpers import read_topic
from tests.stack import running_stack, services_named, stack_env

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01, event time of the history
HISTORY_H, LIVE_H = 24.0, 4.0
LIVE_LABEL_WINDOW_S = HOUR
SERVICES = services_named("ingestion", "features", "router", "prediction", "collector", "trainer")
READY_TIMEOUT_S = 180.0
FINE_TUNE_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def fraud_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example installed into a folder of its own; this process loads it too."""
    root = tmp_path_factory.mktemp("fraud")
    source, site = root / "source", root / "site"
    shutil.copytree(EXAMPLE, source)  # pip builds in the source tree
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(source)],
        check=True,
    )  # fmt: skip
    sys.path.insert(0, str(site))
    previous = os.environ.get("RTML_TASKS")
    os.environ["RTML_TASKS"] = ",".join((previous or "").split(",") + ["rtml_fraud.spec"])
    registry.tasks.cache_clear()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        if previous is None:
            os.environ.pop("RTML_TASKS")
        else:
            os.environ["RTML_TASKS"] = previous
        registry.tasks.cache_clear()


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_task_of_ones_own_runs_through_the_real_stack(fraud_site: Path, tmp_path: Path) -> None:
    from rtml_fraud.generator import FraudConfig, generate

    history = list(generate(FraudConfig(seed=1), HISTORY_H * HOUR, T0))
    live_config = FraudConfig(seed=2, chargeback_delay_s=(120.0, 0.8 * LIVE_LABEL_WINDOW_S))
    live = list(generate(live_config, LIVE_H * HOUR, T0 + HISTORY_H * HOUR))
    log = tmp_path / "history.evl"
    write_event_log(log, history)
    store, warehouse = ModelStore(tmp_path / "models"), tmp_path / "warehouse"
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        asyncio.run(ensure_topics(settings))
        env = {
            **stack_env(settings, store, warehouse),
            # the installed entry points: eta, fraud (the example's) and recs
            "RTML_TASKS": "",
            "PYTHONPATH": os.pathsep.join([str(fraud_site), os.environ.get("PYTHONPATH", "")]),
            "RTML_PREDICTION_TASK": "fraud",
            "RTML_TRAINER_TASK": "fraud",
            "RTML_RETRAIN_INTERVAL": "10",
            "RTML_COLLECTOR_LABEL_WINDOWS_S": f'{{"fraud": {LIVE_LABEL_WINDOW_S}}}',
        }
        listed = run(["rtml", "tasks", "list"], env)
        assert "fraud" in listed and "binary, binary:logistic, kept by logloss" in listed
        run(["rtml", "batch", "features", str(log)], env)
        run(["rtml", "train", "--task", "fraud", "--event-log", str(log)], env)
        first = store.champion("fraud")
        assert first is not None and first.parent_version is None

        with running_stack(settings, SERVICES, env, READY_TIMEOUT_S) as stack:
            ingestion = stack.of("ingestion")[0].url
            asyncio.run(send(live, ingestion))
            requests = [m for m in live if isinstance(m, PredictRequest)]
            predictions = asyncio.run(predictions_of(settings, {r.id for r in requests}))
            fine_tuned = wait_for_fine_tune(store, first.version)
            arms = wait_for_arm(stack.of("router")[0].url, "fraud", fine_tuned.version)

    # every request scored, a probability, with the vector the reference computes from the
    # live events (the stack saw no others) and the history's batch features
    batch = {record.entity: record for record in compute_batch_features(history)}
    spec = registry.task_spec("fraud")
    reference = {r.id: v for r, v in task_vectors(live, spec, batch=batch)}
    for request in requests:
        prediction = predictions[request.id]
        assert prediction.task == "fraud" and 0.0 < prediction.prediction < 1.0
        assert prediction.features.values == pytest.approx(
            reference[request.id].values, rel=0, abs=1e-9
        ), request.id
    assert {p.model_version for p in predictions.values()} >= {first.version}

    # the label join: chargebacks (1) and windows closed without one (0)
    table = Warehouse(warehouse).read("fraud")
    assert len(table) >= 200 and {0.0, 1.0} <= set(table.y.tolist())
    assert set(table.ids.tolist()) <= {r.id for r in requests}

    # a fine-tuned version of the first, announced, and an arm of the fraud router
    assert fine_tuned.parent_version == first.version and fine_tuned.task == "fraud"
    assert {first.version, fine_tuned.version} <= arms


async def send(messages: list, ingestion: str) -> None:
    async with AsyncClient(ingestion) as client:
        stats = await drive(messages, client, speedup=0)
    assert stats.failed == 0


async def predictions_of(settings: Settings, ids: set[str]) -> dict[str, Prediction]:
    """The prediction of every request (a prediction's id is its request's)."""
    messages = await read_topic(settings, topics.PREDICTIONS.name, len(ids), timeout_s=180)
    found = {m.id: m for m in messages if isinstance(m, Prediction) and m.id in ids}
    assert set(found) == ids, f"{len(ids - set(found))} of {len(ids)} requests not predicted"
    return found


def wait_for_fine_tune(store: ModelStore, parent: str) -> ModelRecord:
    deadline = time.monotonic() + FINE_TUNE_TIMEOUT_S
    while time.monotonic() < deadline:
        children = [r for r in store.list("fraud") if r.parent_version == parent]
        if children:
            return children[0]
        time.sleep(2)
    raise AssertionError(f"no fine-tune of {parent} within {FINE_TUNE_TIMEOUT_S:.0f} s")


def router_arms(router: str, task: str) -> set[str]:
    """The arms the router routes ``task`` over now (its posterior gauges)."""
    with urllib.request.urlopen(f"{router}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    return {
        sample.labels["arm"]
        for family in families
        for sample in family.samples
        if sample.name == "rtml_router_arm_share" and sample.labels.get("task") == task
    }


def wait_for_arm(router: str, task: str, arm: str) -> set[str]:
    deadline = time.monotonic() + 60
    while arm not in (arms := router_arms(router, task)) and time.monotonic() < deadline:
        time.sleep(1)
    return arms
