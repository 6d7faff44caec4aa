"""benchmarks/features.py's pure helpers."""

from __future__ import annotations

from benchmarks.features import by_quarter


def test_each_quarter_of_a_run_has_its_own_percentiles() -> None:
    # a latency that grows through the run: 100 per quarter, 10, 20, 30, 40 ms
    latencies = [10.0 * (1 + i // 100) for i in range(400)]
    assert by_quarter(latencies) == "10 / 10, 20 / 20, 30 / 30, 40 / 40"


def test_too_few_latencies_for_quarters() -> None:
    assert by_quarter([5.0, 6.0, 7.0]) == "-"
