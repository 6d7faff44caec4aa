"""Configuration from ``RTML_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    # An empty bootstrap means: use the embedded broker on 127.0.0.1:kafka_port.
    kafka_bootstrap: str = ""
    kafka_port: int = 9092
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    # Partitions per topic unless the topic registry says otherwise.
    partitions: int = Field(default=6, ge=1)
    log_level: str = "INFO"

    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8080
    ingest_token: str | None = None
    ingest_max_body_bytes: int = Field(default=1 << 20, ge=1024)
    ingest_max_batch: int = Field(default=1000, ge=1)
    # How long ingestion waits for the broker's ack before answering 503.
    ingest_ack_timeout_s: float = Field(default=5.0, gt=0)

    @property
    def embedded(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
