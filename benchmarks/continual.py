"""Continual learning on the eta simulator through a storm: how much each way of
keeping the model fresh pays after the world shifts, and what it costs.

The stream: a seeded marketplace (the demo's, with more couriers: see SIM) runs a warm-up, whose
examples train the first model (stage 1, as ``rtml demo`` does), then a live
part in which a storm makes every ride 1.5x slower from a fixed minute on (the
demo's storm: couriers stay at work, so the shift is clean). Features come from
the features service's own pure state and lookups (``EntityStates``,
``entity_features``, ``feature_vector``), applied in event-time order.

Each strategy replays the same live stream **prequentially**, in-process: every
request is predicted by the model deployed at its event time; its example
reaches the warehouse and the trainer when its delivery (the label) happens.
It drives the trainer service's own ``Trainer`` (the real jobs: from scratch,
warm-start fine-tuning with recency weights, ADWIN / Page-Hinkley, the holdout
"not worse" gate, registration in a real model store, a real Parquet
warehouse); the schedule ticks in event time, and a version is deployed as soon
as it is registered (no router). There is no Kafka: this measures the learning
strategies, not the transport, and an in-process replay makes event time exact
and the run deterministic for a seed.

- none: the first model throughout;
- scheduled-scratch (stage 2): a new model from every example, every hour;
- scheduled-finetune (stage 3): a fine-tune of the deployed model, every hour;
- drift-finetune (stage 4): a fine-tune when the drift monitor fires, and its episode's follow-ups.

Reported per strategy, each as its mean and 95% Student-t interval over the seeds
(``--seeds N``, from ``--first-seed``): MAE before the drift; MAE after it (the area
under the error curve per prediction) and its ratio to no retraining; predictions after
the drift until the rolling MAE is back within 10% of the pre-drift MAE of no
retraining, and until it is within 10% of what no retraining had at the same request in
the same world without the storm (this world's error follows the daily demand even
without a drift; a run that never gets there counts all its post-drift predictions, and
the table says how often); trainings run and kept; CPU-seconds of the training jobs
(``time.process_time`` around them: warehouse read, training, holdout, registration;
nthread 1). Then each strategy's post-drift MAE and predictions to the storm-free curve
minus drift-finetune's in the same seed (paired: an interval above 0 says drift-finetune
leads whatever the world).

The calm run replays the same worlds without the storm and counts the trainings each
strategy runs when nothing changes. The long-retention run (``--retention-days``,
default 7) grows a warehouse over a storm-free week of the first seed and measures, at
6 h, 1, 3 and 7 days of examples, one from-scratch training on all of them against one
fine-tune on the newest ``--interval-h`` (of a from-scratch parent trained on the rest).

Usage: python -m benchmarks.continual [--seeds 1] [--first-seed 0] [--json] [--plot PATH]
       [--warmup-h 4] [--live-h 8] [--drift-after-h 2] [--interval-h 1] [--retention-days 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import REGISTRY
from rtml.services.features.handlers import advance, entity_features, feature_vector, plan
from rtml.services.features.state import EntityStates
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.jobs import (
    fine_tune_candidate,
    register,
    scratch_candidate,
    table_candidate,
)
from rtml.services.trainer.service import Trainer
from rtml.shared.contracts import FeatureVector, Message, PredictRequest, TrainingExample
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.logging import configure_logging
from rtml.shared.model_announcements import Action
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.tasks.registry import tasks
from rtml.shared.warehouse import ExampleTable, Located, Warehouse
from scipy import stats

from benchmarks._common import machine, peak_rss_mib
from rtml.tasks.eta.events import OrderDelivered
from rtml.tasks.eta.simulator.world import SimConfig, simulate

HOUR = 3600.0
MINUTE = 60.0
# the demo's marketplace with twice its couriers: with the demo's 600, the storm's
# slower rides at the dinner peak start a backlog that grows all evening, a world
# with no new steady state to recover to; the storm only slows rides
SIM = dict(orders_per_hour=600.0, n_couriers=1200, n_restaurants=400, n_zones=6,
           scenario="storm", storm_courier_share=1.0)  # fmt: skip
ALLOWED_LATENESS_S = 300.0
# predictions in the rolling window of the curves and of the recovery test
WINDOW = 200
RECOVERED_WITHIN = 1.10
# the collector's warehouse writer flushes about this often (event time)
FLUSH_S = 600.0
SOURCE = "rtml.training.examples-0"
STRATEGIES = ("none", "scheduled-scratch", "scheduled-finetune", "drift-finetune")
# replayed in the storm-free worlds to count trainings: scheduled-scratch ticks on the
# same clock as scheduled-finetune, so it is not replayed again
CALM_STRATEGIES = ("none", "scheduled-finetune", "drift-finetune")


@dataclass(frozen=True)
class Served:
    """One live request: the vector served, the label and when it became known."""

    request: PredictRequest
    vector: FeatureVector
    label: float
    label_ts: float


@dataclass(frozen=True)
class Stream:
    warmup: ExampleTable
    live: list[Served]
    live_start: float
    drift_ts: float


@dataclass
class Replay:
    strategy: str
    errors: np.ndarray
    request_ts: np.ndarray
    trainings: list[dict[str, Any]] = field(default_factory=list)
    training_cpu_s: float = 0.0


# --- the stream ----------------------------------------------------------------------


def build_stream(
    seed: int, warmup_h: float, live_h: float, drift_after_h: float, storm: bool = True
) -> Stream:
    """The stream of a seed; without the storm, the same orders at the same times
    (the simulator draws each concern from its own random stream)."""
    config = SimConfig(
        seed=seed, shift_at_s=(warmup_h + drift_after_h) * HOUR,
        **{**SIM, "scenario": "storm" if storm else "none"},
    )  # fmt: skip
    messages = list(simulate(config, (warmup_h + live_h) * HOUR))
    live_start = config.start_ts + warmup_h * HOUR
    warmup = [m for m in messages if m.ts < live_start]
    batch = {record.entity: record for record in compute_batch_features(warmup)}
    delivered = {m.order_id: m for m in messages if isinstance(m, OrderDelivered)}
    served = [
        Served(request, vector, (done.ts - done.placed_ts) / MINUTE, done.ts)
        for request, vector in served_vectors(messages, batch)
        if (done := delivered.get(request.entities["order_id"])) is not None
    ]
    before = [s for s in served if s.request.ts < live_start]
    return Stream(
        as_table(before),
        [s for s in served if s.request.ts >= live_start],
        live_start,
        config.start_ts + config.shift_at_s,
    )


def served_vectors(
    messages: Iterable[Message], batch: dict[str, Any]
) -> list[tuple[PredictRequest, FeatureVector]]:
    """The features service's answers when every event reaches it before the
    requests after it: its own state and lookups, in event-time order."""
    states = EntityStates(ALLOWED_LATENESS_S)
    answers = []
    for message in messages:
        if isinstance(message, PredictRequest) and message.task == "eta":
            lookup = plan(message, seen_at=message.ts)  # its timings are not looked at
            while (entity := lookup.next_entity) is not None:
                kind, entity_id = entity
                found = entity_features([states], kind, entity_id, message.ts, batch)
                lookup = advance(lookup, found)
            answers.append((message, feature_vector(lookup, batch)))
        elif isinstance(message, tasks().events):
            states.apply(message)
    return answers


def as_table(served: Sequence[Served]) -> ExampleTable:
    by_label = sorted(served, key=lambda s: s.label_ts)
    return ExampleTable(
        ids=np.array([s.request.id for s in by_label], dtype=object),
        X=np.array([s.vector.values for s in by_label], dtype=float),
        y=np.array([s.label for s in by_label]),
        label_ts=np.array([s.label_ts for s in by_label]),
        feature_set=by_label[0].vector.feature_set,
        feature_names=list(by_label[0].vector.names),
        files=[],
    )


# --- one strategy --------------------------------------------------------------------


def settings_for(strategy: str, root: Path, interval_s: float) -> TrainerSettings:
    scheduled = strategy.startswith("scheduled")
    return TrainerSettings(
        trainer_task="eta",
        model_store=str(root / "models"),
        warehouse=str(root / "warehouse"),
        retrain_interval=interval_s if scheduled else 0.0,
        retrain_mode="scratch" if strategy == "scheduled-scratch" else "finetune",
        drift_finetune=strategy == "drift-finetune",
    )


class Deployment:
    """Stands in for the router: every registered version serves at once. Each
    version scores the whole live stream in one call at its first request (not
    inside the timed training); a request uses the answer of the version serving
    at its time."""

    def __init__(self, store: ModelStore, first: ModelRecord, X: np.ndarray) -> None:
        self.store = store
        self.X = X
        # (version, what triggered its training)
        self.registered: list[tuple[str, str]] = []
        self._deploy(first.version)

    async def announce(self, record: ModelRecord, action: Action, reason: str) -> None:
        if action != "registered":  # the first version is deployed from the start
            return
        self.store.set_champion(record.task, record.version)
        self.registered.append((record.version, record.trigger.text if record.trigger else reason))
        self._deploy(record.version)

    def _deploy(self, version: str) -> None:
        self.version = version
        self.predictions: np.ndarray | None = None

    def predict(self, index: int) -> float:
        if self.predictions is None:
            self.predictions = self.store.load(self.version)[0].inplace_predict(self.X)
        return float(self.predictions[index])


class Replayer:
    """One strategy's prequential pass over the live stream."""

    def __init__(self, strategy: str, stream: Stream, root: Path, interval_s: float) -> None:
        self.settings = settings_for(strategy, root, interval_s)
        store = ModelStore(self.settings.model_store)
        warehouse = Warehouse(self.settings.warehouse)
        source = {"source": "warm-up", "examples": len(stream.warmup)}
        first = register(store, table_candidate(stream.warmup, "eta", source))
        store.set_champion("eta", first.version)
        X = np.array([s.vector.values for s in stream.live], dtype=float)
        self.deployment = Deployment(store, first, X)
        self.trainer = Trainer(self.settings, store, warehouse, self.deployment.announce)
        self.writer = WarehouseWriter(warehouse)
        self.stream = stream
        request_ts = np.array([s.request.ts for s in stream.live])
        self.result = Replay(strategy, np.full(len(stream.live), np.nan), request_ts)

    async def run(self) -> Replay:
        made: dict[int, tuple[str, float]] = {}
        every = self.settings.retrain_interval
        next_tick = self.stream.live_start + every if every else math.inf
        for ts, is_label, index in timeline(self.stream.live):
            while ts >= next_tick:
                await self._train("schedule", next_tick, self.trainer.scheduled())
                next_tick += every
            self.writer.maybe_flush(ts)
            served = self.stream.live[index]
            if not is_label:
                made[index] = (self.deployment.version, self.deployment.predict(index))
                continue
            version, prediction = made.pop(index)
            self.result.errors[index] = abs(prediction - served.label)
            example = training_example(served, version, prediction)
            self.writer.add(example)
            await self.trainer.observe(example)
            # a drift signal leaves the trainer's fine-tune scheduled, not yet started
            triggered = asyncio.all_tasks() - {asyncio.current_task()}
            if triggered:
                await self._train("drift", ts, asyncio.gather(*triggered))
        return self.result

    async def _train(self, trigger: str, ts: float, training: Awaitable[Any]) -> None:
        """Run one training to completion at event time ``ts`` (it takes no event time),
        on every example labelled so far."""
        self.writer.flush()
        runs, kept = training_runs(), len(self.deployment.registered)
        started = time.process_time()
        await training
        cpu_s = time.process_time() - started
        if training_runs() > runs:
            self.result.training_cpu_s += cpu_s
            self.result.trainings.append({
                "trigger": trigger, "hours_in": (ts - self.stream.live_start) / HOUR,
                "kept": len(self.deployment.registered) > kept, "cpu_s": cpu_s,
            })  # fmt: skip
            if self.result.trainings[-1]["kept"]:
                self.result.trainings[-1]["trigger"] = self.deployment.registered[-1][1]


