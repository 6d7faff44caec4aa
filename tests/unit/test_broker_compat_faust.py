"""The faust apps' consumer and flow control: read offsets after a seek, what a commit
may pass, and what a resume does to the records queued for agents."""

from __future__ import annotations

from typing import cast

import pytest
from faust.types import TP
from mode.utils.queues import FlowControlQueue
from rtml.shared.broker_compat_faust import CompatApp, CompatConsumer


async def agent_queue() -> tuple[CompatApp, FlowControlQueue]:
    app = CompatApp("flow-control-test", embedded=True, broker="kafka://127.0.0.1:1")
    # what faust gives each agent's channel and the tables' changelog reader
    queue: FlowControlQueue = FlowControlQueue(flow_control=app.flow_control, clear_on_resume=True)
    app.flow_control.resume()  # faust starts suspended
    return app, queue


async def test_resuming_a_running_flow_keeps_the_queued_records() -> None:
    # table recovery resumes the flow several times in one rebalance: records
    # handed out in between are the agent's to process, not stale
    app, queue = await agent_queue()
    queue.put_nowait("record 7")
    app.flow_control.resume()
    assert queue.qsize() == 1 and queue.get_nowait() == "record 7"


async def test_a_resume_after_a_suspend_clears_the_queued_records() -> None:
    # a rebalance suspends the flow: the new generation reads again from the
    # committed offsets, so what the last one queued is dropped
    app, queue = await agent_queue()
    queue.put_nowait("record of the last generation")
    app.flow_control.suspend()
    app.flow_control.resume()
    assert queue.empty()
    assert app.flow_control.is_active()


# --- the consumer's read offsets and commits ------------------------------------------

EVENTS_0 = TP("rtml.events", 0)
EVENTS_1 = TP("rtml.events", 1)


def consumer() -> CompatConsumer:
    app = CompatApp("consumer-test", embedded=True, broker="kafka://127.0.0.1:1")
    return cast(CompatConsumer, app.consumer)


async def no_seek(*_: object) -> None:
    """Stands in for the aiokafka seek, which needs a running consumer thread."""


async def test_a_seek_leaves_the_record_at_its_offset_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # faust's drain loop reports a gap from read offset + 1: after a seek to 674 that
    # must be 674, or a record 674 that never comes passes unnoticed
    reader = consumer()
    monkeypatch.setattr(reader, "_seek", no_seek)
    await reader.seek(EVENTS_0, 674)
    await reader.seek(EVENTS_1, 0)
    assert reader._read_offset[EVENTS_0] == 673 and reader._read_offset[EVENTS_1] == -1


async def test_seeking_to_the_committed_offsets_reads_from_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = consumer()

    async def committed() -> dict[TP, int]:
        return {EVENTS_0: 674, EVENTS_1: 0}

    monkeypatch.setattr(reader, "seek_to_committed", committed)
    await reader.perform_seek()
    assert reader._read_offset[EVENTS_0] == 673 and reader._read_offset[EVENTS_1] == -1
    assert reader._committed_offset[EVENTS_0] == 674 and reader._committed_offset[EVENTS_1] is None


def test_no_commit_passes_the_record_at_the_committed_offset() -> None:
    reader = consumer()
    reader._committed_offset[EVENTS_0] = 674
    reader._acked[EVENTS_0] = [675, 676]
    assert reader._new_offset(EVENTS_0) is None
    reader._acked[EVENTS_0] = [674, 675, 676]
    assert reader._new_offset(EVENTS_0) == 677


async def test_a_gap_seen_twice_at_the_committed_offset_is_committed_past() -> None:
    # records 674-675 are not there (seen missing once, fetched again, missing again):
    # they count as done, including 674, which faust's own gap leaves out. faust's
    # drain loop passes the record in hand (676) as the gap's last offset
    reader = consumer()
    reader._committed_offset[EVENTS_0] = 674
    for _ in range(2):
        await reader._add_gap(EVENTS_0, 674, 676)
    reader._acked[EVENTS_0] = [676, 677]
    commits = []
    while (offset := reader._new_offset(EVENTS_0)) is not None:
        commits.append(offset)
        reader._committed_offset[EVENTS_0] = offset
    # faust counts 676 twice (gap and ack), which splits the run in two commits
    assert commits == [677, 678]
