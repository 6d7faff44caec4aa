"""The recs task's feature definitions beyond the built-in kinds: the mean embedding
of the items a session saw (custom state over the item table), and the item table
itself (static records published with the batch features)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rtml.shared.contracts import Message
from rtml.shared.features.records import BatchFeatureRecord, batch_record, entity_key
from rtml.shared.features.series import RankedSeries
from rtml.shared.tasks.spec import CustomFeatures, Reading
from rtml.tasks.recs.events import ItemClicked, ItemViewed
from rtml.tasks.recs.obd import Campaign, item_context_rows

# how many of the session's latest viewed and clicked items, most recent first
LAST_ITEMS = 5
SESSION_WINDOW_S = 1800.0
# an empty slot of a last-N list
NO_ITEM = -1.0
# item_feature_0 (numeric) and one-hot item_feature_1/2/3 (12 + 21 + 7 values) of
# the Open Bandit Dataset's item_context.csv
ITEM_EMBEDDING_DIM = 41
ITEM_EMBEDDING_NAMES = tuple(f"item_emb_{i}" for i in range(ITEM_EMBEDDING_DIM))
SESSION_EMBEDDING = tuple(f"session_emb_{i}" for i in range(ITEM_EMBEDDING_DIM))
ITEM = "item"


def item_id(event: Message) -> float:
    return float(event.item_id)  # type: ignore[attr-defined]


def item_embedding(records: Mapping[str, BatchFeatureRecord], item: int) -> list[float] | None:
    """The precomputed embedding of an item (``item:<id>`` on rtml.features.batch)."""
    record = records.get(entity_key(ITEM, str(item)))
    return None if record is None else record.values


def _mean_embedding(
    items: Sequence[float], batch: Mapping[str, BatchFeatureRecord], age: float | None
) -> dict[str, Reading]:
    embeddings = [e for item in items if (e := item_embedding(batch, int(item))) is not None]
    if not embeddings:
        return dict.fromkeys(SESSION_EMBEDDING, (None, age))
    return {
        name: (math.fsum(column) / len(embeddings), age)
        for name, column in zip(SESSION_EMBEDDING, zip(*embeddings, strict=True), strict=True)
    }


class SessionEmbedding:
    """The items viewed and clicked in the window, for their mean embedding."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items = RankedSeries(keep=1)

    def record(self, event: Message) -> None:
        self.items.add(event.ts, event.id, item_id(event))

    def prune(self, horizon: float) -> None:
        self.items.prune(horizon)

    def values_at(self, t: float, batch: Mapping[str, BatchFeatureRecord]) -> dict[str, Reading]:
        newest = self.items.newest_at(t)
        age = None if newest is None else t - newest
        return _mean_embedding(self.items.window(t, SESSION_WINDOW_S), batch, age)


def session_embedding_reference(
    events: Sequence[Message], t: float, batch: Mapping[str, BatchFeatureRecord]
) -> dict[str, Reading]:
    known = [e for e in events if e.ts <= t]
    age = t - max(e.ts for e in known) if known else None
    return _mean_embedding([item_id(e) for e in known if e.ts > t - SESSION_WINDOW_S], batch, age)


SESSION_EMBEDDING_FEATURES = CustomFeatures(
    names=SESSION_EMBEDDING,
    events=(ItemViewed, ItemClicked),
    state=SessionEmbedding,
    reference=session_embedding_reference,
    lookback_s=SESSION_WINDOW_S,
)


def item_embedding_records(campaign: Campaign = "all") -> list[BatchFeatureRecord]:
    """One ``item:<id>`` record per item of the Open Bandit Dataset sample's campaign:
    the numeric ``item_feature_0`` followed by one-hot encodings of the categorical
    ``item_feature_1..3`` (categories in sorted order), ``ts`` 0 (static data)."""
    rows = item_context_rows(campaign)
    categorical = ("item_feature_1", "item_feature_2", "item_feature_3")
    categories = {column: sorted({row[column] for row in rows}) for column in categorical}
    records = []
    for row in rows:
        embedding = [float(row["item_feature_0"])]
        for column in categorical:
            embedding += [float(row[column] == value) for value in categories[column]]
        if len(embedding) != ITEM_EMBEDDING_DIM:
            raise ValueError(
                f"item embeddings have {len(embedding)} dimensions, not {ITEM_EMBEDDING_DIM}"
            )
        features = dict(zip(ITEM_EMBEDDING_NAMES, embedding, strict=True))
        records.append(batch_record(ITEM, row["item_id"], features, as_of=0.0, n_events=0))
    return records