def training_runs() -> float:
    """Trainings that produced a candidate (kept or dropped), from the trainer's counter."""
    total = 0.0
    for trigger in ("schedule", "error_drift", "input_drift"):
        for outcome in ("registered", "worse_than_parent"):
            labels = {"trigger": trigger, "outcome": outcome}
            total += REGISTRY.get_sample_value("rtml_trainer_runs_total", labels) or 0.0
    return total


def timeline(live: Sequence[Served]) -> list[tuple[float, bool, int]]:
    """Each request at its time, then its label at the delivery, in event-time order."""
    points = [(s.request.ts, False, i) for i, s in enumerate(live)]
    points += [(s.label_ts, True, i) for i, s in enumerate(live)]
    return sorted(points)


def training_example(served: Served, version: str, prediction: float) -> TrainingExample:
    request = served.request
    return TrainingExample(
        id=request.id, ts=served.label_ts, task="eta", features=served.vector,
        label=served.label, model_version=version, arm=version, prediction=prediction,
        request_ts=request.ts, label_ts=served.label_ts,
    )  # fmt: skip


class WarehouseWriter:
    """Appends labelled examples to the warehouse in batches, as the collector does."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.pending: list[Located] = []
        self.offset = 0
        self.last_flush_ts = -math.inf

    def add(self, example: TrainingExample) -> None:
        self.pending.append(Located(example, SOURCE, self.offset))
        self.offset += 1

    def maybe_flush(self, ts: float) -> None:
        if ts - self.last_flush_ts >= FLUSH_S:
            self.flush()
            self.last_flush_ts = ts

    def flush(self) -> None:
        if self.pending:
            self.warehouse.write(self.pending)
            self.pending = []


# --- the figures ---------------------------------------------------------------------


def rolling_mae(errors: np.ndarray, window: int) -> np.ndarray:
    """The mean of each prediction's error and the ``window - 1`` before it (NaN until
    there are that many)."""
    rolling = np.full(len(errors), np.nan)
    if len(errors) >= window:
        rolling[window - 1 :] = np.convolve(errors, np.ones(window) / window, mode="valid")
    return rolling


def predictions_to_recover(post_drift_errors: np.ndarray, target: float, window: int) -> int | None:
    """Predictions after the drift until the mean error of the last ``window`` of them
    is at most ``target`` for the first time; None if it never is."""
    within = np.flatnonzero(rolling_mae(post_drift_errors, window) <= target)
    return int(within[0]) + 1 if within.size else None


def replay(strategy: str, stream: Stream, interval_h: float) -> Replay:
    with tempfile.TemporaryDirectory(prefix="rtml-continual-") as root:
        return asyncio.run(Replayer(strategy, stream, Path(root), interval_h * HOUR).run())


def calm_target(calm: Replay, calm_stream: Stream, stream: Stream) -> np.ndarray:
    """Per live request of the storm, 10% above the rolling MAE no retraining had at
    the same request in the world without the storm (NaN where it has no such request)."""
    rolling = rolling_mae(calm.errors, WINDOW)
    at = {served.request.id: value for served, value in zip(calm_stream.live, rolling, strict=True)}
    return RECOVERED_WITHIN * np.array([at.get(s.request.id, np.nan) for s in stream.live])


def figures(replays: Sequence[Replay], drift_ts: float, calm: np.ndarray) -> list[dict[str, Any]]:
    """One row per strategy. Recovery: the rolling MAE within 10% of the pre-drift MAE
    of no retraining (the issue's bar), and within 10% of what no retraining had at
    the same point of the day without the storm (``calm``: the error of this world
    follows the daily demand even without a drift)."""
    baseline = replays[0]
    before = baseline.request_ts < drift_ts
    target = RECOVERED_WITHIN * float(baseline.errors[before].mean())
    baseline_post = float(baseline.errors[~before].mean())
    rows = []
    for run in replays:
        after = run.request_ts >= drift_ts
        post = float(run.errors[after].mean())
        rows.append({
            "strategy": run.strategy,
            "pre_drift_mae": float(run.errors[~after].mean()),
            "post_drift_mae": post,
            "post_drift_vs_none": post / baseline_post,
            "predictions_to_recover": predictions_to_recover(run.errors[after], target, WINDOW),
            "predictions_to_calm": predictions_to_recover(run.errors[after], calm[after], WINDOW),
            "post_drift_predictions": int(after.sum()),
            "trainings_run": len(run.trainings),
            "trainings_kept": sum(t["kept"] for t in run.trainings),
            "training_cpu_s": run.training_cpu_s,
            "trainings": run.trainings,
        })  # fmt: skip
    return rows


# the columns of the storm table, each with its mean and 95% interval over the seeds
COLUMNS = {
    "pre_drift_mae": ("pre-drift MAE (min)", "{:.2f}"),
    "post_drift_mae": ("post-drift MAE (min)", "{:.2f}"),
    "post_drift_vs_none": ("vs none", "{:.2f}"),
    "predictions_to_recover": ("predictions to recover", "{:,.0f}"),
    "predictions_to_calm": ("to the storm-free curve", "{:,.0f}"),
    "trainings_run": ("trainings run", "{:.1f}"),
    "trainings_kept": ("kept", "{:.1f}"),
    "training_cpu_s": ("training CPU-s", "{:.2f}"),
    "cpu_s_per_training": ("CPU-s per training", "{:.3f}"),
}
# the recovery columns: a run that never recovers counts all its post-drift
# predictions (a lower bound), and the table says how many seeds that was
RECOVERY = ("predictions_to_recover", "predictions_to_calm")


@dataclass(frozen=True)
class Estimate:
    """The mean of a column over the seeds with its 95% Student-t interval (none for
    one seed)."""

    mean: float
    low: float
    high: float
    seeds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Estimate:
        values = np.asarray(values, dtype=float)
        mean = float(values.mean())
        if len(values) < 2 or np.all(values == mean):
            return cls(mean, mean, mean, len(values))
        low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
        return cls(mean, float(low), float(high), len(values))

    def text(self, form: str) -> str:
        if self.seeds < 2:
            return form.format(self.mean)
        return f"{form.format(self.mean)} [{form.format(self.low)}, {form.format(self.high)}]"


def column(run: dict[str, Any], key: str) -> float:
    """One seed's figure for a column; a recovery that never came counts every
    post-drift prediction."""
    if key in RECOVERY:
        return float(run["post_drift_predictions"] if run[key] is None else run[key])
    if key == "cpu_s_per_training":
        return run["training_cpu_s"] / run["trainings_run"] if run["trainings_run"] else 0.0
    return float(run[key])


def averaged(per_seed: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per strategy, every column's Estimate over the seeds, and how many seeds never
    recovered on each recovery bar."""
    rows = []
    for runs in zip(*per_seed, strict=True):
        rows.append({
            "strategy": runs[0]["strategy"],
            **{key: Estimate.of([column(r, key) for r in runs]) for key in COLUMNS},
            "never": {key: sum(r[key] is None for r in runs) for key in RECOVERY},
        })  # fmt: skip
    return rows


def paired(per_seed: Sequence[list[dict[str, Any]]], reference: str) -> list[dict[str, Any]]:
    """Per strategy, its post-drift MAE and predictions to the storm-free curve minus
    ``reference``'s in the same seed (the same world): an interval above 0 says
    ``reference`` leads on that figure whatever the seed's world."""
    rows = []
    for runs in zip(*per_seed, strict=True):
        strategy = runs[0]["strategy"]
        if strategy == reference:
            continue
        against = [next(r for r in seed if r["strategy"] == reference) for seed in per_seed]
        pairs = list(zip(runs, against, strict=True))
        rows.append({"strategy": strategy, **{
            key: Estimate.of([column(r, key) - column(a, key) for r, a in pairs])
            for key in ("post_drift_mae", "predictions_to_calm")
        }})  # fmt: skip
    return rows


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| strategy | " + " | ".join(title for title, _ in COLUMNS.values()) + " |",
        "| --- |" + " ---: |" * len(COLUMNS),
    ]
    for r in rows:
        cells = []
        for key, (_, form) in COLUMNS.items():
            cell = r[key].text(form)
            never = r["never"].get(key, 0)
            cells.append(f"{cell} ({never} never)" if never else cell)
        lines.append(f"| {r['strategy']} | " + " | ".join(cells) + " |")
    return lines


