"""Storage locations: a path or an object storage URL, and the filesystem each opens."""

from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest
from rtml.shared.object_storage import (
    StorageLocation,
    StorageSettings,
    arrow_filesystem,
    parse_location,
)


@pytest.mark.parametrize(
    ("where", "parsed", "shown"),
    [
        (".rtml/models", StorageLocation("file", "", ".rtml/models"), ".rtml/models"),
        ("file:///var/lib/rtml", StorageLocation("file", "", "/var/lib/rtml"), "/var/lib/rtml"),
        ("s3://bucket/a/b/", StorageLocation("s3", "bucket", "a/b"), "s3://bucket/a/b"),
        ("s3://bucket", StorageLocation("s3", "bucket", ""), "s3://bucket"),
        ("gs://bucket/wh", StorageLocation("gs", "bucket", "wh"), "gs://bucket/wh"),
    ],
)
def test_a_location_is_a_path_or_a_url_and_prints_as_given(
    where: str, parsed: StorageLocation, shown: str
) -> None:
    assert parse_location(where) == parsed
    assert str(parse_location(where)) == shown


def test_children_join_as_their_kind_does() -> None:
    assert str(parse_location("s3://bucket").child("models")) == "s3://bucket/models"
    assert str(parse_location("s3://bucket/demo").child("models")) == "s3://bucket/demo/models"
    assert parse_location("/tmp/demo").child("models").prefix == os.path.join("/tmp/demo", "models")


def test_a_url_without_a_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="names its bucket"):
        parse_location("s3:///models")


def test_s3_opens_at_the_configured_endpoint(tmp_path) -> None:
    settings = StorageSettings(s3_endpoint_url="http://127.0.0.1:9000", s3_region="eu-west-1")
    filesystem, path = arrow_filesystem(parse_location("s3://bucket/wh"), settings)
    assert isinstance(filesystem, pafs.S3FileSystem) and path == "bucket/wh"
    options = filesystem.__reduce__()[1][0]  # the options it was built with
    assert (options["region"], options["scheme"]) == ("eu-west-1", "http")
    assert options["endpoint_override"] == "127.0.0.1:9000"
    local, folder = arrow_filesystem(parse_location(tmp_path / "wh"))
    assert isinstance(local, pafs.LocalFileSystem) and folder == str(tmp_path / "wh")
