"""What the embedded stack costs at rest and under a light load.

In this one invocation: a first model trained from a simulated log (``rtml
simulate --out`` then ``rtml train --event-log``, as a new user would), then
``rtml up`` exactly as a user runs it (the supervisor, the embedded broker and
every service as processes), every ``/readyz`` waited for, then two windows:

  quiet  nothing sent at all, after SETTLE_S of rest
  load   ``rtml simulate`` driving the marketplace through ingestion: its events
         plus RATE predict requests/s (one per order), measured after
         LOAD_RAMP_S (fixed, whatever SETTLE_S: the marketplace's order rate
         follows its simulated hour, which the ramp moves on at 60x)

Reported per window and per process (broker, supervisor, each service): user +
system CPU in % of one core (psutil, process tree of ``rtml up``) and RSS at the
window's end; the total; for the load window the predictions made (the
prediction service's ``rtml_predictions_total``) and the CPU-ms per prediction
across all processes, broker included. The load generator's own CPU is not
counted.

Usage: python -m benchmarks.idle [--quiet-s 20] [--load-s 30] [--settle-s 10]
       [--rate 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import psutil
from rtml.shared.embedded_broker import free_port

from benchmarks._common import machine
from rtml.stack import SERVICES
from rtml.tasks.eta.simulator.world import SimConfig, demand_multiplier

READY_TIMEOUT_S = 180.0
# the simulator's clock runs this much faster than the wall clock while it drives the load
SPEEDUP = 60.0
# from the start of the load to its window: the stack takes up the traffic, and the
# marketplace (10 simulated minutes on) is still near the hour RATE is set for
LOAD_RAMP_S = 10.0


@dataclass
class ProcessUse:
    name: str
    cpu_pct: float  # of one core over the window
    rss_mib: float


@dataclass
class Window:
    name: str
    seconds: float
    processes: list[ProcessUse]
    predictions: int | None = None

    @property
    def total_cpu_pct(self) -> float:
        return sum(p.cpu_pct for p in self.processes)

    @property
    def cpu_ms_per_prediction(self) -> float | None:
        if not self.predictions:
            return None
        return self.total_cpu_pct / 100 * self.seconds * 1000 / self.predictions


def stack_env(workdir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "RTML_KAFKA_PORT": str(free_port()),
        "RTML_MODEL_STORE": str(workdir / "models"),
        "RTML_WAREHOUSE": str(workdir / "warehouse"),
    }
    env.pop("RTML_KAFKA_BOOTSTRAP", None)
    for spec in SERVICES:
        env[spec.port_env] = str(free_port())
    return env


def rtml(*args: str) -> list[str]:
    """The ``rtml`` command of this interpreter's installation."""
    return [sys.executable, "-c", "from rtml.cli import main; main()", *args]


