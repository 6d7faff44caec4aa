"""Ingestion's own RTML_* settings (broker and body-size settings come from ``shared.settings``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    # a body still arriving after this long is refused (408) and its connection
    # closed, so a client dripping bytes cannot hold a request open for ever
    ingest_body_timeout_s: float = Field(default=30.0, gt=0)
    # predictions kept for GET /v1/predictions/{request_id}: the newest this many read off
    # rtml.predictions since start, as their msgpack bytes (about 1 KB each for eta, 2.4 KB
    # for recs: 20-50 MB at the default)
    ingest_recent_predictions: int = Field(default=20_000, ge=0)
