"""benchmarks/wiring.py's pure helpers: where each wiring's time went, per phase."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from benchmarks.wiring import Outcome, WiringResult, hop_table, hops_by_phase


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
