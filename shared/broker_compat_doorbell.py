"""A doorbell from rtml's producers to its consumers, for the embedded broker only.

Tansu does not answer a waiting fetch when data arrives (EMBEDDED_BROKER.md), so
a consumer either polls with a short fetch wait (fast, but every idle consumer
then costs the broker and itself a fetch every few milliseconds) or waits long
(cheap at rest, slow per hop). The doorbell gives both: once the next fetch
to a node would ask for the same partitions each from the high watermark the
last response reported (its records, if any, handed out), the consumer sends no
fetch for that node until a producer of this machine rings for one of the
partitions in it, its position changes (seek, reset, new assignment, resume), or
``IDLE_FETCH_INTERVAL_S`` has passed. So a fetch that brought records is not
followed by an empty one that would wait out the fetch wait on the broker (and
hold up the next record behind it); a reader that knows of records its
consumer has not fetched (the features worker, from a read of the partitions'
ends) asks with ``fetch_soon``.

While the doorbell plans a consumer's fetches, it also gives a fetch for records
the consumer knows are there a long wait (``KNOWN_RECORDS_FETCH_WAIT_MS``): Tansu
stops reading a partition when the wait runs out, and a long partition takes it
longer than the usual 5 ms to read.

The guarantee: a record acknowledged by the broker is fetched without waiting
for the interval. A producer rings only after the broker acknowledged the
send, and a consumer takes its mark of the rings before it sends a fetch; so a
ring it has not seen since belongs to a record that may be missing from that
fetch's response, and it fetches again; a ring it has seen belongs
to a record the fetch already saw. A ring that is lost (a receiver's socket
buffer full, a producer outside rtml) costs at most the interval, never a
record.

Transport: every process with a consumer binds a Unix datagram socket in a
directory of its own user, one per broker address; a producer sends the
partitions it wrote to (``topic:partition`` lines) to every socket there, the
acks of a loop turn together and at most once per ``RING_INTERVAL_S``; a
receiver takes every ring queued on its socket before it wakes anyone. The
directory is listed again only when its mtime changes; a socket whose process died is removed by the
first sender that finds nobody reading.

Nothing here runs on a real Kafka, whose fetches wait for data by themselves:
``attach`` is called only for the embedded broker (``shared/kafka.py``,
``shared/broker_compat_faust.py``), and a client without a doorbell takes
aiokafka's own paths unchanged.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import itertools
import math
import os
import socket
import tempfile
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from rtml.shared.logging import get_logger

log = get_logger(__name__)

# The fetch wait of a fetch for records the consumer knows are there (its position
# below the high watermark its last response reported). Tansu answers it as soon as
# it has read them, so a long wait costs nothing, but it reads a partition by listing
# every batch in it and stops listing when the fetch wait runs out: past ~10k batches
# in a partition that takes longer than the usual 5 ms, and every such fetch came back
# empty: the consumer never got past that point (tests/broker).
KNOWN_RECORDS_FETCH_WAIT_MS = 500
# The longest an idle consumer goes without a fetch: what a record written by a
# producer without the doorbell (a user's own client) may wait, per hop.
IDLE_FETCH_INTERVAL_S = 1.0
# The shortest time between two rings of one producer's loop. Under traffic a ring
# per loop turn is thousands of datagrams a second to every consumer process, each
# woken to read it while its consumer is busy fetching anyway; at rest the first
# ring goes at once. What it may cost a hop: this long, when rings come this often.
RING_INTERVAL_S = 0.002
_MAX_DATAGRAM = 8192

_doorbells: dict[str, Doorbell] = {}
_doorbells_lock = threading.Lock()


def attach(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Give a consumer or producer the doorbell of its broker: a consumer's
    fetcher sleeps while idle and wakes on a ring; a producer rings after each
    acknowledged send. Call before ``start()``."""
    _install()
    kafka_client = client._client if isinstance(client, AIOKafkaConsumer) else client.client
    doorbell = doorbell_for(kafka_client._bootstrap_servers)
    if isinstance(client, AIOKafkaConsumer):
        doorbell.listen()
    kafka_client._rtml_doorbell = doorbell


def fetch_soon(consumer: AIOKafkaConsumer) -> None:
    """Have ``consumer`` fetch now even if it is idle: for a reader that knows of
    records appended without a ring (a producer outside rtml). Any thread; nothing
    without a doorbell."""
    doorbell: Doorbell | None = getattr(consumer._client, "_rtml_doorbell", None)
    if doorbell is not None:
        doorbell.heard({channel(tp.topic, tp.partition) for tp in consumer.assignment()})


def doorbell_for(bootstrap: str | list[str]) -> Doorbell:
    """This process's doorbell for the broker at ``bootstrap`` (a string or the
    list faust passes)."""
    address = ",".join(sorted(bootstrap)) if isinstance(bootstrap, list) else bootstrap
    with _doorbells_lock:
        if address not in _doorbells:
            _doorbells[address] = Doorbell(_directory(address))
        return _doorbells[address]


def _directory(address: str) -> Path:
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in address)
    return Path(tempfile.gettempdir()) / f"rtml-doorbell-{os.getuid()}-{safe}"


