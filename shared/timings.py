"""Where a prediction's time went: the per-hop shares of ``timings_ms``, written and read.

Every stage of the predict chain adds its own shares to the ``timings_ms`` it
passes on, so that the shares add up to ``total``: from ingestion's (or the
gateway's) ``received_at`` to the prediction made. A stage first adds the wait
before it saw the request (``to_<stage>``): the gap between the end of the
shares so far (``received_at`` plus their sum) and the moment it saw it. Then
it adds its own work. docs/ARCHITECTURE.md ("Timings") defines each hop.

Wall clock, because a share may start on one machine and end on another: the
services run on one machine or on NTP-synced hosts. A negative gap is clock
skew, not time, and counts as 0 (so the shares may then exceed ``total``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

TOTAL = "total"
TO_FEATURES = "to_features"
FRESHNESS_WAIT = "freshness_wait"
LOOKUP_FORWARD = "lookup_forward"
FEATURES = "features"
TO_ROUTER = "to_router"
ROUTING = "routing"
TO_PREDICTION = "to_prediction"
SCORING = "scoring"
# in the order a request meets them
CHAIN = (
    TO_FEATURES,
    FRESHNESS_WAIT,
    LOOKUP_FORWARD,
    FEATURES,
    TO_ROUTER,
    ROUTING,
    TO_PREDICTION,
    SCORING,
)


def ms(seconds: float) -> float:
    """``seconds`` in milliseconds, to the microsecond; a negative span (skew) is 0."""
    return round(max(0.0, seconds) * 1000.0, 3)


def accounted_until(received_at: float, timings_ms: Mapping[str, float]) -> float:
    """The wall clock (epoch s) at which the shares in ``timings_ms`` (no total yet) end."""
    return received_at + sum(timings_ms.values()) / 1000.0


def with_wait(
    timings_ms: Mapping[str, float], hop: str, received_at: float | None, seen_at: float
) -> dict[str, float]:
    """``timings_ms`` plus ``hop``: the wait from the end of its shares until ``seen_at``.

    A request that came through neither ingestion nor the gateway has no
    ``received_at`` to measure from: the wait is left out.
    """
    timings = dict(timings_ms)
    if received_at is not None:
        timings[hop] = ms(seen_at - accounted_until(received_at, timings_ms))
    return timings


def in_chain_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order of the chain; names it does not know after, as they came."""
    known = {name: index for index, name in enumerate(CHAIN)}
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda name: known.get(name, len(CHAIN)))


def hops(timings_ms: Mapping[str, float]) -> dict[str, float]:
    """The per-hop shares of a prediction's ``timings_ms`` (every entry but the total),
    in the order of the chain. What the dashboard and the benchmarks read: both
    wirings write the same names."""
    return {name: timings_ms[name] for name in in_chain_order(timings_ms) if name != TOTAL}
