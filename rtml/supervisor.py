"""``rtml up``: the broker (unless external) and every service as supervised
subprocesses, restarted on crash with backoff, stopped together.

A stop request (SIGTERM or SIGINT to ``rtml up``, whatever the phase: creating topics,
waiting for readiness, running) stops every service within ``STOP_GRACE_S`` and then
the broker within its own grace, so ``rtml up`` is gone within 10 s. Every child also
gets SIGKILL from the kernel if ``rtml up`` dies without stopping them (a kill -9;
``shared/parent_death.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import aiohttp

from rtml.shared.logging import get_logger
from rtml.shared.parent_death import die_with_this_process
from rtml.shared.tasks.registry import tasks
from rtml.stack import ServiceSpec, with_task_defaults

log = get_logger(__name__)

# a child's longest log line (a JSON line with a traceback) when its output is relayed
MAX_LINE_BYTES = 1 << 20
RELAY_DRAIN_S = 2.0
MAX_BACKOFF_S = 30.0
# a child that ran this long without crashing earns a fresh backoff
STABLE_AFTER_S = 60.0
# SIGTERM to SIGKILL for a service (they exit in 0.2-2.3 s on a quiet machine, 2-6 s on
# a loaded one: docs/RELIABILITY.md); with the broker's grace after it
# (embedded_broker.STOP_GRACE_S) rtml up exits within 10 s
STOP_GRACE_S = 6.0

T = TypeVar("T")


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
            sys.executable,
            "-m",
            self.spec.module,
            env=self.env,
            preexec_fn=die_with_this_process(),
            **piped,
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
        """Restart the child whenever it exits; once the stack is stopping, stop it."""
        while not stopping.is_set():
            await self.start()
            assert self.process is not None
            code = await until_stopped(stopping, self.process.wait())
            if code is None:
                break
            if time.monotonic() - self.started_at > STABLE_AFTER_S:
                self.backoff_s = 0.5
            log.warning(
                "service_exited", service=self.spec.name, code=code, restart_in_s=self.backoff_s
            )
            self.restarts += 1
            await until_stopped(stopping, asyncio.sleep(self.backoff_s))
            self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
        await self.terminate()

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


async def until_stopped(stopping: asyncio.Event, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None (and ``work`` cancelled) if ``stopping`` is set first."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


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


def render_table(
    children: list[Supervised], status: dict[str, str], bootstrap: str, flavor: str
) -> str:
    rows = [
        ("service", "url", "status", "what"),
        ("kafka", bootstrap, READY, f"{flavor} broker"),
    ]
    for child in children:
        rows.append((child.spec.name, child.url, status[child.spec.name], child.spec.description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
    )


async def run_stack(
    specs: tuple[ServiceSpec, ...],
    env: dict[str, str],
    bootstrap: str,
    flavor: str,
    stop: asyncio.Event,
    ready_timeout_s: float,
) -> int:
    """Run the services until ``stop`` is set; 1 if one was not even alive in time."""
    children = plan(specs, env)
    if sys.stdout.isatty():
        prefix_output(children)
    supervisors = [asyncio.create_task(c.supervise(stop)) for c in children]
    try:
        status = await until_stopped(stop, wait_ready(children, ready_timeout_s))
        if status is None:
            return 0
        print(render_table(children, status, bootstrap, flavor), flush=True)
        # alive but waiting (a prediction service with no model yet) is a working stack
        if DOWN in status.values():
            return 1
        print("rtml is up. Ctrl-C stops everything.", flush=True)
        await stop.wait()
        return 0
    finally:
        stop.set()
        await asyncio.gather(*supervisors, return_exceptions=True)
