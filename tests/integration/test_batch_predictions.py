"""Stage 1 end to end: ``rtml batch predict --task recs`` writes the compacted topic, a
re-run sends nothing, and a real prediction service serves the lists -- a known
segment its own, an unseen visitor the global one, counted as a cold start."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner
from rtml.shared.embedded_broker import free_port
from rtml.shared.settings import get_settings

from rtml.cli import main
from tests.helpers import service_process


def recommend(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/v1/recommend", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def until_served(url: str, body: dict, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, answer = recommend(url, body)
        if status == 200:
            return answer
        time.sleep(0.5)
    raise AssertionError(f"no batch list served within {timeout_s}s (last: {status} {answer})")


def test_batch_predict_publishes_once_and_the_prediction_service_serves(
    settings, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("RTML_KAFKA_PORT", str(settings.kafka_port))
    get_settings.cache_clear()
    try:
        args = ["batch", "predict", "--task", "recs", "--interval", "0.1", "--runs", "2"]
        result = CliRunner().invoke(main, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "run 1: published 9 lists (0 unchanged)" in result.output
    assert "run 2: published 0 lists (9 unchanged)" in result.output

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "RTML_KAFKA_PORT": str(settings.kafka_port),
        "RTML_PREDICTION_PORT": str(port),
        "RTML_MODEL_STORE": str(tmp_path / "store"),
    }
    with service_process("rtml.services.prediction", env, f"{url}/healthz"):
        known = until_served(url, {"inputs": {"user_feature_0": 1, "user_feature_1": 0}, "k": 3})
        assert (known["segment"], known["cold_start"], len(known["items"])) == (
            "all/u0=1,u1=0",
            False,
            3,
        )
        cold = until_served(url, {"k": 3})
        assert (cold["segment"], cold["cold_start"]) == ("all/global", True)
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
    assert "rtml_recs_cold_start_total 1.0" in metrics
    assert "rtml_recs_batch_served_total 2.0" in metrics
