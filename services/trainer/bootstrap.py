"""Training examples from a stored event log, for the first model (before any
live labels exist): features from the reference implementation of the
features service, labels from ``order_delivered``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from shared.contracts import Message, OrderDelivered
from shared.warehouse import ExampleTable

MINUTE = 60.0


def eta_examples_from_log(messages: Iterable[Message]) -> ExampleTable:
    """The batch features the live service would serve (computed from the same
    log, as ``rtml batch features`` publishes them) go into the vectors too."""
    from services.features.batch import compute_batch_features
    from services.features.reference import eta_vectors

    messages = list(messages)
    batch = {record.entity: record for record in compute_batch_features(messages)}
    minutes = {
        m.order_id: (m.ts - m.placed_ts) / MINUTE for m in messages if isinstance(m, OrderDelivered)
    }
    rows = [
        (request, vector)
        for request, vector in eta_vectors(messages, batch=batch)
        if request.entities.get("order_id") in minutes
    ]
    if not rows:
        return ExampleTable(
            np.array([], dtype=object), np.empty((0, 0)), np.array([]), np.array([]), "", [], []
        )
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
