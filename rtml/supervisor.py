"""``rtml up``: the broker (unless external) and every service as supervised
subprocesses, restarted on crash with backoff, stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import aiohttp

from rtml.shared.logging import get_logger
from rtml.shared.tasks.registry import tasks
from rtml.stack import ServiceSpec, with_task_defaults

log = get_logger(__name__)

# a child's longest log line (a JSON line with a traceback) when its output is relayed
MAX_LINE_BYTES = 1 << 20
RELAY_DRAIN_S = 2.0
MAX_BACKOFF_S = 30.0
# a child that ran this long without crashing earns a fresh backoff
STABLE_AFTER_S = 60.0
STOP_GRACE_S = 15.0


@dataclass
class Supervised:
    spec: ServiceSpec
    port: int
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    backoff_s: float = 0.5
    started_at: float = field(default=0.0)
    # set (rtml up on a terminal): the child's output lines are written to ``relay_to``
    # behind this prefix, its service's name, so that interleaved lines say whose they are
    prefix: bytes | None = None
    relay_to: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    _relaying: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self._relayed()  # the last lines of the previous run first
        self.started_at = time.monotonic()
        piped: dict[str, Any] = {}
        if self.prefix is not None:
            piped = {"stdout": PIPE, "stderr": STDOUT, "limit": MAX_LINE_BYTES}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.spec.module, env=self.env, **piped
        )
        if self.prefix is not None:
            assert self.process.stdout is not None
            self._relaying = asyncio.create_task(self._relay(self.process.stdout, self.prefix))

    async def _relayed(self) -> None:
        """Wait for the relay to pass on the child's last lines: it ends when the child's
        output closes, at its exit (a grandchild still holding it is not waited for)."""
        if self._relaying is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._relaying, RELAY_DRAIN_S)

    async def _relay(self, output: asyncio.StreamReader, prefix: bytes) -> None:
        async for line in output:
            self.relay_to.write(prefix + line + (b"" if line.endswith(b"\n") else b"\n"))
            self.relay_to.flush()

    async def supervise(self, stopping: asyncio.Event) -> None:
        """Restart the child whenever it exits, until the stack is stopping."""
        while not stopping.is_set():
            await self.start()
            assert self.process is not None
            code = await self.process.wait()
            if stopping.is_set():
                return
            if time.monotonic() - self.started_at > STABLE_AFTER_S:
                self.backoff_s = 0.5
            log.warning(
                "service_exited", service=self.spec.name, code=code, restart_in_s=self.backoff_s
            )
            self.restarts += 1
            await asyncio.sleep(self.backoff_s)
            self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)

    async def terminate(self) -> None:
        if self.process is None or self.process.returncode is not None:
            await self._relayed()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_GRACE_S)
        except TimeoutError:
            log.warning("service_killed", service=self.spec.name, after_s=STOP_GRACE_S)
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                self.process.kill()
            await self.process.wait()
        await self._relayed()


def plan(specs: tuple[ServiceSpec, ...], env: dict[str, str]) -> list[Supervised]:
    env = with_task_defaults(env, tasks().names)
    children = []
    for spec in specs:
        port = int(env.get(spec.port_env, spec.default_port))
        children.append(Supervised(spec, port, {**env, spec.port_env: str(port)}))
    return children


def prefix_output(children: list[Supervised]) -> None:
    """Each child's output lines behind its name, the names aligned: ``router     | {...}``."""
    width = max(len(child.spec.name) for child in children)
    for child in children:
        child.prefix = f"{child.spec.name:<{width}} | ".encode()


READY = "ready"
DOWN = "DOWN"


async def wait_ready(children: list[Supervised], timeout_s: float) -> dict[str, str]:
    """Each service's status once all are ready or the time is up: "ready", "DOWN"
    (not even alive), or alive but not ready, with the reason its /readyz gives."""
    deadline = time.monotonic() + timeout_s
    status = {c.spec.name: DOWN for c in children}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            for child in children:
                if status[child.spec.name] != READY:
                    status[child.spec.name] = await _status(http, child.url)
            if all(s == READY for s in status.values()):
                break
            await asyncio.sleep(0.2)
    return status


async def _status(http: aiohttp.ClientSession, url: str) -> str:
    try:
        async with http.get(f"{url}/readyz") as response:
            if response.status == 200:
                return READY
            failing = (await response.json(content_type=None)).get("failing", {})
            return "waiting: " + "; ".join(f"{k}: {v}" for k, v in failing.items())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return DOWN


@contextlib.asynccontextmanager
async def started(
    specs: tuple[ServiceSpec, ...], env: dict[str, str], ready_timeout_s: float
) -> AsyncIterator[list[Supervised]]:
    """The services started together and ready, without restarts: for tests and benchmarks
    that stop and start a service themselves (``terminate()``, ``start()``). All are
    terminated on the way out."""
    children = plan(specs, env)
    try:
        for child in children:
            await child.start()
        status = await wait_ready(children, ready_timeout_s)
        not_ready = {name: why for name, why in status.items() if why != READY}
        if not_ready:
            raise RuntimeError(f"not ready within {ready_timeout_s} s: {not_ready}")
        yield children
    finally:
        await asyncio.gather(*(child.terminate() for child in children))


def render_table(children: list[Supervised], status: dict[str, str], bootstrap: str) -> str:
    rows = [("service", "url", "status", "what"), ("kafka", bootstrap, READY, "broker")]
    for child in children:
        rows.append((child.spec.name, child.url, status[child.spec.name], child.spec.description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
    )


async def run_stack(
    specs: tuple[ServiceSpec, ...], bootstrap: str, stop: asyncio.Event, ready_timeout_s: float
) -> int:
    children = plan(specs, dict(os.environ))
    if sys.stdout.isatty():
        prefix_output(children)
    supervisors = [asyncio.create_task(c.supervise(stop)) for c in children]
    status = await wait_ready(children, ready_timeout_s)
    print(render_table(children, status, bootstrap), flush=True)
    # alive but waiting (a prediction service with no model yet) is a working stack
    code = 1 if DOWN in status.values() else 0
    if code == 0:
        print("rtml is up. Ctrl-C stops everything.", flush=True)
        await stop.wait()
    else:
        stop.set()
    await asyncio.gather(*(c.terminate() for c in children))
    await asyncio.gather(*supervisors, return_exceptions=True)
    return code
