"""Versioned, immutable store of XGBoost models on a local directory.

Layout under the root::

    versions/<version>/model.ubj     the booster, XGBoost UBJSON
    versions/<version>/record.json   its ModelRecord, with the sha256 of model.ubj
    champions/<task>.json            the version that serves a task by default
    .staging/                        registrations in progress

A version is written whole under ``.staging`` and then renamed into
``versions/`` in one step, so a concurrent reader sees the complete version or
nothing. Nothing here deserialises anything but XGBoost UBJSON/JSON: every
load first passes the artifact through ``shared/model_artifacts.py``, which
refuses pickle (it runs code on load) by its leading bytes before any parser
sees the artifact, checks the sha256, and can probe-load it in a child
process. ``shared/model_lineage.py`` draws a version's lineage for the terminal.
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
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import xgboost as xgb
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from rtml.shared.contracts import Task, Trigger
from rtml.shared.errors import (
    IntegrityError,
    ModelStoreError,
    UnknownVersion,
    VersionExists,
)
from rtml.shared.model_artifacts import probe_artifact, verify_artifact
from rtml.shared.tasks.registry import UnknownTask, task_spec

STORE_ENV = "RTML_MODEL_STORE"
DEFAULT_STORE_ROOT = Path(".rtml/models")
# lets images built without a .git directory still record the commit they came from
GIT_COMMIT_ENV = "RTML_GIT_COMMIT"

ARTIFACT_NAME = "model.ubj"
RECORD_NAME = "record.json"

# version ids become directory names, so they must stay one safe path component
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_VERSION_NAME = re.compile(VERSION_PATTERN)
_COMMIT = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")

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


def default_store_root() -> Path:
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE_ROOT)


def new_version_id(task: str, at: datetime) -> str:
    """``<task>-<UTC second>-<random>``: sorts by time, unique without coordination."""
    return f"{task}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class ModelStore:
    """Model versions under ``root`` (default: $RTML_MODEL_STORE or ./.rtml/models)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_store_root()

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
        """register() off the event loop (it serialises and fsyncs), then await the hook."""
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

    def set_champion(self, task: Task, version: str) -> ModelRecord:
        record = self.record(version)
        if record.task != task:
            raise ModelStoreError(f"{version} is a {record.task} model, not a {task} model")
        pointer = _ChampionPointer(task=task, version=version, set_at=datetime.now(UTC))
        _replace_atomically(self._champion_path(task), pointer.model_dump_json().encode())
        return record

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
        if self._version_dir(version).exists():
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
        return record

    def _check_parent(self, parent_version: str, task: str) -> None:
        parent = self.record(parent_version)
        if parent.task != task:
            raise ModelStoreError(
                f"parent {parent_version} is a {parent.task} model; a {task} model cannot descend "
                "from it"
            )

    def _publish(self, record: ModelRecord, artifact: bytes) -> None:
        target = self._version_dir(record.version)
        staging = self._new_staging_dir(record.version)
        try:
            _write_durably(staging / ARTIFACT_NAME, artifact)
            _write_durably(staging / RECORD_NAME, record.model_dump_json(indent=2).encode())
            _fsync_dir(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, target)
            except OSError as error:
                # a concurrent registration of the same id renamed first
                if target.exists():
                    raise VersionExists(
                        f"{record.version} is already registered; versions are immutable"
                    ) from error
                raise
            _fsync_dir(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _new_staging_dir(self, version: str) -> Path:
        staging_root = self.root / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = staging_root / f"{version}.{secrets.token_hex(4)}"
        staging.mkdir()
        return staging

    # --- reading --------------------------------------------------------------

    def load(
        self, version: str, *, probe_in_child: bool = False
    ) -> tuple[xgb.Booster, ModelRecord]:
        """The booster and its record, after checking the artifact is safe and unmodified.

        ``probe_in_child``: first load it and score one row in a child process
        (``probe_artifact``), for a caller that a crashing artifact must not take down.
        """
        record = self.record(version)
        try:
            artifact = (self._version_dir(version) / ARTIFACT_NAME).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{version} has a record but no artifact") from None
        verify_artifact(artifact, expected_sha256=record.sha256, version=version)
        if probe_in_child:
            probe_artifact(artifact, version=version)
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(artifact))
        except xgb.core.XGBoostError as error:
            raise IntegrityError(f"{version}: XGBoost cannot read the artifact: {error}") from error
        return booster, record

    def record(self, version: str) -> ModelRecord:
        if not _VERSION_NAME.match(version):
            raise UnknownVersion(f"{version!r} is not a valid version id")
        path = self._version_dir(version) / RECORD_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise UnknownVersion(f"no model version {version!r} in {self.root}") from None
        try:
            record = ModelRecord.model_validate_json(raw)
        except ValidationError as error:
            raise IntegrityError(f"record of {version} is corrupt ({path}): {error}") from error
        if record.version != version:
            raise IntegrityError(f"{path} describes {record.version}, not {version}")
        return record

    # builtins.list: inside this class, plain "list" names the method below
    def list(self, task: Task | None = None) -> builtins.list[ModelRecord]:
        """Registered versions, oldest first."""
        versions_dir = self.root / "versions"
        if not versions_dir.is_dir():
            return []
        records = [self.record(entry.name) for entry in os.scandir(versions_dir) if entry.is_dir()]
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
        path = self._champion_path(task)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            pointer = _ChampionPointer.model_validate_json(raw)
        except ValidationError as error:
            raise IntegrityError(f"champion pointer {path} is corrupt: {error}") from error
        return self.record(pointer.version)

    def _version_dir(self, version: str) -> Path:
        return self.root / "versions" / version

    def _champion_path(self, task: str) -> Path:
        return self.root / "champions" / f"{task}.json"


