"""What the features worker's freshness barrier costs in latency, and what it buys.

The barrier (``services/features/freshness.py``) holds a request until the
worker has applied every event acknowledged before the request was sent. This
runs the same simulated marketplace log twice in one invocation, each time on
a fresh embedded broker with one features worker (a subprocess):

  barrier  RTML_FEATURES_FRESHNESS_WAIT_MS=500, the default
  none     RTML_FEATURES_FRESHNESS_WAIT_MS=0: a request is enriched as soon as it is read

The log goes out as the simulator's driver sends it, paced at a fixed multiple
of event time: every event up to a request's time is acknowledged before the
request is produced. Reported per setting: latency from producing a request to
its enriched record's timestamp (p50/p95/p99); vectors unequal to the
point-in-time reference (``ReferenceFeatures``: what read-your-writes promises);
the worker's own count of requests served proven fresh and served unproven
(``rtml_features_held_seconds``; with no wait, every request not proven at
once); CPU seconds of the worker and the broker; the worker's peak RSS; then
the ratios barrier / none.

Usage: python -m benchmarks.freshness [--rate 100] [--seconds 60] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from rtml.shared import topics
from rtml.shared.contracts import FeatureVector, Message, PredictEnriched, PredictRequest, decode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.features.reference import ReferenceFeatures
from rtml.shared.kafka import client_kwargs, ensure_topics
from rtml.shared.settings import Settings

from benchmarks._common import machine, peak_rss_mib
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from rtml.tasks.eta.spec import TASK as ETA
from tests.helpers import service_process
from tests.integration.test_features import LATENESS_S, metric_values, worker_env
from tests.integration.test_features_freshness import drive
from tests.unit.test_features_state import assert_vectors_equal

SIM = SimConfig(seed=31, n_restaurants=40, n_couriers=300, orders_per_hour=3000, id_prefix="fb")
SETTINGS = {"barrier": 500, "none": 0}
READ_TIMEOUT_S = 120.0


@dataclass
class Result:
    setting: str
    freshness_wait_ms: int
    requests: int
    enriched: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    unequal_to_reference: int
    proven_fresh: float
    waited_out: float
    worker_cpu_s: float
    broker_cpu_s: float
    worker_peak_rss_mib: float


def marketplace(
    seconds: float, rate: float
) -> tuple[list[Message], dict[str, FeatureVector], float]:
    """The log, each request's reference vector, and the speedup that sends ``rate``
    requests/s for ``seconds``."""
    wanted = int(seconds * rate)
    # orders_per_hour orders (each with its eta request) on average, more at the
    # simulator's peaks: twice the hours that average needs cover the requests wanted
    hours = 2 * wanted / SIM.orders_per_hour
    log = [
        m
        for m in simulate(SIM, hours * 3600)
        if isinstance(m, ETA.events) or (isinstance(m, PredictRequest) and m.task == "eta")
    ]
    last_ts = [m.ts for m in log if isinstance(m, PredictRequest)][:wanted][-1]
    log = [m for m in log if m.ts <= last_ts]
    reference = ReferenceFeatures(LATENESS_S, {})
    for message in log:
        if not isinstance(message, PredictRequest):
            reference.apply(message)
    expected = {m.id: reference.vector(m) for m in log if isinstance(m, PredictRequest)}
    return log, expected, (last_ts - log[0].ts) / seconds


def equal(got: FeatureVector, want: FeatureVector) -> bool:
    try:
        assert_vectors_equal(got, want, None)
    except AssertionError:
        return False
    return True


async def enriched_at(settings: Settings, count: int) -> dict[str, tuple[FeatureVector, float]]:
    """Every enriched request's vector and its record's timestamp (epoch s)."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    found: dict[str, tuple[FeatureVector, float]] = {}
    try:
        partitions = consumer.partitions_for_topic(topics.PREDICT_ENRICHED.name) or set()
        assigned = [TopicPartition(topics.PREDICT_ENRICHED.name, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    enriched = decode(record.value)
                    assert isinstance(enriched, PredictEnriched)
                    found[enriched.id] = (enriched.features, record.timestamp / 1000)
    finally:
        await consumer.stop()
    return found


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run(
    setting: str, log: list[Message], expected: dict[str, FeatureVector], speedup: float
) -> Result:
    wait_ms = SETTINGS[setting]
    with EmbeddedBroker(port=free_port()) as broker:
        assert broker.process is not None
        settings = Settings(kafka_port=broker.port)
        asyncio.run(ensure_topics(settings))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = worker_env(settings, port) | {"RTML_FEATURES_FRESHNESS_WAIT_MS": str(wait_ms)}
        with service_process("rtml.services.features", env, f"{url}/readyz") as worker:
            progress(f"{setting}: sending {len(log)} messages at {speedup:.0f}x event time")
            worker_cpu, broker_cpu = cpu_seconds(worker.pid), cpu_seconds(broker.process.pid)
            sent_at = asyncio.run(drive(settings, log, speedup))
            progress(f"{setting}: reading rtml.predict.enriched")
            enriched = asyncio.run(enriched_at(settings, len(expected)))
            worker_cpu = cpu_seconds(worker.pid) - worker_cpu
            broker_cpu = cpu_seconds(broker.process.pid) - broker_cpu
            held = metric_values(url, "rtml_features_held_seconds_count", "outcome")
            rss = peak_rss_mib(worker.pid)
    latencies = np.array([(at - sent_at[i]) * 1000 for i, (_, at) in enriched.items()])
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if len(latencies) else (math.nan,) * 3
    unequal = sum(1 for i, (vector, _) in enriched.items() if not equal(vector, expected[i]))
    return Result(
        setting, wait_ms, len(expected), len(enriched), float(p50), float(p95), float(p99),
        unequal, held.get("fresh", 0.0), held.get("waited_out", 0.0),
        worker_cpu, broker_cpu, rss,
    )  # fmt: skip


def table(barrier: Result, none: Result) -> list[str]:
    rows = [("", "barrier", "none", "barrier / none")]
    for name, key, fmt in (
        ("requests sent", "requests", "d"),
        ("requests enriched", "enriched", "d"),
        ("latency p50 ms", "p50_ms", ".1f"),
        ("latency p95 ms", "p95_ms", ".1f"),
        ("latency p99 ms", "p99_ms", ".1f"),
        ("vectors unequal to the reference", "unequal_to_reference", "d"),
        ("served proven fresh", "proven_fresh", ".0f"),
        ("served unproven (the wait ran out)", "waited_out", ".0f"),
        ("CPU s, worker", "worker_cpu_s", ".1f"),
        ("CPU s, broker", "broker_cpu_s", ".1f"),
        ("peak RSS MiB, worker", "worker_peak_rss_mib", ".0f"),
    ):
        a, b = getattr(barrier, key), getattr(none, key)
        rows.append((name, format(a, fmt), format(b, fmt), f"{a / b:.2f}" if b else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
        for r in rows
    ]


def progress(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0, help="eta requests/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="of traffic per setting")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    log, expected, speedup = marketplace(args.seconds, args.rate)
    results: dict[str, Any] = {s: run(s, log, expected, speedup) for s in SETTINGS}
    if args.json:
        print(json.dumps({s: asdict(r) for s, r in results.items()}, indent=2))
        return
    print(f"machine: {machine()}")
    print(
        f"{len(expected)} eta requests and {len(log) - len(expected)} events over "
        f"~{args.seconds:g} s ({speedup:.0f}x event time), each setting on a fresh broker"
    )
    print("\n".join(table(results["barrier"], results["none"])))


if __name__ == "__main__":
    main()
