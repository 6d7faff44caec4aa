"""Events/s of the features worker vs a raw aiokafka loop, a plain faust agent and Quix Streams.

One run, one embedded broker, the same simulated events on rtml.events:
- raw aiokafka: a group-less consumer that only consumes and decodes
  (``shared.contracts.decode``) every event: the ceiling;
- plain faust agent: a faust agent (``stream.take_events``, this repo's compat
  transport) that only decodes: what faust's per-record path allows;
- the features worker (``python -m rtml.services.features``) with every eta
  feature on: admission, state, changelog writes;
- the scale-out sweep: 1, 2, 3 ... workers of one app (``--workers``) splitting
  the 6 partitions, each count on a broker of its own: the group settles on an
  empty topic, the same events go in at once (librdkafka, faster than any
  group here), and the rate is the drain of that backlog; peak RSS of each
  worker;
- Quix Streams (the peer to beat): counts of orders per restaurant over 10 and
  30 minutes in event time, with its RocksDB state and changelogs; once with
  sliding windows (the worker's semantics: exact counts over the last 10/30
  minutes) and once with tumbling windows (fixed buckets, quix's cheapest).
Each runs in its own process and reads the whole topic from the beginning;
the rate is counted from its first processed event to its last, and its peak
RSS is the process's VmHWM.

Then, with the worker holding the state: enrichment latency (request produced
-> enriched consumed) at a steady 500 requests/s while 2,000 events/s flow,
and the same requests through the request-driven adapter (``POST /v1/enrich``).
Last, on a broker of their own: seconds for a worker to become ready on a
first start and a restart, for a second worker to join, and for a survivor to
take over after kill -9.

Usage: python -m benchmarks.features [--events 200000] [--latency-seconds 20]
       [--agent-events 30000] [--quix-events 30000] [--workers 1,2,3]
       [--sweep-only] [--skip-group-timings]
(--sweep-only: the raw baseline and the worker sweep, nothing else)
Quix Streams is a benchmark-only dependency: pip install quixstreams
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import aiohttp
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from rtml.shared import broker_compat, topics
from rtml.shared.contracts import Message, PredictEnriched, PredictRequest, decode, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import client_kwargs, ensure_topics, start_producer
from rtml.shared.settings import Settings
from rtml.shared.timings import hops

from benchmarks._common import machine, peak_rss_mib
from tests.helpers import wait_http

# many restaurants and couriers so that events spread over entities as in a city
SIM = dict(n_zones=20, n_restaurants=500, n_couriers=3000, orders_per_hour=20_000.0)
EVENT_RATE = 2000
REQUEST_RATE = 500
TICK_S = 0.01


@dataclass(frozen=True)
class Rate:
    events: int
    seconds: float
    peak_rss_mib: float

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    def to_json(self) -> str:
        return json.dumps(
            {"events": self.events, "seconds": self.seconds, "peak_rss_mib": self.peak_rss_mib}
        )


# --- the workload -------------------------------------------------------------------


def workload(
    n_events: int, latency_s: float
) -> tuple[list[Message], list[Message], list[PredictRequest]]:
    """Events for the throughput runs, events that follow them, and requests for the latency run."""
    from rtml.tasks.eta.simulator.world import SimConfig, simulate
    from rtml.tasks.eta.spec import TASK as ETA

    wanted_later = int(latency_s * 1.5 * EVENT_RATE)
    events: list[Message] = []
    requests: list[PredictRequest] = []
    for message in simulate(SimConfig(seed=1, id_prefix="bench", **SIM), 30 * 86400):
        if isinstance(message, ETA.events):
            events.append(message)
        elif isinstance(message, PredictRequest) and len(events) > n_events:
            requests.append(message)
        if len(events) >= n_events + wanted_later:
            break
    return events[:n_events], events[n_events:], requests


async def produce(settings: Settings, messages: Sequence[Message], topic: str) -> None:
    producer = await start_producer(settings, linger_ms=5)
    try:
        for start in range(0, len(messages), 10_000):
            chunk = messages[start : start + 10_000]
            await asyncio.gather(*[await producer.send(topic, encode(m), key=m.key) for m in chunk])
            print(f"  produced {start + len(chunk):,}/{len(messages):,}", end="\r", flush=True)
        print()
    finally:
        await producer.stop()


# --- peers, each run as `python -m benchmarks.features --peer NAME` ----------------


class Counter:
    """Counts processed events; remembers when the first and the n-th were done."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def add(self, k: int) -> bool:
        if self.count == 0:
            self.first = time.perf_counter()
        self.count += k
        self.last = time.perf_counter()
        return self.count >= self.n

    def rate(self) -> Rate:
        return Rate(self.count, self.last - self.first, peak_rss_mib(os.getpid()))


