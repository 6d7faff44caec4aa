"""``rtml demo``: the whole stack on one machine, through a storm and back.

1. A warm-up of the marketplace becomes an event log; the first model is
   trained on it (stage 1) and its batch features are published.
2. The broker and every service start as supervised subprocesses.
3. The simulator drives the live marketplace through the ingestion API,
   accelerated; a storm slows every ride part way through.
4. The collector joins predictions with deliveries, the trainer's drift
   detector sees the error jump and fine-tunes the champion (stage 4), the
   router adds the new version as an arm and shifts traffic to it.
5. The summary reads the topics and says what happened; the exit code is 0
   only if every stage worked.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from rtml.client import AsyncClient
from rtml.demo_summary import Phases, Summary, lineage_lines, only, summarize
from rtml.shared import topics
from rtml.shared.broker_flavor import known
from rtml.shared.contracts import (
    DlqRecord,
    Message,
    ModelAnnouncement,
    Prediction,
    TrainingExample,
    Trigger,
)
from rtml.shared.embedded_broker import EmbeddedBroker
from rtml.shared.eventlog import write_event_log
from rtml.shared.kafka import ensure_topics, read_all, start_producer
from rtml.shared.model_announcements import announce
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.object_storage import StorageLocation, parse_location
from rtml.shared.settings import Settings
from rtml.stack import SERVICES
from rtml.supervisor import READY, plan, render_table, wait_ready
from rtml.tasks.eta.simulator.driver import drive
from rtml.tasks.eta.simulator.world import Marketplace, SimConfig

HOUR = 3600.0


@dataclass(frozen=True)
class DemoPlan:
    warmup_h: float  # simulated hours of history the first model learns from
    live_h: float  # simulated hours driven through the stack
    storm_after_h: float  # into the live part
    speedup: float  # event time / wall time while live
    orders_per_hour: float = 600.0
    couriers: int = 600
    restaurants: int = 400
    zones: int = 6

    @property
    def wall_s(self) -> float:
        return self.live_h * HOUR / self.speedup


PLANS = {
    "short": DemoPlan(warmup_h=4, live_h=3.5, storm_after_h=0.75, speedup=240),
    "default": DemoPlan(warmup_h=4, live_h=5, storm_after_h=1.0, speedup=100),
}


class Clock:
    """Wall time <-> the event time the simulator had reached, for placing
    announcements (stamped with wall time) on the event-time axis."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.event: list[float] = []

    def tick(self, message: Message) -> None:
        self.wall.append(time.time())
        self.event.append(message.ts)

    def event_time_at(self, wall: float) -> float | None:
        index = bisect.bisect_right(self.wall, wall) - 1
        return self.event[index] if index >= 0 else None