def paired_table(rows: Sequence[dict[str, Any]], reference: str) -> list[str]:
    lines = [
        f"| strategy minus {reference} (same seed) | post-drift MAE (min) | predictions to "
        "the storm-free curve |",
        "| --- | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['post_drift_mae'].text('{:+.2f}')} | "
            f"{r['predictions_to_calm'].text('{:+,.0f}')} |"
        )
    return lines


def calm_table(per_seed: Sequence[dict[str, int]], live_h: float) -> list[str]:
    """Trainings each strategy ran in the storm-free worlds."""
    lines = [f"| strategy (no storm, {live_h:g} live hours) | trainings run | per day |",
             "| --- | ---: | ---: |"]  # fmt: skip
    for strategy in per_seed[0]:
        runs = Estimate.of([seed[strategy] for seed in per_seed])
        per_day = Estimate.of([seed[strategy] * 24 / live_h for seed in per_seed])
        lines.append(f"| {strategy} | {runs.text('{:.1f}')} | {per_day.text('{:.1f}')} |")
    return lines


def trainings_text(trainings: Sequence[dict[str, Any]]) -> str:
    """When each training ran, what triggered it (a kept version's record names the
    detector) and its fate."""
    parts = []
    for t in trainings:
        fate = "kept" if t["kept"] else "dropped"
        parts.append(f"{t['trigger']} at {t['hours_in']:.2f} h {fate}")
    return ", ".join(parts) or "no training"