# --- code version ---------------------------------------------------------------


def current_code_version() -> CodeVersion:
    return CodeVersion(rtml=_package_version(), git_commit=_git_commit())


def _package_version() -> str:
    try:
        return metadata.version("rtml")
    except metadata.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    return os.environ.get(GIT_COMMIT_ENV) or read_git_commit(Path(__file__).resolve().parent)


def read_git_commit(start: Path) -> str | None:
    """HEAD's commit of the checkout holding ``start``, or None when there is none.

    Reads .git directly instead of running git, which slim images do not have.
    """
    git_dir = _find_git_dir(start)
    if git_dir is None:
        return None
    try:
        commit = _resolve_head(git_dir)
    except OSError:
        return None
    return commit if commit and _COMMIT.match(commit) else None


def _find_git_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # a worktree or submodule points at its real git dir
            pointer = dot_git.read_text().strip()
            if pointer.startswith("gitdir: "):
                return (folder / pointer.removeprefix("gitdir: ")).resolve()
    return None


def _resolve_head(git_dir: Path) -> str | None:
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref: "):
        return head  # detached HEAD holds the commit itself
    ref = head.removeprefix("ref: ")
    common = _common_dir(git_dir)
    loose = common / ref
    if loose.is_file():
        return loose.read_text().strip()
    packed = common / "packed-refs"
    if not packed.is_file():
        return None  # a branch with no commits yet
    for line in packed.read_text().splitlines():
        commit, _, name = line.partition(" ")
        if name == ref:
            return commit
    return None


def _common_dir(git_dir: Path) -> Path:
    # worktrees keep branch refs in the main repository's git dir
    pointer = git_dir / "commondir"
    if pointer.is_file():
        return (git_dir / pointer.read_text().strip()).resolve()
    return git_dir


# --- files ----------------------------------------------------------------------


def _check_task(task: str) -> None:
    # a task name becomes a file name: only a loaded task's, never a path
    try:
        task_spec(task)
    except UnknownTask as exc:
        raise ModelStoreError(str(exc)) from exc


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # makes a rename or a new entry survive a crash, not just a process exit
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _replace_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        _write_durably(temporary, data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)
