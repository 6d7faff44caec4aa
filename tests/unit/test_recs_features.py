"""The recs task's own features: the item table (rtml/tasks/recs/features.py)."""

from __future__ import annotations

from rtml.tasks.recs.features import ITEM_EMBEDDING_DIM, item_embedding_records


def test_item_embeddings_come_from_the_open_bandit_dataset() -> None:
    records = item_embedding_records()
    assert [r.entity for r in records] == [f"item:{i}" for i in range(80)]
    assert all(len(r.values) == ITEM_EMBEDDING_DIM for r in records)
    # one category of each of the three categorical item features is hot
    assert all(sum(r.values[1:]) == 3.0 for r in records)
