"""Versioned, immutable store of XGBoost models on a local directory or an S3 bucket.

Layout under the root (a path, or ``s3://bucket/prefix``: ``shared/object_storage.py``)::

    versions/<version>/model.ubj     the booster, XGBoost UBJSON
    versions/<version>/record.json   its ModelRecord, with the sha256 of model.ubj
    champions/<task>.json            the version that serves a task by default

Registration creates the artifact, then the record, each only if absent
(``shared/model_blobs.py``): the record is the version's manifest, written last,
and readers trust only versions that have one, so a crash in between leaves an
invisible artifact, never half a version, and two registrations of one id cannot
both succeed. The champion pointer moves by compare-and-swap (``set_champion``'s
``replacing``), so two writers that both saw the same champion cannot both win.
Nothing here deserialises anything but XGBoost UBJSON/JSON: every load first
passes the artifact through ``shared/model_artifacts.py``, which refuses pickle
(it runs code on load) by its leading bytes before any parser sees the artifact,
checks the sha256, and can probe-load it in a child process.
``shared/model_lineage.py`` draws a version's lineage for the terminal;
``shared/registry_mirror.py`` copies versions and promotions to MLflow when
``RTML_MLFLOW_TRACKING_URI`` is set.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import inspect
import json
import math
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xgboost as xgb
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from rtml.shared.build import git_commit, package_version
from rtml.shared.contracts import Task, Trigger
from rtml.shared.errors import (
    ChampionChanged,
    IntegrityError,
    ModelStoreError,
    UnknownVersion,
    VersionExists,
)
from rtml.shared.model_artifacts import probe_artifact, verify_artifact
from rtml.shared.model_blobs import ANY, AnyTag, ConditionFailed, blobs_at
from rtml.shared.object_storage import parse_location
from rtml.shared.registry_mirror import (
    FROM_ENVIRONMENT,
    FromEnvironment,
    RegistryMirror,
    mirror_from_environment,
)
from rtml.shared.tasks.registry import UnknownTask, task_spec

STORE_ENV = "RTML_MODEL_STORE"
DEFAULT_STORE_ROOT = Path(".rtml/models")

ARTIFACT_NAME = "model.ubj"
RECORD_NAME = "record.json"

# version ids become directory names and key parts, so they must stay one safe path component
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_VERSION_NAME = re.compile(VERSION_PATTERN)

RegisteredHook = Callable[["ModelRecord"], None]
AsyncRegisteredHook = Callable[["ModelRecord"], Awaitable[None] | None]


class CodeVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    rtml: str
    git_commit: str | None = None


class ModelRecord(BaseModel):
    """Everything needed to trust, reproduce and place one model version."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: str = Field(pattern=VERSION_PATTERN)
    task: Task
    parent_version: str | None = Field(default=None, pattern=VERSION_PATTERN)
    feature_set: str = Field(min_length=1, description="name@version of the feature set")
    data_range: dict[str, Any] = Field(
        description="what it was trained on: topic/partition/offset ranges or warehouse partitions"
    )
    params: dict[str, Any]
    metrics: dict[str, float]
    code_version: CodeVersion
    created_at: AwareDatetime
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # what started its training (None in records written before triggers were kept)
    trigger: Trigger | None = None

    @field_validator("data_range", "params")
    @classmethod
    def _json_able(cls, value: dict[str, Any]) -> dict[str, Any]:
        # the record is a JSON file that must read back exactly as written
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"must be plain JSON: {error}") from None
        return value

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, metrics: dict[str, float]) -> dict[str, float]:
        for name, value in metrics.items():
            if not math.isfinite(value):
                raise ValueError(f"metric {name!r} must be finite, got {value}")
        return metrics


