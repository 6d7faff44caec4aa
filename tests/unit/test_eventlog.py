"""Event log files: a simulated run written and read back byte for byte; foreign and
truncated files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from rtml.shared.contracts import Message, encode
from rtml.shared.eventlog import EventLogError, read_event_log, write_event_log

from rtml.tasks.eta.simulator.world import SimConfig, simulate

HOUR = 3600.0


def run(duration_s: float, seed: int) -> list[Message]:
    return list(simulate(SimConfig(seed=seed), duration_s))


def wire_bytes(messages: list[Message]) -> bytes:
    return b"".join(encode(m) for m in messages)


def test_event_log_round_trip(tmp_path: Path) -> None:
    messages = run(6 * HOUR, seed=7)
    path = tmp_path / "run.evl"
    assert write_event_log(path, messages) == len(messages)
    back = list(read_event_log(path))
    assert back == messages
    assert wire_bytes(back) == wire_bytes(messages)
    assert [p.name for p in tmp_path.iterdir()] == ["run.evl"]


def test_truncated_event_log_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "run.evl"
    write_event_log(path, run(HOUR, seed=2))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(EventLogError, match="truncated"):
        list(read_event_log(path))


def test_foreign_file_is_not_an_event_log(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, world")
    with pytest.raises(EventLogError, match="magic"):
        list(read_event_log(path))
