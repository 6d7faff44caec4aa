"""`rtml demo --duration short` end to end, once, as a newcomer runs it (free ports here)
but with its storage in a real S3 API (moto's server) and every version mirrored to a
real MLflow server; then `rtml skew` on what the real stack logged during it.

One run serves every check: the demo on a local workdir differs only in the location
the services are given (``Demo.storage``), which the object-storage run proves every
service honours, and a second run would cost CI the demo's ~90 s again."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rtml.shared.embedded_broker import free_port
from rtml.shared.eventlog import write_event_log
from rtml.shared.model_store import ModelStore
from rtml.shared.warehouse import Warehouse

from rtml.demo import HOUR, PLANS, Demo
from rtml.stack import SERVICES
from rtml.tasks.eta.simulator.world import Marketplace
from tests.helpers import rtml
from tests.object_storage import MlflowServer, S3Server

# the demo bounds itself at 600 s; on a loaded machine it can take most of that
pytestmark = pytest.mark.timeout(900)
PLAN = "short"
SEED = 7


@dataclass(frozen=True)
class DemoRun:
    workdir: Path
    storage: str  # the s3:// location of the model store and the warehouse
    mlflow_uri: str
    model_prefix: str  # of the registered model names in MLflow
    done: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def short_demo(
    tmp_path_factory: pytest.TempPathFactory, s3: S3Server, mlflow_tracking: MlflowServer
) -> DemoRun:
    workdir = tmp_path_factory.mktemp("demo")
    storage = s3.new_prefix("demo")
    prefix = f"demo{uuid.uuid4().hex[:6]}-"
    env = {
        **os.environ,
        "RTML_KAFKA_PORT": str(free_port()),
        "RTML_MLFLOW_TRACKING_URI": mlflow_tracking.tracking_uri,
        "RTML_MLFLOW_MODEL_PREFIX": prefix,
        **{spec.port_env: str(free_port()) for spec in SERVICES},
    }
    env.pop("RTML_KAFKA_BOOTSTRAP", None)
    done = subprocess.run(
        rtml("demo", "--duration", PLAN, "--seed", str(SEED), "--workdir", str(workdir),
             "--storage", storage),
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return DemoRun(workdir, storage, mlflow_tracking.tracking_uri, prefix, done)


def test_short_demo_predicts_learns_the_storm_and_reports_no_failure(short_demo) -> None:
    done = short_demo.done
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "every stage worked" in out
    predictions = int(re.search(r"predictions\s+([\d,]+)", out).group(1).replace(",", ""))
    assert predictions > 0
    assert "└─" in out and "drift" in out  # a fine-tuned version, with the reason it was trained
    latency = re.search(r"p50 ([\d.]+) ms\s+p99 ([\d.]+) ms", out)
    assert latency and float(latency.group(2)) < 60_000, "latency measured from the wall clock"


def test_every_service_kept_its_state_in_the_bucket_and_every_version_is_in_mlflow(
    short_demo,
) -> None:
    store = ModelStore(f"{short_demo.storage}/models", mirror=None)
    records = store.list("eta")
    assert len(records) >= 2 and any(r.parent_version for r in records)  # a fine-tune, too
    champion = store.champion("eta")
    assert champion is not None and store.load(champion.version)[1] == champion
    assert len(Warehouse(f"{short_demo.storage}/warehouse").read("eta")) > 0
    assert sorted(p.name for p in short_demo.workdir.iterdir()) == ["warmup.evl"]  # no local state

    client = MlflowClient(short_demo.mlflow_uri)
    name = f"{short_demo.model_prefix}eta"
    mirrored = client.search_model_versions(f"name = '{name}'")
    assert sorted(v.tags["rtml_version"] for v in mirrored) == [r.version for r in records]
    assert client.get_model_version_by_alias(name, "champion").tags["rtml_version"] == (
        champion.version
    )


def live_log(folder: Path) -> Path:
    """The events the demo drove through the stack (the world after its warm-up),
    regenerated in ``folder``: the simulator gives the same messages for the same config."""
    plan = PLANS[PLAN]
    world = Marketplace(Demo(plan, SEED, folder, print).config)
    list(world.run(plan.warmup_h * HOUR))
    path = folder / "live.evl"
    write_event_log(path, world.run((plan.warmup_h + plan.live_h) * HOUR))
    return path


def test_rtml_skew_finds_no_mismatch_between_what_the_stack_logged_and_its_event_log(
    short_demo, tmp_path: Path
) -> None:
    # whatever the demo's verdict, what it logged must match
    skew = subprocess.run(
        rtml("skew", "--task", "eta", "--event-log", str(live_log(tmp_path)),
             "--batch-log", str(short_demo.workdir / "warmup.evl")),
        env={**os.environ, "RTML_WAREHOUSE": f"{short_demo.storage}/warehouse"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    compared = re.search(r"compared (\d+) logged vectors \((\d+) not in the log\)", skew.stdout)
    assert compared and int(compared.group(1)) > 0 and compared.group(2) == "0", skew.stdout
    assert skew.returncode == 0 and "no mismatch" in skew.stdout, skew.stdout
