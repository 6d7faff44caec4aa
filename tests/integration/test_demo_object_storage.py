"""`rtml demo --duration short --storage s3://...` end to end against a real S3 API (moto's
server) with every version mirrored to a real MLflow server: every service keeps the model
store and the warehouse in the bucket, nothing on the local disk."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rtml.shared.embedded_broker import free_port
from rtml.shared.model_store import ModelStore
from rtml.shared.warehouse import Warehouse

from rtml.stack import SERVICES
from tests.object_storage import MlflowServer, S3Server

# the demo bounds itself at 600 s; on a loaded machine it can take most of that
pytestmark = pytest.mark.timeout(900)


def test_the_short_demo_runs_on_object_storage_and_mirrors_to_mlflow(
    s3: S3Server, mlflow_tracking: MlflowServer, tmp_path: Path
) -> None:
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
        ["rtml", "demo", "--duration", "short", "--seed", "7", "--workdir", str(tmp_path),
         "--storage", storage],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "every stage worked" in done.stdout
    store = ModelStore(f"{storage}/models", mirror=None)
    records = store.list("eta")
    assert len(records) >= 2 and any(r.parent_version for r in records)  # a fine-tune, too
    champion = store.champion("eta")
    assert champion is not None and store.load(champion.version)[1] == champion
    assert len(Warehouse(f"{storage}/warehouse").read("eta")) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warmup.evl"]  # nothing else local

    client = MlflowClient(mlflow_tracking.tracking_uri)
    mirrored = client.search_model_versions(f"name = '{prefix}eta'")
    assert sorted(v.tags["rtml_version"] for v in mirrored) == [r.version for r in records]
    alias = client.get_model_version_by_alias(f"{prefix}eta", "champion")
    assert alias.tags["rtml_version"] == champion.version
