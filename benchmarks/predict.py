"""Predictions/s through the prediction service vs a bare ``inplace_predict`` loop.

One run, one model, the same vectors:
- bare loop: ``inplace_predict`` on batches of 256 rows, nothing else (the ceiling);
- the service end to end through the embedded broker: the requests wait on
  rtml.predict.routed, the service (a subprocess) drains them into
  rtml.predictions with batch cap 256, then with cap 1 (batching off); the rate
  comes from the broker append times of the predictions after the first batch;
- single-request scoring on the handler path (no broker): ``Scorer.score_batch``
  of one request, and the service's ``PredictionApp.score`` (adds the metrics),
  next to a bare one-row ``inplace_predict``;
- ``POST /v1/score`` of one request at a time over loopback HTTP.

Usage: python -m benchmarks.predict [--requests 20000] [--unbatched 2000] [--rounds 200] [--depth 6]
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
import xgboost as xgb
from rtml.services.prediction.app import PredictionApp
from rtml.services.prediction.handlers import LoadedModel, Scorer
from rtml.shared import topics
from rtml.shared.contracts import FeatureVector, PredictRouted, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, start_consumer, start_producer
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings

from benchmarks._common import append_rate, machine, peak_rss_mib
from tests.helpers import wait_http

FEATURE_SET = "eta@1"
FEATURES = (
    "distance_km",
    "n_items",
    "restaurant_orders_open",
    "restaurant_prep_mean_min",
    "zone_couriers_available",
    "zone_orders_open",
)
BATCH = 256
PROCESSED_METRIC = 'rtml_messages_processed_total{service="prediction",topic="rtml.predict.routed"}'


def vectors(n: int, seed: int) -> np.ndarray:
    scale = np.array([8.0, 6.0, 12.0, 25.0, 10.0, 15.0], dtype=np.float32)
    return np.random.default_rng(seed).random((n, len(FEATURES)), dtype=np.float32) * scale


def train(rounds: int, depth: int) -> xgb.Booster:
    x = vectors(20_000, seed=1)
    minutes = 10 + x @ np.array([3.0, 1.0, 0.8, 0.6, -0.5, 0.4]) + 2 * np.sin(x[:, 0])
    data = xgb.DMatrix(x, minutes, feature_names=list(FEATURES))
    booster = xgb.train({"max_depth": depth, "nthread": 1}, data, num_boost_round=rounds)
    # as the service sets it (RTML_PREDICTION_XGB_THREADS default)
    booster.set_param({"nthread": 1})
    return booster


def requests_for(x: np.ndarray, prefix: str) -> list[PredictRouted]:
    now = time.time()
    return [
        PredictRouted(
            id=f"{prefix}-{i}",
            ts=now,
            task="eta",
            entities={"restaurant_id": f"r{i % 200}", "zone_id": f"z{i % 8}"},
            request_ts=now,
            features=FeatureVector(
                feature_set=FEATURE_SET,
                names=list(FEATURES),
                values=row.tolist(),
                freshness_s=[None] * len(FEATURES),
                defaulted=[False] * len(FEATURES),
            ),
            timings_ms={"features": 1.0},
        )
        for i, row in enumerate(x)
    ]


# --- the baselines, in this process ------------------------------------------------


def bare_batched_rate(booster: xgb.Booster, x: np.ndarray, repeats: int = 3) -> float:
    """Rows/s of inplace_predict over ``x`` in batches of 256; the median of ``repeats``."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(x), BATCH):
            booster.inplace_predict(x[start : start + BATCH], validate_features=False)
        rates.append(len(x) / (time.perf_counter() - started))
    return statistics.median(rates)


