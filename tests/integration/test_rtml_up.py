"""`rtml up` end to end: broker + services supervised, ready table, and a stop that
leaves nothing behind: within 10 s of SIGTERM or SIGINT (also when started in the
background of a script, where SIGINT is ignored, and while the stack is still
starting), and even when `rtml up` itself is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import xgboost as xgb
from rtml.shared.embedded_broker import free_port
from rtml.shared.model_store import ModelStore

from rtml.stack import SERVICES
from tests.helpers import rtml, send_one_event, survivors

# rtml up must be gone this long after SIGTERM or SIGINT, its children with it
EXIT_DEADLINE_S = 10.0


def bootstrap_champion(root) -> None:
    X = np.random.default_rng(0).random((50, 3))
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(X, label=X.sum(axis=1)), num_boost_round=2)
    store = ModelStore(root)
    record = store.register(
        booster, task="eta", feature_set="test@1", data_range={}, params={}, metrics={}
    )
    store.set_champion("eta", record.version)


def up_env(store: Path) -> dict[str, str]:
    """Every port free, the model store in ``store``, the embedded broker."""
    env = {
        **os.environ,
        "RTML_KAFKA_PORT": str(free_port()),
        "RTML_MODEL_STORE": str(store),
        **{spec.port_env: str(free_port()) for spec in SERVICES},
    }
    env.pop("RTML_KAFKA_BOOTSTRAP", None)
    return env


def children_once_started(up: subprocess.Popen, timeout_s: float = 60.0) -> list[psutil.Process]:
    """The broker and every service, once all exist."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert up.poll() is None, f"rtml up exited early with {up.returncode}"
        children = psutil.Process(up.pid).children(recursive=True)
        if len(children) >= 1 + len(SERVICES):
            return children
        time.sleep(0.1)
    raise AssertionError(f"rtml up started {len(children)} children in {timeout_s}s")


def test_rtml_up_reports_ready_accepts_an_event_and_stops_on_sigterm(tmp_path) -> None:
    bootstrap_champion(tmp_path)
    env = up_env(tmp_path)
    up = subprocess.Popen(
        rtml("up", "--ready-timeout", "60"), env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert up.stdout is not None
        lines = []
        while not lines or not lines[-1].startswith("rtml is up"):
            line = up.stdout.readline()
            assert line, f"rtml up exited early with {up.wait()}: {''.join(lines)}"
            lines.append(line)
        table = "".join(lines)
        assert (
            next(line for line in lines if line.startswith("kafka "))
            .rstrip()
            .endswith("embedded broker")
        ), table
        for spec in SERVICES:
            row = next(line for line in lines if line.startswith(f"{spec.name} "))
            assert " ready " in row, table
        assert send_one_event(f"http://127.0.0.1:{env['RTML_INGEST_PORT']}")["accepted"] == 1
        children = psutil.Process(up.pid).children(recursive=True)
    finally:
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=EXIT_DEADLINE_S)
    assert up.returncode == 0
    assert survivors(children, timeout_s=0) == []
    # stdout is a pipe: no escape codes from rtml up or any service (faust's spinner had some)
    output = table + rest
    assert "\x1b" not in output, output[max(0, output.index("\x1b") - 200) :][:400]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_stop_while_starting_in_the_background_of_a_script_leaves_nothing(
    tmp_path, stop: signal.Signals
) -> None:
    """As `rtml up &` in a shell script starts it (SIGINT ignored), with no model (the
    prediction service never gets ready), signalled while its services start."""
    up = subprocess.Popen(
        rtml("up", "--ready-timeout", "120"),
        env=up_env(tmp_path),
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        children = children_once_started(up)
    finally:
        up.send_signal(stop)
        code = up.wait(EXIT_DEADLINE_S)
    assert code == 0
    assert survivors(children, timeout_s=0) == []


def test_children_die_with_rtml_up_when_it_is_killed(tmp_path) -> None:
    up = subprocess.Popen(rtml("up"), env=up_env(tmp_path), stdout=subprocess.DEVNULL)
    try:
        children = children_once_started(up)
    finally:
        up.kill()
        up.wait(EXIT_DEADLINE_S)
    orphans = survivors(children, timeout_s=EXIT_DEADLINE_S)
    for orphan in orphans:  # a failed test leaves no stack running either
        orphan.kill()
    assert orphans == [], [" ".join(orphan.cmdline()) for orphan in orphans]
