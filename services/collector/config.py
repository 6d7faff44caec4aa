"""The collector's RTML_* settings (broker settings come from ``shared.settings``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rtml.services.collector.join import JoinConfig
from rtml.shared.settings import warehouse_field

# The embedded broker does not answer a waiting fetch when data arrives, so every
# consumer there polls; each fetch costs it more the more record batches a partition
# holds, and the join topic is written a record per batch. Polling every 5 ms (the
# features' setting) saturated it in the full chaos setting (25k orders): the join
# crawled at about a record a second. A collector waits minutes for labels anyway.
EMBEDDED_FETCH_MAX_WAIT_MS = 50


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    collector_host: str = Field(default="127.0.0.1", description="collector's listen address")
    collector_port: int = Field(default=8084, description="collector's HTTP side port")
    collector_app_id: str = Field(
        default="rtml-collector",
        description="the collector faust app: its consumer group and the prefix of its "
        "internal topics",
    )
    collector_window_s: float = Field(
        default=2 * 3600.0, gt=0, description="how long (event time) either side of the join "
        "waits for the other"
    )  # fmt: skip
    collector_label_windows_s: dict[str, float] = Field(
        default_factory=dict, description='per task, how long after a prediction its label '
        'still counts, overriding its spec (JSON, e.g. {"eta": 600})'
    )  # fmt: skip
    collector_fetch_max_wait_ms: int | None = Field(
        default=None, ge=1, description="the collector's fetch wait (unset: "
        f"{EMBEDDED_FETCH_MAX_WAIT_MS} ms on the embedded broker, faust's 1500 ms on Kafka)"
    )  # fmt: skip
    collector_forget_every: int = Field(
        default=1000, ge=1, description="records of a partition between two sweeps of its "
        "emitted-keys table"
    )  # fmt: skip
    warehouse: str | None = warehouse_field()
    warehouse_group: str = Field(
        default="rtml-warehouse", description="the warehouse writer's consumer group"
    )
    # one file per partition, task and hour
    warehouse_max_records: int = Field(
        default=5000, ge=1, description="most examples read per warehouse write"
    )

    def join_config(self) -> JoinConfig:
        return JoinConfig(
            window_s=self.collector_window_s,
            label_windows=self.collector_label_windows_s,
        )
