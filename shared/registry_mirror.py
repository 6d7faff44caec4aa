"""MLflow as a peer registry: every version rtml registers, and every champion, copied there.

Turned on by ``RTML_MLFLOW_TRACKING_URI``. Each task is one registered model
(``rtml-<task>``); each rtml version becomes a model version whose tags carry the
rtml version id, parent, data range, feature set, code version and sha256, with
the UBJSON artifact logged on a run of the experiment ``rtml``. A champion
change moves the alias ``champion``.

rtml's model store stays the source of truth, and MLflow never holds up serving
or training: the store hands each event to a queue that one daemon thread drains
in order. Each step is idempotent (a version already there, found by its
``rtml_version`` tag, is not created again), so a failed step is retried with
tenacity; one that still fails is counted in ``rtml_mlflow_mirror_total`` and
logged, and ``rtml models mirror`` copies whatever is missing later. At exit a
process waits up to ``RTML_MLFLOW_FLUSH_TIMEOUT_S`` for the queue to drain.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rtml.shared.logging import get_logger
from tenacity import Retrying, stop_after_attempt, wait_exponential

if TYPE_CHECKING:
    from rtml.shared.model_store import ModelRecord, ModelStore

log = get_logger(__name__)

CHAMPION_ALIAS = "champion"
VERSION_TAG = "rtml_version"

MIRRORED = Counter(
    "rtml_mlflow_mirror_total",
    "model store events copied to MLflow",
    ["operation", "outcome"],  # operation: version|champion; outcome: mirrored|failed|dropped
)
RETRIES = Counter("rtml_mlflow_mirror_retries_total", "MLflow calls retried", ["operation"])


class MirrorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="an MLflow tracking server that mirrors every model version and champion, "
        "e.g. http://mlflow:5000 (unset: no mirror)",
    )
    mlflow_model_prefix: str = Field(
        default="rtml-", description="MLflow's registered model for a task: this prefix + the task"
    )
    mlflow_experiment: str = Field(
        default="rtml", description="the MLflow experiment whose runs carry the artifacts"
    )
    mlflow_attempts: int = Field(
        default=4, ge=1, description="tries per mirrored event (exponential backoff between)"
    )
    mlflow_request_timeout_s: int = Field(
        default=10, ge=1, description="one HTTP request to MLflow, seconds"
    )
    mlflow_queue_size: int = Field(
        default=1000, ge=1, description="events waiting for MLflow; past this they are dropped "
        "and counted"
    )  # fmt: skip
    mlflow_flush_timeout_s: float = Field(
        default=10.0, ge=0, description="how long a process waits at exit for the events "
        "still queued for MLflow"
    )  # fmt: skip


def shown_uri(uri: str) -> str:
    """The tracking URI without a password it may carry, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class RegistryMirror(Protocol):
    def version_registered(self, store: ModelStore, record: ModelRecord) -> None: ...

    def champion_set(self, store: ModelStore, record: ModelRecord) -> None: ...


class FromEnvironment:
    """The ModelStore default: the mirror the environment asks for, if any."""


FROM_ENVIRONMENT: Final = FromEnvironment()

_environment_mirror: BackgroundMirror | None = None
_environment_lock = threading.Lock()


def mirror_from_environment() -> BackgroundMirror | None:
    """The process's MLflow mirror when RTML_MLFLOW_TRACKING_URI is set (one per process)."""
    global _environment_mirror
    settings = MirrorSettings()
    if not settings.mlflow_tracking_uri:
        return None
    if importlib.util.find_spec("mlflow") is None:
        # a deployment mistake, said loudly; training and serving go on without MLflow
        log.error(
            "mlflow_mirror_unavailable",
            reason="RTML_MLFLOW_TRACKING_URI is set but the MLflow client is not installed "
            "(pip install 'rtml[mlflow]', or build the image with RTML_EXTRAS=mlflow)",
        )
        return None
    with _environment_lock:
        if _environment_mirror is None:
            _environment_mirror = BackgroundMirror(MlflowRegistry(settings), settings)
        return _environment_mirror


