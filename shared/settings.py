"""Configuration from ``RTML_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from rtml.shared.contracts import Task


def model_store_field() -> Any:
    """The model store setting, for each settings class that reads it."""
    return Field(
        default=None,
        description="the model store: a directory or s3://bucket/prefix (unset: ./.rtml/models)",
    )


def warehouse_field() -> Any:
    """The warehouse setting, for each settings class that reads it."""
    return Field(
        default=None,
        description="the warehouse's Parquet dataset: a directory or s3://, gs://, abfs:// "
        "(unset: ./.rtml/warehouse)",
    )


class Settings(BaseSettings):
    """What every service reads; each field is ``RTML_<NAME>`` (``rtml config`` lists them).

    A field's description is its one line in ``rtml config`` and in the settings
    table of docs/OPERATING.md, which is generated from it.
    """

    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    kafka_bootstrap: str = Field(
        default="",
        description="host:port[,host:port] of the Kafka brokers; empty: the embedded broker "
        "on 127.0.0.1:RTML_KAFKA_PORT",
    )
    kafka_port: int = Field(default=9092, description="the embedded broker's port")
    kafka_flavor: Literal["auto", "kafka", "embedded"] = Field(
        default="auto",
        description="whether the broker gets the embedded broker's workarounds: auto asks "
        "the broker (ApiVersions); kafka or embedded says so",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how clients talk to the brokers"
    )
    kafka_sasl_mechanism: str | None = Field(
        default=None, description="SASL mechanism, e.g. PLAIN or SCRAM-SHA-512 (unset: no SASL)"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password")
    kafka_ssl_cafile: str | None = Field(
        default=None, description="CA bundle that signs the brokers' TLS certificates"
    )
    partitions: int = Field(
        default=6, ge=1, description="partitions of each topic rtml creates, unless its entry "
        "in shared/topics.py fixes them (consumer replicas beyond this get no work)"
    )  # fmt: skip
    # managed Kafkas refuse 1, and acks=all needs min.insync.replicas of them
    replication_factor: int = Field(
        default=1, ge=1, description="replicas of each topic rtml creates: 1 for the embedded "
        "broker, 3 on a real cluster"
    )  # fmt: skip
    # with acks=all a write succeeds once this many replicas have it, so 2 of 3 keeps
    # accepting writes with one broker down and loses nothing acknowledged
    min_insync_replicas: int | None = Field(
        default=None, ge=1, description="min.insync.replicas of the topics rtml creates "
        "(unset: the broker's default)"
    )  # fmt: skip
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    ingest_host: str = Field(default="127.0.0.1", description="ingestion's listen address")
    ingest_port: int = Field(default=8080, description="ingestion's HTTP port")
    ingest_token: SecretStr | None = Field(
        default=None,
        description="bearer token every /v1/ request to ingestion must carry (unset or empty: "
        "no authentication)",
    )
    ingest_max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="largest request body ingestion reads (413 beyond)"
    )
    ingest_max_batch: int = Field(default=1000, ge=1, description="most events in one request")
    ingest_ack_timeout_s: float = Field(
        default=5.0, gt=0, description="how long ingestion waits for the broker's acks before "
        "answering 503"
    )  # fmt: skip

    model_store: str | None = model_store_field()

    prediction_host: str = Field(default="127.0.0.1", description="prediction's listen address")
    prediction_port: int = Field(default=8083, description="prediction's HTTP port")
    prediction_task: Task | None = Field(
        default=None, description="the task whose champion prediction's /readyz waits for "
        "(unset: the only loaded task)"
    )  # fmt: skip
    prediction_max_batch: int = Field(
        default=256, ge=1, description="most routed requests scored in one XGBoost call (1: "
        "no micro-batching)"
    )  # fmt: skip
    # small batches gain nothing from more threads, and on a small machine the broker
    # and the service's own event loop need the cores
    prediction_xgb_threads: int = Field(
        default=1, ge=1, description="XGBoost threads per predict call"
    )

    features_host: str = Field(default="127.0.0.1", description="features' listen address")
    features_port: int = Field(default=8081, description="features' HTTP side port")
    features_app_id: str = Field(
        default="rtml-features",
        description="the features faust app: its consumer group and the prefix of its "
        "internal topics",
    )
    features_allowed_lateness_s: float = Field(
        default=300.0, ge=0, description="an event older than its entity's newest by more "
        "than this goes to the DLQ"
    )  # fmt: skip
    features_fetch_max_wait_ms: int | None = Field(
        default=None, ge=1, description="features' fetch wait (unset: 5 ms on the embedded "
        "broker, which does not answer a fetch early; faust's 1500 ms on Kafka)"
    )  # fmt: skip
    features_freshness_wait_ms: float = Field(
        default=500.0, ge=0, description="longest a request waits for the events appended "
        "before it to be applied (read-your-writes), then is served without that proof"
    )  # fmt: skip
    features_changelog_retention_s: float = Field(
        default=2 * 86400.0, gt=0, description="retention of the features' event changelogs "
        "on Kafka: must cover the longest-lived state plus downtime"
    )  # fmt: skip

    router_host: str = Field(default="127.0.0.1", description="router's listen address")
    router_port: int = Field(default=8082, description="router's HTTP side port")
    # each task's routing policy, its parameters and a new arm's prior come from its
    # spec, overridden per task by RTML_ROUTER_POLICY_<TASK> and the other variables of
    # services/router/handlers.py (TASK_OVERRIDES)
    router_new_arm_min_share: float = Field(
        default=0.05, ge=0, le=1, description="least share of its task's traffic a newly "
        "announced version gets until it has RTML_ROUTER_NEW_ARM_MIN_PULLS rewards"
    )  # fmt: skip
    router_new_arm_min_pulls: int = Field(
        default=200, ge=0, description="rewards a new version needs before its floor lifts"
    )
    router_seed: int | None = Field(
        default=None, description="seed of the router's routing draws (unset: fresh each start)"
    )
    router_checkpoint_every: int = Field(
        default=1000, ge=1, description="rewards folded between two checkpoints to "
        "rtml.router.state"
    )  # fmt: skip
    router_dedupe_window: int = Field(
        default=10_000, ge=1, description="a repeated reward is absorbed within this many "
        "offsets of the first on its partition"
    )  # fmt: skip
    # each fold makes a Thompson policy re-estimate P(best) (~3.5 ms for three arms)
    router_fold_interval_ms: int = Field(
        default=100, ge=0, description="shortest pause between two folds of rewards"
    )
    router_promote_every: int = Field(
        default=1000, ge=1, description="rewards of a task between two checks of the promotion "
        "rule"
    )  # fmt: skip
    router_promote_min_p_best: float = Field(
        default=0.95, gt=0, le=1, description="P(best) a version needs to be promoted"
    )
    router_promote_max_loss: float = Field(
        default=0.01, gt=0, description="expected relative loss below which it is promoted"
    )

    # the request-driven wiring's gateway (rtml up --wiring request): per request it
    # calls features, router and prediction over HTTP
    gateway_host: str = Field(default="127.0.0.1", description="gateway's listen address")
    gateway_port: int = Field(default=8086, description="gateway's HTTP port")
    gateway_features_url: str | None = Field(
        default=None, description="features' base URL (unset: RTML_FEATURES_HOST and _PORT)"
    )
    gateway_router_url: str | None = Field(
        default=None, description="router's base URL (unset: RTML_ROUTER_HOST and _PORT)"
    )
    gateway_prediction_url: str | None = Field(
        default=None, description="prediction's base URL (unset: RTML_PREDICTION_HOST and _PORT)"
    )
    gateway_upstream_timeout_s: float = Field(
        default=2.0, gt=0, description="how long the gateway waits for one upstream's answer"
    )

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> Settings:
        if self.min_insync_replicas is not None and (
            self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError(
                f"RTML_MIN_INSYNC_REPLICAS={self.min_insync_replicas} exceeds "
                f"RTML_REPLICATION_FACTOR={self.replication_factor}: "
                "no acks=all write could succeed"
            )
        return self

    @property
    def embedded(self) -> bool:
        """Whether the broker gets the embedded broker's workarounds: RTML_KAFKA_FLAVOR, or
        what the broker answered (``broker_flavor.resolve``, which every client factory
        of ``kafka.py`` awaits first)."""
        from rtml.shared.broker_flavor import known  # it imports this module

        return known(self) == "embedded"

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"


def revealed(secret: SecretStr | None) -> str | None:
    """The secret's value, for the one call that needs it; never log what this returns."""
    return secret.get_secret_value() if secret is not None else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
