"""The dashboard's settings: the shared ``RTML_*`` ones plus its own ``RTML_DASHBOARD_*``."""

from __future__ import annotations

from pydantic import Field
from rtml.shared.contracts import Task
from rtml.shared.settings import Settings


class DashboardSettings(Settings):
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8090
    # the task whose live error and traffic shares the panels follow (None: the only
    # loaded task)
    dashboard_task: Task | None = None
    # how often an open page receives a fresh snapshot
    dashboard_push_interval_s: float = Field(default=1.0, gt=0)
