"""What every faust service of rtml does the same way: run, and say if it is ready.

Readiness tells the truth about processing, not only about membership: an
agent that raised (faust restarts it, and has acked the record it was on) or
a consumer that stopped committing while records wait makes ``/readyz`` fail.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TP, AgentT
from mode import Service
from prometheus_client import Counter
from rtml.shared.logging import get_logger
from rtml.shared.metrics import CONSUMER_LAG, Lag

log = get_logger(__name__)
AGENT_CRASHES = Counter(
    "rtml_faust_agent_crashes_total",
    "faust agents that raised (faust restarts them and has acked the record they were on)",
    ["app", "agent"],
)

# after an agent crash the app is not ready for this long, so a probe sees it
CRASH_NOT_READY_S = 30.0
# a partition with records waiting whose committed offset stands still this long is stuck
STALL_AFTER_S = 15.0


@dataclass(frozen=True)
class AgentCrash:
    agent: str
    error: str
    at: float


class WatchedApp(faust.App):
    """A faust app that remembers its last agent crash and watches its commits."""

    def __init__(self, id: str, **options: Any) -> None:
        self.last_agent_crash: AgentCrash | None = None
        self.commit_watch = CommitWatch()
        # faust makes a data directory even for in-memory tables, by default in the
        # working directory: not in a container whose root filesystem is read-only
        options.setdefault(
            "datadir", Path(tempfile.gettempdir()) / f"rtml-faust-{os.getuid()}-{id}"
        )
        super().__init__(id, **options)
        app = weakref.ref(self)
        CONSUMER_LAG.add_source(lambda: consumer_lag(app()))

    async def _on_agent_error(self, agent: AgentT, exc: BaseException) -> None:
        # rtml's agents send what they cannot handle to the DLQ; reaching here means
        # that failed too (the DLQ itself was unreachable, or a bug outside the handler)
        AGENT_CRASHES.labels(self.conf.id, agent.name).inc()
        self.last_agent_crash = AgentCrash(agent.name, repr(exc)[:500], time.monotonic())
        log.error("agent_crashed", agent=agent.name, error=repr(exc))
        await super()._on_agent_error(agent, exc)


def recovered_and_assigned(app: WatchedApp, topic: str) -> bool | str:
    """Readiness of a faust app: tables recovered, not rebalancing, ``topic`` assigned,
    no recent agent crash, commits moving while records wait."""
    if (recovered := tables_recovered(app)) is not True:
        return recovered
    assignment = app.consumer.assignment()
    if not any(tp.topic == topic for tp in assignment):
        return f"no partition of {topic} assigned"
    crash = app.last_agent_crash
    if crash is not None and time.monotonic() - crash.at < CRASH_NOT_READY_S:
        return f"agent {crash.agent} crashed: {crash.error}"
    return app.commit_watch.verdict(_commit_positions(app, assignment))


def tables_recovered(app: WatchedApp) -> bool | str:
    """Whether the app's tables are recovered and no rebalance is under way: cheap
    enough to ask on every request."""
    if app.rebalancing or app.in_recovery:
        return "rebalancing or recovering tables"
    if not app.tables.recovery.completed.is_set():
        return "tables not recovered yet"
    return True


def consumer_lag(app: WatchedApp | None) -> Iterator[Lag]:
    """Per partition the app commits: the records from its committed offset to the end."""
    if app is None or not app.started:
        return
    try:
        positions = _commit_positions(app, app.consumer.assignment())
    except Exception:  # a consumer between generations has nothing to say
        return
    for tp, (committed, end) in positions.items():
        yield Lag(app.conf.id, tp.topic, tp.partition, max(0, end - committed))


def _commit_positions(app: WatchedApp, assignment: set[TP]) -> dict[TP, tuple[int, int]]:
    """(committed, end) of every assigned partition whose offsets the app commits."""
    consumer = app.consumer
    positions = {}
    for tp in assignment:
        if not app.topics.acks_enabled_for(tp.topic):
            continue  # changelogs: read by recovery, never committed
        end = consumer.highwater(tp)
        if end is not None:
            positions[tp] = (consumer._committed_offset.get(tp) or 0, end)
    return positions


class CommitWatch:
    """Whether committed offsets still move while records wait behind them.

    Fed on every readiness probe: a partition whose committed offset is below
    its end and has not moved for ``stall_after_s`` is stuck (a hung handler,
    a consumer that lost the broker, a commit loop that died).
    """

    def __init__(self, stall_after_s: float = STALL_AFTER_S) -> None:
        self.stall_after_s = stall_after_s
        self._since: dict[TP, tuple[int, float]] = {}

    def verdict(self, positions: Mapping[TP, tuple[int, int]]) -> bool | str:
        now = time.monotonic()
        stuck = []
        for tp, (committed, end) in positions.items():
            last, since = self._since.get(tp, (None, now))
            if committed != last or committed >= end:
                self._since[tp] = (committed, now)
            elif now - since > self.stall_after_s:
                stuck.append(f"{tp.topic}[{tp.partition}] at {committed} of {end}")
        for tp in set(self._since) - set(positions):
            del self._since[tp]
        if stuck:
            return f"no commit for {self.stall_after_s:.0f}s with records waiting: " + ", ".join(
                sorted(stuck)
            )
        return True


def run_worker(build: Callable[[], tuple[faust.App, Service]], log_level: str) -> None:
    """Run a faust app with its side services (a dependency: started before the
    app, stopped after it) until SIGTERM. ``build`` runs once the worker's event
    loop is current, which faust apps expect when they are made."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app, side = build()
    worker = faust.Worker(
        app, side, loop=loop, loglevel=log_level, quiet=True, override_logging=False
    )
    if not worker.stdout.isatty():
        # faust's start-up spinner hides and shows the cursor with escape codes whether or
        # not its output is a terminal (mode's Spinner checks only for the spinning part)
        worker.spinner = None
    worker.execute_from_commandline()
