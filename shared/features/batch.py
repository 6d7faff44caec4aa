"""Batch features: computed from an event log, as the loaded tasks declare them. Pure.

``rtml batch features`` publishes the records to ``rtml.features.batch``
(``services/features/publish.py``); the trainer's bootstrap and the skew check
compute them from a log the same way.

Over every event of the log, duplicate ids counted once, a feature of kind
``batch`` is either an aggregate (``mean``, ``p90``, ``count``, ``sum``) of
``value(event)`` over the events of its ``events`` classes, grouped by the
entity's key field, or a task's own ``BatchJob``. All the batch features of one
entity go into one record (``entity:id``), whose ``ts`` is the newest event any
of them used (what the freshness of a batch feature is measured from) and whose
``n_events`` is the most events any of them used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from rtml.shared.contracts import Message
from rtml.shared.features.catalog import EntityFeatures
from rtml.shared.features.definitions import AGGREGATE
from rtml.shared.features.records import BatchFeatureRecord, batch_record
from rtml.shared.tasks.registry import tasks
from rtml.shared.tasks.spec import BatchJob, BatchValues, Feature


def compute_batch_features(
    messages: Iterable[Message],
    on_message: Callable[[int], None] | None = None,
    entities: dict[str, EntityFeatures] | None = None,
) -> list[BatchFeatureRecord]:
    """The batch feature records of every entity the log has data for."""
    entities = tasks().entities if entities is None else entities
    seen: set[str] = set()
    log: list[Message] = []
    for count, message in enumerate(messages, 1):
        if on_message is not None:
            on_message(count)
        if message.id not in seen:
            seen.add(message.id)
            log.append(message)
    records: list[BatchFeatureRecord] = []
    for entity in entities.values():
        # entity id -> feature name -> (value, as of, events used)
        by_id: dict[str, dict[str, tuple[float, float, int]]] = defaultdict(dict)
        for feature in entity.batch:
            for entity_id, computed in _compute(feature, entity.key, log).items():
                by_id[entity_id][feature.name] = computed
        for entity_id in sorted(by_id):
            computed = by_id[entity_id]
            records.append(
                batch_record(
                    entity.name,
                    entity_id,
                    {name: value for name, (value, _, _) in computed.items()},
                    as_of=max(as_of for _, as_of, _ in computed.values()),
                    n_events=max(n for _, _, n in computed.values()),
                )
            )
    return records


def _compute(feature: Feature, key: str, log: Sequence[Message]) -> BatchValues:
    if isinstance(feature.custom, BatchJob):
        return feature.custom.compute(log)
    values: dict[str, list[float]] = defaultdict(list)
    newest: dict[str, float] = {}
    for message in log:
        if isinstance(message, feature.events):
            entity_id = str(getattr(message, key))
            values[entity_id].append(feature.value(message) if feature.value else 1.0)
            newest[entity_id] = max(newest.get(entity_id, message.ts), message.ts)
    aggregate = AGGREGATE[feature.aggregate]  # type: ignore[index]
    return {
        entity_id: (aggregate(found), newest[entity_id], len(found))
        for entity_id, found in values.items()
    }