def peer_raw(settings: Settings, n: int) -> Rate:
    async def run() -> Rate:
        consumer = AIOKafkaConsumer(
            **client_kwargs(settings), enable_auto_commit=False, fetch_max_wait_ms=5
        )
        await consumer.start()
        try:
            await consumer.topics()
            partitions = [
                TopicPartition(topics.EVENTS.name, p)
                for p in consumer.partitions_for_topic(topics.EVENTS.name)
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            counter = Counter(n)
            while True:
                for records in (
                    await consumer.getmany(timeout_ms=100, max_records=10_000)
                ).values():
                    for record in records:
                        decode(record.value)
                    if counter.add(len(records)):
                        return counter.rate()
        finally:
            await consumer.stop()

    return asyncio.run(run())


def peer_faust_agent(settings: Settings, n: int) -> Rate:
    import faust
    from rtml.shared.broker_compat_faust import CompatApp, faust_options

    app = CompatApp(
        f"bench-agent-{os.getpid()}",
        embedded=settings.embedded,
        **faust_options(settings),
        web_enabled=False,
    )
    counter = Counter(n)
    result: list[Rate] = []

    @app.agent(
        app.topic(topics.EVENTS.name, key_type=bytes, value_type=bytes, value_serializer="raw")
    )
    async def decode_only(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(1000, within=0.01):
            for event in events:
                decode(event.message.value)
            if counter.add(len(events)) and not result:
                result.append(counter.rate())
                print(result[0].to_json(), flush=True)
                os._exit(0)  # the rate is out; a graceful faust stop adds nothing to it

    faust.Worker(
        app, loglevel="WARNING", quiet=True, override_logging=False
    ).execute_from_commandline()
    raise AssertionError("unreachable")


def peer_quix(settings: Settings, n: int, window: str) -> Rate:
    with tempfile.TemporaryDirectory(prefix="rtml-bench-quix-") as state_dir:
        return _run_quix(settings, n, window, state_dir)


def _run_quix(settings: Settings, n: int, window: str, state_dir: str) -> Rate:
    from quixstreams import Application
    from quixstreams.models.serializers import Deserializer

    class ContractDeserializer(Deserializer):
        def __call__(self, value: bytes, ctx: object) -> Message:
            return decode(value)

    counter = Counter(n)
    window_updates = [0]
    running: list[Application] = []

    def processed(topic: str, partition: int, offset: int) -> None:
        if counter.add(1):
            running[0].stop()

    def updated(_: object) -> None:
        window_updates[0] += 1

    app = Application(
        broker_address=settings.bootstrap,
        on_message_processed=processed,
        consumer_group=f"bench-quix-{os.getpid()}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        consumer_extra_config={"fetch.wait.max.ms": 5},
    )
    running.append(app)
    events = app.topic(
        topics.EVENTS.name,
        value_deserializer=ContractDeserializer(),
        timestamp_extractor=lambda value, headers, ts, kind: int(value.ts * 1000),
    )
    # Tansu's DescribeConfigs leaves retention.ms out; quix reads it to configure its changelogs
    events.broker_config.extra_config.setdefault("retention.ms", "-1")
    placed = app.dataframe(events).filter(lambda event: event.SCHEMA == "order_placed")
    for name, minutes in (("orders_10m", 10), ("orders_30m", 30)):
        if window == "sliding":  # exact counts over the last 10/30 minutes, as the worker's
            definition = placed.sliding_window(duration_ms=minutes * 60_000, name=name)
        else:  # fixed 10/30 minute buckets: quix's cheapest windowed count
            definition = placed.tumbling_window(duration_ms=minutes * 60_000, name=name)
        definition.count().current().update(updated)
    app.run()
    # proof that the windows ran, on stderr so that stdout stays one JSON line
    print(f"quix window updates: {window_updates[0]:,}", file=sys.stderr)
    return counter.rate()


PEERS: dict[str, Callable[[Settings, int], Rate]] = {
    "raw": peer_raw,
    "faust-agent": peer_faust_agent,
    "quix-sliding": lambda settings, n: peer_quix(settings, n, "sliding"),
    "quix-tumbling": lambda settings, n: peer_quix(settings, n, "tumbling"),
}


def run_peer(name: str, settings: Settings, n: int) -> Rate:
    command = [
        sys.executable,
        "-m",
        "benchmarks.features",
        "--peer",
        name,
        "--events",
        str(n),
        "--kafka-port",
        str(settings.kafka_port),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    # the last line with the result (faust writes terminal escapes before it)
    results = [
        line[line.index('{"events"') :] for line in done.stdout.splitlines() if '{"events"' in line
    ]
    if not results:
        raise RuntimeError(f"peer {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    body = json.loads(results[-1])
    return Rate(body["events"], body["seconds"], body["peak_rss_mib"])


# --- the features worker -----------------------------------------------------------


@contextmanager
def features_worker(
    settings: Settings, app_id: str = "rtml-features"
) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    env = {
        **os.environ,
        "RTML_KAFKA_PORT": str(settings.kafka_port),
        "RTML_FEATURES_PORT": str(port),
        "RTML_FEATURES_APP_ID": app_id,
        "RTML_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "rtml.services.features"], env=env)
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # a busy machine: do not leave it behind
            process.kill()
            process.wait()


def applied_events(url: str) -> float:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("rtml_features_consumed_offset{")
    )


def measure_workers(workers: Sequence[tuple[subprocess.Popen, str]], n: int) -> Rate:
    """First applied event to the n-th, summed over the workers of one app; RSS: the largest."""
    first = last = 0.0
    while True:
        applied = sum(applied_events(url) for _, url in workers)
        now = time.perf_counter()
        if applied and not first:
            first, first_count = now, applied
        if applied >= n:
            last = now
            break
        for process, _ in workers:
            if process.poll() is not None:
                raise RuntimeError(f"a features worker exited with {process.returncode}")
        time.sleep(0.01)
    rss = max(peak_rss_mib(process.pid) for process, _ in workers)
    return Rate(int(n - first_count), last - first, rss)


# --- group timings -----------------------------------------------------------------


def seconds_until_ready(url: str, started: float) -> float:
    wait_http(f"{url}/readyz", timeout_s=120)
    return time.perf_counter() - started


def held_partitions(url: str) -> set[int]:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return set()
    prefix = 'rtml_features_consumed_offset{partition="'
    return {
        int(line[len(prefix) :].split('"')[0])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def group_timings() -> dict[str, float]:
    """Seconds to ready on a first start and a restart, and for a survivor to take over
    the partitions of a worker killed with kill -9, on a broker of their own."""
    from rtml.tasks.eta.simulator.world import SimConfig, simulate
    from rtml.tasks.eta.spec import TASK as ETA

    timings: dict[str, float] = {}
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        asyncio.run(ensure_topics(settings))
        started = time.perf_counter()
        with features_worker(settings) as (_, url):
            timings["first start to ready"] = seconds_until_ready(url, started)
        started = time.perf_counter()
        with features_worker(settings) as (_, first):
            timings["restart to ready"] = seconds_until_ready(first, started)
            started = time.perf_counter()
            with features_worker(settings) as (second_process, second):
                timings["second worker to ready"] = seconds_until_ready(second, started)
                log = simulate(SimConfig(seed=2, n_restaurants=60), 1800)
                events = [m for m in log if isinstance(m, ETA.events)]
                asyncio.run(produce(settings, events, topics.EVENTS.name))
                while not held_partitions(second):
                    time.sleep(0.05)
                second_process.kill()
                killed = time.perf_counter()
                # the survivor takes over when it applies the dead worker's events again
                while held_partitions(first) != set(range(settings.partitions)):
                    time.sleep(0.05)
                timings["kill -9 to takeover"] = time.perf_counter() - killed
    return timings


# --- scale-out: 1, 2, 3 ... workers of one app -----------------------------------------


@contextmanager
def features_workers(settings: Settings, count: int) -> Iterator[list]:
    """``count`` workers of one app (one consumer group), started together and settled:
    every one ready, so assigned partitions of its own, after the last join's rebalance."""
    with ExitStack() as stack:
        workers = [stack.enter_context(features_worker(settings)) for _ in range(count)]
        for _ in range(2):  # a later member's join rebalances the earlier ones
            for _, url in workers:
                wait_http(f"{url}/readyz", timeout_s=120)
        yield workers


def produce_fast(settings: Settings, records: Sequence[tuple[bytes, bytes]], topic: str) -> None:
    """Send pre-encoded records with librdkafka (confluent-kafka, which Quix Streams
    brings): ~4x aiokafka's rate, so a backlog builds even against three workers."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "linger.ms": 5,
            "batch.size": 1 << 20,
            # the Java client's partitioner, as aiokafka's: the workers place entities by it
            "partitioner": "murmur2_random",
        }
    )
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # the local queue is full: let librdkafka send
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("records left unsent")


@dataclass(frozen=True)
class Scaling:
    workers: int
    rate: Rate
    rss_mib: list[float]  # each worker's peak
    cpu_s: float  # the workers' user + system CPU seconds while they drained
    broker_cpu_s: float

    def cpu_us_per_event(self, seconds: float) -> float:
        return seconds / self.rate.events * 1e6


def cpu_seconds(pids: Sequence[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def scaling_sweep(events: Sequence[Message], counts: Sequence[int]) -> list[Scaling]:
    """Events/s of 1, 2, 3 ... workers of one app, each count on a broker of its own.

    The workers start and settle on an empty rtml.events; then the events go in
    at once and the clock runs from the first event applied after the last one is
    on the topic to the last event applied: a drain of the backlog by a settled
    group, with no producer beside it and no rebalance in it (joins and
    takeovers are start-up costs, measured by the group timings). CPU seconds
    are counted over the same window: on a machine shared with other work the
    rate follows the CPU share the workers get, the CPU per event does not."""
    records = [(m.key, encode(m)) for m in events]
    results = []
    for count in counts:
        print(f"{count} features worker(s) of one app ...", flush=True)
        with EmbeddedBroker(port=free_port()) as broker:
            settings = Settings(kafka_port=broker.port)
            asyncio.run(ensure_topics(settings))
            with features_workers(settings, count) as workers:
                produce_fast(settings, records, topics.EVENTS.name)
                pids = [p.pid for p, _ in workers]
                cpu_before = cpu_seconds(pids), cpu_seconds([broker.process.pid])
                rate = measure_workers(workers, len(records))
                used = cpu_seconds(pids) - cpu_before[0]
                broker_used = cpu_seconds([broker.process.pid]) - cpu_before[1]
                results.append(
                    Scaling(count, rate, [peak_rss_mib(p) for p in pids], used, broker_used)
                )
        if rate.events < len(records) / 4:
            raise RuntimeError(
                f"{count} workers drained most events while they went in: more --events"
            )
    return results


# --- latency -----------------------------------------------------------------------


async def kafka_latency(
    settings: Settings,
    events: Sequence[Message],
    requests: Sequence[PredictRequest],
    seconds: float,
) -> tuple[list[float], float, float]:
    """Events and requests at steady rates; ms from producing a request to consuming its answer."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await consumer.start()
    await consumer.topics()
    partitions = [
        TopicPartition(topics.PREDICT_ENRICHED.name, p)
        for p in consumer.partitions_for_topic(topics.PREDICT_ENRICHED.name)
    ]
    consumer.assign(partitions)
    for tp, end in (
        await broker_compat.end_offsets(consumer, partitions, settings.embedded)
    ).items():
        consumer.seek(tp, end)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    # where the worker's time went, per hop of timings_ms
    in_worker: dict[str, list[float]] = {}
    sending = asyncio.Event()

    async def collect() -> None:
        while not sending.is_set() or len(latencies) < len(sent_at):
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.perf_counter()
                for record in records:
                    started = sent_at.get(record.key.decode())
                    if started is not None:
                        latencies.append((now - started) * 1000)
                        enriched = decode(record.value)
                        assert isinstance(enriched, PredictEnriched)
                        for hop, spent in hops(enriched.timings_ms).items():
                            in_worker.setdefault(hop, []).append(spent)

    collecting = asyncio.create_task(collect())
    producer = await start_producer(settings, linger_ms=1)
    try:
        counts = await paced(
            seconds,
            events,
            requests,
            lambda m: producer.send(topics.EVENTS.name, encode(m), key=m.key),
            lambda r: _send_request(producer, r, sent_at),
        )
        await producer.flush()
        sending.set()
        await asyncio.wait_for(collecting, 60)
    finally:
        await producer.stop()
        await consumer.stop()
    for hop, spent in in_worker.items():
        print(
            f"  of which {hop}: p50 {statistics.median(spent):.1f} ms, "
            f"p99 {percentile(spent, 0.99):.1f} ms"
        )
    return latencies, counts[0] / seconds, counts[1] / seconds


async def _send_request(producer, request: PredictRequest, sent_at: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    sent_at[request.id] = time.perf_counter()
    # stamped as ingestion stamps it, so that the worker's timings start at the send
    stamped = request.model_copy(update={"received_at": time.time()})
    await producer.send(topics.PREDICT_REQUESTS.name, encode(stamped), key=request.key)


async def http_latency(
    settings: Settings,
    url: str,
    events: Sequence[Message],
    requests: Sequence[PredictRequest],
    seconds: float,
) -> tuple[list[float], float, float]:
    """The same load through POST /v1/enrich: ms per answered request."""
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    producer = await start_producer(settings, linger_ms=1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def enrich(request: PredictRequest) -> None:
            started = time.perf_counter()
            async with http.post(
                f"{url}/v1/enrich", json=request.model_dump(mode="json")
            ) as response:
                PredictEnriched.model_validate(await response.json())
            latencies.append((time.perf_counter() - started) * 1000)

        def start(request: PredictRequest) -> asyncio.Future[None]:
            task = asyncio.create_task(enrich(request))
            pending.add(task)
            task.add_done_callback(pending.discard)
            return asyncio.sleep(0)

        counts = await paced(
            seconds,
            events,
            requests,
            lambda m: producer.send(topics.EVENTS.name, encode(m), key=m.key),
            start,
        )
        await asyncio.gather(*pending)
    await producer.stop()
    return latencies, counts[0] / seconds, counts[1] / seconds


async def paced(
    seconds: float,
    events: Sequence[Message],
    requests: Sequence[PredictRequest],
    send_event,
    send_request,
) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Every TICK_S, the events and requests due by then; returns how many of each went."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    n_events = n_requests = 0
    while (elapsed := loop.time() - started) < seconds:
        while n_events < min(len(events), int(elapsed * EVENT_RATE)):
            await send_event(events[n_events])
            n_events += 1
        while n_requests < int(elapsed * REQUEST_RATE):
            original = requests[n_requests % len(requests)]
            await send_request(original.model_copy(update={"id": f"{original.id}-{n_requests}"}))
            n_requests += 1
        await asyncio.sleep(TICK_S)
    return n_events, n_requests


def by_quarter(latencies: Sequence[float]) -> str:
    """p50 / p99 of each quarter of ``latencies`` (in the order they completed): on the
    embedded broker a fetch costs more the longer the partition (BENCHMARKS.md), so a
    latency that grows through a run is the broker's, not the worker's."""
    size = len(latencies) // 4
    if size == 0:
        return "-"
    quarters = [latencies[i * size : (i + 1) * size] for i in range(4)]
    return ", ".join(f"{statistics.median(q):.0f} / {percentile(q, 0.99):.0f}" for q in quarters)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


# --- main --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--agent-events",
        type=int,
        default=30_000,
        help="events for the plain faust agent (it is slow)",
    )
    parser.add_argument(
        "--quix-events", type=int, default=30_000, help="events for Quix Streams (0: skip it)"
    )
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[1, 2, 3],
        help="worker counts of the scale-out sweep, e.g. 1,2,3",
    )
    parser.add_argument(
        "--sweep-only", action="store_true", help="only the raw baseline and the worker sweep"
    )
    parser.add_argument("--skip-group-timings", action="store_true")
    parser.add_argument("--peer", choices=sorted(PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--kafka-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        print(
            # the peer runs on the broker this benchmark started
            PEERS[args.peer](
                Settings(kafka_port=args.kafka_port, kafka_flavor="embedded"), args.events
            ).to_json(),
            flush=True,
        )
        return

    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}")
    latency_s = 0.0 if args.sweep_only else args.latency_seconds
    print(f"simulating {args.events:,} events and {latency_s:.0f}s of steady load")
    events, later_events, requests = workload(args.events, latency_s)
    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(kafka_port=broker.port)
        asyncio.run(ensure_topics(settings))
        asyncio.run(produce(settings, events, topics.EVENTS.name))
        print("raw aiokafka consume + decode ...", flush=True)
        raw = run_peer("raw", settings, len(events))
        if not args.sweep_only:
            full_run(args, settings, events, later_events, requests, raw)
    sweep = scaling_sweep(events, args.workers)
    print_sweep(raw, sweep, settings.partitions)
    if not (args.sweep_only or args.skip_group_timings):
        print("\nworker start, restart and takeover (a fresh broker) ...", flush=True)
        for label, seconds in group_timings().items():
            print(f"{label}: {seconds:.1f} s")


def worker_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("worker counts are positive integers, e.g. 1,2,3")
    return counts


def full_run(
    args: argparse.Namespace,
    settings: Settings,
    events: Sequence[Message],
    later_events: Sequence[Message],
    requests: Sequence[PredictRequest],
    raw: Rate,
) -> None:
    """The plain faust agent, one worker with its latency runs, Quix Streams; printed."""
    print(f"plain faust agent, decode only, first {args.agent_events:,} events ...", flush=True)
    agent = run_peer("faust-agent", settings, min(args.agent_events, len(events)))
    print("features worker, every eta feature ...", flush=True)
    with features_worker(settings) as (process, url):
        worker = measure_workers([(process, url)], len(events))
        wait_http(f"{url}/readyz")
        load = f"{REQUEST_RATE} req/s under {EVENT_RATE} events/s"
        print(f"kafka enrichment latency, {load}, {args.latency_seconds:.0f}s ...", flush=True)
        split = int(args.latency_seconds * EVENT_RATE)
        kafka_ms, kafka_ev, kafka_rq = asyncio.run(
            kafka_latency(settings, later_events[:split], requests, args.latency_seconds)
        )
        print("http enrichment latency (POST /v1/enrich), same load ...", flush=True)
        http_ms, http_ev, http_rq = asyncio.run(
            http_latency(settings, url, later_events[split:], requests, args.latency_seconds / 2)
        )
        worker_rss = peak_rss_mib(process.pid)
    quix: list[tuple[str, Rate]] = []
    for window in ("sliding", "tumbling") if args.quix_events else ():
        print(f"quix streams, {window} 10m/30m order counts per restaurant ...", flush=True)
        n_quix = min(args.quix_events, len(events))
        quix.append((window, run_peer(f"quix-{window}", settings, n_quix)))

    print()
    print(f"{'run':<44} {'events':>9} {'events/s':>10} {'vs raw':>7} {'peak RSS':>10}")
    rows = [
        ("raw aiokafka consume + decode (ceiling)", raw),
        ("plain faust agent, decode only", agent),
        ("features worker, all eta features", worker),
    ]
    rows += [(f"quix streams, {window} 10m+30m counts", rate) for window, rate in quix]
    for label, rate in rows:
        ratio = rate.per_s / raw.per_s
        print(
            f"{label:<44} {rate.events:>9,} {rate.per_s:>10,.0f} {ratio:>7.2f} "
            f"{rate.peak_rss_mib:>7.1f} MiB"
        )
    print(f"\nratio features worker / raw aiokafka: {worker.per_s / raw.per_s:.2f} (target >= 0.5)")
    for window, rate in quix:
        print(f"features worker / quix streams ({window}): {worker.per_s / rate.per_s:.2f}")
    for label, ms, ev, rq in (
        ("kafka (request -> enriched)", kafka_ms, kafka_ev, kafka_rq),
        ("http POST /v1/enrich", http_ms, http_ev, http_rq),
    ):
        print(
            f"enrichment latency, {label}: p50 {statistics.median(ms):.1f} ms, "
            f"p99 {percentile(ms, 0.99):.1f} ms ({len(ms):,} requests at {rq:.0f}/s, "
            f"events at {ev:.0f}/s)"
        )
        print(f"  over the run, p50 / p99 ms by quarter: {by_quarter(ms)}")
    print(f"features worker peak RSS after the latency runs: {worker_rss:.1f} MiB")


def print_sweep(raw: Rate, sweep: Sequence[Scaling], partitions: int) -> None:
    print(
        f"\nscale-out on {partitions} partitions, {os.cpu_count()} cores (drain by a settled group)"
    )
    print(
        f"{'workers':>7} {'events':>9} {'events/s':>10} {'vs raw':>7} {'vs 1':>6} "
        f"{'CPU us/event':>12} {'broker':>7}  peak RSS per worker"
    )
    one = next((s.rate.per_s for s in sweep if s.workers == 1), math.nan)
    for point in sweep:
        rate, each = point.rate, " / ".join(f"{mib:.0f}" for mib in point.rss_mib)
        print(
            f"{point.workers:>7} {rate.events:>9,} {rate.per_s:>10,.0f} "
            f"{rate.per_s / raw.per_s:>7.2f} {rate.per_s / one:>6.2f} "
            f"{point.cpu_us_per_event(point.cpu_s):>12.1f} "
            f"{point.cpu_us_per_event(point.broker_cpu_s):>7.1f}  {each} MiB"
        )
    print(f"raw aiokafka consume + decode (ceiling): {raw.per_s:,.0f} events/s")
    print(f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
