"""Training examples from a stored event log, for the first model (before any
live labels exist): features from the reference implementation of the
features service, labels from ``order_delivered``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.contracts import FeatureVector, Message, OrderDelivered, PredictRequest
from shared.features.batch import compute_batch_features
from shared.features.records import BatchFeatureRecord
from shared.features.reference import eta_vectors
from shared.warehouse import ExampleTable, empty_table

MINUTE = 60.0


def reference_vectors(
    messages: Sequence[Message], batch: Sequence[BatchFeatureRecord] | None = None
) -> list[tuple[PredictRequest, FeatureVector]]:
    """Every eta request of the log with its reference vector, batch features
    included as the live service would serve them (``rtml batch features`` on the
    same log, unless the records are given)."""
    records = compute_batch_features(messages) if batch is None else batch
    return eta_vectors(messages, batch={record.entity: record for record in records})


def eta_examples_from_log(
    messages: Sequence[Message], batch: Sequence[BatchFeatureRecord] | None = None
) -> ExampleTable:
    minutes = {
        m.order_id: (m.ts - m.placed_ts) / MINUTE for m in messages if isinstance(m, OrderDelivered)
    }
    rows = [
        (request, vector)
        for request, vector in reference_vectors(messages, batch)
        if request.entities.get("order_id") in minutes
    ]
    if not rows:
        return empty_table()
    names = rows[0][1].names
    return ExampleTable(
        ids=np.array([request.id for request, _ in rows], dtype=object),
        X=np.array([vector.values for _, vector in rows], dtype=float),
        y=np.array([minutes[request.entities["order_id"]] for request, _ in rows]),
        label_ts=np.array([request.ts for request, _ in rows]),
        feature_set=rows[0][1].feature_set,
        feature_names=list(names),
        files=[],
    )
