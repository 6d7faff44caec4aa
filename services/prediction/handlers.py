"""The prediction service's pure logic: which model answers a routed request, and
scoring a micro-batch with one ``inplace_predict`` per model. No Kafka, no HTTP.

Hot-swap without stalls: the loaded models live in one immutable ``ModelSet``
that a swap replaces whole (a single reference assignment). ``score_batch``
reads that reference once, so a batch in flight keeps the boosters it started
with while the next batch already sees the new set; nothing waits for a lock.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import xgboost as xgb
from rtml.shared.contracts import FeatureVector, Prediction, PredictRouted, Task
from rtml.shared.errors import RtmlError
from rtml.shared.model_store import ModelRecord
from rtml.shared.timings import SCORING, TO_PREDICTION, TOTAL, ms, with_wait


class ScoringError(RtmlError):
    """A routed request that cannot be scored; the message says which and why."""


class NoModel(ScoringError):
    """Neither the requested version nor a champion of the task is loaded."""


class FeatureMismatch(ScoringError):
    """The request's feature vector is not the one the model was trained on."""


@dataclass(frozen=True)
class LoadedModel:
    version: str
    task: Task
    feature_set: str
    booster: xgb.Booster
    # the names the booster was trained with, in order; empty when it was trained without
    feature_names: tuple[str, ...]
    n_features: int

    @classmethod
    def of(cls, booster: xgb.Booster, record: ModelRecord) -> LoadedModel:
        return cls(
            version=record.version,
            task=record.task,
            feature_set=record.feature_set,
            booster=booster,
            feature_names=tuple(booster.feature_names or ()),
            n_features=booster.num_features(),
        )

    def check(self, request: PredictRouted) -> None:
        """Raise FeatureMismatch unless the request carries this model's features, in order."""
        vector: FeatureVector = request.features
        if vector.feature_set != self.feature_set:
            raise FeatureMismatch(
                f"request {request.id} carries {vector.feature_set} features but {self.version} "
                f"was trained on {self.feature_set}"
            )
        if self.feature_names and tuple(vector.names) != self.feature_names:
            raise FeatureMismatch(
                f"request {request.id} has features {vector.names}; {self.version} expects "
                f"{list(self.feature_names)} in that order"
            )
        if len(vector.values) != self.n_features:
            raise FeatureMismatch(
                f"request {request.id} has {len(vector.values)} features; {self.version} "
                f"expects {self.n_features}"
            )


@dataclass(frozen=True)
class ModelSet:
    """An immutable snapshot: the loaded models by version and each task's champion."""

    models: Mapping[str, LoadedModel] = field(default_factory=lambda: MappingProxyType({}))
    champions: Mapping[Task, str] = field(default_factory=lambda: MappingProxyType({}))

    def champion(self, task: Task) -> LoadedModel | None:
        version = self.champions.get(task)
        return self.models.get(version) if version is not None else None

    def resolve(self, request: PredictRouted) -> tuple[LoadedModel, bool]:
        """The model that answers ``request`` and whether it is a fallback.

        The version the router named answers if it is loaded for this task; no
        version means the champion (not a fallback); an unknown version, say one
        announced but not loaded yet, falls back to the champion and says so.
        """
        wanted = request.model_version
        if wanted is not None:
            model = self.models.get(wanted)
            if model is not None and model.task == request.task:
                return model, False
        champion = self.champion(request.task)
        if champion is None:
            named = f"version {wanted!r} is not loaded and " if wanted is not None else ""
            raise NoModel(f"request {request.id}: {named}no {request.task} champion is loaded")
        return champion, wanted is not None


class Scorer:
    """Loaded boosters by version plus a champion per task, and the scoring of batches."""

    def __init__(self) -> None:
        self._current = ModelSet()

    @property
    def snapshot(self) -> ModelSet:
        return self._current

    def champion(self, task: Task) -> LoadedModel | None:
        return self._current.champion(task)

    def add(self, model: LoadedModel) -> None:
        current = self._current
        self._current = ModelSet(
            MappingProxyType({**current.models, model.version: model}), current.champions
        )

    def set_champion(self, task: Task, version: str) -> None:
        current = self._current
        model = current.models.get(version)
        if model is None or model.task != task:
            raise NoModel(f"{version} is not a loaded {task} model; load it before promoting it")
        self._current = ModelSet(
            current.models, MappingProxyType({**current.champions, task: version})
        )

    def retire(self, version: str) -> bool:
        """Unload ``version``; a champion stays loaded until another replaces it (False)."""
        current = self._current
        if version in current.champions.values():
            return False
        models = {v: m for v, m in current.models.items() if v != version}
        self._current = ModelSet(MappingProxyType(models), current.champions)
        return True

    def score_batch(
        self, routed: Sequence[PredictRouted], seen_at: float, now: float
    ) -> list[Prediction]:
        """One prediction per request, in order; one inplace_predict per model version.

        ``seen_at`` is the wall-clock time (epoch seconds) the service read the
        batch, which ends the ``to_prediction`` wait, and ``now`` the time its
        scoring started. Raises ScoringError, before scoring anything, if any
        request cannot be scored.
        """
        started = time.perf_counter()
        models = self._current  # read once: a swap during this batch applies to the next
        chosen = [models.resolve(request) for request in routed]
        groups: dict[str, list[int]] = {}
        for index, (model, _) in enumerate(chosen):
            model.check(routed[index])
            groups.setdefault(model.version, []).append(index)
        outputs: list[float | list[float]] = [0.0] * len(routed)
        scoring_ms = [0.0] * len(routed)
        for indices in groups.values():
            booster = chosen[indices[0]][0].booster
            matrix = np.array([routed[i].features.values for i in indices], dtype=np.float32)
            # names were checked above, and a bare array carries none to validate
            values = booster.inplace_predict(matrix, validate_features=False)
            done_ms = (time.perf_counter() - started) * 1000
            for row, index in enumerate(indices):
                outputs[index] = values[row].tolist() if values.ndim > 1 else float(values[row])
                scoring_ms[index] = done_ms
        return [
            _prediction(request, model, fell_back, outputs[i], seen_at, now, scoring_ms[i])
            for i, (request, (model, fell_back)) in enumerate(zip(routed, chosen, strict=True))
        ]


def _prediction(
    request: PredictRouted,
    model: LoadedModel,
    fell_back: bool,
    output: float | list[float],
    seen_at: float,
    now: float,
    scoring_ms: float,
) -> Prediction:
    # from ingestion's (or the gateway's) wall-clock stamp; request_ts, event time,
    # which a simulation runs faster than the wall, only for a request without one
    start = request.received_at or request.request_ts
    timings = with_wait(request.timings_ms, TO_PREDICTION, request.received_at, seen_at)
    # reading and decoding the batch, then its scoring up to this request's model
    timings[SCORING] = round(ms(now - seen_at) + scoring_ms, 3)
    timings[TOTAL] = round(ms(now - start) + scoring_ms, 3)
    return Prediction(
        id=request.id,
        # the request's event time, so that a replay gives the same prediction message
        ts=request.ts,
        task=request.task,
        entities=request.entities,
        request_ts=request.request_ts,
        received_at=request.received_at,
        features=request.features,
        model_version=model.version,
        arm=request.arm,
        propensity=request.propensity,
        prediction=output,
        fell_back=fell_back,
        # the upstream hops (features, router) carried on, then this service's own
        timings_ms=timings,
    )
