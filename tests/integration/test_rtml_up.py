"""`rtml up` end to end: broker + services supervised, ready table, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

import numpy as np
import xgboost as xgb
from rtml.shared.embedded_broker import free_port
from rtml.shared.model_store import ModelStore

from rtml.stack import SERVICES


def bootstrap_champion(root) -> None:
    X = np.random.default_rng(0).random((50, 3))
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(X, label=X.sum(axis=1)), num_boost_round=2)
    store = ModelStore(root)
    record = store.register(
        booster, task="eta", feature_set="test@1", data_range={}, params={}, metrics={}
    )
    store.set_champion("eta", record.version)


def test_rtml_up_reports_ready_accepts_an_event_and_stops_on_sigterm(tmp_path) -> None:
    bootstrap_champion(tmp_path)
    ports = {spec.port_env: str(free_port()) for spec in SERVICES}
    env = {
        **os.environ,
        "RTML_KAFKA_PORT": str(free_port()),
        "RTML_MODEL_STORE": str(tmp_path),
        **ports,
    }
    env.pop("RTML_KAFKA_BOOTSTRAP", None)
    up = subprocess.Popen(
        ["rtml", "up", "--ready-timeout", "60"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert up.stdout is not None
        lines = []
        while not lines or not lines[-1].startswith("rtml is up"):
            line = up.stdout.readline()
            assert line, f"rtml up exited early with {up.wait()}: {''.join(lines)}"
            lines.append(line)
        table = "".join(lines)
        for spec in SERVICES:
            row = next(line for line in lines if line.startswith(f"{spec.name} "))
            assert " ready " in row, table
        event = {
            "schema": "courier_online",
            "ts": 1_700_000_000,
            "courier_id": "c1",
            "zone_id": "z1",
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['RTML_INGEST_PORT']}/v1/events",
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and json.load(response)["accepted"] == 1
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
    assert code == 0
