"""Routing decisions/s through the router service vs a bare loop of the policy's ``choose()``.

One run, one policy setup (Thompson Beta-Bernoulli over three arms with some
rewards folded, as the service is configured by default):
- bare loop: ``policy.choose(rng)`` only (the ceiling);
- handler: ``Router.route`` in this process (the choice plus building the
  PredictRouted message, no broker);
- the service end to end through the embedded broker: the enriched requests
  wait on rtml.predict.enriched, the router (a subprocess) drains them into
  rtml.predict.routed; the rate comes from the broker append times of the
  routed messages after the first batch;
- ``POST /v1/route`` of one request at a time over loopback HTTP;
- the cost of a fold for a Thompson policy: re-estimating P(best) after new
  rewards, which happens at most once per RTML_ROUTER_FOLD_INTERVAL_MS.

Usage: python -m benchmarks.route [--requests 30000] [--http 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
from rtml.services.router.handlers import Router, RouterConfig
from rtml.services.router.ledger import LogPosition
from rtml.shared import topics
from rtml.shared.bandits.policies import Policy, make_policy
from rtml.shared.contracts import (
    FeatureVector,
    Message,
    ModelAnnouncement,
    PredictEnriched,
    Reward,
    encode,
)
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.settings import Settings

from benchmarks._common import Stopwatch, append_rate, machine, peak_rss_mib
from tests.helpers import wait_http

ARMS = ("v1", "v2", "v3")
# successes and failures per arm folded before routing: unequal shares, all arms in play
EVIDENCE = {"v1": (30, 70), "v2": (34, 66), "v3": (25, 75)}
FEATURES = ("distance_km", "n_items", "restaurant_orders_open", "zone_couriers_available")
PROCESSED_METRIC = 'rtml_messages_processed_total{service="router",topic="rtml.predict.enriched"}'


def enriched_requests(n: int, prefix: str) -> list[PredictEnriched]:
    now = time.time()
    values = np.random.default_rng(1).random((n, len(FEATURES))) * 10
    return [
        PredictEnriched(
            id=f"{prefix}-{i}",
            ts=now,
            task="eta",
            entities={"restaurant_id": f"r{i % 200}", "zone_id": f"z{i % 8}"},
            request_ts=now,
            features=FeatureVector(
                feature_set="eta@1",
                names=list(FEATURES),
                values=row.tolist(),
                freshness_s=[None, None, 3.0, 1.0],
                defaulted=[False] * len(FEATURES),
            ),
            timings_ms={"features": 1.0},
        )
        for i, row in enumerate(values)
    ]


def evidence() -> list[Reward]:
    now = time.time()
    return [
        Reward(id=f"evidence-{arm}-{i}", ts=now, task="eta", arm=arm, reward=float(i < successes))
        for arm, (successes, failures) in EVIDENCE.items()
        for i in range(successes + failures)
    ]


def announcements() -> list[ModelAnnouncement]:
    return [
        ModelAnnouncement(
            ts=time.time(),
            task="eta",
            model_version=arm,
            action="registered",
            sha256="0" * 64,
            feature_set="eta@1",
        )
        for arm in ARMS
    ]


def trained_router() -> Router:
    router = Router(RouterConfig())
    for announcement in announcements():
        router.on_announcement(announcement)
    for offset, reward in enumerate(evidence()):
        router.on_reward(reward, LogPosition(0, offset))
    return router


def trained_policy() -> Policy:
    policy = make_policy("thompson_beta", arms=ARMS)
    for reward in evidence():
        policy.update(reward.arm, reward.reward)
    return policy


# --- the baselines, in this process -------------------------------------------------


def median_rate(run: Callable[[], None], count: int, repeats: int = 3) -> float:
    rates = []
    for _ in range(repeats):
        with Stopwatch() as watch:
            run()
        rates.append(count / watch.seconds)
    return statistics.median(rates)


def bare_choose_rate(n: int) -> float:
    policy, rng = trained_policy(), np.random.default_rng(0)
    policy.choose(rng)  # the routing table is computed once, outside the timing

    def loop() -> None:
        for _ in range(n):
            policy.choose(rng)

    return median_rate(loop, n)


def handler_rate(requests: list[PredictEnriched]) -> float:
    router, rng = trained_router(), np.random.default_rng(0)
    router.route(requests[0], rng)

    def loop() -> None:
        for request in requests:
            router.route(request, rng)

    return median_rate(loop, len(requests))


def fold_cost_ms(repeats: int = 20) -> float:
    """One reward folded, then the P(best) re-estimate the next decision pays for."""
    policy = trained_policy()
    samples = []
    for i in range(repeats):
        policy.update(ARMS[i % len(ARMS)], float(i % 2))
        with Stopwatch() as watch:
            policy.probabilities()
        samples.append(watch.seconds * 1000)
    return statistics.median(samples)


# --- the service, through the broker -------------------------------------------------


async def produce(settings: Settings, topic: str, messages: list[Message]) -> None:
    producer = await start_producer(settings, linger_ms=5)
    try:
        acks = [await producer.send(topic, encode(m), key=m.key) for m in messages]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def processed(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(PROCESSED_METRIC):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def route_over_http(url: str, requests: list[PredictEnriched]) -> tuple[float, float]:
    bodies = [r.model_dump(mode="json") for r in requests]
    samples = []
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            with Stopwatch() as watch:
                async with http.post(f"{url}/v1/route", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"/v1/route answered {response.status}")
            samples.append(watch.seconds)
    p50, p99 = np.percentile(samples[100:], [50, 99]) * 1000  # the first 100 warm up
    return float(p50), float(p99)


async def service_run(
    broker: EmbeddedBroker, requests: list[PredictEnriched], http_probes: int, log: Path
) -> dict[str, float]:
    settings = Settings(kafka_port=broker.port)
    await ensure_topics(settings)
    await produce(settings, topics.MODELS.name, announcements())
    await produce(settings, topics.REWARDS.name, evidence())
    await produce(settings, topics.PREDICT_ENRICHED.name, requests)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "RTML_KAFKA_PORT": str(broker.port),
        "RTML_ROUTER_PORT": str(port),
        "RTML_MODEL_STORE": str(log.parent / "models"),
        "RTML_LOG_LEVEL": "WARNING",
    }
    with open(log, "ab") as output:
        service = subprocess.Popen(
            [sys.executable, "-m", "rtml.services.router"], env=env, stdout=output, stderr=output
        )
    try:
        wait_http(f"{url}/readyz", timeout_s=60)
        # the service's own counter, polled: reading the output topic meanwhile would
        # take CPU from the service on a small machine
        while processed(url) < len(requests):
            if service.poll() is not None:
                raise RuntimeError(f"the router exited ({service.returncode}); see {log}")
            await asyncio.sleep(0.2)
        rate = await append_rate(settings, topics.PREDICT_ROUTED.name, len(requests))
        http = await route_over_http(url, requests[:http_probes])
        rss = peak_rss_mib(service.pid)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(15)
    return {"rate": rate, "rss": rss, "http_p50": http[0], "http_p99": http[1]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=30_000, help="through the service")
    parser.add_argument("--http", type=int, default=2_000, help="POST /v1/route samples")
    parser.add_argument("--bare", type=int, default=200_000, help="choose() calls")
    args = parser.parse_args()

    requests = enriched_requests(args.requests, "bench")
    bare = bare_choose_rate(args.bare)
    handler = handler_rate(requests[:20_000])
    fold_ms = fold_cost_ms()
    log = Path(tempfile.mkdtemp(prefix="rtml-bench-route-")) / "router.log"
    with EmbeddedBroker(port=free_port()) as broker:
        service = asyncio.run(service_run(broker, requests, args.http, log))

    print(f"machine: {machine()}; broker: embedded Tansu on 127.0.0.1, sharing the cores")
    print(
        f"policy: thompson_beta (10,000 Monte Carlo draws), {len(ARMS)} arms with "
        f"{sum(sum(e) for e in EVIDENCE.values())} rewards folded; {args.requests:,} requests"
    )
    print(f"bare policy.choose() loop                 : {bare:12,.0f} decisions/s")
    print(f"Router.route, in process (+ PredictRouted) : {handler:12,.0f} decisions/s")
    print(f"service through the broker                 : {service['rate']:12,.0f} decisions/s")
    print(f"ratio (service / bare choose)              : {service['rate'] / bare:12.3f}")
    print(f"ratio (service / Router.route)             : {service['rate'] / handler:12.3f}")
    print(f"service peak RSS (VmHWM)                   : {service['rss']:10.1f} MiB")
    print(
        f"POST /v1/route, 1 request, loopback        : p50 {service['http_p50']:.3f} ms  "
        f"p99 {service['http_p99']:.3f} ms"
    )
    print(
        f"P(best) re-estimate after a fold          : {fold_ms:.2f} ms "
        "(at most once per RTML_ROUTER_FOLD_INTERVAL_MS, default 100)"
    )


if __name__ == "__main__":
    main()
