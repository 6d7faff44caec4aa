"""Configuration from ``RTML_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from rtml.shared.contracts import Task


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    # An empty bootstrap means: the embedded broker on 127.0.0.1:kafka_port (rtml up and
    # rtml demo start it there).
    kafka_bootstrap: str = ""
    kafka_port: int = 9092
    # whether the broker needs the embedded broker's workarounds (broker_compat.py):
    # auto asks the broker (shared/broker_flavor.py); kafka or embedded says so
    kafka_flavor: Literal["auto", "kafka", "embedded"] = "auto"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    # Partitions per topic unless the topic registry says otherwise.
    partitions: int = Field(default=6, ge=1)
    # Replicas per topic created by rtml: 1 for the embedded broker, 3 on a real cluster
    # (managed Kafkas refuse 1, and acks=all needs min.insync.replicas of them).
    replication_factor: int = Field(default=1, ge=1)
    # min.insync.replicas of the topics rtml creates (None: the broker's default): with
    # acks=all a write succeeds once this many replicas have it, so 2 of 3 keeps
    # accepting writes with one broker down and loses nothing acknowledged
    min_insync_replicas: int | None = Field(default=None, ge=1)
    log_level: str = "INFO"

    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8080
    ingest_token: str | None = None
    ingest_max_body_bytes: int = Field(default=1 << 20, ge=1024)
    ingest_max_batch: int = Field(default=1000, ge=1)
    # How long ingestion waits for the broker's ack before answering 503.
    ingest_ack_timeout_s: float = Field(default=5.0, gt=0)

    # RTML_MODEL_STORE: the model store directory (None: ./.rtml/models)
    model_store: Path | None = None

    prediction_host: str = "127.0.0.1"
    prediction_port: int = 8083
    # /readyz of the prediction service waits for this task's champion (None: the only
    # loaded task)
    prediction_task: Task | None = None
    # most routed requests scored in one inplace_predict; 1 turns micro-batching off
    prediction_max_batch: int = Field(default=256, ge=1)
    # XGBoost threads per predict call: small batches gain nothing from more, and
    # on a small machine the broker and the service's own event loop need the cores
    prediction_xgb_threads: int = Field(default=1, ge=1)

    features_host: str = "127.0.0.1"
    features_port: int = 8081
    # the faust app id: its consumer group and the prefix of its changelog topics
    features_app_id: str = "rtml-features"
    # an event older than its entity's newest event by more than this goes to the DLQ
    features_allowed_lateness_s: float = Field(default=300.0, ge=0)
    # faust's consumer waits this long for data per fetch (None: 5 ms on the embedded
    # broker, which does not answer a fetch early; faust's own 1500 ms on Kafka)
    features_fetch_max_wait_ms: int | None = Field(default=None, ge=1)
    # a request waits at most this long for the events appended before it to be
    # applied (read-your-writes across topics), then is served without that proof
    features_freshness_wait_ms: float = Field(default=500.0, ge=0)
    # time-based retention of the event changelogs on a real Kafka: must cover the
    # longest-lived state (open orders, online couriers) plus downtime to survive
    features_changelog_retention_s: float = Field(default=2 * 86400.0, gt=0)

    router_host: str = "127.0.0.1"
    router_port: int = 8082
    # each task's routing policy, its parameters and a new arm's prior come from its
    # spec, overridden by RTML_ROUTER_POLICY_<TASK>, RTML_ROUTER_PARAMS_<TASK> (JSON, e.g.
    # {"epsilon": 0.05}) and RTML_ROUTER_PRIOR_<TASK> (JSON, e.g. {"alpha": 1, "beta": 1});
    # a task with item arms also by RTML_ROUTER_<TASK>_ITEMS and _CATEGORIES (JSON list)
    # (services/router/handlers.py)
    # a newly announced version gets at least this share of its task's traffic
    # until it has folded router_new_arm_min_pulls rewards
    router_new_arm_min_share: float = Field(default=0.05, ge=0, le=1)
    router_new_arm_min_pulls: int = Field(default=200, ge=0)
    # seed of this replica's routing draws (None: fresh entropy at every start)
    router_seed: int | None = None
    # rewards folded between two checkpoints to rtml.router.state
    router_checkpoint_every: int = Field(default=1000, ge=1)
    # a repeated request id is absorbed when it comes within this many offsets of
    # the first on its rewards partition
    router_dedupe_window: int = Field(default=10_000, ge=1)
    # shortest pause between two folds of rewards: each fold makes a Thompson policy
    # re-estimate P(best) (~3.5 ms for three arms at 10,000 draws)
    router_fold_interval_ms: int = Field(default=100, ge=0)
    # the promotion ("value remaining") rule, checked after every promote_every rewards
    router_promote_every: int = Field(default=1000, ge=1)
    router_promote_min_p_best: float = Field(default=0.95, gt=0, le=1)
    router_promote_max_loss: float = Field(default=0.01, gt=0)

    # the request-driven wiring's gateway (rtml up --wiring request): per request it
    # calls features, router and prediction over HTTP; an upstream URL left unset is
    # that service's host and port above
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8086
    gateway_features_url: str | None = None
    gateway_router_url: str | None = None
    gateway_prediction_url: str | None = None
    # how long the gateway waits for one upstream's answer
    gateway_upstream_timeout_s: float = Field(default=2.0, gt=0)

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