def plot(
    replays: Sequence[Replay], no_storm: Replay, stream: Stream, target: float, path: str
) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.8), layout="constrained")
    axis = figure.subplots()
    hours_of = lambda run: (run.request_ts - stream.live_start) / HOUR  # noqa: E731
    axis.plot(hours_of(no_storm), rolling_mae(no_storm.errors, WINDOW), color="lightgrey",
              label="none, same orders without the storm")  # fmt: skip
    lines = [
        axis.plot(hours_of(run), rolling_mae(run.errors, WINDOW), label=run.strategy)[0]
        for run in replays
    ]
    low, high = axis.get_ylim()
    for row, (run, line) in enumerate(zip(replays, lines, strict=True)):
        kept = [t["hours_in"] for t in run.trainings if t["kept"]]
        level = low + (high - low) * 0.03 * row  # one row of ticks per strategy
        axis.plot(kept, [level] * len(kept), "|", color=line.get_color(), ms=10, mew=2)
    axis.axvline((stream.drift_ts - stream.live_start) / HOUR, color="black", linestyle="--")
    axis.axhline(target, color="grey", linestyle=":", label="10% above the pre-drift MAE")
    axis.set_xlabel("hours of event time into the live stream (dashed: the storm begins; "
                    "ticks: versions deployed)")  # fmt: skip
    axis.set_ylabel(f"MAE over the last {WINDOW} predictions (min)")
    axis.legend(loc="upper left", fontsize="small")
    figure.savefig(path, dpi=120)


