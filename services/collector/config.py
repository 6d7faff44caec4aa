"""The collector's RTML_* settings (broker settings come from ``shared.settings``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rtml.services.collector.join import JoinConfig

# The embedded broker does not answer a waiting fetch when data arrives, so every
# consumer there polls; each fetch costs it more the more record batches a partition
# holds, and the join topic is written a record per batch. Polling every 5 ms (the
# features' setting) saturated it in the full chaos setting (25k orders): the join
# crawled at about a record a second. A collector waits minutes for labels anyway.
EMBEDDED_FETCH_MAX_WAIT_MS = 50


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    collector_host: str = "127.0.0.1"
    collector_port: int = 8084
    # the faust app id: its consumer group and the prefix of its internal topics
    collector_app_id: str = "rtml-collector"
    # how long (event time) either side of the join waits for the other
    collector_window_s: float = Field(default=2 * 3600.0, gt=0)
    # per task, how long after a prediction its label still counts, overriding the
    # task's spec: RTML_COLLECTOR_LABEL_WINDOWS_S='{"<task>": 600}'
    collector_label_windows_s: dict[str, float] = Field(default_factory=dict)
    # faust's consumer fetch wait (None: EMBEDDED_FETCH_MAX_WAIT_MS on the embedded
    # broker, faust's 1500 ms on Kafka)
    collector_fetch_max_wait_ms: int | None = Field(default=None, ge=1)
    # records of a partition between two sweeps of its emitted-keys table
    collector_forget_every: int = Field(default=1000, ge=1)
    # RTML_WAREHOUSE: the Parquet dataset, a directory or an object storage URL
    # (s3://, gs://, abfs://; None: ./.rtml/warehouse)
    warehouse: str | None = None
    warehouse_group: str = "rtml-warehouse"
    # most examples read per warehouse write (one file per partition, task and hour)
    warehouse_max_records: int = Field(default=5000, ge=1)

    def join_config(self) -> JoinConfig:
        return JoinConfig(
            window_s=self.collector_window_s,
            label_windows=self.collector_label_windows_s,
        )