def first_model(env: dict[str, str], workdir: Path) -> None:
    log = workdir / "warmup.log"
    subprocess.run(
        rtml("simulate", "--hours", "2", "--orders-per-hour", "600", "--out", str(log)),
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run(
        rtml("train", "--task", "eta", "--event-log", str(log), "--no-announce"),
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def process_name(process: psutil.Process, root: psutil.Process) -> str:
    if process.pid == root.pid:
        return "supervisor"
    cmdline = process.cmdline()
    if "-m" in cmdline:
        return cmdline[cmdline.index("-m") + 1].rsplit(".", 1)[-1]
    return "broker" if "broker" in cmdline else process.name()


def tree(root: psutil.Process) -> list[psutil.Process]:
    return [root, *root.children(recursive=True)]


async def wait_ready(env: dict[str, str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = {spec.name: int(env[spec.port_env]) for spec in SERVICES}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"not ready after {READY_TIMEOUT_S:.0f}s: {sorted(pending)}")
            for name, port in list(pending.items()):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            del pending[name]
                except (aiohttp.ClientError, TimeoutError):
                    pass
            await asyncio.sleep(0.5)


async def predictions_made(env: dict[str, str]) -> int:
    url = f"http://127.0.0.1:{env['RTML_PREDICTION_PORT']}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("rtml_predictions_total")
        )
    )


async def measure(name: str, root: psutil.Process, seconds: float, env) -> Window:
    processes = tree(root)
    before = {p.pid: p.cpu_times() for p in processes}
    predictions_before = await predictions_made(env)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    predictions = await predictions_made(env) - predictions_before
    uses = []
    for process in processes:
        after, start = process.cpu_times(), before[process.pid]
        cpu_s = (after.user - start.user) + (after.system - start.system)
        uses.append(
            ProcessUse(
                process_name(process, root),
                round(100 * cpu_s / elapsed, 1),
                round(process.memory_info().rss / 2**20, 1),
            )
        )
    uses.sort(key=lambda use: -use.cpu_pct)
    return Window(name, round(elapsed, 1), uses, predictions if name == "load" else None)


def report(windows: list[Window], rate: float) -> None:
    print(f"\nidle and light-load cost of `rtml up` ({machine()}); load: {rate:g} predictions/s")
    for window in windows:
        print(f"\n{window.name} window, {window.seconds:.0f} s")
        print(f"  {'process':<12} {'CPU % core':>10} {'RSS MiB':>8}")
        for use in window.processes:
            print(f"  {use.name:<12} {use.cpu_pct:>10.1f} {use.rss_mib:>8.1f}")
        print(f"  {'total':<12} {window.total_cpu_pct:>10.1f}")
        if window.predictions is not None:
            per = window.cpu_ms_per_prediction
            print(
                f"  predictions: {window.predictions} "
                f"({window.predictions / window.seconds:.1f}/s); "
                f"CPU per prediction, all processes: "
                + (f"{per:.1f} ms" if per is not None else "n/a")
            )


async def run(args: argparse.Namespace) -> list[Window]:
    with tempfile.TemporaryDirectory(prefix="rtml-idle-") as tmp:
        workdir = Path(tmp)
        env = stack_env(workdir)
        print("training a first model from a simulated log ...", file=sys.stderr)
        first_model(env, workdir)
        logs = (workdir / "up.log").open("wb")
        up = subprocess.Popen(rtml("up"), env=env, stdout=logs, stderr=subprocess.STDOUT)
        load: subprocess.Popen | None = None
        try:
            print("starting the stack and waiting for every /readyz ...", file=sys.stderr)
            await wait_ready(env)
            root = psutil.Process(up.pid)
            await asyncio.sleep(args.settle_s)
            quiet = await measure("quiet", root, args.quiet_s, env)
            # one predict request per order; the marketplace's demand follows the hour of day
            start = SimConfig().start_ts
            orders_per_hour = args.rate * 3600 / SPEEDUP / demand_multiplier(start)
            hours = (LOAD_RAMP_S + args.load_s + 30) * SPEEDUP / 3600
            load = subprocess.Popen(
                rtml(
                    "simulate", "--seed", "1", "--speedup", str(SPEEDUP),
                    "--orders-per-hour", str(orders_per_hour), "--hours", f"{hours:.3f}",
                ),
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(LOAD_RAMP_S)
            loaded = await measure("load", root, args.load_s, env)
            return [quiet, loaded]
        finally:
            for process in (load, up):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(60)
                    except subprocess.TimeoutExpired:
                        process.kill()
            logs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet-s", type=float, default=20.0)
    parser.add_argument("--load-s", type=float, default=30.0)
    parser.add_argument("--settle-s", type=float, default=10.0,
                        help="rest between every /readyz and the quiet window")  # fmt: skip
    parser.add_argument("--rate", type=float, default=10.0, help="predict requests per second")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    windows = asyncio.run(run(args))
    if args.json:
        print(json.dumps([asdict(w) | {"total_cpu_pct": w.total_cpu_pct} for w in windows]))
    else:
        report(windows, args.rate)


if __name__ == "__main__":
    main()
