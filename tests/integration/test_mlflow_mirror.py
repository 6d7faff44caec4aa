"""MLflow as a peer registry, against a real ``mlflow server`` (SQLite) and a model store on
a real S3 API: versions with their tags and artifact, the champion alias, and an MLflow
that is down never holding up a registration."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import numpy as np
import xgboost as xgb
from click.testing import CliRunner
from mlflow.artifacts import download_artifacts
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from prometheus_client import REGISTRY
from rtml.services.prediction.cli import models
from rtml.shared.embedded_broker import free_port
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.registry_mirror import (
    BackgroundMirror,
    MirrorSettings,
    MlflowRegistry,
    version_tags,
)

from tests.object_storage import MlflowServer, S3Server

FEATURES = np.random.default_rng(3).random((64, 3), dtype=np.float32)


def booster() -> xgb.Booster:
    labels = FEATURES @ np.array([1.0, 2.0, 3.0], dtype=np.float32)
    return xgb.train({"nthread": 1, "max_depth": 2}, xgb.DMatrix(FEATURES, labels), 3)


def settings(tracking_uri: str, **overrides: object) -> MirrorSettings:
    # a model name of its own per test: the server is shared by the session
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    return MirrorSettings(mlflow_tracking_uri=tracking_uri, mlflow_model_prefix=prefix, **overrides)


def register(store: ModelStore, parent: ModelRecord | None = None) -> ModelRecord:
    return store.register(
        booster(), task="eta", feature_set="eta@1", params={"max_depth": 2},
        data_range={"source": "warehouse", "examples": 64}, metrics={"holdout_mae": 1.5},
        parent_version=parent.version if parent else None,
    )  # fmt: skip


def mirrored(tracking_uri: str, name: str) -> dict[str, object]:
    """rtml version -> its MLflow model version, as the MLflow server has them."""
    found = MlflowClient(tracking_uri).search_model_versions(f"name = '{name}'")
    return {version.tags["rtml_version"]: version for version in found}


def champion_of(tracking_uri: str, name: str) -> ModelVersion:
    return MlflowClient(tracking_uri).get_model_version_by_alias(name, "champion")


def failures(operation: str) -> float:
    labels = {"operation": operation, "outcome": "failed"}
    return REGISTRY.get_sample_value("rtml_mlflow_mirror_total", labels) or 0.0


def test_every_version_and_the_champion_appear_in_mlflow_with_tags_and_artifact(
    mlflow_tracking: MlflowServer, s3: S3Server
) -> None:
    config = settings(mlflow_tracking.tracking_uri)
    mirror = BackgroundMirror(MlflowRegistry(config), config)
    store = ModelStore(s3.new_prefix("models"), mirror=mirror)
    scratch = register(store)
    tuned = register(store, parent=scratch)
    store.set_champion("eta", tuned.version)

    assert mirror.flush(120)

    name = f"{config.mlflow_model_prefix}eta"
    versions = mirrored(mlflow_tracking.tracking_uri, name)
    assert set(versions) == {scratch.version, tuned.version}
    for record in (scratch, tuned):
        assert versions[record.version].tags == version_tags(record)
    assert versions[tuned.version].tags["rtml_parent"] == scratch.version
    champion = champion_of(mlflow_tracking.tracking_uri, name)
    assert champion.tags["rtml_version"] == tuned.version
    folder = Path(download_artifacts(champion.source, tracking_uri=mlflow_tracking.tracking_uri))
    artifact = (folder / f"{tuned.version}.ubj").read_bytes()
    assert hashlib.sha256(artifact).hexdigest() == tuned.sha256


def test_mlflow_down_never_holds_up_a_registration_and_models_mirror_catches_up(
    mlflow_tracking: MlflowServer, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = settings(nowhere, mlflow_attempts=2)
    mirror = BackgroundMirror(MlflowRegistry(down), down)
    store = ModelStore(tmp_path / "models", mirror=mirror)
    failed_before = {operation: failures(operation) for operation in ("version", "champion")}

    started = time.monotonic()
    record = register(store)
    assert time.monotonic() - started < 5.0  # no MLflow round trip, let alone a retry
    store.set_champion("eta", record.version)
    assert mirror.flush(120)

    # each counted once it failed its attempts (and logged)
    assert {op: failures(op) - failed_before[op] for op in failed_before} == {
        "version": 1,
        "champion": 1,
    }
    assert store.load(record.version)[1] == record  # rtml kept it all the same

    # later, with MLflow up: the CLI copies what is missing, and a second run adds nothing
    environment = {
        "RTML_MLFLOW_TRACKING_URI": mlflow_tracking.tracking_uri,
        "RTML_MLFLOW_MODEL_PREFIX": down.mlflow_model_prefix,
    }
    for _ in range(2):
        result = CliRunner().invoke(models, ["--store", str(store), "mirror"], env=environment)
        assert result.exit_code == 0, result.output
        assert "1 versions and 1 champions" in result.output
    name = f"{down.mlflow_model_prefix}eta"
    assert list(mirrored(mlflow_tracking.tracking_uri, name)) == [record.version]
    champion = champion_of(mlflow_tracking.tracking_uri, name)
    assert champion.tags["rtml_version"] == record.version
