"""The faust apps' flow control: what a resume does to the records queued for agents."""

from __future__ import annotations

from mode.utils.queues import FlowControlQueue

from shared.broker_compat_faust import CompatApp


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
