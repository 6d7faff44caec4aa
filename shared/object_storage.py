"""Where the model store and the warehouse keep their bytes, chosen by URL.

A plain path (or ``file://``) is a local directory, the default. ``s3://bucket/prefix``
is Amazon S3 or any S3-compatible store (MinIO, Ceph, R2...: ``RTML_S3_ENDPOINT_URL``
names its endpoint). The warehouse also takes ``gs://`` and ``abfs://``, which
``pyarrow.fs`` reads and writes the same way; the model store needs conditional
writes, which only the local and S3 backends give it (``shared/model_blobs.py``).

Credentials are never rtml settings: each client takes its cloud's own chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` from a Secret, a web identity token
on EKS, an instance role...), so no key passes through rtml's configuration or logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL = "file"
S3 = "s3"


class StorageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    s3_endpoint_url: str | None = Field(
        default=None,
        description="an S3-compatible store's endpoint for s3:// URLs, e.g. http://minio:9000 "
        "(unset: Amazon S3)",
    )
    s3_region: str | None = Field(
        default=None,
        description="the bucket's region for s3:// URLs (unset: the AWS SDK's own, AWS_REGION...)",
    )


@dataclass(frozen=True)
class StorageLocation:
    """A local directory or a prefix in a bucket."""

    scheme: str
    bucket: str  # "" for a local directory
    prefix: str  # a local directory's path, or the key prefix without slashes at its ends

    @property
    def is_local(self) -> bool:
        return self.scheme == LOCAL

    def child(self, name: str) -> StorageLocation:
        if self.is_local:
            return StorageLocation(LOCAL, "", os.path.join(self.prefix, name))
        return StorageLocation(
            self.scheme, self.bucket, "/".join(filter(None, [self.prefix, name]))
        )

    def __str__(self) -> str:
        if self.is_local:
            return self.prefix
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")


def parse_location(where: str | os.PathLike[str]) -> StorageLocation:
    """``s3://bucket/a/b`` -> (s3, bucket, a/b); a path or ``file:///p`` -> (file, "", p)."""
    text = os.fspath(where)
    parts = urlsplit(text)
    # a one-letter scheme is a Windows drive, not a URL
    if len(parts.scheme) <= 1:
        return StorageLocation(LOCAL, "", text)
    if parts.scheme == LOCAL:
        return StorageLocation(LOCAL, "", parts.path)
    if not parts.netloc:
        raise ValueError(
            f"{text!r}: an object storage URL names its bucket ({parts.scheme}://BUCKET/...)"
        )
    return StorageLocation(parts.scheme, parts.netloc, parts.path.strip("/"))


def arrow_filesystem(
    location: StorageLocation, settings: StorageSettings | None = None
) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the location's path in it."""
    if location.is_local:
        return pafs.LocalFileSystem(), os.path.abspath(location.prefix)
    if location.scheme == S3:
        path = f"{location.bucket}/{location.prefix}".rstrip("/")
        settings = settings or StorageSettings()
        options: dict[str, Any] = {"region": settings.s3_region} if settings.s3_region else {}
        if settings.s3_endpoint_url:
            endpoint = urlsplit(settings.s3_endpoint_url)
            options |= {"endpoint_override": endpoint.netloc, "scheme": endpoint.scheme or "https"}
        return pafs.S3FileSystem(**options), path
    # gs://, abfs://...: pyarrow knows how each names its buckets and paths
    return pafs.FileSystem.from_uri(str(location))


def s3_client(settings: StorageSettings | None = None) -> Any:
    """A boto3 S3 client for the configured endpoint."""
    # imported here: importing boto3 takes ~0.2 s that only processes using S3 should pay
    import boto3
    from botocore.config import Config

    settings = settings or StorageSettings()
    # S3-compatible stores on a plain host:port (MinIO, a test server) serve path-style
    # URLs only; Amazon S3 takes either
    addressing = {"addressing_style": "path"} if settings.s3_endpoint_url else {}
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=Config(s3=addressing, retries={"mode": "standard", "max_attempts": 5}),
    )
