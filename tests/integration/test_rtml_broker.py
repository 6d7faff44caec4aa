"""`rtml broker`: the embedded broker alone, refusing a port another process holds."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess

import psutil
from rtml.shared import broker_flavor
from rtml.shared.embedded_broker import free_port
from rtml.shared.settings import Settings

from tests.helpers import rtml, survivors


def test_a_port_another_process_holds_is_an_error_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            rtml("broker"),
            env={**os.environ, "RTML_KAFKA_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done
    assert f"cannot listen on 127.0.0.1:{port}: another process holds the port" in done.stderr
    assert "Traceback" not in done.stderr and "listening" not in done.stdout


def test_it_serves_the_embedded_kind_until_sigterm_and_leaves_nothing_behind() -> None:
    port = free_port()
    broker = subprocess.Popen(
        rtml("broker"),
        env={**os.environ, "RTML_KAFKA_PORT": str(port)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert broker.stdout is not None
        said = next(line for line in broker.stdout if line.startswith("embedded broker"))
        assert said.startswith(f"embedded broker listening on 127.0.0.1:{port}"), said
        tansu = psutil.Process(broker.pid).children()
        asked = Settings(kafka_bootstrap=f"127.0.0.1:{port}")
        assert asyncio.run(broker_flavor.ask(asked)) == "embedded"
    finally:
        broker.send_signal(signal.SIGTERM)
        code = broker.wait(30)
    assert code == 0
    assert len(tansu) == 1 and survivors(tansu, timeout_s=10) == []