# --- the cost of a training as the warehouse grows ----------------------------------


def retention_costs(seed: int, days: float, interval_h: float) -> list[dict[str, Any]]:
    """CPU-s of one from-scratch training on the whole warehouse and of one fine-tune
    (of a from-scratch parent registered ``interval_h`` earlier, on the examples since)
    at growing retention, up to ``days`` of the storm-free world of ``seed``."""
    config = SimConfig(seed=seed, **{**SIM, "scenario": "none"})
    warmup = list(simulate(config, 4 * HOUR))
    batch = {record.entity: record for record in compute_batch_features(warmup)}
    delivered: dict[str, OrderDelivered] = {}

    def noting_deliveries() -> Iterable[Message]:
        for message in simulate(config, days * 24 * HOUR):
            if isinstance(message, OrderDelivered):
                delivered[message.order_id] = message
            yield message

    answers = served_vectors(noting_deliveries(), batch)
    examples = sorted(
        (training_example(Served(request, vector, (done.ts - done.placed_ts) / MINUTE, done.ts),
                          "none", 0.0)
         for request, vector in answers
         if (done := delivered.get(request.entities["order_id"])) is not None),
        key=lambda example: example.label_ts,
    )  # fmt: skip
    checkpoints_h = [h for h in (6.0, 24.0, 72.0, 168.0, 336.0) if h <= days * 24] or [days * 24]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rtml-retention-") as root:
        warehouse, store = Warehouse(Path(root) / "warehouse"), ModelStore(Path(root) / "models")
        writer = WarehouseWriter(warehouse)
        written = 0

        def write_until(ts: float) -> None:
            nonlocal written
            while written < len(examples) and examples[written].label_ts < ts:
                writer.add(examples[written])
                written += 1
            writer.flush()

        for hours in checkpoints_h:
            write_until(config.start_ts + (hours - interval_h) * HOUR)
            parent = register(store, scratch_candidate(warehouse, "eta"))
            write_until(config.start_ts + hours * HOUR)
            started = time.process_time()
            register(store, fine_tune_candidate(warehouse, store, parent.version))
            fine_tune_s = time.process_time() - started
            started = time.process_time()
            register(store, scratch_candidate(warehouse, "eta"))
            scratch_s = time.process_time() - started
            rows.append({"hours": hours, "examples": written, "scratch_cpu_s": scratch_s,
                         "finetune_cpu_s": fine_tune_s,
                         "ratio": scratch_s / fine_tune_s})  # fmt: skip
    return rows


