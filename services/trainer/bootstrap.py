"""The first model of a task, from its events alone (before any live labels exist):
features from the reference implementation of the features service, labels from the
task's label events joined on its label's keys, as the collector joins them live: a
label counts within the label's window after its request (any label in the log when
the label declares no window), and a request whose window closed inside the log
without one gets the label's ``when_missing`` value, if it declares one (otherwise
it makes no example).

The events come from a stored event log (``rtml train --from-scratch --event-log``,
``rtml demo``) or from the topics themselves (the trainer's cold start): both train
through ``event_log_candidate``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from rtml.services.trainer.jobs import Candidate, table_candidate
from rtml.shared.contracts import FeatureVector, Message, PredictRequest, Task
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.features.reference import task_vectors
from rtml.shared.tasks.registry import task_spec
from rtml.shared.tasks.spec import Label, TaskSpec
from rtml.shared.warehouse import ExampleTable, empty_table

LabelKey = tuple[str, ...]


class NoLabelsInLog(ValueError):
    """A task whose label cannot be joined from an event log alone."""


def reference_vectors(
    messages: Sequence[Message], spec: TaskSpec, batch: Sequence[BatchFeatureRecord] | None = None
) -> list[tuple[PredictRequest, FeatureVector]]:
    """Every request of the task in the log with its reference vector, batch features
    included as the live service would serve them (``rtml batch features`` on the
    same log, unless the records are given)."""
    records = compute_batch_features(messages) if batch is None else batch
    return task_vectors(messages, spec, batch={record.entity: record for record in records})


def examples_from_log(
    messages: Sequence[Message], spec: TaskSpec, batch: Sequence[BatchFeatureRecord] | None = None
) -> ExampleTable:
    """The log's requests of the task that have a label in the log, with their
    reference vectors; the label's event time is the request's (the live example's
    would be the label's)."""
    label = spec.label
    if not label.joins_from_events:
        raise NoLabelsInLog(
            f"task {spec.name}'s label joins on the arm the router chose, which an event log "
            "does not have: train it on the warehouse"
        )
    # join key -> (value, event time) of the first label event
    labels: dict[LabelKey, tuple[float, float]] = {}
    for event in messages:
        if isinstance(event, label.event):
            labels.setdefault(label_key(event, label), (label.value(event), event.ts))
    log_end = max((message.ts for message in messages), default=0.0)
    rows = [
        (request, vector, value)
        for request, vector in reference_vectors(messages, spec, batch)
        if (value := _label(request, labels, spec, log_end)) is not None
    ]
    if not rows:
        return empty_table()
    names = rows[0][1].names
    return ExampleTable(
        ids=np.array([request.id for request, _, _ in rows], dtype=object),
        X=np.array([vector.values for _, vector, _ in rows], dtype=float),
        y=np.array([value for _, _, value in rows]),
        label_ts=np.array([request.ts for request, _, _ in rows]),
        feature_set=rows[0][1].feature_set,
        feature_names=list(names),
        files=[],
    )


def _label(
    request: PredictRequest,
    labels: dict[LabelKey, tuple[float, float]],
    spec: TaskSpec,
    log_end: float,
) -> float | None:
    """The request's label, or None when it makes no example."""
    label, window = spec.label, spec.label.window_s
    key = request_key(request, label)
    found = labels.get(key) if key is not None else None
    if found is not None:
        value, ts = found
        if window is None or 0 <= ts - request.ts <= window:
            return value
    if label.when_missing is not None and window is not None and request.ts + window <= log_end:
        return label.when_missing
    return None


def event_log_candidate(
    messages: Sequence[Message],
    task: Task,
    source: dict[str, Any],
    batch: Sequence[BatchFeatureRecord] | None = None,
    rounds: int | None = None,
) -> Candidate:
    """Stage 1 from events: a model from scratch on the examples of ``messages``;
    ``source`` says where they came from (the version's data range)."""
    table = examples_from_log(messages, task_spec(task), batch)
    return table_candidate(table, task, {**source, "examples": len(table)}, rounds)


class LabelledHistory:
    """A task's events and requests in the order they came, and how many of its
    requests have their label among them: the examples ``examples_from_log`` will
    find, counted as they arrive (a repeated request or label counts once). A
    request is labelled by its label event within the label's window, or, when the
    label declares ``when_missing``, once newer events show its window closed."""

    def __init__(self, spec: TaskSpec) -> None:
        if not spec.label.joins_from_events:
            raise NoLabelsInLog(f"task {spec.name}'s label joins on the arm the router chose")
        self.spec = spec
        self.messages: list[Message] = []
        self.labelled = 0
        self._requests: dict[LabelKey, float] = {}
        self._labels: dict[LabelKey, float] = {}
        self._counted: set[LabelKey] = set()
        # (window end, key) of the requests whose window may close unlabelled
        self._deadlines: list[tuple[float, LabelKey]] = []
        self._newest = -math.inf

    def add(self, message: Message) -> None:
        label = self.spec.label
        if isinstance(message, PredictRequest):
            if message.task != self.spec.name:
                return
            key, side = request_key(message, label), self._requests
        elif isinstance(message, self.spec.events):
            key, side = None, self._labels
            if isinstance(message, label.event):
                key = label_key(message, label)
        else:
            return
        self.messages.append(message)
        self._newest = max(self._newest, message.ts)
        if key is not None and key not in side:
            side[key] = message.ts
            self._join(key)
            if side is self._requests and label.when_missing is not None and label.window_s:
                heapq.heappush(self._deadlines, (message.ts + label.window_s, key))
        while self._deadlines and self._deadlines[0][0] <= self._newest:
            _, key = heapq.heappop(self._deadlines)
            self._count(key)

    def _join(self, key: LabelKey) -> None:
        if key in self._requests and key in self._labels:
            window = self.spec.label.window_s
            if window is None or 0 <= self._labels[key] - self._requests[key] <= window:
                self._count(key)

    def _count(self, key: LabelKey) -> None:
        if key not in self._counted:
            self._counted.add(key)
            self.labelled += 1


def label_key(event: Message, label: Label) -> LabelKey:
    """The label event's side of the join."""
    return tuple(str(getattr(event, field)) for _, field in label.join)


def request_key(request: PredictRequest, label: Label) -> LabelKey | None:
    """The request's side of the join; None if it lacks one of the keys."""
    values = [request.entities.get(side) for side, _ in label.join]
    return None if None in values else tuple(values)  # type: ignore[arg-type]
