"""What every chaos scenario shares: its setting, its own broker, a hung broker, workers.

Settings. The default run (CI) uses the reduced setting, a few thousand events
and short outages, to stay within about two minutes; ``RTML_CHAOS=full`` runs
the full setting (50k+ events, 5 kills, a 30 s outage):

    RTML_CHAOS=full python3 -m pytest -m chaos tests/chaos -q

Broker loss. The embedded broker keeps everything in memory, so stopping it
would lose the topics the scenarios check. A lost broker is simulated by
freezing its process (SIGSTOP; SIGCONT to resume): the TCP connections stay
open and every request hangs, which is what a client sees of a hung broker or
a network partition with no RST, the harder case of the two (a refused
connection fails fast).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import pytest
from rtml.shared.contracts import Message, encode
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.settings import Settings

T = TypeVar("T")

# per scenario: process restarts on a loaded 2-core machine, and the full setting
CHAOS_TIMEOUT_S = 1800


@dataclass(frozen=True)
class ChaosSetting:
    name: str
    # hours of simulated marketplace behind the keyed stream of the kill scenario
    sim_hours: float
    # the keyed stream is sent over about this long, so that kills land while it flows
    stream_s: float
    # orders (a prediction and a label each) of the collector's kill scenario
    join_orders: int
    kills: int
    outage_s: float
    seed: int = 20261127


REDUCED = ChaosSetting(
    "reduced", sim_hours=0.75, stream_s=12.0, join_orders=800, kills=3, outage_s=8.0
)
FULL = ChaosSetting(
    "full", sim_hours=14.0, stream_s=60.0, join_orders=25_000, kills=5, outage_s=30.0
)


@pytest.fixture(scope="session")
def chaos() -> ChaosSetting:
    return FULL if os.environ.get("RTML_CHAOS") == "full" else REDUCED


@pytest.fixture
def rng(chaos: ChaosSetting) -> random.Random:
    return random.Random(chaos.seed)


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of the scenario's own, with every rtml topic: the scenario may freeze it,
    and its topics hold that scenario's records only."""
    with EmbeddedBroker(port=free_port()) as broker:
        asyncio.run(ensure_topics(Settings(kafka_port=broker.port)))
        yield broker


@contextmanager
def frozen(broker: EmbeddedBroker) -> Iterator[None]:
    """The broker hung (SIGSTOP) for the block, with its data kept; resumed after it."""
    assert broker.process is not None
    broker.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        broker.process.send_signal(signal.SIGCONT)


class InThread(Generic[T]):
    """Runs a coroutine to its end on a thread of its own, so that the scenario's thread
    can kill and restart processes meanwhile; ``join`` gives its result or raises its error."""

    def __init__(self, run: Callable[[], Awaitable[T]]) -> None:
        self._run = run
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> InThread[T]:
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> T:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the client did not finish within {timeout_s:.0f}s"
        if self._error is not None:
            raise self._error
        return cast(T, self._result)

    def _main(self) -> None:
        try:
            self._result = asyncio.run(self._run())
        except BaseException as exc:  # reported by join()
            self._error = exc


class PacedStream:
    """Sends ``messages`` in order over about ``duration_s``, each to ``topic_of(message)``,
    in the background (``InThread``). ``sent`` counts acknowledged messages; ``ends`` is
    the end offset per (topic, partition)."""

    CHUNK = 100

    def __init__(
        self,
        settings: Settings,
        topic_of: Callable[[Message], str],
        messages: Sequence[Message],
        duration_s: float,
    ) -> None:
        self.sent = 0
        self.ends: dict[tuple[str, int], int] = {}
        self._args = (settings, topic_of, messages, duration_s)
        self._sender = InThread(self._send)

    def __enter__(self) -> PacedStream:
        self._sender.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self, timeout_s: float = 300) -> dict[tuple[str, int], int]:
        self._sender.join(timeout_s)
        return self.ends

    def fraction_sent(self) -> float:
        return self.sent / max(1, len(self._args[2]))

    async def _send(self) -> None:
        settings, topic_of, messages, duration_s = self._args
        pause = duration_s * self.CHUNK / max(1, len(messages))
        producer = await start_producer(settings, linger_ms=5)
        try:
            for start in range(0, len(messages), self.CHUNK):
                chunk = messages[start : start + self.CHUNK]
                acks = [await producer.send(topic_of(m), encode(m), key=m.key) for m in chunk]
                for metadata in await asyncio.gather(*acks):
                    tp = (metadata.topic, metadata.partition)
                    self.ends[tp] = max(self.ends.get(tp, 0), metadata.offset + 1)
                self.sent += len(chunk)
                await asyncio.sleep(pause)
        finally:
            await producer.stop()


def kill_points(rng: random.Random, kills: int) -> list[float]:
    """Seeded fractions of a stream, sorted, at which to kill a worker."""
    return sorted(rng.uniform(0.1, 0.9) for _ in range(kills))
