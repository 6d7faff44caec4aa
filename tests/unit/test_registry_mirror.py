"""What the MLflow mirror shows and sends, without a server (the server tests are
tests/integration/test_mlflow_mirror.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rtml.shared.model_store import CodeVersion, ModelRecord
from rtml.shared.registry_mirror import shown_uri, version_tags


def test_a_password_in_the_tracking_uri_is_never_shown() -> None:
    assert shown_uri("https://rtml:s3cret@mlflow.example:5000/api") == (
        "https://rtml:***@mlflow.example:5000/api"
    )
    assert shown_uri("http://mlflow:5000") == "http://mlflow:5000"


def test_version_tags_carry_what_reproduces_the_version() -> None:
    record = ModelRecord(
        version="eta-2", task="eta", parent_version="eta-1", feature_set="eta@1",
        data_range={"since_label_ts": 1.0, "until_label_ts": 2.0}, params={}, metrics={},
        code_version=CodeVersion(rtml="0.1.0", git_commit="a" * 40),
        created_at=datetime(2026, 1, 1, tzinfo=UTC), sha256="b" * 64,
    )  # fmt: skip

    tags = version_tags(record)

    assert tags["rtml_version"] == "eta-2" and tags["rtml_parent"] == "eta-1"
    assert json.loads(tags["rtml_data_range"]) == record.data_range
    assert json.loads(tags["rtml_code_version"]) == {"rtml": "0.1.0", "git_commit": "a" * 40}
    assert (tags["rtml_feature_set"], tags["rtml_sha256"]) == ("eta@1", "b" * 64)
    assert all(isinstance(value, str) for value in tags.values())