class Demo:
    def __init__(
        self,
        plan_: DemoPlan,
        seed: int,
        workdir: Path,
        say: Callable[[str], None],
        storage: StorageLocation | None = None,
    ) -> None:
        self.plan = plan_
        self.workdir = workdir
        self.say = say
        self.config = SimConfig(
            seed=seed, orders_per_hour=plan_.orders_per_hour, n_couriers=plan_.couriers,
            n_restaurants=plan_.restaurants, n_zones=plan_.zones, scenario="storm",
            shift_at_s=(plan_.warmup_h + plan_.storm_after_h) * HOUR,
            # the storm slows every ride but sends no courier home: a clean shift a
            # fine-tune can learn, rather than a backlog that grows all evening
            storm_courier_share=1.0,
        )  # fmt: skip
        self.world = Marketplace(self.config)
        self.clock = Clock()
        # the model store and the warehouse: in the workdir, or under an object storage URL
        self.storage = storage or parse_location(workdir)
        self.store = ModelStore(str(self.storage.child("models")))
        self.failures: list[str] = []

    @property
    def storm_ts(self) -> float:
        return self.config.start_ts + self.config.shift_at_s

    def bootstrap(self) -> tuple[ModelRecord, list]:
        """Stage 1: the first model, from the warm-up's event log, and the batch
        features the live service will serve."""
        from rtml.services.trainer.bootstrap import event_log_candidate
        from rtml.services.trainer.jobs import register
        from rtml.shared.features.batch import compute_batch_features

        warmup = list(self.world.run(self.plan.warmup_h * HOUR))
        log_path = self.workdir / "warmup.evl"
        write_event_log(log_path, warmup)
        batch = compute_batch_features(warmup)
        source = {"source": "event_log", "path": str(log_path)}
        candidate = event_log_candidate(warmup, "eta", source, batch)
        record = register(self.store, candidate, Trigger(kind="bootstrap"))
        self.store.set_champion("eta", record.version)
        self.say(
            f"  first model {record.version}: {candidate.data_range['examples']} examples, "
            f"holdout MAE {candidate.metrics['holdout_mae']:.1f} min"
        )
        return record, batch

    async def run(self, settings: Settings, env: dict[str, str]) -> Summary:
        from rtml.services.features.publish import publish

        first, batch = await asyncio.to_thread(self.bootstrap)
        await ensure_topics(settings)
        await publish(settings, batch)
        producer = await start_producer(settings)
        try:
            await announce(
                producer, first, "registered", "stage 1: from scratch on the warm-up log"
            )
            await announce(producer, first, "promoted", "the first model")
        finally:
            await producer.stop()
        children = plan(SERVICES, env)
        stopping = asyncio.Event()
        supervisors = [asyncio.create_task(child.supervise(stopping)) for child in children]
        try:
            status = await wait_ready(children, timeout_s=120)
            self.say(render_table(children, status, settings.bootstrap, known(settings)))
            if any(s != READY for s in status.values()):
                self.failures.append("not every service became ready")
                return Summary()
            dashboard = next((c.url for c in children if c.spec.name == "dashboard"), None)
            if dashboard:
                self.say(f"\n  live dashboard: {dashboard}/\n")
            await self._drive(env)
            await self._settle(settings)
            return await self._summary(settings)
        finally:
            stopping.set()  # each supervisor stops its service
            await asyncio.gather(*supervisors, return_exceptions=True)

    async def _drive(self, env: dict[str, str]) -> None:
        url = f"http://127.0.0.1:{env['RTML_INGEST_PORT']}"
        self.say(
            f"  driving {self.plan.live_h:g} simulated hours at {self.plan.speedup:g}x "
            f"(~{self.plan.wall_s:.0f} s); the storm starts {self.plan.storm_after_h:g} h in"
        )
        last = [0.0]

        def progress(message: Message) -> None:
            self.clock.tick(message)
            if time.monotonic() - last[0] > 15:
                last[0] = time.monotonic()
                hours = (message.ts - self.config.start_ts) / HOUR - self.plan.warmup_h
                storm = " (storm)" if message.ts >= self.storm_ts else ""
                self.say(f"  ... {hours:4.1f} simulated hours in{storm}")

        async with AsyncClient(url) as client:
            stats = await drive(
                self.world.run((self.plan.warmup_h + self.plan.live_h) * HOUR),
                client, self.plan.speedup, on_progress=progress,
            )  # fmt: skip
        self.say(
            f"  sent {stats.events} events and {stats.predict_requests} predict requests "
            f"({stats.failed} failed)"
        )
        if stats.failed:
            self.failures.append(f"{stats.failed} requests to ingestion failed")

    async def _settle(self, settings: Settings, timeout_s: float = 60.0) -> None:
        """Let the last predictions, labels and a pending fine-tune land."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            announcements = only(
                ModelAnnouncement, [m for _, m in await read_all(settings, topics.MODELS.name)]
            )
            if any(a.parent_version for a in announcements):
                break
            await asyncio.sleep(3)
        await asyncio.sleep(5)

    async def _summary(self, settings: Settings) -> Summary:
        contents = {
            topic.name: [m for _, m in await read_all(settings, topic.name)]
            for topic in (
                topics.EVENTS,
                topics.PREDICTIONS,
                topics.TRAINING_EXAMPLES,
                topics.MODELS,
                topics.DLQ,
            )
        }
        announcements = only(ModelAnnouncement, contents[topics.MODELS.name])
        first_child = min((a.ts for a in announcements if a.parent_version), default=None)
        phases = Phases(
            self.storm_ts, self.clock.event_time_at(first_child) if first_child else None
        )
        return summarize(
            len(contents[topics.EVENTS.name]), only(Prediction, contents[topics.PREDICTIONS.name]),
            only(TrainingExample, contents[topics.TRAINING_EXAMPLES.name]), announcements,
            only(DlqRecord, contents[topics.DLQ.name]), phases,
        )  # fmt: skip


def report(summary: Summary) -> list[str]:
    lines = [
        "",
        "rtml demo — summary",
        f"  events processed        {summary.events:,}",
        f"  predictions             {summary.predictions:,}",
        f"  training examples       {summary.examples:,} (predictions joined with their delivery)",
    ]
    if summary.latency_ms:
        lines.append(
            f"  latency, ingestion -> scored   p50 {summary.latency_ms['p50']:.1f} ms   "
            f"p99 {summary.latency_ms['p99']:.1f} ms"
        )
    if summary.hops_ms:
        lines.append("    per hop, p50 / p99 ms: " + ", ".join(
            f"{hop} {q['p50']:.1f} / {q['p99']:.1f}" for hop, q in summary.hops_ms.items()
        ))  # fmt: skip
    lines.append("  mean absolute error (minutes):")
    for phase, value in summary.mae.items():
        lines.append(f"    {phase:<48} {'—' if value is None else f'{value:.2f}'}")
    lines.append("  models (lineage):")
    lines.extend(f"    {line}" for line in lineage_lines(summary.models))
    if summary.traffic_share:
        shares = ", ".join(f"{v} {s:.0%}" for v, s in summary.traffic_share.items())
        lines.append(f"  traffic share since the first fine-tune: {shares}")
    dead = ", ".join(f"{k}: {n}" for k, n in summary.dead_letters.items()) or "none"
    lines.append(f"  dead letters            {dead}")
    return lines


def verdict(summary: Summary, failures: list[str]) -> list[str]:
    problems = list(failures)
    if summary.predictions == 0:
        problems.append("no predictions were made")
    if summary.examples == 0:
        problems.append("no prediction was joined with its label")
    if not summary.fine_tuned:
        problems.append("no fine-tuned model was registered")
    return problems


async def run_demo(
    plan_name: str,
    seed: int,
    workdir: Path | None,
    say: Callable[[str], None],
    storage: str | None = None,
) -> int:
    plan_ = PLANS[plan_name]
    base = Settings()
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="rtml-demo-")) if own_dir else workdir
    root.mkdir(parents=True, exist_ok=True)
    demo = Demo(plan_, seed, root, say, parse_location(storage) if storage else None)
    env = {
        **os.environ,
        "RTML_MODEL_STORE": str(demo.storage.child("models")),
        "RTML_WAREHOUSE": str(demo.storage.child("warehouse")),
        "RTML_LOG_LEVEL": os.environ.get("RTML_LOG_LEVEL", "WARNING"),
        "RTML_DRIFT_FINETUNE": "true",
    }
    for spec in SERVICES:
        env.setdefault(spec.port_env, str(spec.default_port))
    say(f"rtml demo ({plan_name}): workdir {root}, models and warehouse in {demo.storage}")
    async with AsyncExitStack() as stack:
        if not base.kafka_bootstrap:
            broker = stack.enter_context(EmbeddedBroker(port=base.kafka_port))
            env["RTML_KAFKA_PORT"] = str(broker.port)
            say(f"  embedded broker on {broker.bootstrap} (memory only)")
        summary = await demo.run(
            Settings(kafka_port=int(env.get("RTML_KAFKA_PORT", base.kafka_port))), env
        )
    for line in report(summary):
        say(line)
    problems = verdict(summary, demo.failures)
    say("\n" + ("every stage worked" if not problems else "FAILED: " + "; ".join(problems)))
    if own_dir and not problems:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not problems else 1
