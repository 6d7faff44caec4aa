"""`rtml demo --duration short` end to end, as a newcomer runs it (free ports here)."""

from __future__ import annotations

import os
import re
import subprocess

from rtml.stack import SERVICES
from shared.embedded_broker import free_port


def test_short_demo_predicts_learns_the_storm_and_reports_no_failure(tmp_path) -> None:
    env = {**os.environ, "RTML_KAFKA_PORT": str(free_port())}
    env.update({spec.port_env: str(free_port()) for spec in SERVICES})
    env.pop("RTML_KAFKA_BOOTSTRAP", None)
    done = subprocess.run(
        ["rtml", "demo", "--duration", "short", "--workdir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "every stage worked" in out
    predictions = int(re.search(r"predictions\s+([\d,]+)", out).group(1).replace(",", ""))
    assert predictions > 0
    assert "└─" in out and "drift" in out  # a fine-tuned version, with the reason it was trained
    latency = re.search(r"p50 ([\d.]+) ms\s+p99 ([\d.]+) ms", out)
    assert latency and float(latency.group(2)) < 60_000, "latency measured from the wall clock"
