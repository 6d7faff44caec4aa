"""A log-binned histogram: quantiles of a stream in bounded memory. Pure, no I/O."""

from __future__ import annotations

import math

# Bin edges grow by this factor, so a quantile read from the bin's geometric
# middle is within sqrt(GROWTH) - 1 (about 2%) of the true value.
GROWTH = 1.04
_LOG_GROWTH = math.log(GROWTH)
# Values below this (0 included) share one bin: a latency under a microsecond
# of a millisecond is zero for every purpose here.
SMALLEST = 1e-3


class LogHistogram:
    """Counts of non-negative values in logarithmic bins.

    Memory grows with the range of the values (about 60 bins per factor of 10),
    never with their number, and two histograms merge by adding counts.
    """

    def __init__(self) -> None:
        self._bins: dict[int, int] = {}
        self._below_smallest = 0
        self.count = 0

    def add(self, value: float) -> bool:
        """Count ``value``; False (and nothing counted) for a negative or non-finite one."""
        if not math.isfinite(value) or value < 0:
            return False
        if value < SMALLEST:
            self._below_smallest += 1
        else:
            index = math.floor(math.log(value) / _LOG_GROWTH)
            self._bins[index] = self._bins.get(index, 0) + 1
        self.count += 1
        return True

    def merge(self, other: LogHistogram) -> None:
        for index, count in other._bins.items():
            self._bins[index] = self._bins.get(index, 0) + count
        self._below_smallest += other._below_smallest
        self.count += other.count

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0 <= q <= 1) by nearest rank; None when empty."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = self._below_smallest
        if seen >= rank:
            return 0.0
        for index in sorted(self._bins):
            seen += self._bins[index]
            if seen >= rank:
                return GROWTH ** (index + 0.5)
        raise AssertionError("bin counts do not add up to count")  # unreachable by construction

    def percentiles(self) -> dict[str, float | int | None]:
        return {
            "p50": self.quantile(0.50),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
            "count": self.count,
        }
