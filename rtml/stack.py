"""The services ``rtml up`` runs, in start order. Later services register here.

``SERVICES`` is the event-driven stack (``rtml up``, ``rtml demo``). The
request-driven wiring (``rtml up --wiring request``) runs the same services
plus ``GATEWAY``, which calls features, router and prediction over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Wiring = Literal["event", "request"]
WIRINGS: tuple[Wiring, ...] = ("event", "request")


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str  # run as ``python -m MODULE``
    port_env: str  # the RTML_* variable that sets its HTTP port
    default_port: int
    description: str


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "ingestion",
        "rtml.services.ingestion",
        "RTML_INGEST_PORT",
        8080,
        "HTTP API -> events, predict requests",
    ),
    ServiceSpec(
        "features",
        "rtml.services.features",
        "RTML_FEATURES_PORT",
        8081,
        "faust: events -> entity state; predict.requests -> predict.enriched",
    ),
    ServiceSpec(
        "router",
        "rtml.services.router",
        "RTML_ROUTER_PORT",
        8082,
        "bandit router: predict.enriched -> predict.routed",
    ),
    ServiceSpec(
        "prediction",
        "rtml.services.prediction",
        "RTML_PREDICTION_PORT",
        8083,
        "XGBoost scoring: predict.routed -> predictions",
    ),
    ServiceSpec(
        "collector",
        "rtml.services.collector",
        "RTML_COLLECTOR_PORT",
        8084,
        "log-and-wait join: predictions + labels -> examples, rewards, warehouse",
    ),
    ServiceSpec(
        "trainer",
        "rtml.services.trainer",
        "RTML_TRAINER_PORT",
        8085,
        "drift-triggered and scheduled (re)training",
    ),
    ServiceSpec(
        "dashboard", "rtml.services.dashboard", "RTML_DASHBOARD_PORT", 8090, "live dashboard at /"
    ),
)

GATEWAY = ServiceSpec(
    "gateway",
    "rtml.services.gateway",
    "RTML_GATEWAY_PORT",
    8086,
    "request-driven wiring: POST /v1/predict -> features, router, prediction over HTTP",
)


# rtml's own stack serves its demo task when that is loaded and the user asked for no
# other: the services that serve one task default to the only loaded one otherwise
DEMO_TASK = "eta"
ONE_TASK_SETTINGS = ("RTML_TRAINER_TASK", "RTML_PREDICTION_TASK", "RTML_DASHBOARD_TASK")


def with_task_defaults(env: dict[str, str], loaded: tuple[str, ...]) -> dict[str, str]:
    """``env`` with the demo task for every one-task setting it leaves unset."""
    if DEMO_TASK not in loaded:
        return env
    return {**dict.fromkeys(ONE_TASK_SETTINGS, DEMO_TASK), **env}


def services_for(wiring: Wiring) -> tuple[ServiceSpec, ...]:
    """What ``rtml up --wiring WIRING`` runs, in start order."""
    return SERVICES + (GATEWAY,) if wiring == "request" else SERVICES
