"""Ingestion's own RTML_* settings (broker and body-size settings come from ``shared.settings``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    # so that a client dripping bytes cannot hold a request open for ever
    ingest_body_timeout_s: float = Field(
        default=30.0, gt=0, description="a body still arriving after this long gets a 408 "
        "and its connection closed"
    )  # fmt: skip
    # kept as their msgpack bytes: about 1 KB each for eta, 2.4 KB for recs (20-50 MB)
    ingest_recent_predictions: int = Field(
        default=20_000, ge=0, description="predictions kept for GET /v1/predictions/{id}: the "
        "newest this many this replica read since it started"
    )  # fmt: skip