def retention_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| retention | examples | from scratch CPU-s | fine-tune CPU-s | ratio |",
             "| ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['hours']:g} h | {r['examples']:,} | {r['scratch_cpu_s']:.2f} | "
            f"{r['finetune_cpu_s']:.3f} | {r['ratio']:.1f}x |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--warmup-h", type=float, default=4.0)
    parser.add_argument("--live-h", type=float, default=8.0)
    parser.add_argument("--drift-after-h", type=float, default=2.0)
    parser.add_argument("--interval-h", type=float, default=1.0, help="stages 2 and 3")
    parser.add_argument("--retention-days", type=float, default=7.0,
                        help="the long-retention run's span (0: skip it)")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", metavar="PATH")
    args = parser.parse_args(argv)
    configure_logging("benchmark", "WARNING")
    say = (lambda _: None) if args.json else print
    say(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start")
    say("replayed in-process, no Kafka: this measures the learning strategies, not the "
        "transport")  # fmt: skip
    per_seed, calm_trainings = [], []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        started = time.perf_counter()
        stream = build_stream(seed, args.warmup_h, args.live_h, args.drift_after_h)
        say(f"seed {seed}: {len(stream.warmup)} warm-up examples, {len(stream.live)} live "
            f"predictions ({time.perf_counter() - started:.0f} s to simulate)")  # fmt: skip
        replays = [replay(strategy, stream, args.interval_h) for strategy in STRATEGIES]
        calm_stream = build_stream(seed, args.warmup_h, args.live_h, args.drift_after_h, False)
        calm_replays = {s: replay(s, calm_stream, args.interval_h) for s in CALM_STRATEGIES}
        calm_trainings.append({s: len(run.trainings) for s, run in calm_replays.items()})
        calm = calm_target(calm_replays["none"], calm_stream, stream)
        per_seed.append(figures(replays, stream.drift_ts, calm))
        say(f"seed {seed}: " + "; ".join(
            f"{r['strategy']} {r['post_drift_mae']:.2f}" for r in per_seed[-1]
        ) + f" post-drift MAE; calm trainings {calm_trainings[-1]} "
            f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
        if seed == seeds[0] and args.plot:
            before = replays[0].request_ts < stream.drift_ts
            target = RECOVERED_WITHIN * replays[0].errors[before].mean()
            plot(replays, calm_replays["none"], stream, target, args.plot)
    rows = averaged(per_seed)
    differences = paired(per_seed, "drift-finetune")
    retention = (
        retention_costs(args.first_seed, args.retention_days, args.interval_h)
        if args.retention_days else []
    )  # fmt: skip
    rss = peak_rss_mib(os.getpid())
    if args.json:
        print(json.dumps({"machine": machine(), "args": vars(args), "strategies": rows,
                          "paired": differences, "calm_trainings": calm_trainings,
                          "retention": retention, "per_seed": per_seed,
                          "peak_rss_mib": rss}, indent=2, default=asdict))  # fmt: skip
        return
    if per_seed:  # --seeds 0: the long-retention run alone
        print(f"seeds {seeds[0]}..{seeds[-1]}: mean [95% interval over the seeds]")
        for lines in (table(rows), paired_table(differences, "drift-finetune"),
                      calm_table(calm_trainings, args.live_h)):  # fmt: skip
            print("\n".join(lines), end="\n\n")
        for row in per_seed[0]:
            print(f"seed {seeds[0]}, {row['strategy']}: {trainings_text(row['trainings'])}")
    if retention:
        print("\n".join(retention_table(retention)))
    print(f"peak RSS {rss:.0f} MiB; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
