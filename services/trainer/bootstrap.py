"""Training examples from a stored event log, for the first model (before any
live labels exist): features from the reference implementation of the features
service, labels from the task's label events joined on its label's keys."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rtml.shared.contracts import FeatureVector, Message, PredictRequest
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.features.reference import task_vectors
from rtml.shared.tasks.spec import ARM, TaskSpec
from rtml.shared.warehouse import ExampleTable, empty_table


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
    if any(side == ARM for side, _ in label.join):
        raise NoLabelsInLog(
            f"task {spec.name}'s label joins on the arm the router chose, which an event log "
            "does not have: train it on the warehouse"
        )
    labels = {
        tuple(str(getattr(event, field)) for _, field in label.join): label.value(event)
        for event in messages
        if isinstance(event, label.event)
    }
    rows = [
        (request, vector, key)
        for request, vector in reference_vectors(messages, spec, batch)
        if (key := _join_key(request, label.join)) in labels
    ]
    if not rows:
        return empty_table()
    names = rows[0][1].names
    return ExampleTable(
        ids=np.array([request.id for request, _, _ in rows], dtype=object),
        X=np.array([vector.values for _, vector, _ in rows], dtype=float),
        y=np.array([labels[key] for _, _, key in rows]),
        label_ts=np.array([request.ts for request, _, _ in rows]),
        feature_set=rows[0][1].feature_set,
        feature_names=list(names),
        files=[],
    )


def _join_key(request: PredictRequest, join: tuple[tuple[str, str], ...]) -> tuple[str, ...] | None:
    values = [request.entities.get(side) for side, _ in join]
    return None if None in values else tuple(values)  # type: ignore[arg-type]