def percentiles_ms(call: Callable[[], object], times: int) -> tuple[float, float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    p50, p99 = np.percentile(samples, [50, 99]) * 1000
    return float(p50), float(p99)


def single_request_latencies(
    booster: xgb.Booster, x: np.ndarray, times: int
) -> dict[str, tuple[float, float]]:
    scorer = Scorer()
    scorer.add(
        LoadedModel("v1", "eta", FEATURE_SET, booster, tuple(FEATURES), booster.num_features())
    )
    scorer.set_champion("eta", "v1")
    [request] = requests_for(x[:1], "single")
    row = x[:1]
    app = PredictionApp(scorer)
    for _ in range(200):  # warm-up
        app.score([request], time.time())
    return {
        "bare inplace_predict, 1 row": percentiles_ms(
            lambda: booster.inplace_predict(row, validate_features=False), times
        ),
        "Scorer.score_batch, 1 request": percentiles_ms(
            lambda: scorer.score_batch([request], time.time(), time.time()), times
        ),
        "PredictionApp.score, 1 request": percentiles_ms(
            lambda: app.score([request], time.time()), times
        ),
    }


async def raw_relay(broker: EmbeddedBroker, requests: list[PredictRouted]) -> float:
    """The transport ceiling: the service's consume -> produce -> commit loop on the same
    topics and client settings, passing the bytes through without decoding or scoring."""
    settings = Settings(kafka_port=broker.port)
    await ensure_topics(settings)
    await produce(settings, requests)
    consumer = await start_consumer(settings, topics.PREDICT_ROUTED.name, group_id="bench-relay")
    producer = await start_producer(settings)
    try:
        relayed = 0
        while relayed < len(requests):
            batches = await consumer.getmany(timeout_ms=100, max_records=BATCH)
            records = [record for partition in batches.values() for record in partition]
            if not records:
                continue
            acks = [
                await producer.send(topics.PREDICTIONS.name, r.value, key=r.key) for r in records
            ]
            await asyncio.gather(*acks)
            await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items() if rs})
            relayed += len(records)
    finally:
        await consumer.stop()
        await producer.stop()
    return await prediction_rate(settings, len(requests))


# --- the service, through the broker -----------------------------------------------


class ServiceRun:
    """A fresh broker and the prediction service draining ``requests`` into predictions."""

    def __init__(self, store: ModelStore, max_batch: int, log_path: Path) -> None:
        self.store = store
        self.max_batch = max_batch
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def drain(
        self, broker: EmbeddedBroker, requests: list[PredictRouted], http_probes: int
    ) -> dict[str, float]:
        settings = Settings(kafka_port=broker.port)
        await ensure_topics(settings)
        await produce(settings, requests)
        env = {
            **os.environ,
            "RTML_KAFKA_PORT": str(broker.port),
            "RTML_PREDICTION_PORT": str(self.port),
            "RTML_MODEL_STORE": str(self.store),
            "RTML_PREDICTION_MAX_BATCH": str(self.max_batch),
            "RTML_LOG_LEVEL": "WARNING",
        }
        with open(self.log_path, "ab") as log:
            service = subprocess.Popen(
                [sys.executable, "-m", "rtml.services.prediction"], env=env, stdout=log, stderr=log
            )
        try:
            wait_http(f"{self.url}/readyz", timeout_s=60)
            await self._until_processed(len(requests), service)
            rate = await prediction_rate(settings, len(requests))
            http = await score_over_http(self.url, requests[:http_probes]) if http_probes else None
            rss = peak_rss_mib(service.pid)
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(15)
        return {"rate": rate, "rss": rss} | (
            {"http_p50": http[0], "http_p99": http[1]} if http else {}
        )

    async def _until_processed(self, count: int, service: subprocess.Popen[bytes]) -> None:
        # the service's own counter, polled: reading the output topic meanwhile would
        # take CPU from the service on a small machine
        while processed(self.url) < count:
            if service.poll() is not None:
                raise RuntimeError(
                    f"the service exited ({service.returncode}); see {self.log_path}"
                )
            await asyncio.sleep(0.2)


