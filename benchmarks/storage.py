"""Model store loads and warehouse reads: a local directory vs an S3 API on 127.0.0.1.

The S3 side is moto's standalone server (``tests/object_storage.py``), the one the tests
use: a Python process answering over loopback, so the figures show what rtml's own
code costs on top of an S3 round trip, not what Amazon S3 or MinIO would add (tens of
ms to the first byte across a network). In one invocation:

  model     an eta-sized booster (ROUNDS trees of depth 6 on 30 features) registered in
            each store; ``ModelStore.load`` (record, artifact, sha256 check, XGBoost
            parse) timed REPEATS times, and ``champion`` (pointer + record)
  warehouse EXAMPLES training examples over 24 hours, written as the collector does
            (one file per partition, task and hour, at most 5,000 examples a file);
            ``Warehouse.read`` of everything and of the last 2 hours (the hour
            partitions pruned), and ``resume_offsets`` (the listing), REPEATS times

``--s3 s3://bucket/prefix`` measures that bucket instead of starting moto (credentials
and RTML_S3_ENDPOINT_URL from the environment); the prefix should be a fresh one.

Usage: python -m benchmarks.storage [--repeats 20] [--examples 100000] [--rounds 300]
       [--s3 s3://bucket/prefix] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb
from rtml.shared.contracts import FeatureVector, TrainingExample
from rtml.shared.model_store import ModelStore
from rtml.shared.warehouse import Located, Warehouse

from benchmarks._common import machine
from tests.object_storage import s3_server

HOUR = 3600.0
T0 = 1_717_412_400.0
FEATURES = 30
FILE_EXAMPLES = 5000  # the collector's RTML_WAREHOUSE_MAX_RECORDS


@dataclass
class Timing:
    operation: str
    backend: str
    median_ms: float
    p90_ms: float
    size: str


def timed(
    operation: str, backend: str, repeats: int, size: str, call: Callable[[], object]
) -> Timing:
    call()  # warm: imports, connections, the filesystem's caches
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    p90 = statistics.quantiles(samples, n=10, method="inclusive")[-1]
    return Timing(operation, backend, statistics.median(samples), p90, size)


def booster(rounds: int) -> xgb.Booster:
    rng = np.random.default_rng(7)
    X = rng.random((20_000, FEATURES), dtype=np.float32)
    y = X @ rng.random(FEATURES, dtype=np.float32) + rng.normal(0, 0.1, len(X))
    params = {"max_depth": 6, "eta": 0.1, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(X, y), num_boost_round=rounds)


def examples(count: int) -> list[Located]:
    rng = np.random.default_rng(11)
    names = [f"f{i}" for i in range(FEATURES)]
    located = []
    for offset in range(count):
        label_ts = T0 + 24 * HOUR * offset / count
        vector = FeatureVector(
            feature_set="eta@1", names=names, values=rng.random(FEATURES).tolist(),
            freshness_s=[None] * FEATURES, defaulted=[False] * FEATURES,
        )  # fmt: skip
        example = TrainingExample(
            id=f"req-{offset}", ts=label_ts, task="eta", features=vector, label=30.0,
            model_version="v1", prediction=29.0, request_ts=label_ts - 1800, label_ts=label_ts,
        )  # fmt: skip
        located.append(Located(example, "rtml.training.examples-0", offset))
    return located


def measure(root: str, backend: str, args: argparse.Namespace, model: xgb.Booster) -> list[Timing]:
    store = ModelStore(f"{root}/models", mirror=None)
    record = store.register(model, task="eta", feature_set="eta@1", data_range={}, params={},
                            metrics={})  # fmt: skip
    store.set_champion("eta", record.version)
    size = f"{len(store.artifact(record)) / 2**20:.1f} MiB"
    warehouse = Warehouse(f"{root}/warehouse")
    batch = examples(args.examples)
    for start in range(0, len(batch), FILE_EXAMPLES):
        warehouse.write(batch[start : start + FILE_EXAMPLES])
    rows = f"{args.examples:,} examples"

    def read_recent() -> object:
        return warehouse.read("eta", since_ts=T0 + 22 * HOUR)  # the hour partitions pruned

    return [
        timed("model load", backend, args.repeats, size, lambda: store.load(record.version)),
        timed("champion lookup", backend, args.repeats, "", lambda: store.champion("eta")),
        timed("warehouse read, all", backend, args.repeats, rows, lambda: warehouse.read("eta")),
        timed("warehouse read, last 2 h", backend, args.repeats, rows, read_recent),
        timed("warehouse resume_offsets", backend, args.repeats, rows, warehouse.resume_offsets),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="at least 2")
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--s3", default=None, help="an existing bucket prefix to measure")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    model = booster(args.rounds)
    with tempfile.TemporaryDirectory(prefix="rtml-bench-storage-") as folder:
        timings = measure(str(Path(folder)), "local", args, model)
    if args.s3:
        timings += measure(args.s3, args.s3, args, model)
    else:
        with s3_server() as server:
            timings += measure(server.new_prefix("bench"), "S3 (moto, 127.0.0.1)", args, model)
    if args.json:
        print(json.dumps({"load": load, "timings": [asdict(t) for t in timings]}, indent=2))
        return
    print(f"machine: {machine()}; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| operation | size | local median (p90) | S3 median (p90) |")
    print("| --- | --- | ---: | ---: |")
    by_operation: dict[str, list[Timing]] = {}
    for timing in timings:
        by_operation.setdefault(timing.operation, []).append(timing)
    for operation, (local, remote) in by_operation.items():
        print(
            f"| {operation} | {local.size} | {local.median_ms:.1f} ms ({local.p90_ms:.1f}) "
            f"| {remote.median_ms:.1f} ms ({remote.p90_ms:.1f}) |"
        )


if __name__ == "__main__":
    main()
