"""The dashboard's settings: the shared ``RTML_*`` ones plus its own ``RTML_DASHBOARD_*``."""

from __future__ import annotations

from pydantic import Field
from rtml.shared.contracts import Task
from rtml.shared.settings import Settings


class DashboardSettings(Settings):
    dashboard_host: str = Field(default="127.0.0.1", description="dashboard's listen address")
    dashboard_port: int = Field(default=8090, description="dashboard's HTTP port")
    dashboard_task: Task | None = Field(
        default=None, description="the task whose live error and traffic shares the panels "
        "follow (unset: the only loaded task)"
    )  # fmt: skip
    dashboard_push_interval_s: float = Field(
        default=1.0, gt=0, description="how often an open page receives a fresh snapshot"
    )
