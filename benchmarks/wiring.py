"""Event-driven vs request-driven wiring of the predict chain, on the same request stream.

For each wiring, in this one invocation: a fresh embedded broker, a fresh model
store with one champion (the only arm), the chain's services as subprocesses
(event: ingestion, features, router, prediction; request: features, router,
prediction, gateway), marketplace events applied by the features worker, then
one open-loop request stream:

  steady   RATE requests/s for STEADY_S
  burst    3 x RATE for BURST_S
  cooldown RATE for COOLDOWN_S, so the requests still in flight when the burst ends
           complete before the outage, which would otherwise hold them and count in
           the burst's throughput and tail
  outage   RATE for OUTAGE_S, the prediction service stopped (SIGTERM, process gone)
  recovery RATE for RECOVERY_S, the prediction service started again at its start

Event-driven requests are ``POST /v1/predict?wait_ms=WAIT_MS`` on ingestion: a
200 carries the prediction; a 202 (the wait ran out) is completed when its
prediction lands on rtml.predictions, read at the end (the broker's append time
ends its latency). Request-driven requests are ``POST /v1/predict`` on the
gateway: completed when answered 200. Latency runs from the request's scheduled
send time, so a slow answer does not hide the requests queued behind it.

Reported per wiring: throughput and p50/p95/p99 latency of the steady and burst
phases, the requests of each completed before it ended (per second) and those not
(its backlog at the end: a wiring that keeps up leaves only its requests in flight);
requests failed (no prediction in the end: refused or unanswered, and for the
event-driven wiring "lost": accepted with a 202, never on rtml.predictions);
requests of the outage completed after it; CPU seconds of the service processes
and of the broker over the stream (psutil); peak RSS; then the ratio event / request.
Then where the time went: per phase, the p50/p99 of each hop of the predictions'
``timings_ms`` (``shared/timings.py``), read off rtml.predictions at the end (both
wirings log every prediction there).

Usage: python -m benchmarks.wiring [--rate 500] [--steady-s 30] [--burst-s 10]
       [--cooldown-s 5] [--outage-s 10] [--recovery-s 20] [--wait-ms 3000] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from rtml.shared import topics
from rtml.shared.contracts import Prediction, decode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import client_kwargs
from rtml.shared.logging import configure_logging
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings
from rtml.shared.timings import hops, in_chain_order

from benchmarks._common import machine, peak_rss_mib
from rtml.stack import Wiring
from rtml.supervisor import Supervised, started, wait_ready
from tests.integration.test_wiring import (
    CHAIN,
    CHAIN_SPECS,
    marketplace_events,
    predict_body,
    register_champion,
    send_events,
    stack_env,
    train_champion,
    until_features_applied,
)

PHASES = ("steady", "burst", "cooldown", "outage", "recovery")
BURST_FACTOR = 3
WARMUP_REQUESTS = 200
# after the stream (and the prediction service ready again), event-driven requests
# answered 202 may still land: the wait ends when none has landed for DRAIN_IDLE_S,
# or at DRAIN_MAX_S (what has not landed by then counts as lost); the same reading
# takes every prediction's timings, of both wirings
DRAIN_IDLE_S = 30.0
DRAIN_MAX_S = 600.0
# the client fleet's connections: beyond them a request waits in the pool, and that wait
# counts in its latency (measured from the scheduled send); unbounded, a stalled burst
# holds one socket per request and runs the generator out of file descriptors
MAX_CLIENT_CONNECTIONS = 2000
READY_TIMEOUT_S = 180.0
TARGET_P99_MS = 50.0
# the burst target, at a steady 100/s: the 3x burst completed at this rate or more
BURST_TARGET_PER_S = 250.0
BURST_TARGET_P99_MS = 500.0


@dataclass(frozen=True)
class Plan:
    rate: float
    steady_s: float
    burst_s: float
    cooldown_s: float
    outage_s: float
    recovery_s: float
    wait_ms: int

    def durations(self) -> tuple[float, ...]:
        return (self.steady_s, self.burst_s, self.cooldown_s, self.outage_s, self.recovery_s)

    def phases(self) -> list[tuple[str, float, float]]:
        """(phase, start offset s, rate) in order."""
        durations = self.durations()
        rates = (self.rate, self.rate * BURST_FACTOR, self.rate, self.rate, self.rate)
        starts = np.cumsum((0.0, *durations[:-1]))
        return [(p, float(s), r) for p, s, r in zip(PHASES, starts, rates, strict=True)]

    def schedule(self) -> list[tuple[float, str]]:
        """(send offset s, phase) of every request: evenly spaced within each phase."""
        sends = []
        for (phase, start, rate), duration in zip(self.phases(), self.durations(), strict=True):
            count = int(duration * rate)
            sends += [(start + i / rate, phase) for i in range(count)]
        return sends


@dataclass
class Outcome:
    phase: str
    scheduled: float  # wall clock (epoch s) it was due
    status: int | None = None  # HTTP status; None: no answer (client error or timeout)
    done_at: float | None = None  # wall clock it completed (its prediction in hand)
    # its prediction's timings_ms, as logged on rtml.predictions
    timings_ms: dict[str, float] | None = None


@dataclass
class WiringResult:
    wiring: str
    requests: int
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: int = 0
    failed_by_phase: dict[str, int] = field(default_factory=dict)
    # of the failed: accepted (202) yet never on rtml.predictions
    lost: int = 0
    outage_requests: int = 0
    completed_after_outage: int = 0
    slowest_outage_completion_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    service_cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    service_peak_rss_mib: float = 0.0
    broker_peak_rss_mib: float = 0.0
    prediction_exit_s: float = 0.0
    prediction_down_s: float = 0.0
    # phase -> hop -> {"p50_ms", "p99_ms", "predictions"}
    hops: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


# --- the stream ---------------------------------------------------------------------


class Stream:
    """Sends the schedule open-loop against one wiring and records each outcome."""

    def __init__(self, wiring: Wiring, url: str, plan: Plan) -> None:
        self.wiring = wiring
        self.url = url
        self.plan = plan
        self.outcomes: dict[str, Outcome] = {}

    async def run(self, http: aiohttp.ClientSession, on_phase: Any) -> None:
        schedule = self.plan.schedule()
        phase_starts = {phase: start for phase, start, _ in self.plan.phases()}
        started_wall, started = time.time(), time.perf_counter()
        sending: set[asyncio.Task[None]] = set()
        next_phase = 0
        for index, (offset, phase) in enumerate(schedule):
            while next_phase < len(PHASES) and phase_starts[PHASES[next_phase]] <= offset:
                sending.add(asyncio.create_task(on_phase(PHASES[next_phase])))
                next_phase += 1
            delay = offset - (time.perf_counter() - started)
            if delay > 0:
                await asyncio.sleep(delay)
            request_id = f"{self.wiring}-{index}"
            self.outcomes[request_id] = Outcome(phase, started_wall + offset)
            task = asyncio.create_task(self._send(http, request_id, predict_body(index)))
            sending.add(task)
            task.add_done_callback(sending.discard)
        await asyncio.gather(*sending)

    def landed(self, landed: dict[str, Landed]) -> None:
        """Take the timings of the predictions read off rtml.predictions."""
        for request_id, prediction in landed.items():
            outcome = self.outcomes[request_id]
            outcome.timings_ms = prediction.timings_ms
            # event-driven: answered 202 (or not at all), predicted later; a
            # request-driven request is done only when answered
            if self.wiring == "event" and outcome.done_at is None:
                outcome.done_at = prediction.at

    async def _send(self, http: aiohttp.ClientSession, request_id: str, body: dict) -> None:
        outcome = self.outcomes[request_id]
        try:
            async with http.post(self.url, json={**body, "id": request_id}) as response:
                await response.read()
                outcome.status = response.status
                if response.status == 200:
                    outcome.done_at = time.time()
        except (aiohttp.ClientError, TimeoutError):
            pass


@dataclass(frozen=True)
class Landed:
    at: float  # when its record was appended (epoch s)
    timings_ms: dict[str, float]


async def read_predictions(
    settings: Settings, wanted: set[str], expected: set[str], idle_s: float, max_s: float
) -> dict[str, Landed]:
    """The predictions on rtml.predictions of the ``wanted`` request ids: when each was
    appended and its timings. Reads until every ``expected`` one has landed, none has
    for ``idle_s``, or ``max_s`` passed."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    landed: dict[str, Landed] = {}
    try:
        partitions = consumer.partitions_for_topic(topics.PREDICTIONS.name) or set()
        assigned = [TopicPartition(topics.PREDICTIONS.name, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        last_landed = began = time.monotonic()
        while (
            not expected <= landed.keys()
            and time.monotonic() - last_landed < idle_s
            and time.monotonic() - began < max_s
        ):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    # keys are request ids: only the wanted ones are decoded
                    key = record.key.decode() if record.key else ""
                    if key in wanted and key not in landed:
                        prediction = decode(record.value, Prediction)
                        landed[key] = Landed(record.timestamp / 1000, prediction.timings_ms)
                        last_landed = time.monotonic()
    finally:
        await consumer.stop()
    return landed


# --- one wiring, on its own broker ------------------------------------------------------


class CpuMeter:
    """CPU seconds of processes over the stream, a restarted process's lives added up."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._base: dict[int, float] = {}

    @staticmethod
    def _cpu(pid: int) -> float:
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system

    def begin(self, pid: int, from_zero: bool = False) -> None:
        self._base[pid] = 0.0 if from_zero else self._cpu(pid)

    def end(self, pid: int) -> None:
        self.spent += self._cpu(pid) - self._base.pop(pid)


async def run_wiring(wiring: Wiring, plan: Plan, workdir: Path) -> WiringResult:
    store = ModelStore(workdir / f"models-{wiring}")
    specs = tuple(spec for spec in CHAIN_SPECS if spec.name in CHAIN[wiring])
    with EmbeddedBroker(port=free_port()) as broker:
        assert broker.process is not None
        settings = Settings(kafka_port=broker.port)
        await register_champion(settings, store, train_champion())
        env = stack_env(broker.port, str(store)) | {"RTML_LOG_LEVEL": "ERROR"}
        progress(f"{wiring}-driven: starting {', '.join(spec.name for spec in specs)}")
        async with started(specs, env, READY_TIMEOUT_S) as children:
            by_name = {child.spec.name: child for child in children}
            events = marketplace_events()
            await send_events(settings, events)
            await until_features_applied(by_name["features"], len(events))
            front = by_name["ingestion" if wiring == "event" else "gateway"]
            url = f"{front.url}/v1/predict" + (
                f"?wait_ms={plan.wait_ms}" if wiring == "event" else ""
            )
            stream = Stream(wiring, url, plan)
            timeout = aiohttp.ClientTimeout(total=plan.wait_ms / 1000 + 15)
            connector = aiohttp.TCPConnector(limit=MAX_CLIENT_CONNECTIONS)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
                await warm_up(http, url)
                services, broker_cpu = CpuMeter(), CpuMeter()
                for child in children:
                    services.begin(pid_of(child))
                broker_cpu.begin(broker.process.pid)
                outage = Outage(by_name["prediction"], plan.outage_s, services)
                await stream.run(http, outage.on_phase)
            ids = set(stream.outcomes)
            if wiring == "event":
                progress("reading rtml.predictions for the requests answered 202")
                await wait_ready([by_name["prediction"]], READY_TIMEOUT_S)
                # any request not answered 200 may still be predicted
                landed = await read_predictions(settings, ids, ids, DRAIN_IDLE_S, DRAIN_MAX_S)
            for child in children:
                services.end(pid_of(child))
            broker_cpu.end(broker.process.pid)
            # the prediction service's two lives: the higher peak counts
            peaks = {child.spec.name: peak_rss_mib(pid_of(child)) for child in children}
            peaks["prediction"] = max(peaks["prediction"], outage.first_rss)
            broker_rss = peak_rss_mib(broker.process.pid)
            if wiring == "request":
                # for the timings only, so not measured; the gateway logs what it answered
                progress("reading rtml.predictions for the timings")
                answered = {i for i, o in stream.outcomes.items() if o.status == 200}
                landed = await read_predictions(settings, ids, answered, DRAIN_IDLE_S, DRAIN_MAX_S)
    stream.landed(landed)
    result = summarise(wiring, plan, stream.outcomes)
    result.service_cpu_s, result.broker_cpu_s = services.spent, broker_cpu.spent
    result.prediction_exit_s, result.prediction_down_s = outage.exit_s, outage.down_s
    result.service_peak_rss_mib, result.broker_peak_rss_mib = sum(peaks.values()), broker_rss
    return result


async def run_against(ingestion_url: str, plan: Plan, settings: Settings) -> WiringResult:
    """The event-driven stream, steady phase only, against an ingestion already deployed
    (a real Kafka on Kubernetes, which ``settings`` name: RTML_KAFKA_*); nothing is
    started or stopped, so no outage and no CPU figures."""
    steady = Plan(plan.rate, plan.steady_s, 0.0, 0.0, 0.0, 0.0, plan.wait_ms)
    url = f"{ingestion_url.rstrip('/')}/v1/predict?wait_ms={plan.wait_ms}"
    stream = Stream("event", url, steady)
    timeout = aiohttp.ClientTimeout(total=plan.wait_ms / 1000 + 15)
    connector = aiohttp.TCPConnector(limit=MAX_CLIENT_CONNECTIONS)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        await warm_up(http, url)
        await stream.run(http, _no_phase_action)
    ids = set(stream.outcomes)
    stream.landed(await read_predictions(settings, ids, ids, DRAIN_IDLE_S, DRAIN_MAX_S))
    return summarise("event", steady, stream.outcomes)


async def _no_phase_action(phase: str) -> None:
    return None


def progress(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def pid_of(child: Supervised) -> int:
    assert child.process is not None
    return child.process.pid


class Outage:
    """Stops the prediction service when the outage phase starts and starts it again
    OUTAGE_S later (the recovery phase starts then too)."""

    def __init__(self, prediction: Supervised, outage_s: float, cpu: CpuMeter) -> None:
        self._prediction = prediction
        self._outage_s = outage_s
        self._cpu = cpu
        self.first_rss = 0.0
        # SIGTERM -> the process gone; SIGTERM -> started again
        self.exit_s = self.down_s = 0.0

    async def on_phase(self, phase: str) -> None:
        progress(f"phase {phase}")
        if phase != "outage":
            return
        pid = pid_of(self._prediction)
        self.first_rss = peak_rss_mib(pid)
        self._cpu.end(pid)
        stopped = time.perf_counter()
        await self._prediction.terminate()
        self.exit_s = time.perf_counter() - stopped
        await asyncio.sleep(max(0.0, self._outage_s - self.exit_s))
        await self._prediction.start()
        self.down_s = time.perf_counter() - stopped
        self._cpu.begin(pid_of(self._prediction), from_zero=True)


async def warm_up(http: aiohttp.ClientSession, url: str) -> None:
    """Connections, caches and code paths warm, outside the measurement."""
    for index in range(WARMUP_REQUESTS):
        async with http.post(url, json=predict_body(index)) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"warm-up request answered {response.status}: {url}")


def summarise(wiring: str, plan: Plan, outcomes: dict[str, Outcome]) -> WiringResult:
    result = WiringResult(wiring, len(outcomes))
    result.statuses = {str(k): v for k, v in Counter(o.status for o in outcomes.values()).items()}
    starts = {phase: start for phase, start, _ in plan.phases()}
    durations = dict(zip(PHASES, plan.durations(), strict=True))
    first = min(o.scheduled for o in outcomes.values())
    for phase in ("steady", "burst"):
        mine = [o for o in outcomes.values() if o.phase == phase and o.done_at is not None]
        latencies = np.array([o.done_at - o.scheduled for o in mine]) * 1000  # type: ignore[operator]
        last = max((o.done_at for o in mine), default=first)  # type: ignore[type-var]
        elapsed = last - (first + starts[phase])  # type: ignore[operator]
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if len(mine) else (np.nan,) * 3
        # the throughput above runs to the phase's last completion, so one request held
        # over into the outage stretches it over the outage; what the phase itself got
        # through is what completed before it ended, and what it left is its backlog
        duration = durations[phase]
        end = first + starts[phase] + duration
        sent = sum(1 for o in outcomes.values() if o.phase == phase)
        in_time = sum(1 for o in mine if o.done_at <= end)  # type: ignore[operator]
        result.phases[phase] = {
            "requests/s": len(mine) / elapsed if elapsed > 0 else 0.0,
            "within/s": in_time / duration if duration > 0 else 0.0,
            "left_at_end": sent - in_time,
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
        }
    failed = [o for o in outcomes.values() if o.done_at is None]
    result.failed = len(failed)
    result.failed_by_phase = dict(Counter(o.phase for o in failed))
    result.lost = sum(1 for o in failed if o.status == 202)
    outage_end = first + starts["recovery"]
    in_outage = [o for o in outcomes.values() if o.phase == "outage"]
    late = [o for o in in_outage if o.done_at is not None and o.done_at >= outage_end]
    result.outage_requests = len(in_outage)
    result.completed_after_outage = len(late)
    result.slowest_outage_completion_s = max(
        (o.done_at - o.scheduled for o in in_outage if o.done_at is not None),
        default=0.0,  # type: ignore[operator]
    )
    result.hops = hops_by_phase(outcomes.values())
    return result


def hops_by_phase(outcomes: Iterable[Outcome]) -> dict[str, dict[str, dict[str, float]]]:
    """Per phase, the p50/p99 of each hop of the predictions' timings, in chain order."""
    spent: dict[str, dict[str, list[float]]] = {}
    for outcome in outcomes:
        if outcome.timings_ms is not None:
            phase = spent.setdefault(outcome.phase, {})
            for name, ms in hops(outcome.timings_ms).items():
                phase.setdefault(name, []).append(ms)
    return {
        phase: {
            name: {
                "p50_ms": float(np.percentile(spent[phase][name], 50)),
                "p99_ms": float(np.percentile(spent[phase][name], 99)),
                "predictions": len(spent[phase][name]),
            }
            for name in in_chain_order(spent[phase])
        }
        for phase in PHASES
        if phase in spent
    }


# --- report ---------------------------------------------------------------------------


def table(plan: Plan, event: WiringResult, request: WiringResult) -> list[str]:
    rows: list[tuple[str, str, str, str]] = [("", "event", "request", "event / request")]

    def row(name: str, a: float, b: float, fmt: str) -> None:
        ratio = f"{a / b:.2f}" if b else "-"
        rows.append((name, format(a, fmt), format(b, fmt), ratio))

    for phase, rate in (("steady", plan.rate), ("burst", plan.rate * BURST_FACTOR)):
        e, r = event.phases[phase], request.phases[phase]
        row(f"{phase} {rate:g}/s: throughput req/s", e["requests/s"], r["requests/s"], ".0f")
        row(f"{phase} {rate:g}/s: completed within it /s", e["within/s"], r["within/s"], ".0f")
        row(
            f"{phase} {rate:g}/s: not completed at its end",
            e["left_at_end"],
            r["left_at_end"],
            ".0f",
        )
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            row(f"{phase} {rate:g}/s: {q.replace('_', ' ')}", e[q], r[q], ".1f")
    row("requests sent", event.requests, request.requests, "d")
    row("requests failed (no prediction)", event.failed, request.failed, "d")
    row("  of which accepted, never landed (lost)", event.lost, request.lost, "d")
    row(
        f"outage: requests sent ({plan.outage_s:g} s)",
        event.outage_requests,
        request.outage_requests,
        "d",
    )
    row(
        "outage: completed after it",
        event.completed_after_outage,
        request.completed_after_outage,
        "d",
    )
    row(
        "outage: slowest completion s",
        event.slowest_outage_completion_s,
        request.slowest_outage_completion_s,
        ".1f",
    )
    row(
        "outage: prediction gone s after SIGTERM",
        event.prediction_exit_s,
        request.prediction_exit_s,
        ".1f",
    )
    row(
        "outage: prediction restarted s after it",
        event.prediction_down_s,
        request.prediction_down_s,
        ".1f",
    )
    row("CPU s, services", event.service_cpu_s, request.service_cpu_s, ".1f")
    row("CPU s, broker", event.broker_cpu_s, request.broker_cpu_s, ".1f")
    row(
        "peak RSS MiB, services (sum)",
        event.service_peak_rss_mib,
        request.service_peak_rss_mib,
        ".0f",
    )
    row("peak RSS MiB, broker", event.broker_peak_rss_mib, request.broker_peak_rss_mib, ".0f")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
        for r in rows
    ]


def hop_table(result: WiringResult) -> list[str]:
    """Where one wiring's time went: a row per hop, "p50 / p99" ms per phase."""
    phases = [phase for phase in PHASES if phase in result.hops]
    names = in_chain_order(name for phase in phases for name in result.hops[phase])
    rows = [(f"{result.wiring}-driven hops, ms p50 / p99", *phases)]
    for name in names:
        cells = []
        for phase in phases:
            hop = result.hops[phase].get(name)
            cells.append(f"{hop['p50_ms']:.1f} / {hop['p99_ms']:.1f}" if hop else "-")
        rows.append((name, *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        )
        for row in rows
    ]


def verdicts(plan: Plan, event: WiringResult, request: WiringResult) -> list[str]:
    steady_p99 = event.phases["steady"]["p99_ms"]
    e_cpu, r_cpu = (
        event.service_cpu_s + event.broker_cpu_s,
        request.service_cpu_s + request.broker_cpu_s,
    )
    return [
        f"ratio event / request: steady p99 {steady_p99 / request.phases['steady']['p99_ms']:.2f}, "
        f"burst p99 {event.phases['burst']['p99_ms'] / request.phases['burst']['p99_ms']:.2f}, "
        f"failed {event.failed} vs {request.failed}, CPU incl. broker {e_cpu / r_cpu:.2f}",
        f"target event-driven p99 <= {TARGET_P99_MS:g} ms at a steady 500/s: "
        + (
            f"{'met' if steady_p99 <= TARGET_P99_MS else 'MISSED'} ({steady_p99:.1f} ms)"
            if plan.rate == 500
            else f"not measured (steady rate {plan.rate:g}/s; p99 {steady_p99:.1f} ms)"
        ),
        "target event-driven zero requests lost across the outage: "
        + ("met" if event.lost == 0 else f"MISSED ({event.lost} accepted and never predicted)"),
        burst_verdict(plan, event.phases["burst"]),
    ]


def burst_verdict(plan: Plan, burst: dict[str, float]) -> str:
    """The issue's burst target at 100/s: >= 250/s completed within the 300/s burst,
    p99 <= 500 ms, and no backlog at its end. Requests in flight are not a backlog: a
    path that keeps up leaves at most what its p99 holds in flight (rate x p99)."""
    head = f"target event-driven >= {BURST_TARGET_PER_S:g}/s through the 3x burst, no backlog, "
    head += f"p99 <= {BURST_TARGET_P99_MS:g} ms: "
    figures = (
        f"{burst['within/s']:.0f}/s, {burst['left_at_end']:.0f} left at its end, "
        f"p99 {burst['p99_ms']:.1f} ms"
    )
    if plan.rate != 100:
        return head + f"not measured (steady rate {plan.rate:g}/s; {figures})"
    in_flight = plan.rate * BURST_FACTOR * burst["p99_ms"] / 1000
    met = (
        burst["within/s"] >= BURST_TARGET_PER_S
        and burst["p99_ms"] <= BURST_TARGET_P99_MS
        and burst["left_at_end"] <= in_flight
    )
    return head + f"{'met' if met else 'MISSED'} ({figures})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="steady requests/s")
    parser.add_argument("--steady-s", type=float, default=30.0)
    parser.add_argument("--burst-s", type=float, default=10.0, help=f"at {BURST_FACTOR}x the rate")
    parser.add_argument(
        "--cooldown-s", type=float, default=5.0, help="at the rate, between burst and outage"
    )
    parser.add_argument("--outage-s", type=float, default=10.0, help="prediction service stopped")
    parser.add_argument("--recovery-s", type=float, default=20.0)
    parser.add_argument("--wait-ms", type=int, default=3000, help="event-driven ?wait_ms=")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100/s, 8 s steady, 4 s burst, 2 s cooldown, 5 s outage, 8 s after",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--against",
        metavar="INGESTION_URL",
        help="only the event-driven steady phase, against a deployed ingestion "
        "(RTML_KAFKA_* name its Kafka, to read the predictions' timings)",
    )
    args = parser.parse_args()
    plan = (
        Plan(100.0, 8.0, 4.0, 2.0, 5.0, 8.0, args.wait_ms)
        if args.quick
        else Plan(
            args.rate,
            args.steady_s,
            args.burst_s,
            args.cooldown_s,
            args.outage_s,
            args.recovery_s,
            args.wait_ms,
        )
    )
    # this process's own logs (topic creation, a service killed after its grace) on stderr
    configure_logging("benchmark", "WARNING")
    if args.against:
        result = asyncio.run(run_against(args.against, plan, Settings()))
        steady = result.phases.get("steady", {})
        print(f"{plan.rate:g}/s for {plan.steady_s:g} s against {args.against}: "
              f"p50 {steady.get('p50_ms', math.nan):.1f} ms, "
              f"p99 {steady.get('p99_ms', math.nan):.1f} ms, "
              f"{result.failed} of {result.requests} not predicted (target p99 <= "
              f"{TARGET_P99_MS:g} ms at 500/s)")  # fmt: skip
        for line in hop_table(result):
            print(line)
        return
    workdir = Path(tempfile.mkdtemp(prefix="rtml-bench-wiring-"))
    load_before = os.getloadavg()[0]
    event = asyncio.run(run_wiring("event", plan, workdir))
    request = asyncio.run(run_wiring("request", plan, workdir))
    if args.json:
        document = {
            "plan": asdict(plan),
            "machine": machine(),
            "event": asdict(event),
            "request": asdict(request),
        }
        print(json.dumps(document, indent=2))
        return
    print(f"machine: {machine()}; broker: embedded Tansu on 127.0.0.1, sharing the cores")
    print(f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    print(
        f"stream: {plan.rate:g}/s for {plan.steady_s:g} s, {plan.rate * BURST_FACTOR:g}/s for "
        f"{plan.burst_s:g} s, {plan.rate:g}/s for {plan.cooldown_s:g} s, "
        f"prediction service stopped {plan.outage_s:g} s at {plan.rate:g}/s, "
        f"{plan.recovery_s:g} s after; event-driven wait_ms {plan.wait_ms}"
    )
    for line in table(plan, event, request) + verdicts(plan, event, request):
        print(line)
    print(f"answer statuses: event {event.statuses}; request {request.statuses}")
    for result in (event, request):
        print()
        for line in hop_table(result):
            print(line)


if __name__ == "__main__":
    main()