class MlflowRegistry:
    """The MLflow side, one idempotent call per event; raises whatever MLflow raises."""

    def __init__(self, settings: MirrorSettings) -> None:
        self.settings = settings
        # MLflow's client reads these when it is used: tenacity retries whole steps, where
        # the client would retry each request for minutes on its own; its log lines go
        # through rtml's JSON logging, and no run links are printed to stdout
        for name, value in {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(settings.mlflow_request_timeout_s),
            "MLFLOW_CONFIGURE_LOGGING": "false",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        }.items():
            os.environ.setdefault(name, value)
        self._client: Any = None

    def model_name(self, task: str) -> str:
        return f"{self.settings.mlflow_model_prefix}{task}"

    def ensure_version(self, store: ModelStore, record: ModelRecord) -> str:
        """The MLflow model version of ``record``, created with its artifact if missing."""
        existing = self.find_version(record)
        if existing is not None:
            return existing
        client = self._mlflow()
        name = self.model_name(record.task)
        self._ensure_registered_model(name)
        from mlflow.entities import Metric, Param

        run = client.create_run(self._experiment_id(), tags={VERSION_TAG: record.version})
        now_ms = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(name, value, now_ms, 0) for name, value in record.metrics.items()],
            # MLflow caps a parameter's value at 6000 characters
            params=[Param(name, str(value)[:6000]) for name, value in record.params.items()],
        )
        with tempfile.TemporaryDirectory(prefix="rtml-mlflow-") as folder:
            path = Path(folder) / f"{record.version}.ubj"
            path.write_bytes(store.artifact(record))
            client.log_artifact(run.info.run_id, str(path), artifact_path="model")
        client.set_terminated(run.info.run_id)
        created = client.create_model_version(
            name,
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags=version_tags(record),
            description=f"rtml {record.version} ({record.feature_set})",
        )
        log.info("mlflow_version_mirrored", version=record.version, mlflow_version=created.version)
        return str(created.version)

    def ensure_champion(self, store: ModelStore, record: ModelRecord) -> None:
        mlflow_version = self.ensure_version(store, record)
        self._mlflow().set_registered_model_alias(
            self.model_name(record.task), CHAMPION_ALIAS, mlflow_version
        )
        log.info("mlflow_champion_mirrored", version=record.version, mlflow_version=mlflow_version)

    def find_version(self, record: ModelRecord) -> str | None:
        found = self._mlflow().search_model_versions(
            f"name = '{self.model_name(record.task)}' and tag.{VERSION_TAG} = '{record.version}'"
        )
        return str(found[0].version) if found else None

    def _ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._mlflow().create_registered_model(
                name, description="versions registered by rtml (the source of truth)"
            )
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _experiment_id(self) -> str:
        client = self._mlflow()
        experiment = client.get_experiment_by_name(self.settings.mlflow_experiment)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(self.settings.mlflow_experiment)

    def _mlflow(self) -> Any:
        if self._client is None:
            # imported on first use, in the mirror's thread: it takes seconds
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.settings.mlflow_tracking_uri)
        return self._client


def version_tags(record: ModelRecord) -> dict[str, str]:
    return {
        VERSION_TAG: record.version,
        "rtml_task": record.task,
        "rtml_parent": record.parent_version or "",
        "rtml_data_range": json.dumps(record.data_range, sort_keys=True),
        "rtml_feature_set": record.feature_set,
        "rtml_code_version": record.code_version.model_dump_json(),
        "rtml_sha256": record.sha256,
    }


def mirror_store(store: ModelStore, registry: MlflowRegistry) -> tuple[int, int]:
    """Copy whatever MLflow lacks of ``store``: every version, then every champion alias.
    Returns how many of each the registry now holds for the store."""
    from rtml.shared.tasks.registry import tasks

    records = store.list()
    for record in records:
        retrying(registry.settings, "version", record.version)(
            registry.ensure_version, store, record
        )
    champions = [c for c in (store.champion(task) for task in tasks()) if c is not None]
    for champion in champions:
        retrying(registry.settings, "champion", champion.version)(
            registry.ensure_champion, store, champion
        )
    return len(records), len(champions)


def retrying(settings: MirrorSettings, operation: str, version: str) -> Retrying:
    """Tenacity's retry of one mirror step, each retry counted and logged."""

    def before_sleep(state: Any) -> None:
        RETRIES.labels(operation).inc()
        log.warning(
            "mlflow_mirror_retry", operation=operation, version=version,
            attempt=state.attempt_number, error=str(state.outcome.exception())[:300],
        )  # fmt: skip

    return Retrying(
        stop=stop_after_attempt(settings.mlflow_attempts),
        wait=wait_exponential(multiplier=0.5, max=10),
        before_sleep=before_sleep,
        reraise=True,
    )


class BackgroundMirror:
    """Mirrors store events in order on a daemon thread; never raises into the store."""

    def __init__(self, registry: MlflowRegistry, settings: MirrorSettings) -> None:
        self.registry = registry
        self._settings = settings
        self._queue: queue.Queue[tuple[str, str, Callable[[], object]]] = queue.Queue(
            maxsize=settings.mlflow_queue_size
        )
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def version_registered(self, store: ModelStore, record: ModelRecord) -> None:
        self._submit("version", record, lambda: self.registry.ensure_version(store, record))

    def champion_set(self, store: ModelStore, record: ModelRecord) -> None:
        self._submit("champion", record, lambda: self.registry.ensure_champion(store, record))

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued event was tried; False if ``timeout_s`` ran out first."""
        deadline = time.monotonic() + timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def _submit(self, operation: str, record: ModelRecord, step: Callable[[], object]) -> None:
        self._start()
        try:
            self._queue.put_nowait((operation, record.version, step))
        except queue.Full:
            MIRRORED.labels(operation, "dropped").inc()
            log.error(
                "mlflow_mirror_dropped", operation=operation, version=record.version,
                reason=f"{self._settings.mlflow_queue_size} events already wait for MLflow",
            )  # fmt: skip

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="rtml-mlflow-mirror", daemon=True
                )
                self._thread.start()
                atexit.register(self._flush_at_exit)

    def _drain(self) -> None:
        while True:
            operation, version, step = self._queue.get()
            try:
                retrying(self._settings, operation, version)(step)
                MIRRORED.labels(operation, "mirrored").inc()
            except Exception as error:  # any failure of MLflow's: counted, logged, never raised
                MIRRORED.labels(operation, "failed").inc()
                log.error(
                    "mlflow_mirror_failed", operation=operation, version=version,
                    error=f"{type(error).__name__}: {error}"[:500],
                )  # fmt: skip
            finally:
                self._queue.task_done()

    def _flush_at_exit(self) -> None:
        if not self.flush(self._settings.mlflow_flush_timeout_s):
            log.error(
                "mlflow_mirror_unflushed", events=self._queue.unfinished_tasks,
                hint="rtml models mirror copies what is missing",
            )  # fmt: skip