def processed(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(PROCESSED_METRIC):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def produce(settings: Settings, requests: list[PredictRouted]) -> None:
    producer = await start_producer(settings, linger_ms=5)
    try:
        acks = [
            await producer.send(topics.PREDICT_ROUTED.name, encode(r), key=r.key) for r in requests
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def prediction_rate(settings: Settings, count: int) -> float:
    return await append_rate(settings, topics.PREDICTIONS.name, count)


async def score_over_http(url: str, requests: list[PredictRouted]) -> tuple[float, float]:
    bodies = [r.model_dump(mode="json") for r in requests]
    samples = []
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            started = time.perf_counter()
            async with http.post(f"{url}/v1/score", json=body) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"/v1/score answered {response.status}")
            samples.append(time.perf_counter() - started)
    p50, p99 = np.percentile(samples[100:], [50, 99]) * 1000  # the first 100 warm up
    return float(p50), float(p99)


def service_run(
    store: ModelStore, max_batch: int, requests: list[PredictRouted], http_probes: int, log: Path
) -> dict[str, float]:
    with EmbeddedBroker(port=free_port()) as broker:
        return asyncio.run(ServiceRun(store, max_batch, log).drain(broker, requests, http_probes))


def relay_run(requests: list[PredictRouted]) -> float:
    with EmbeddedBroker(port=free_port()) as broker:
        return asyncio.run(raw_relay(broker, requests))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000, help="for the batch cap 256 run")
    parser.add_argument("--unbatched", type=int, default=2_000, help="for the batch cap 1 run")
    parser.add_argument("--rounds", type=int, default=200, help="boosting rounds of the model")
    parser.add_argument("--depth", type=int, default=6, help="max_depth of the model")
    parser.add_argument("--single", type=int, default=5_000, help="single-request samples")
    args = parser.parse_args()

    booster = train(args.rounds, args.depth)
    x = vectors(args.requests, seed=2)
    workdir = Path(tempfile.mkdtemp(prefix="rtml-bench-predict-"))
    store = ModelStore(workdir / "models")
    record = store.register(
        booster,
        task="eta",
        feature_set=FEATURE_SET,
        data_range={"synthetic_rows": 20_000},
        params={"max_depth": args.depth, "rounds": args.rounds},
        metrics={},
    )
    store.set_champion("eta", record.version)
    log = workdir / "service.log"

    load_before = os.getloadavg()[0]
    bare = bare_batched_rate(booster, x)
    single = single_request_latencies(booster, x, args.single)
    relay = relay_run(requests_for(x, "r"))
    batched = service_run(store, BATCH, requests_for(x, "b"), 1_100, log)
    unbatched = service_run(store, 1, requests_for(x[: args.unbatched], "u"), 0, log)

    rows = [
        ("bare inplace_predict loop, batches of 256", f"{bare:10,.0f} rows/s"),
        ("raw aiokafka relay, no decode/score", f"{relay:10,.0f} messages/s"),
        ("service through the broker, batch cap 256", f"{batched['rate']:10,.0f} predictions/s"),
        ("service through the broker, batch cap 1", f"{unbatched['rate']:10,.0f} predictions/s"),
        (
            "ratio service cap 256 / bare batched",
            f"{batched['rate'] / bare:10.3f}  (target >= 0.5)",
        ),
        ("ratio service cap 256 / raw relay", f"{batched['rate'] / relay:10.2f}"),
        ("ratio service cap 256 / cap 1", f"{batched['rate'] / unbatched['rate']:10.1f}"),
        ("service peak RSS, cap 256", f"{batched['rss']:10.1f} MiB"),
        ("service peak RSS, cap 1", f"{unbatched['rss']:10.1f} MiB"),
    ]
    rows += [
        (name, f"p50 {p50:6.3f} ms   p99 {p99:6.3f} ms") for name, (p50, p99) in single.items()
    ]
    rows.append(
        (
            "POST /v1/score, 1 request, loopback",
            f"p50 {batched['http_p50']:6.3f} ms   p99 {batched['http_p99']:6.3f} ms",
        )
    )
    print(f"machine: {machine()}; broker: embedded Tansu on 127.0.0.1, sharing the cores")
    print(f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    print(
        f"model: {args.rounds} rounds, max_depth {args.depth}, {len(FEATURES)} features, "
        f"nthread 1; {args.requests:,} requests (cap 256, relay), {args.unbatched:,} (cap 1)"
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}} : {value}")
    print("single-request target: handler path < 1 ms p99")


if __name__ == "__main__":
    main()
