"""What every faust service of rtml does the same way: run, and say if it is ready."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import faust
from mode import Service


def recovered_and_assigned(app: faust.App, topic: str) -> bool | str:
    """Readiness of a faust app: tables recovered, not rebalancing, ``topic`` assigned."""
    if app.rebalancing or app.in_recovery:
        return "rebalancing or recovering tables"
    if not app.tables.recovery.completed.is_set():
        return "tables not recovered yet"
    if not any(tp.topic == topic for tp in app.consumer.assignment()):
        return f"no partition of {topic} assigned"
    return True


def run_worker(build: Callable[[], tuple[faust.App, Service]], log_level: str) -> None:
    """Run a faust app with its side services (a dependency: started before the
    app, stopped after it) until SIGTERM. ``build`` runs once the worker's event
    loop is current, which faust apps expect when they are made."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app, side = build()
    faust.Worker(
        app, side, loop=loop, loglevel=log_level, quiet=True, override_logging=False
    ).execute_from_commandline()
