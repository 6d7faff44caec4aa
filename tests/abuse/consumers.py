"""Put hostile frames on a consumed topic and find the dead letters they became."""

from __future__ import annotations

import asyncio
import time

from rtml.shared import topics
from rtml.shared.contracts import DlqRecord
from rtml.shared.kafka import start_producer
from rtml.shared.settings import Settings

from tests.helpers import read_topic

Position = tuple[int, int]  # partition, offset


async def produce_frames(
    settings: Settings, topic: str, frames: dict[str, bytes | None]
) -> dict[Position, str]:
    """Send each frame as it is (no encoding, no checks); the frame's name by position."""
    producer = await start_producer(settings, max_request_size=4 * 2**20)
    try:
        positions: dict[Position, str] = {}
        for name, frame in frames.items():
            sent = await producer.send_and_wait(topic, frame, key=name.encode())
            positions[(sent.partition, sent.offset)] = name
        return positions
    finally:
        await producer.stop()


async def dead_letters_of(
    settings: Settings, service: str, topic: str, positions: dict[Position, str], timeout_s=60.0
) -> dict[str, DlqRecord]:
    """The dead letters ``service`` wrote for the frames at ``positions``, by frame name,
    once there is one for each (or the timeout: the caller's assert shows what is missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        letters = await read_topic(settings, topics.DLQ.name, expected=10**9, timeout_s=0)
        found = {
            positions[(d.partition, d.offset)]: d
            for d in letters
            if isinstance(d, DlqRecord)
            and d.service == service
            and d.topic == topic
            and (d.partition, d.offset) in positions
        }
        if len(found) == len(positions) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)
