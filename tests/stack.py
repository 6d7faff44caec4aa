"""A whole rtml stack for the scenario tests: a simulated eta log with what the
reference makes of it, a first model, and the services as real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rtml.services.features.publish import publish
from rtml.services.trainer.bootstrap import examples_from_log
from rtml.services.trainer.jobs import register, table_candidate
from rtml.shared.contracts import Message, PredictRequest
from rtml.shared.embedded_broker import free_port
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.features.reference import task_vectors
from rtml.shared.kafka import start_producer
from rtml.shared.model_announcements import announce
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings

from rtml.stack import SERVICES
from rtml.supervisor import STOP_GRACE_S
from rtml.tasks.eta.events import OrderDelivered
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from rtml.tasks.eta.spec import TASK as ETA
from tests.helpers import wait_http

HOUR = 3600.0


class EtaLog:
    """A simulated eta log with the reference's vector per request and label per order."""

    def __init__(self, sim: SimConfig, hours: float, lateness_s: float) -> None:
        self.messages: list[Message] = list(simulate(sim, hours * HOUR))
        self.batch = compute_batch_features(self.messages)
        batch = {record.entity: record for record in self.batch}
        self.vectors = {r.id: v for r, v in task_vectors(self.messages, ETA, lateness_s, batch)}
        delivered = {m.order_id: m for m in self.messages if isinstance(m, OrderDelivered)}
        self.requests = [
            m for m in self.messages if isinstance(m, PredictRequest) and m.task == "eta"
        ]
        self.labels = {
            r.id: (d.ts - d.placed_ts) / 60.0
            for r in self.requests
            if (d := delivered.get(r.entities["order_id"])) is not None
        }
        self.examples_for_first_model = examples_from_log(self.messages, ETA, self.batch)


async def first_model(settings: Settings, store: ModelStore, log: EtaLog) -> None:
    """A champion for the prediction service and an arm for the router; the batch
    features the workers serve."""
    candidate = table_candidate(log.examples_for_first_model, "eta", {"source": "test"}, rounds=10)
    record = register(store, candidate)
    store.set_champion("eta", record.version)
    await publish(settings, log.batch)
    producer = await start_producer(settings)
    try:
        await announce(producer, record, "registered")
        await announce(producer, record, "promoted")
    finally:
        await producer.stop()


@dataclass
class Service:
    name: str
    module: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen
    killed: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.killed = True

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds to exit). A child past the grace is killed: -9."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = -signal.SIGKILL
        return code, time.monotonic() - started

    def restart(self) -> None:
        """Start it again on the same port (the clients know that one)."""
        self.process = spawn(self.module, self.env)


def spawn(module: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module], env={**os.environ, **env})


@dataclass
class Stack:
    settings: Settings
    services: list[Service] = field(default_factory=list)

    def live(self, name: str) -> list[Service]:
        return [s for s in self.services if s.name == name and not s.killed]

    def of(self, name: str) -> list[Service]:
        return [s for s in self.services if s.name == name]

    def wait_ready(self, timeout_s: float) -> None:
        for _ in range(2):  # a later member's join rebalances the earlier ones
            for service in self.services:
                if not service.killed:
                    try:
                        wait_http(f"{service.url}/readyz", timeout_s=timeout_s)
                    except AssertionError as exc:
                        raise AssertionError(f"{service.name}: {exc}") from None


@contextmanager
def running_stack(
    settings: Settings,
    services: Sequence[tuple[str, str]],
    env: dict[str, str],
    ready_timeout_s: float,
) -> Iterator[Stack]:
    """``services`` ((name, port variable) each) started at once (their groups then form
    in one or two rebalances, not one per member), ready, and stopped afterwards."""
    stack = Stack(settings)
    try:
        for name, port_env in services:
            port = free_port()
            own = {**env, port_env: str(port)}
            module = f"rtml.services.{name}"
            stack.services.append(Service(name, module, port, own, spawn(module, own)))
        stack.wait_ready(ready_timeout_s)
        yield stack
    finally:
        for service in stack.services:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in stack.services:
            try:
                service.process.wait(30)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()


def services_named(*names: str) -> list[tuple[str, str]]:
    """(name, port variable) of ``rtml up``'s services called ``names``, in its start order."""
    return [(spec.name, spec.port_env) for spec in SERVICES if spec.name in names]


def stack_env(settings: Settings, store: ModelStore, warehouse: Path) -> dict[str, str]:
    """The environment every service of a test stack shares."""
    return {
        "RTML_KAFKA_PORT": str(settings.kafka_port),
        "RTML_PARTITIONS": str(settings.partitions),
        "RTML_MODEL_STORE": str(store),
        "RTML_WAREHOUSE": str(warehouse),
        "RTML_ROUTER_SEED": "7",
    }