class Doorbell:
    """This process's end of one broker's doorbell: rings it sends, rings it hears."""

    _socket_ids = itertools.count()

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._rings: Counter[str] = Counter()
        # the futures to resolve on the next ring for one of their partitions, one per
        # (partitions, mark, loop): a fetcher plans again on every wake-up of its loop,
        # and each plan of an idle consumer asks for the same future, so there is one
        # per idle consumer, not one per plan piling up until a ring (an idle topic's
        # never came: the list grew by the second and each ring walked it all)
        self._waiters: dict[
            tuple[frozenset[str], int, asyncio.AbstractEventLoop], asyncio.Future
        ] = {}
        self._listening: Path | None = None
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._peers: list[str] = []
        self._listed_mtime = -1
        self._pending: dict[asyncio.AbstractEventLoop, set[str]] = {}
        self._last_sent: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, float] = (
            weakref.WeakKeyDictionary()
        )

    # -- hearing --------------------------------------------------------------

    def listen(self) -> None:
        """Bind this process's socket and start the thread that reads it (once)."""
        with self._lock:
            if self._listening is not None:
                return
            path = self.directory / f"{os.getpid()}-{next(self._socket_ids)}.sock"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            receiver.bind(str(path))
            self._listening = path
        atexit.register(_unlink, path)
        threading.Thread(
            target=self._hear, args=(receiver,), name="rtml-doorbell", daemon=True
        ).start()

    def _hear(self, receiver: socket.socket) -> None:
        while True:
            partitions = set(receiver.recv(_MAX_DATAGRAM).decode().split("\n"))
            # under traffic rings queue up: take them all, then wake once
            with contextlib.suppress(BlockingIOError):
                while True:
                    more = receiver.recv(_MAX_DATAGRAM, socket.MSG_DONTWAIT)
                    partitions.update(more.decode().split("\n"))
            self.heard(partitions)

    def heard(self, partitions: set[str]) -> None:
        """A ring for ``partitions`` (``topic:partition``): wake this process's
        consumers of them (any thread)."""
        with self._lock:
            self._rings.update(partitions)
            woken = [key for key in self._waiters if key[0] & partitions]
            futures = [(key[2], self._waiters.pop(key)) for key in woken]
        for loop, future in futures:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_resolve, future)

    def mark(self, partitions: frozenset[str]) -> int:
        """How many rings this process has heard for ``partitions`` so far."""
        with self._lock:
            return sum(self._rings[partition] for partition in partitions)

    def rung_future(self, partitions: frozenset[str], mark: int) -> asyncio.Future:
        """A future of the running loop, done at the first ring for ``partitions``
        after ``mark`` (at once if there was one); the same one for every ask until
        then."""
        loop = asyncio.get_running_loop()
        key = (partitions, mark, loop)
        with self._lock:
            if sum(self._rings[partition] for partition in partitions) != mark:
                future = loop.create_future()
                future.set_result(None)
            elif (future := self._waiters.get(key)) is None or future.done():
                future = self._waiters[key] = loop.create_future()
        return future

    # -- ringing --------------------------------------------------------------

    def ring(self, topic: str, partition: int) -> None:
        """Ring for a partition at the end of this loop turn (many acks, one ring), and
        at most once per ``RING_INTERVAL_S`` (the rings in between go together)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            pending = self._pending.get(loop)
            if pending is None:
                pending = self._pending[loop] = set()
                due = self._last_sent.get(loop, -math.inf) + RING_INTERVAL_S
                if due <= loop.time():
                    loop.call_soon(self._send, loop)
                else:
                    loop.call_at(due, self._send, loop)
            pending.add(channel(topic, partition))

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            partitions = self._pending.pop(loop, set())
            self._last_sent[loop] = loop.time()
        for peer in self._current_peers():
            try:
                for payload in _datagrams(sorted(partitions)):
                    self._sender.sendto(payload, peer)
            except (ConnectionRefusedError, FileNotFoundError):
                _unlink(Path(peer))  # its process is gone
            except BlockingIOError:
                pass  # its buffer is full of rings: it will fetch anyway
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    log.warning("doorbell_send_failed", peer=peer, error=str(exc))

    def _current_peers(self) -> list[str]:
        try:
            mtime = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        if mtime != self._listed_mtime:
            self._listed_mtime = mtime
            self._peers = [str(p) for p in self.directory.glob("*.sock")]
        return self._peers


def channel(topic: str, partition: int) -> str:
    """What a ring names: one partition (Kafka topic names have no colon)."""
    return f"{topic}:{partition}"


def _datagrams(lines: list[str]) -> list[bytes]:
    """``lines`` in as few datagrams as fit, none cut in the middle of a line."""
    payloads, current = [], b""
    for line in (line.encode() for line in lines):
        if current and len(current) + 1 + len(line) > _MAX_DATAGRAM:
            payloads.append(current)
            current = b""
        current = current + b"\n" + line if current else line
    return [*payloads, current] if current else payloads


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# -- the aiokafka side --------------------------------------------------------------

_installed = False


def _install() -> None:
    """Wrap aiokafka's fetch planning and sends once per process. A client
    without ``_rtml_doorbell`` goes through the wrappers unchanged."""
    global _installed
    if _installed:
        return
    _installed = True
    plan, fetch = Fetcher._get_actions_per_node, Fetcher._proc_fetch_request
    send, send_batch = AIOKafkaProducer.send, AIOKafkaProducer.send_batch

    def planned(self: Fetcher, assignment: Any) -> tuple:
        actions = plan(self, assignment)
        doorbell: Doorbell | None = getattr(self._client, "_rtml_doorbell", None)
        if doorbell is None:
            return actions
        requests, resets, timeout, invalid_metadata, wake_on = actions
        now = time.monotonic()
        kept = []
        for node_id, request in requests:
            last: _LastFetch | None = getattr(self, "_rtml_last", {}).get(node_id)
            key, partitions = _fetch_key(request)
            if (
                last is None
                or not last.caught_up_by(key, assignment)
                or doorbell.mark(partitions) != last.mark
                or now - last.sent >= IDLE_FETCH_INTERVAL_S
            ):
                if _asks_for_known_records(key, assignment):
                    request._max_wait_ms = KNOWN_RECORDS_FETCH_WAIT_MS
                kept.append((node_id, request))
                continue
            # nothing new since the last fetch: sleep until a ring or the interval
            wake_on = [*wake_on, doorbell.rung_future(partitions, last.mark)]
            timeout = min(timeout, IDLE_FETCH_INTERVAL_S - (now - last.sent))
        return kept, resets, timeout, invalid_metadata, wake_on

    async def fetched(self: Fetcher, assignment: Any, node_id: int, request: Any) -> bool:
        doorbell: Doorbell | None = getattr(self._client, "_rtml_doorbell", None)
        if doorbell is None:
            return await fetch(self, assignment, node_id, request)
        key, partitions = _fetch_key(request)
        last = _LastFetch(key, doorbell.mark(partitions), time.monotonic(), int(time.time() * 1000))
        woke = await fetch(self, assignment, node_id, request)
        if assignment.active:
            for topic, partition, _ in key:
                state = assignment.state_value(TopicPartition(topic, partition))
                # only a partition this response updated (no error for it)
                if state is not None and (state.timestamp or 0) >= last.asked_ms:
                    state.rtml_asked_ms = last.asked_ms
        self.__dict__.setdefault("_rtml_last", {})[node_id] = last
        return woke

    async def sent(self: AIOKafkaProducer, topic: str, *args: Any, **kwargs: Any):
        return _ring_on_ack(self, topic, await send(self, topic, *args, **kwargs))

    async def batch_sent(self: AIOKafkaProducer, batch: Any, topic: str, *args: Any, **kw: Any):
        return _ring_on_ack(self, topic, await send_batch(self, batch, topic, *args, **kw))

    Fetcher._get_actions_per_node = planned
    Fetcher._proc_fetch_request = fetched
    AIOKafkaProducer.send = sent
    AIOKafkaProducer.send_batch = batch_sent


@dataclass(frozen=True, slots=True)
class _LastFetch:
    """A consumer's last fetch to a broker, and the rings it had heard before it."""

    key: frozenset[tuple[str, int, int]]  # (topic, partition, offset) asked for
    mark: int
    sent: float  # monotonic
    asked_ms: int  # wall clock

    def caught_up_by(self, key: frozenset[tuple[str, int, int]], assignment: Any) -> bool:
        """Whether a fetch of ``key`` would only ask again for what this one saw was
        there: the same partitions, each from the high watermark this fetch's
        response reported (its records, if any, handed out)."""
        if {(t, p) for t, p, _ in key} != {(t, p) for t, p, _ in self.key}:
            return False
        for topic, partition, offset in key:
            state = assignment.state_value(TopicPartition(topic, partition))
            if state is None or state.highwater != offset:
                return False
            if getattr(state, "rtml_asked_ms", None) != self.asked_ms:
                return False  # its high watermark is not this fetch's
        return True


def _asks_for_known_records(key: frozenset[tuple[str, int, int]], assignment: Any) -> bool:
    for topic, partition, offset in key:
        state = assignment.state_value(TopicPartition(topic, partition))
        if state is not None and state.highwater is not None and offset < state.highwater:
            return True
    return False


def _fetch_key(request: Any) -> tuple[frozenset[tuple[str, int, int]], frozenset[str]]:
    """A fetch request's (topic, partition, offset) set and its partitions' channels."""
    key = frozenset(
        (topic, partition, offset)
        for topic, partitions in request.topics
        for partition, offset, _max_bytes in partitions
    )
    return key, frozenset(channel(topic, partition) for topic, partition, _ in key)


def _ring_on_ack(producer: AIOKafkaProducer, topic: str, ack: asyncio.Future) -> asyncio.Future:
    doorbell: Doorbell | None = getattr(producer.client, "_rtml_doorbell", None)
    if doorbell is not None:

        def rang(done: asyncio.Future) -> None:
            if not done.cancelled() and done.exception() is None:
                doorbell.ring(topic, done.result().partition)

        ack.add_done_callback(rang)
    return ack
