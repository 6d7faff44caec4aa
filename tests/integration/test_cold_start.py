"""Cold start: `rtml up` on an empty model store, the marketplace simulator driving it
through the ingestion API, and a scored prediction from the first model, which the
trainer bootstrapped from the labelled history on the topics. Until then the
prediction service's /readyz says what it waits for and how many labels there are."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from rtml.shared.contracts import PredictRequest
from rtml.shared.embedded_broker import free_port
from rtml.shared.model_store import ModelStore

from rtml.stack import SERVICES
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from tests.helpers import post_json, wait_http

HOUR = 3600.0
# the smallest threshold the trainer takes; two simulated hours bring ~380 labels
MIN_LABELS = 200
SIMULATED_HOURS = 2.0


def readyz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for_readyz(url: str, done, timeout_s: float) -> list[str]:
    """Poll /readyz until ``done(status, body)``; every distinct champion verdict seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status, body = readyz(url)
        except OSError:  # not listening yet
            time.sleep(0.5)
            continue
        verdict = body.get("failing", {}).get("champion", "ready")
        if not seen or seen[-1] != verdict:
            seen.append(verdict)
        if done(status, body):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"{url}/readyz: not done within {timeout_s}s; seen {seen}")


def predict(ingest_url: str, request: PredictRequest) -> dict:
    body = {"task": request.task, "entities": request.entities, "inputs": request.inputs,
            "ts": request.ts}  # fmt: skip
    return post_json(f"{ingest_url}/v1/predict?wait_ms=20000", body, timeout_s=30)


def test_rtml_up_bootstraps_the_first_model_from_the_simulated_history(tmp_path: Path) -> None:
    ports = {spec.port_env: str(free_port()) for spec in SERVICES}
    store = ModelStore(tmp_path / "models")
    env = {
        **os.environ,
        "RTML_KAFKA_PORT": str(free_port()),
        "RTML_MODEL_STORE": str(store),
        "RTML_WAREHOUSE": str(tmp_path / "warehouse"),
        "RTML_TRAINER_BOOTSTRAP_MIN_LABELS": str(MIN_LABELS),
        **ports,
    }
    env.pop("RTML_KAFKA_BOOTSTRAP", None)
    ingestion = f"http://127.0.0.1:{ports['RTML_INGEST_PORT']}"
    prediction = f"http://127.0.0.1:{ports['RTML_PREDICTION_PORT']}"
    with (tmp_path / "up.log").open("w") as out:
        up = subprocess.Popen(
            ["rtml", "up", "--ready-timeout", "120"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_http(f"{ingestion}/readyz", timeout_s=120)
        before = wait_for_readyz(
            prediction, lambda _, body: "0 so far" in json.dumps(body), timeout_s=120
        )
        assert store.champion("eta") is None
        waiting = before[-1]
        assert waiting.startswith("no eta champion loaded; the trainer bootstraps the first eta")
        assert f"once {MIN_LABELS} requests have their label: 0 so far" in waiting

        simulator = subprocess.run(
            ["rtml", "simulate", "--hours", str(SIMULATED_HOURS), "--speedup", "0",
             "--target", ingestion],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert simulator.returncode == 0, simulator.stdout + simulator.stderr

        verdicts = wait_for_readyz(prediction, lambda status, _: status == 200, timeout_s=240)
        counted = [
            int(match.group(1)) for v in verdicts if (match := re.search(r"(\d+) so far", v))
        ]
        assert counted == sorted(counted), verdicts  # the count only grows

        champion = store.champion("eta")
        assert champion is not None, "ready without a champion in the store"
        assert champion.parent_version is None and champion.data_range["source"] == "topics"
        assert champion.data_range["examples"] >= MIN_LABELS
        assert [record.version for record in store.list()] == [champion.version]

        requests = [
            m for m in simulate(SimConfig(seed=0), SIMULATED_HOURS * HOUR)
            if isinstance(m, PredictRequest)
        ]  # fmt: skip
        prediction_body = predict(ingestion, requests[-1])
        assert prediction_body["model_version"] == champion.version
        assert isinstance(prediction_body["prediction"], float)
        assert 0 < prediction_body["prediction"] < 300  # minutes
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(90)
    assert code == 0, (tmp_path / "up.log").read_text()[-5000:]
