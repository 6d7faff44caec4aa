"""Model announcements built from store records, and the last word per version."""

from __future__ import annotations

import pytest
from rtml.shared.contracts import Trigger, decode, encode
from rtml.shared.model_announcements import announcement_for, decode_announcement, last_word
from rtml.shared.model_store import ModelRecord, ModelStore

from tests.unit.test_prediction_handlers import FEATURE_SET, train_booster


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRecord, ModelRecord]:
    store = ModelStore(tmp_path_factory.mktemp("models"))
    fields = dict(task="eta", feature_set=FEATURE_SET, data_range={"rows": 512}, params={})
    parent = store.register(train_booster(1), metrics={"rmse": 2.0}, version="v1", **fields)
    child = store.register(
        train_booster(2), metrics={"rmse": 1.5}, version="v2", parent_version="v1",
        trigger=Trigger(kind="input_drift", feature="zone_couriers_idle"), **fields,
    )  # fmt: skip
    return parent, child


def test_an_announcement_carries_what_a_reader_needs_to_trust_the_version(
    records: tuple[ModelRecord, ModelRecord],
) -> None:
    _, child = records

    announcement = announcement_for(child, "promoted", reason="beat v1", now=123.0)

    assert announcement.model_dump(exclude={"id"}) == {
        "ts": 123.0,
        "task": "eta",
        "model_version": "v2",
        "action": "promoted",
        "parent_version": "v1",
        "sha256": child.sha256,
        "feature_set": FEATURE_SET,
        "metrics": {"rmse": 1.5},
        "reason": "beat v1",
        # what started its training, from its record
        "trigger": {"kind": "input_drift", "feature": "zone_couriers_idle", "follow_up": 0},
    }
    # keyed by version, so that compaction keeps the last word on each version
    assert announcement.key == b"v2"
    assert decode(encode(announcement)) == announcement


def test_the_last_announcement_of_each_version_wins(
    records: tuple[ModelRecord, ModelRecord],
) -> None:
    parent, child = records
    log = [
        announcement_for(parent, "registered"),
        announcement_for(child, "registered"),
        announcement_for(parent, "promoted"),
        announcement_for(child, "retired"),
    ]

    latest = last_word(log)

    assert {v: a.action for v, a in latest.items()} == {"v1": "promoted", "v2": "retired"}
    assert list(latest) == ["v1", "v2"]


def test_a_record_that_is_not_an_announcement_is_skipped(
    records: tuple[ModelRecord, ModelRecord],
) -> None:
    good = announcement_for(records[0], "registered")
    assert decode_announcement(encode(good), offset=0) == good
    assert decode_announcement(b"\xc1 junk", offset=1) is None
    assert decode_announcement(None, offset=2) is None
