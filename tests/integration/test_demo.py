"""`rtml demo --duration short` end to end, as a newcomer runs it (free ports here);
then `rtml skew` on what the real stack logged during it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from rtml.shared.embedded_broker import free_port
from rtml.shared.eventlog import write_event_log

from rtml.demo import HOUR, PLANS, Demo
from rtml.stack import SERVICES
from rtml.tasks.eta.simulator.world import Marketplace
from tests.helpers import rtml

# the demo bounds itself at 600 s; on a loaded machine it can take most of that
pytestmark = pytest.mark.timeout(900)
PLAN = "short"
SEED = 7


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    workdir = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "RTML_KAFKA_PORT": str(free_port())}
    env.update({spec.port_env: str(free_port()) for spec in SERVICES})
    env.pop("RTML_KAFKA_BOOTSTRAP", None)
    done = subprocess.run(
        rtml("demo", "--duration", PLAN, "--seed", str(SEED), "--workdir", str(workdir)),
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return workdir, done


def test_short_demo_predicts_learns_the_storm_and_reports_no_failure(short_demo) -> None:
    _, done = short_demo
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "every stage worked" in out
    predictions = int(re.search(r"predictions\s+([\d,]+)", out).group(1).replace(",", ""))
    assert predictions > 0
    assert "└─" in out and "drift" in out  # a fine-tuned version, with the reason it was trained
    latency = re.search(r"p50 ([\d.]+) ms\s+p99 ([\d.]+) ms", out)
    assert latency and float(latency.group(2)) < 60_000, "latency measured from the wall clock"


def live_log(workdir: Path) -> Path:
    """The events the demo drove through the stack (the world after its warm-up),
    regenerated: the simulator gives the same messages for the same config."""
    plan = PLANS[PLAN]
    world = Marketplace(Demo(plan, SEED, workdir / "regenerated", print).config)
    list(world.run(plan.warmup_h * HOUR))
    path = workdir / "live.evl"
    write_event_log(path, world.run((plan.warmup_h + plan.live_h) * HOUR))
    return path


def test_rtml_skew_finds_no_mismatch_between_what_the_stack_logged_and_its_event_log(
    short_demo,
) -> None:
    workdir, _ = short_demo  # whatever the demo's verdict, what it logged must match
    skew = subprocess.run(
        rtml("skew", "--task", "eta", "--event-log", str(live_log(workdir)),
             "--batch-log", str(workdir / "warmup.evl")),
        env={**os.environ, "RTML_WAREHOUSE": str(workdir / "warehouse")},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    compared = re.search(r"compared (\d+) logged vectors \((\d+) not in the log\)", skew.stdout)
    assert compared and int(compared.group(1)) > 0 and compared.group(2) == "0", skew.stdout
    assert skew.returncode == 0 and "no mismatch" in skew.stdout, skew.stdout