class _ChampionPointer(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: Task
    version: str = Field(pattern=VERSION_PATTERN)
    set_at: AwareDatetime


def default_store_root() -> str:
    return os.environ.get(STORE_ENV) or str(DEFAULT_STORE_ROOT)


def new_version_id(task: str, at: datetime) -> str:
    """``<task>-<UTC second>-<random>``: sorts by time, unique without coordination."""
    return f"{task}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class ModelStore:
    """Model versions under ``root``: a directory or ``s3://bucket/prefix`` (default:
    $RTML_MODEL_STORE or ./.rtml/models).

    ``mirror`` receives every registration and champion change after it is stored
    (default: an MLflow mirror when RTML_MLFLOW_TRACKING_URI is set, else none).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        mirror: RegistryMirror | None | FromEnvironment = FROM_ENVIRONMENT,
    ) -> None:
        self.location = parse_location(root if root is not None else default_store_root())
        self._blobs = blobs_at(self.location)
        self._mirror = mirror_from_environment() if mirror is FROM_ENVIRONMENT else mirror

    def __str__(self) -> str:
        return str(self.location)

    # --- writing --------------------------------------------------------------

    def register(
        self,
        booster: xgb.Booster,
        *,
        task: Task,
        feature_set: str,
        data_range: dict[str, Any],
        params: dict[str, Any],
        metrics: dict[str, float],
        parent_version: str | None = None,
        version: str | None = None,
        trigger: Trigger | None = None,
        on_registered: RegisteredHook | None = None,
    ) -> ModelRecord:
        """Store ``booster`` as a new immutable version; ``on_registered`` runs once it is visible.

        Raises VersionExists if ``version`` is taken, UnknownVersion if the parent is
        not registered. Should the hook raise, the version stays registered (it is
        immutable): announce it again from ``record()`` rather than registering anew.
        """
        record = self._commit_new_version(
            booster,
            task=task,
            feature_set=feature_set,
            data_range=data_range,
            params=params,
            metrics=metrics,
            parent_version=parent_version,
            version=version,
            trigger=trigger,
        )
        if on_registered is not None:
            outcome = on_registered(record)
            if inspect.isawaitable(outcome):
                if inspect.iscoroutine(outcome):
                    outcome.close()
                raise TypeError(
                    f"on_registered returned an awaitable for {record.version} (registered, "
                    "not announced); use register_async to await it"
                )
        return record

    async def register_async(
        self,
        booster: xgb.Booster,
        *,
        task: Task,
        feature_set: str,
        data_range: dict[str, Any],
        params: dict[str, Any],
        metrics: dict[str, float],
        parent_version: str | None = None,
        version: str | None = None,
        trigger: Trigger | None = None,
        on_registered: AsyncRegisteredHook | None = None,
    ) -> ModelRecord:
        """register() off the event loop (it serialises and writes), then await the hook."""
        record = await asyncio.to_thread(
            self._commit_new_version,
            booster,
            task=task,
            feature_set=feature_set,
            data_range=data_range,
            params=params,
            metrics=metrics,
            parent_version=parent_version,
            version=version,
            trigger=trigger,
        )
        if on_registered is not None:
            outcome = on_registered(record)
            if inspect.isawaitable(outcome):
                await outcome
        return record

    def set_champion(
        self, task: Task, version: str, *, replacing: str | None | AnyTag = ANY
    ) -> ModelRecord:
        """Point ``task``'s champion at ``version``.

        ``replacing``: the champion the caller saw (None: none yet). The pointer moves
        only if it still names that version, in one compare-and-swap, else
        ChampionChanged: of two writers that saw the same champion, one wins. Left
        out (an operator's promotion), the pointer is replaced whatever it names.
        """
        record = self.record(version)
        if record.task != task:
            raise ModelStoreError(f"{version} is a {record.task} model, not a {task} model")
        pointer = _ChampionPointer(task=task, version=version, set_at=datetime.now(UTC))
        key = self._champion_key(task)
        condition: str | None | AnyTag = ANY
        if not isinstance(replacing, AnyTag):
            current = self._blobs.get_tagged(key)
            seen = self._pointer(task, current[0]).version if current else None
            if seen != replacing:
                raise ChampionChanged(f"the {task} champion is {seen}, not {replacing}")
            condition = current[1] if current else None
        try:
            self._blobs.put(key, pointer.model_dump_json().encode(), if_tag=condition)
        except ConditionFailed:
            raise ChampionChanged(
                f"the {task} champion changed while {version} was replacing {replacing}"
            ) from None
        if self._mirror is not None:
            self._mirror.champion_set(self, record)
        return record

    def claim_champion(self, task: Task, version: str) -> bool:
        """Make ``version`` the champion if ``task`` has none; False if it has one (or another
        writer's claim won: of two trainers' first models, one becomes the champion)."""
        try:
            self.set_champion(task, version, replacing=None)
        except ChampionChanged:
            return False
        return True

    def _commit_new_version(
        self,
        booster: xgb.Booster,
        *,
        task: Task,
        feature_set: str,
        data_range: dict[str, Any],
        params: dict[str, Any],
        metrics: dict[str, float],
        parent_version: str | None,
        version: str | None,
        trigger: Trigger | None,
    ) -> ModelRecord:
        _check_task(task)
        created_at = datetime.now(UTC)
        version = version or new_version_id(task, created_at)
        if _VERSION_NAME.match(version) and self._blobs.exists(self._record_key(version)):
            raise VersionExists(f"{version} is already registered; versions are immutable")
        if parent_version is not None:
            self._check_parent(parent_version, task)
        artifact = bytes(booster.save_raw(raw_format="ubj"))
        try:
            record = ModelRecord(
                version=version,
                task=task,
                parent_version=parent_version,
                feature_set=feature_set,
                data_range=data_range,
                params=params,
                metrics=metrics,
                code_version=current_code_version(),
                created_at=created_at,
                sha256=hashlib.sha256(artifact).hexdigest(),
                trigger=trigger,
            )
        except ValidationError as error:
            raise ModelStoreError(f"cannot register {version}: {error}") from error
        self._publish(record, artifact)
        if self._mirror is not None:
            self._mirror.version_registered(self, record)
        return record

    def _check_parent(self, parent_version: str, task: str) -> None:
        parent = self.record(parent_version)
        if parent.task != task:
            raise ModelStoreError(
                f"parent {parent_version} is a {parent.task} model; a {task} model cannot descend "
                "from it"
            )

    def _publish(self, record: ModelRecord, artifact: bytes) -> None:
        # the artifact first, the record (the manifest readers trust) last; each only if
        # absent, so that of two registrations of one id exactly one gets both
        try:
            self._blobs.put(self._artifact_key(record.version), artifact, if_tag=None)
            self._blobs.put(
                self._record_key(record.version),
                record.model_dump_json(indent=2).encode(),
                if_tag=None,
            )
        except ConditionFailed:
            raise VersionExists(
                f"{record.version} is already registered (or being registered); versions are "
                "immutable"
            ) from None

    # --- reading --------------------------------------------------------------

    def load(
        self, version: str, *, probe_in_child: bool = False
    ) -> tuple[xgb.Booster, ModelRecord]:
        """The booster and its record, after checking the artifact is safe and unmodified.

        ``probe_in_child``: first load it and score one row in a child process
        (``probe_artifact``), for a caller that a crashing artifact must not take down.
        """
        record = self.record(version)
        artifact = self.artifact(record)
        if probe_in_child:
            probe_artifact(artifact, version=version)
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(artifact))
        except xgb.core.XGBoostError as error:
            raise IntegrityError(f"{version}: XGBoost cannot read the artifact: {error}") from error
        return booster, record

    def artifact(self, record: ModelRecord) -> bytes:
        """The version's UBJSON bytes, refused unless they are XGBoost's and match the record."""
        try:
            artifact = self._blobs.get(self._artifact_key(record.version))
        except FileNotFoundError:
            raise IntegrityError(f"{record.version} has a record but no artifact") from None
        verify_artifact(artifact, expected_sha256=record.sha256, version=record.version)
        return artifact

    def record(self, version: str) -> ModelRecord:
        if not _VERSION_NAME.match(version):
            raise UnknownVersion(f"{version!r} is not a valid version id")
        key = self._record_key(version)
        try:
            raw = self._blobs.get(key)
        except FileNotFoundError:
            raise UnknownVersion(f"no model version {version!r} in {self.location}") from None
        try:
            record = ModelRecord.model_validate_json(raw)
        except ValidationError as error:
            raise IntegrityError(f"record of {version} is corrupt ({key}): {error}") from error
        if record.version != version:
            raise IntegrityError(f"{key} describes {record.version}, not {version}")
        return record

    # builtins.list: inside this class, plain "list" names the method below
    def list(self, task: Task | None = None) -> builtins.list[ModelRecord]:
        """Registered versions, oldest first (a version whose record is not written yet,
        or never was, is not one)."""
        records = []
        for name in self._blobs.folders("versions"):
            try:
                records.append(self.record(name))
            except UnknownVersion:
                continue
        return sorted(
            (r for r in records if task is None or r.task == task),
            key=lambda r: (r.created_at, r.version),
        )

    def latest(self, task: Task) -> ModelRecord | None:
        records = self.list(task)
        return records[-1] if records else None

    def lineage(self, version: str) -> builtins.list[ModelRecord]:
        """``version`` and its ancestors, newest first, back to the model trained from scratch."""
        chain = [self.record(version)]
        while (parent := chain[-1].parent_version) is not None:
            # only a hand-edited record can loop; stop rather than spin forever
            if any(r.version == parent for r in chain):
                raise IntegrityError(f"lineage of {version} loops back to {parent}")
            chain.append(self.record(parent))
        return chain

    def champion(self, task: Task) -> ModelRecord | None:
        _check_task(task)
        try:
            raw = self._blobs.get(self._champion_key(task))
        except FileNotFoundError:
            return None
        return self.record(self._pointer(task, raw).version)

    def _pointer(self, task: str, raw: bytes) -> _ChampionPointer:
        try:
            return _ChampionPointer.model_validate_json(raw)
        except ValidationError as error:
            raise IntegrityError(
                f"champion pointer {self._champion_key(task)} is corrupt: {error}"
            ) from error

    def _artifact_key(self, version: str) -> str:
        return f"versions/{version}/{ARTIFACT_NAME}"

    def _record_key(self, version: str) -> str:
        return f"versions/{version}/{RECORD_NAME}"

    def _champion_key(self, task: str) -> str:
        return f"champions/{task}.json"


# --- code version ---------------------------------------------------------------


def current_code_version() -> CodeVersion:
    return CodeVersion(rtml=package_version(), git_commit=git_commit())


# --- names ----------------------------------------------------------------------


def _check_task(task: str) -> None:
    # a task name becomes a file name: only a loaded task's, never a path
    try:
        task_spec(task)
    except UnknownTask as exc:
        raise ModelStoreError(str(exc)) from exc
