"""benchmarks/wiring.py's pure helpers: where each wiring's time went, per phase."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from benchmarks.wiring import (
    PHASES,
    Outcome,
    Plan,
    WiringResult,
    burst_verdict,
    hop_table,
    hops_by_phase,
    summarise,
)


def outcome(phase: str, timings_ms: dict[str, float] | None) -> Outcome:
    return Outcome(phase, scheduled=0.0, status=200, done_at=1.0, timings_ms=timings_ms)


def test_each_phase_has_the_percentiles_of_each_hop_in_chain_order() -> None:
    outcomes = [
        outcome("steady", {"scoring": 1.0 + i, "to_features": 10.0 * i, "total": 99.0})
        for i in range(101)
    ]
    outcomes += [outcome("burst", {"to_router": 5.0, "total": 5.0}), outcome("outage", None)]

    by_phase = hops_by_phase(outcomes)

    assert list(by_phase) == ["steady", "burst"]  # nothing landed from the outage
    assert list(by_phase["steady"]) == ["to_features", "scoring"]  # never the total
    assert by_phase["steady"]["to_features"] == {
        "p50_ms": 500.0,
        "p99_ms": 990.0,
        "predictions": 101,
    }
    assert by_phase["steady"]["scoring"]["p50_ms"] == pytest.approx(51.0)
    assert by_phase["burst"] == {"to_router": {"p50_ms": 5.0, "p99_ms": 5.0, "predictions": 1}}


def test_the_hop_table_has_a_row_per_hop_and_a_column_per_phase() -> None:
    result = WiringResult("event", requests=3)
    result.hops = hops_by_phase(
        [
            outcome("steady", {"to_features": 1.25, "scoring": 0.5}),
            outcome("recovery", {"to_features": 2.0, "lookup_forward": 3.0, "scoring": 0.5}),
        ]
    )
    header, *rows = hop_table(result)
    assert header.split() == [
        "event-driven",
        "hops,",
        "ms",
        "p50",
        "/",
        "p99",
        "steady",
        "recovery",
    ]
    cells = [[cell.strip() for cell in row.split("  ") if cell.strip()] for row in rows]
    assert cells == [
        ["to_features", "1.2 / 1.2", "2.0 / 2.0"],
        ["lookup_forward", "-", "3.0 / 3.0"],
        ["scoring", "0.5 / 0.5", "0.5 / 0.5"],
    ]
    # and in the --json document
    assert (
        json.loads(json.dumps(asdict(result)))["hops"]["recovery"]["lookup_forward"]["p50_ms"]
        == 3.0
    )


def test_a_burst_is_judged_on_what_it_got_through_before_it_ended() -> None:
    # 10/s steady for 2 s, 30/s burst for 1 s, then cooldown, outage, recovery
    plan = Plan(10.0, 2.0, 1.0, 1.0, 1.0, 1.0, 3000)
    assert [phase for phase, _, _ in plan.phases()] == list(PHASES)
    outcomes = {}
    for index, (offset, phase) in enumerate(plan.schedule()):
        # every request takes 50 ms, but the last five of the burst are held by the
        # outage and complete 3 s after it began
        held = phase == "burst" and offset >= 2.0 + 25 / 30
        done = 4.0 + 3.0 if held else offset + 0.05
        outcomes[str(index)] = Outcome(
            phase, scheduled=100.0 + offset, status=202, done_at=100.0 + done
        )

    burst = summarise("event", plan, outcomes).phases["burst"]

    assert burst["within/s"] == pytest.approx(25.0)  # 25 of its 30 in its one second
    assert burst["left_at_end"] == 5
    # the throughput to the last completion is stretched by the outage
    assert burst["requests/s"] == pytest.approx(30 / 5.0)


@pytest.mark.parametrize(
    ("within", "left", "p99_ms", "verdict"),
    [
        (290.0, 60, 400.0, "met"),  # 60 in flight: 300/s x 0.4 s holds 120
        (290.0, 150, 400.0, "MISSED"),  # more left than its p99 keeps in flight: a backlog
        (240.0, 10, 400.0, "MISSED"),
        (290.0, 10, 600.0, "MISSED"),
    ],
)
def test_the_burst_verdict(within: float, left: int, p99_ms: float, verdict: str) -> None:
    burst = {"within/s": within, "left_at_end": left, "p99_ms": p99_ms}
    line = burst_verdict(Plan(100.0, 30.0, 10.0, 5.0, 10.0, 20.0, 3000), burst)
    assert line.split(": ", 1)[1].startswith(verdict + " (")


def test_the_burst_target_is_judged_at_a_steady_100_per_s_only() -> None:
    burst = {"within/s": 1500.0, "left_at_end": 0, "p99_ms": 10.0}
    assert "not measured" in burst_verdict(Plan(500.0, 1, 1, 1, 1, 1, 3000), burst)


def test_a_stream_without_a_burst_has_nothing_through_it() -> None:
    # the steady phase alone, as --against runs it
    plan = Plan(10.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3000)
    outcomes = {
        str(i): Outcome("steady", scheduled=i / 10, status=200, done_at=i / 10 + 0.01)
        for i in range(10)
    }
    phases = summarise("event", plan, outcomes).phases
    assert phases["steady"]["within/s"] == pytest.approx(10.0)
    assert phases["burst"]["within/s"] == 0.0
    assert phases["burst"]["left_at_end"] == 0
