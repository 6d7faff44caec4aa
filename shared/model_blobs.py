"""The model store's bytes: objects by key, with the two conditional writes it relies on.

``put(key, data, if_tag=...)`` either writes unconditionally (``ANY``), only if the
key is absent (``None``: a version's objects are created once, never replaced), or
only if the key still holds what was read with that tag (compare-and-swap: the
champion pointer). A write whose condition fails raises ``ConditionFailed`` and
changes nothing. Every write is whole: a reader sees the old bytes or the new.

- ``LocalBlobs``: a directory. Creation is a hard link of a fsynced temporary file
  (atomic, and refused when the name exists); compare-and-swap holds an exclusive
  ``flock`` beside the object while it compares and renames. The tag is the sha256.
- ``S3Blobs``: a bucket prefix through boto3, with S3's conditional writes
  (``If-None-Match: *`` and ``If-Match: <ETag>``; Amazon S3 since 2024, MinIO,
  moto). ``pyarrow.fs``, which the warehouse uses, exposes neither ETags nor
  conditional writes (apache/arrow#44281), so the store talks to S3 through the
  AWS SDK for every operation instead of splitting them across two clients.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Protocol

from rtml.shared.object_storage import S3, StorageLocation, StorageSettings, s3_client


class AnyTag:
    """The condition of an unconditional write."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = AnyTag()
Condition = str | None | AnyTag


class ConditionFailed(Exception):
    """A conditional write found the key not as expected; nothing was written."""


class Blobs(Protocol):
    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and the tag a later ``put(if_tag=...)`` compares, or None."""

    def put(self, key: str, data: bytes, *, if_tag: Condition = ANY) -> None:
        """Write ``data`` whole: always (ANY), only if absent (None), or only if the
        object still has the tag ``if_tag``; else ConditionFailed."""

    def exists(self, key: str) -> bool: ...

    def folders(self, prefix: str) -> list[str]:
        """The names one level below ``prefix`` that hold objects."""


def blobs_at(location: StorageLocation, settings: StorageSettings | None = None) -> Blobs:
    if location.is_local:
        return LocalBlobs(Path(location.prefix))
    if location.scheme == S3:
        return S3Blobs(location.bucket, location.prefix, s3_client(settings))
    raise ValueError(
        f"{location}: the model store lives on a local directory or s3:// (its versions and "
        f"champion pointer need conditional writes, which rtml implements for those two)"
    )


class LocalBlobs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.get(key)
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put(self, key: str, data: bytes, *, if_tag: Condition = ANY) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._temporary_copy(path, data) as temporary:
            if if_tag is None:
                try:
                    os.link(temporary, path)  # atomic, and refused when the name is taken
                except FileExistsError:
                    raise ConditionFailed(f"{path} exists") from None
            elif isinstance(if_tag, str):
                with _locked(path):
                    current = self.get_tagged(key)
                    if current is None or current[1] != if_tag:
                        raise ConditionFailed(f"{path} changed since it was read")
                    os.replace(temporary, path)
            else:
                os.replace(temporary, path)
        _fsync_dir(path.parent)

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def folders(self, prefix: str) -> list[str]:
        try:
            entries = list(os.scandir(self.root / prefix))
        except FileNotFoundError:
            return []
        return [entry.name for entry in entries if entry.is_dir()]

    @contextlib.contextmanager
    def _temporary_copy(self, path: Path, data: bytes) -> Iterator[Path]:
        # hidden, so that a folder listing never mistakes it for an object
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            with open(temporary, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            yield temporary
        finally:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # a lock file beside the object, never replaced, so every writer locks the same inode
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _fsync_dir(path: Path) -> None:
    # makes a new name survive a crash, not just a process exit
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class S3Blobs:
    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = client

    def get(self, key: str) -> bytes:
        return self._get(key)["Body"].read()

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self._get(key)
        except FileNotFoundError:
            return None
        return response["Body"].read(), response["ETag"]

    def put(self, key: str, data: bytes, *, if_tag: Condition = ANY) -> None:
        condition = {} if isinstance(if_tag, AnyTag) else (
            {"IfNoneMatch": "*"} if if_tag is None else {"IfMatch": if_tag}
        )  # fmt: skip
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except self._client.exceptions.ClientError as error:
            # 412: the condition is false; 409: a concurrent conditional write to the same
            # key won; 404: If-Match on a key that is gone
            if condition and _status(error) in (404, 409, 412):
                raise ConditionFailed(f"s3://{self.bucket}/{self._key(key)}: {error}") from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self._client.exceptions.ClientError as error:
            if _status(error) == 404:
                return False
            raise
        return True

    def folders(self, prefix: str) -> list[str]:
        base = self._key(prefix) + "/"
        paginator = self._client.get_paginator("list_objects_v2")
        names = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
            names += [p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return names

    def _get(self, key: str) -> dict[str, Any]:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self._client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"s3://{self.bucket}/{self._key(key)}") from None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def _status(error: Any) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
