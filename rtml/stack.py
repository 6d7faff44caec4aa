"""The services ``rtml up`` runs, in start order. Later services register here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str  # run as ``python -m MODULE``
    port_env: str  # the RTML_* variable that sets its HTTP port
    default_port: int
    description: str


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("ingestion", "services.ingestion", "RTML_INGEST_PORT", 8080, "HTTP API -> events, predict requests"),
    ServiceSpec("dashboard", "services.dashboard", "RTML_DASHBOARD_PORT", 8090, "live dashboard at /"),
)
